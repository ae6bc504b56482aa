"""Faults are data: restarts, exhausted maxclients, auth, dead servers, `--via`, a killed collector."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import redis

from clientscope.capture import CaptureEvent, collect, parse_target, via_target
from clientscope.dataset import open_dataset
from clientscope.schema import COLLECTOR_CLIENT_NAME
from servers import Server, redis_server, valkey_server

CLIENTSCOPE = [sys.executable, "-c", "from clientscope.cli import main; main()"]


def raw_rows(out: Path) -> pl.DataFrame:
    return open_dataset(out).raw.sort("ts").collect()


def test_server_killed_and_restarted_mid_run(valkey: Server, tmp_path: Path) -> None:
    events: list[CaptureEvent] = []

    def chaos(event: CaptureEvent) -> None:
        events.append(event)
        if len(events) == 2:
            valkey.kill()
        failures = [e for e in events if not e.ok]
        if not event.ok and len(failures) == 2:
            valkey.start()  # same port, new run_id

    result = collect([valkey.url], tmp_path / "ds", interval=0.2, count=7, on_event=chaos)
    rows = raw_rows(tmp_path / "ds")
    assert rows["ok"].to_list() == [True, True, False, False, True, True, True]
    assert set(rows.filter(~pl.col("ok"))["error_kind"]) <= {"connection_refused", "io"}
    assert "connection_refused" in set(rows["error_kind"].drop_nulls())
    assert rows.filter(~pl.col("ok"))["client_list"].is_null().all()
    run_ids = open_dataset(tmp_path / "ds").captures.sort("ts").collect()["run_id"].to_list()
    assert run_ids[0] == run_ids[1] != run_ids[4] == run_ids[6]
    restart = json.loads(rows["notes"][4])["restart"]
    assert restart == {"previous_run_id": run_ids[0], "run_id": run_ids[4]}
    assert result.targets[0].restarts == 1
    assert result.targets[0].errors.get("connection_refused", 0) >= 1


def test_exhausted_maxclients_is_recorded_and_recovered(tmp_path: Path) -> None:
    """The collector keeps its slot while connected; once cut off it records max_clients until room returns."""
    with valkey_server(maxclients=12) as srv:
        held: list[redis.Redis] = []
        events: list[CaptureEvent] = []

        def incident(event: CaptureEvent) -> None:
            events.append(event)
            if len(events) == 1:  # fill every slot but the collector's
                held.extend(srv.client(name=f"app-{i}") for i in range(11))
            elif len(events) == 2:  # cut the collector off and take its slot
                ids = [c["id"] for c in held[0].client_list() if c["name"] == COLLECTOR_CLIENT_NAME]
                held[0].client_kill_filter(_id=ids[0])
                held.append(srv.client(name="app-late"))
            elif sum(e.error_kind == "max_clients" for e in events) == 3:
                for r in held[:6]:
                    r.close()

        try:
            result = collect([srv.url], tmp_path / "ds", interval=0.2, count=9, on_event=incident)
        finally:
            for r in held:
                r.close()
    rows = raw_rows(tmp_path / "ds")
    kinds = rows["error_kind"].to_list()
    assert kinds[:2] == [None, None]
    assert kinds.count("max_clients") == 3
    assert kinds[-1] is None and rows["ok"][-1]
    assert (
        "max number of clients reached"
        in rows.filter(pl.col("error_kind") == "max_clients")["error_message"][0]
    )
    captures = open_dataset(tmp_path / "ds").captures.sort("ts").collect()
    assert captures["n_clients"][1] == 12 == captures["maxclients"][1]  # full, seen from inside
    assert captures["n_clients"][-1] == 12 - 6 + 1  # room again: 6 of 12 apps left + the collector
    info = open_dataset(tmp_path / "ds").info.sort("ts").collect()
    assert info["rejected_connections"][-1] >= 3  # the server counted the collector's attempts
    assert result.targets[0].errors["max_clients"] == 3


@pytest.mark.redis
def test_auth_right_and_wrong_password_never_stored(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "Pw-4-test-d0nt-store"
    with redis_server(password=secret) as srv:
        good = collect([srv.url], tmp_path / "good", interval=0.2, count=2)
        from_env = parse_target(f"redis://127.0.0.1:{srv.port}", env={"REDISCLI_AUTH": secret})
        collect([from_env], tmp_path / "good", interval=0.2, count=1)
        bad = collect(
            [f"redis://:wrong-{secret[::-1]}@127.0.0.1:{srv.port}"],
            tmp_path / "bad",
            interval=0.2,
            count=2,
        )
        cli = subprocess.run(
            [*CLIENTSCOPE, "collect", f"redis://127.0.0.1:{srv.port}", "-o", str(tmp_path / "cli"),
             "--interval", "200ms", "--count", "2", "--json"],
            env={**os.environ, "REDISCLI_AUTH": secret}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert good.failed == 0 and raw_rows(tmp_path / "good").height == 3
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["failed"] == 0
    bad_rows = raw_rows(tmp_path / "bad")
    assert bad_rows["error_kind"].to_list() == ["auth", "auth"] and bad.failed == 2
    printed = capfd.readouterr()
    for text in (cli.stdout, cli.stderr, printed.out, printed.err, repr(good), repr(bad)):
        assert secret not in text and secret[::-1] not in text
    for out in ("good", "bad", "cli"):
        assert_secret_absent(tmp_path / out, secret)
        assert_secret_absent(tmp_path / out, secret[::-1])


def assert_secret_absent(root: Path, secret: str) -> None:
    """Neither in any file's bytes nor in any decoded value of any table."""
    for path in root.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    ds = open_dataset(root)
    for table in ("raw", "captures", "clients", "info", "info_fields", "rejects"):
        frame = ds.scan(table).collect()
        for name, dtype in frame.schema.items():
            if dtype in (pl.String, pl.Binary):
                values = frame[name].drop_nulls().cast(pl.Binary)
                assert not values.bin.contains(secret.encode()).any(), (table, name)


def test_via_a_wrapper_script_around_redis_cli(tmp_path: Path) -> None:
    wrapper = tmp_path / "kubectl-exec-like"
    with redis_server(password="via-secret-pw") as srv:
        wrapper.write_text(f'#!/bin/sh\nexec redis-cli -h 127.0.0.1 -p {srv.port} "$@"\n')
        wrapper.chmod(0o755)
        direct = srv.client()
        direct.config_set("timeout", 321)
        target = via_target(str(wrapper), instance="redis-master-0", password="via-secret-pw")
        result = collect([target], tmp_path / "ds", interval=0.3, count=3)
        srv.stop()
        collect([target], tmp_path / "ds", interval=0.2, count=1)
    rows = raw_rows(tmp_path / "ds")
    ok = rows.filter(pl.col("ok"))
    assert ok.height == 3 == result.targets[0].ok
    row = ok.row(0, named=True)
    assert row["client_list"].startswith(b"id=") and row["client_list"].endswith(b"resp=2\n")
    assert b"cmd=client|list" in row["client_list"]  # redis-cli's own connection
    assert row["info"].startswith(b"# Server\r\n") and row["info"].endswith(b"\r\n")
    assert not row["info"].endswith(b"\r\n\n")
    config = json.loads(row["config"])
    assert config["timeout"] == "321" and config["maxclients"] == "10000"
    assert config["client-output-buffer-limit"].startswith("normal 0 0 0 slave")
    assert row["ts_source"] == "server_time"
    assert row["origin"] == f"via: {wrapper}"
    assert rows["error_kind"][-1] == "connection_refused"
    assert_secret_absent(tmp_path / "ds", "via-secret-pw")
    captures = open_dataset(tmp_path / "ds").captures.filter(pl.col("ok")).collect()
    assert (captures["n_clients"] >= 2).all()  # the test's client and redis-cli


def test_via_acl_denied_commands_are_noted(redis7: Server, tmp_path: Path) -> None:
    redis7.admin().execute_command("ACL", "SETUSER", "ro", "on", ">ro-pw", "~*", "+@all", "-config")
    wrapper = tmp_path / "cli"
    wrapper.write_text(
        f'#!/bin/sh\nexec redis-cli --no-auth-warning --user ro -p {redis7.port} "$@"\n'
    )
    wrapper.chmod(0o755)
    result = collect(
        [via_target(str(wrapper), password="ro-pw")], tmp_path / "ds", interval=0.2, count=2
    )
    rows = raw_rows(tmp_path / "ds")
    assert (
        rows["ok"].all()
        and rows["config"].is_null().all()
        and rows["client_list"].is_not_null().all()
    )
    assert result.targets[0].denied == ("CONFIG GET",)


def test_five_servers_one_stopped_none_delayed(tmp_path: Path) -> None:
    blackhole = socket.socket()  # accepts connections, never answers: a hung node
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    hung = f"redis://127.0.0.1:{blackhole.getsockname()[1]}"
    try:
        with (
            valkey_server() as a, valkey_server() as b, redis_server() as c,
            redis_server() as d, valkey_server() as e,
        ):  # fmt: skip
            e.stop()
            from clientscope.capture import Timeouts

            started = time.monotonic()
            result = collect(
                [a.url, b.url, c.url, d.url, e.url, hung], tmp_path / "ds", interval=0.25, count=4,
                timeouts=Timeouts(connect=0.5, read=0.5),
            )  # fmt: skip
            elapsed = time.monotonic() - started
    finally:
        blackhole.close()
    by_name = {t.instance: t for t in result.targets}
    for srv in (a, b, c, d):
        summary = by_name[f"127.0.0.1:{srv.port}"]
        assert (summary.ok, summary.failed, summary.missed, summary.late) == (4, 0, 0, 0)
    assert by_name[f"127.0.0.1:{e.port}"].errors == {"connection_refused": 4}
    assert set(by_name[hung.removeprefix("redis://")].errors) == {"timeout"}
    assert elapsed < 20  # the failing nodes back off on their own threads
    rows = raw_rows(tmp_path / "ds")
    refused = rows.filter(pl.col("instance") == f"127.0.0.1:{e.port}")["error_message"].unique()
    assert refused.to_list() == [f"Connection refused (connecting to 127.0.0.1:{e.port})"]
    per_instance = rows.group_by("instance").agg(pl.len()).sort("instance")
    assert per_instance["len"].to_list() == [4] * 6


def _run_collector(url: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLIENTSCOPE, "collect", url, "-o", str(out), "--interval", "200ms", "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _committed_ids(out: Path) -> list[str]:
    """The capture ids in `raw`'s newest committed version, read as any Delta reader would."""
    if not (out / "raw" / "_delta_log").is_dir():
        return []
    return pl.scan_delta(str(out / "raw")).select("capture_id").collect().to_series().to_list()


def _wait_for_captures(
    out: Path, n: int, proc: subprocess.Popen[str], timeout: float = 30
) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(ids := _committed_ids(out)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the collector committed too little"
        time.sleep(0.05)
    return ids


def test_sigkill_at_random_moments_loses_no_committed_capture(
    valkey: Server, tmp_path: Path
) -> None:
    import random

    import duckdb
    from deltalake import DeltaTable

    out = tmp_path / "ds"
    rng = random.Random(7)
    committed: set[str] = set()
    for _ in range(10):  # each run commits at least one capture, then dies at a random moment
        proc = _run_collector(valkey.url, out)
        _wait_for_captures(out, len(committed) + 1, proc)
        time.sleep(rng.uniform(0, 0.4))  # mid-capture, mid-commit, mid-parse: wherever it is
        proc.kill()
        proc.wait(10)
        now = _committed_ids(out)
        assert set(now) >= committed and len(now) == len(set(now))  # nothing lost, nothing twice
        committed = set(now)
    assert len(committed) >= 10
    rerun = _run_collector(valkey.url, out, "--count", "2", "--json")
    stdout, stderr = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, stderr  # its start parses what the kills left unparsed
    assert json.loads(stdout)["captures_written"] == 2
    ds = open_dataset(out)  # no DatasetWarning: nothing unparsed is left
    raw, captures = ds.raw.collect(), ds.captures.collect()
    assert set(raw["capture_id"]) >= committed and raw.height == len(committed) + 2
    assert raw["capture_id"].n_unique() == raw.height
    assert sorted(captures["capture_id"]) == sorted(raw["capture_id"])  # each parsed once
    arrow = DeltaTable(str(out / "clients")).to_pyarrow_dataset()  # noqa: F841 (DuckDB reads it by name)
    seen = duckdb.sql("select count(distinct capture_id) from arrow").fetchall()
    assert seen == [(raw.height,)]  # another engine reads the same rows, no error


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_after_the_capture_in_flight(
    valkey: Server, tmp_path: Path, sig: int
) -> None:
    out = tmp_path / "ds"
    proc = _run_collector(valkey.url, out, "--json")
    _wait_for_captures(out, 3, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["stopped_by"] == "signal"
    assert "Traceback" not in stderr
    rows = raw_rows(out)
    assert rows.height == summary["captures_written"] == summary["captures"]
    assert summary["compacted"]["files_after"] == 5  # a file per table with rows (no rejects)


def test_a_connection_the_server_closed_is_replaced_within_the_capture(
    valkey: Server, tmp_path: Path
) -> None:
    admin = valkey.admin()

    def kill_the_collector_connection(event: CaptureEvent) -> None:
        ids = [c["id"] for c in admin.client_list() if c["name"] == COLLECTOR_CLIENT_NAME]
        admin.client_kill_filter(_id=ids[0])

    result = collect(
        [valkey.url], tmp_path / "ds", interval=0.2, count=4, on_event=kill_the_collector_connection
    )
    rows = raw_rows(tmp_path / "ds")
    assert rows["ok"].all() and result.failed == 0
    notes = [json.loads(n) if n else {} for n in rows["notes"]]
    assert ["reconnected" in n for n in notes] == [False, True, True, True]
    clients = (
        open_dataset(tmp_path / "ds")
        .clients.filter(pl.col("name") == COLLECTOR_CLIENT_NAME)
        .collect()
    )
    assert clients["id"].n_unique() == 4  # a new connection each time it was killed


def test_a_restart_that_loads_its_dataset_shows_as_loading(tmp_path: Path) -> None:
    """Redis 7 answers TIME, CLIENT LIST, INFO and CONFIG while it loads its RDB; INFO says
    loading:1 and applications get -LOADING. key-load-delay (µs per key) makes the load last."""
    import threading

    from clientscope import summary
    from clientscope.analysis.timeline import timeline
    from clientscope.reporting import facts

    with redis_server(key_load_delay=100, loading_process_events_interval_bytes=1024) as srv:
        admin = srv.client()
        pipe = admin.pipeline(transaction=False)
        for i in range(25_000):  # 25,000 keys x 100 µs: about 2.5 s of loading
            pipe.set(f"k{i}", "v")
        pipe.execute()
        admin.save()
        admin.close()
        srv.stop()
        loaded, stop, after = threading.Event(), threading.Event(), []

        def until_loaded() -> None:
            srv.start(timeout=120)  # returns once PING works, i.e. after the load
            loaded.set()

        def count_after_load(event: object) -> None:  # two captures once loaded, then stop
            if loaded.is_set():
                after.append(event)
                if len(after) >= 2:
                    stop.set()

        starting = threading.Thread(target=until_loaded)
        starting.start()
        # conditions, not a fixed duration: on a loaded machine the load takes longer
        collect([srv.url], tmp_path / "ds", interval=0.2, duration=120.0, stop=stop,
                on_event=count_after_load, handle_signals=False)  # fmt: skip
        starting.join(120)
        assert loaded.is_set(), "the server did not finish loading in 120 s"
    ds = open_dataset(tmp_path / "ds")
    info = ds.info.sort("ts").select("ts", "loading").collect()
    flags = info["loading"].to_list()
    assert 1 in flags and flags[-1] == 0, flags  # loading at first, then done
    assert flags.index(0) > flags.index(1)
    loading_at = info.filter(pl.col("loading") == 1)["ts"][0]
    assert summary(ds, at=loading_at).snapshot["loading"].to_list() == [True]
    events = facts.timeline(timeline(ds))
    kinds = [(e.kind, e.text.split(":")[0]) for e in events if e.kind == "loading"]
    assert kinds == [("loading", "server loading its dataset from disk"),
                     ("loading", "dataset loaded")]  # fmt: skip
