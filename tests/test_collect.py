"""collect against real servers: what each capture holds, leaks, gentleness, denied commands."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import redis

from clientscope.capture import (
    CaptureEvent,
    Target,
    collect,
    parse_duration,
    parse_target,
    via_target,
)
from clientscope.capture.channel import classify
from clientscope.capture.cluster import parse_cluster_nodes
from clientscope.capture.collector import backoff
from clientscope.dataset import DatasetWarning, mend, open_dataset
from clientscope.errors import ConfigError, DatasetWriteError
from clientscope.schema import COLLECTOR_CLIENT_NAME, RAW_SCHEMA
from servers import Server, free_port, redis_server, valkey_server


def raw_rows(out: Path) -> pl.DataFrame:
    return open_dataset(out).raw.sort("ts").collect()


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1.5h", 5400.0), ("10", 10.0), (3, 3.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["ten seconds", "-1s", "0s", "5 parsecs"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--interval"):
        parse_duration(text)


def test_target_keeps_the_password_out_of_origin_and_repr() -> None:
    target = parse_target("redis://ops:hunter2-secret@db.internal:6380/2")
    assert (target.username, target.password, target.port, target.db) == (
        "ops",
        "hunter2-secret",
        6380,
        2,
    )
    assert target.origin == "redis://ops@db.internal:6380/2"
    assert "hunter2" not in repr(target)
    assert target.instance == "db.internal:6380"


def test_password_from_redis_cli_environment_variable() -> None:
    target = parse_target("127.0.0.1:7000", env={"REDISCLI_AUTH": "from-env"})
    assert target.password == "from-env"
    assert parse_target("redis://:in-url@h:1", env={"REDISCLI_AUTH": "env"}).password == "in-url"


def test_via_target_names_the_pod_and_redacts_passwords() -> None:
    target = via_target("kubectl exec -n redis redis-master-0 -- redis-cli -a topsecret", env={})
    assert target.instance == "redis-master-0"
    assert "topsecret" not in target.origin
    assert target.origin.startswith("via: kubectl exec")


def test_unsupported_scheme_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="scheme 'http'"):
        parse_target("http://user:pw@host:80")


def test_interval_below_minimum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="below the minimum"):
        collect(["redis://127.0.0.1:1"], tmp_path / "ds", interval=0.01, count=1)


def test_same_instance_name_twice_is_refused(tmp_path: Path) -> None:
    targets = [
        parse_target("redis://127.0.0.1:1", instance="a"),
        parse_target("127.0.0.1:2", instance="a"),
    ]
    with pytest.raises(ConfigError, match="instance name"):
        collect(targets, tmp_path / "ds", interval=0.2, count=1)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("max number of clients reached", "max_clients"),
        ("Error 111 connecting to 127.0.0.1:1. Connection refused.", "connection_refused"),
        ("WRONGPASS invalid username-password pair or user is disabled.", "auth"),
        ("NOPERM this user has no permissions to run the 'config|get' command", "denied"),
        ("ERR unknown command 'CONFIG', with args beginning with: 'GET'", "denied"),
        ("LOADING Redis is loading the dataset in memory", "loading"),
        ("Timeout reading from socket", "timeout"),
    ],
)
def test_error_kinds(message: str, kind: str) -> None:
    assert classify(message) == kind


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    waits = [backoff(n, 1.0) for n in range(1, 10)]
    assert 0.75 <= waits[0] <= 1.25
    assert 1.5 <= waits[1] <= 2.5
    assert max(waits) <= 8 * 1.25


def test_cluster_nodes_lines() -> None:
    text = (
        "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "b2 127.0.0.1:7001@17001,node-b slave a1 0 1 1 connected\n"
        "c3 :0@0 master,noaddr - 0 0 0 disconnected\n"
        "d4 127.0.0.1:7002@17002 master,fail - 0 0 3 connected\n"
    )
    assert parse_cluster_nodes(text, default_host="127.0.0.1") == [
        ("127.0.0.1", 7000, "primary"),
        ("127.0.0.1", 7001, "replica"),
        ("127.0.0.1", 7002, "primary"),
    ]


# ------------------------------------------------------------ real captures


def test_each_capture_is_one_complete_raw_row(any_server: Server, tmp_path: Path) -> None:
    result = collect(
        [any_server.url], tmp_path / "ds", interval=0.2, count=3, compact_on_exit=False
    )
    rows = raw_rows(tmp_path / "ds")
    assert rows.height == 3 == result.captures_written
    assert rows.schema == pl.Schema(RAW_SCHEMA)
    row = rows.row(0, named=True)
    assert row["ok"] and row["source"] == "collect" and row["ts_source"] == "server_time"
    assert row["ts"] == row["server_time"]
    assert abs((row["collector_time"] - row["server_time"]).total_seconds()) < 2
    assert row["client_list"].startswith(b"id=") and row["client_list"].endswith(b"\n")
    assert row["info"].startswith(b"# Server\r\n")
    config = json.loads(row["config"])
    assert set(config) == {
        "maxclients",
        "timeout",
        "tcp-keepalive",
        "tcp-backlog",
        "client-output-buffer-limit",
    }
    assert config["maxclients"] == str(any_server.client().config_get("maxclients")["maxclients"])
    assert row["origin"] == f"redis://127.0.0.1:{any_server.port}"
    assert all(
        row[c] is not None and row[c] >= 0
        for c in ("time_ms", "client_list_ms", "info_ms", "config_ms")
    )
    assert row["total_ms"] >= row["client_list_ms"]
    assert row["content_sha256"] == hashlib.sha256(row["client_list"] + row["info"]).hexdigest()
    assert row["collector_version"]
    assert rows["capture_id"].n_unique() == 3


def test_collector_uses_one_named_connection(valkey: Server, tmp_path: Path) -> None:
    collect([valkey.url], tmp_path / "ds", interval=0.2, count=4)
    clients = (
        open_dataset(tmp_path / "ds")
        .clients.filter(pl.col("name") == COLLECTOR_CLIENT_NAME)
        .collect()
    )
    assert clients.height == 4  # one per capture
    assert clients["id"].n_unique() == 1  # the same connection every time
    info = valkey.client().info("stats")
    assert info["total_connections_received"] <= 3  # the collector, the test's probe and this one


def test_a_leak_is_seen_growing_capture_by_capture(valkey: Server, tmp_path: Path) -> None:
    leaked: list[redis.Redis] = []

    def leak_one_more(event: CaptureEvent) -> None:
        leaked.append(valkey.client(name=f"leak-{len(leaked)}"))

    try:
        collect([valkey.url], tmp_path / "ds", interval=0.2, count=6, on_event=leak_one_more)
    finally:
        for r in leaked:
            r.close()
    ds = open_dataset(tmp_path / "ds")
    per_capture = (
        ds.clients.group_by("capture_id", "ts")
        .agg(pl.col("name").str.starts_with("leak-").sum().alias("leaked"), pl.len().alias("all"))
        .sort("ts")
        .collect()
    )
    assert per_capture["leaked"].to_list() == [0, 1, 2, 3, 4, 5]
    assert per_capture["all"].to_list() == [1, 2, 3, 4, 5, 6]  # + the collector itself
    n_clients = ds.captures.sort("ts").select("n_clients").collect().to_series().to_list()
    assert n_clients == [1, 2, 3, 4, 5, 6]


def test_duration_stops_the_run(valkey: Server, tmp_path: Path) -> None:
    result = collect([valkey.url], tmp_path / "ds", interval=0.2, duration=0.7)
    assert result.stopped_by == "duration"
    assert 3 <= result.captures <= 4  # slots at 0, 0.2, 0.4, 0.6 s
    assert raw_rows(tmp_path / "ds").height == result.captures


def test_stop_event_ends_collection_after_the_capture_in_flight(
    valkey: Server, tmp_path: Path
) -> None:
    import threading

    stop = threading.Event()
    seen: list[CaptureEvent] = []

    def stop_after_two(event: CaptureEvent) -> None:
        seen.append(event)
        if len(seen) == 2:
            stop.set()

    result = collect(
        [valkey.url], tmp_path / "ds", interval=0.2, on_event=stop_after_two, stop=stop
    )
    assert (result.stopped_by, result.captures, result.captures_written) == ("stop", 2, 2)


def test_info_sections_are_configurable(valkey: Server, tmp_path: Path) -> None:
    collect([valkey.url], tmp_path / "ds", interval=0.2, count=1, info_sections=["clients"])
    info = raw_rows(tmp_path / "ds")["info"][0]
    assert info.startswith(b"# Clients\r\n") and b"# Server" not in info


def test_slow_client_list_is_warned_once_and_noted_every_time(
    valkey: Server, tmp_path: Path
) -> None:
    result = collect([valkey.url], tmp_path / "ds", interval=0.2, count=3, slow_fraction=1e-9)
    notes = [json.loads(n) for n in raw_rows(tmp_path / "ds")["notes"]]
    assert all(any("CLIENT LIST took" in w for w in n["warnings"]) for n in notes)
    said = [w for w in result.targets[0].warnings if "CLIENT LIST took" in w]
    assert len(said) == 1  # said once, though every capture was slow


def test_acl_user_without_config_and_client(redis7: Server, tmp_path: Path) -> None:
    admin = redis7.admin()
    admin.execute_command(
        "ACL", "SETUSER", "limited", "on", ">limited-pw", "~*", "+@all", "-config", "-client"
    )
    url = f"redis://limited:limited-pw@127.0.0.1:{redis7.port}"
    result = collect([url], tmp_path / "ds", interval=0.2, count=3, maxclients=20000)
    rows = raw_rows(tmp_path / "ds")
    assert rows["ok"].all()  # INFO is still collected
    assert rows["client_list"].is_null().all() and rows["config"].is_null().all()
    assert rows["info"].is_not_null().all()
    notes = json.loads(rows["notes"][-1])
    assert set(notes["denied"]) == {"CLIENT LIST", "CONFIG GET"}
    assert "no permissions" in notes["denied"]["CONFIG GET"]
    assert notes["maxclients"] == 20000
    assert notes["maxclients_seen"] == {
        "config": None,
        "info": 10000,
        "user": 20000,
        "effective": 10000,
    }
    assert "could not name" in notes["client_setname"]
    summary = result.targets[0]
    assert summary.denied == ("CLIENT LIST", "CONFIG GET")
    refused = [w for w in summary.warnings if "refused by the server" in w]
    assert len(refused) == 2  # said once each, not once per capture
    assert any("enforces 10000" in w for w in summary.warnings)
    assert summary.maxclients == 10000
    captures = open_dataset(tmp_path / "ds").captures.collect()
    assert captures["maxclients"].to_list() == [10000] * 3
    assert captures["maxclients_source"].to_list() == ["info"] * 3


def test_renamed_config_command_like_a_managed_service(tmp_path: Path) -> None:
    import shutil

    wrapper = tmp_path / "redis-server-renamed"  # as ElastiCache does: CONFIG is not there
    wrapper.write_text(
        f'#!/bin/sh\nexec {shutil.which("redis-server")} "$@" --rename-command CONFIG ""\n'
    )
    wrapper.chmod(0o755)
    (tmp_path / "srv").mkdir()
    srv = Server("redis", str(wrapper), free_port(), tmp_path / "srv")
    srv.start()
    try:
        result = collect([srv.url], tmp_path / "ds", interval=0.2, count=2)
    finally:
        srv.stop()
    rows = raw_rows(tmp_path / "ds")
    assert (
        rows["ok"].all()
        and rows["config"].is_null().all()
        and rows["client_list"].is_not_null().all()
    )
    denied = json.loads(rows["notes"][0])["denied"]
    assert list(denied) == ["CONFIG GET"] and "unknown command" in denied["CONFIG GET"]
    assert result.targets[0].maxclients == 10000  # from INFO
    assert len([w for w in result.targets[0].warnings if "CONFIG GET refused" in w]) == 1


def test_unwritable_out_is_a_clear_error_at_start(valkey: Server, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DatasetWriteError, match="not writable"):
        collect([valkey.url], blocker / "ds", interval=0.2, count=1)


def test_failing_write_mid_run_stops_with_a_clear_error(valkey: Server, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    seen: list[CaptureEvent] = []

    def break_the_disk(event: CaptureEvent) -> None:
        seen.append(event)
        if len(seen) == 3:  # the dataset folder becomes a file (writers may mkdir it meanwhile)
            while not out.is_file():
                with contextlib.suppress(OSError):
                    out.rename(tmp_path / f"gone-{len(list(tmp_path.iterdir()))}")
                    out.write_text("the dataset directory is now a file")

    with pytest.raises(DatasetWriteError, match="Collection stopped"):
        collect([valkey.url], out, interval=0.2, count=20, on_event=break_the_disk)
    assert len(seen) < 20


def test_several_targets_with_instance_names(tmp_path: Path) -> None:
    with valkey_server() as a, redis_server() as b:
        targets: list[Target | str] = [
            parse_target(a.url, instance="cache-a"),
            parse_target(b.url, instance="cache-b"),
        ]
        result = collect(targets, tmp_path / "ds", interval=0.2, count=2)
    assert [t.instance for t in result.targets] == ["cache-a", "cache-b"]
    assert open_dataset(tmp_path / "ds").instances() == ["cache-a", "cache-b"]
    versions = (
        open_dataset(tmp_path / "ds")
        .info.select("instance", "server_name")
        .unique()
        .sort("instance")
        .collect()
    )
    assert versions["server_name"].to_list()[0] == "valkey"


def test_a_parser_failure_never_stops_collection(
    valkey: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clientscope.parse

    def broken(raw: pl.DataFrame) -> dict[str, pl.DataFrame]:
        raise RuntimeError("parser bug")

    root = tmp_path / "ds"
    with monkeypatch.context() as patched:
        patched.setattr(clientscope.parse, "parse_raw", broken)
        with pytest.warns(DatasetWarning, match="could not be parsed"):  # compact's mend
            result = collect([valkey.url], root, interval=0.2, count=3)
    assert result.captures_written == 3 and result.left_unparsed == 3
    assert result.parse_error == "RuntimeError: parser bug"
    ds = open_dataset(root)  # counted; no warning yet: a collector may be parsing them still
    assert ds.unparsed == 3
    import clientscope.dataset

    monkeypatch.setattr(clientscope.dataset, "IN_FLIGHT", timedelta(0))  # ... minutes later
    with pytest.warns(DatasetWarning, match="3 capture"):  # a read says so
        ds = open_dataset(root)
    assert ds.unparsed == 3 and ds.raw.collect().height == 3 and ds.captures.collect().height == 0
    assert mend(root) == 3  # what the next command that writes does first
    ds = open_dataset(root)
    assert ds.unparsed == 0 and ds.captures.collect().height == 3


def test_a_long_collection_compacts_as_it_goes_and_keeps_every_capture(
    valkey: Server, tmp_path: Path
) -> None:
    from deltalake import DeltaTable

    root = tmp_path / "ds"
    result = collect(
        [valkey.url], root, interval=0.1, count=30, compact_every=0.5, compact_on_exit=False
    )
    assert result.compactions >= 1
    optimized = [
        h for h in DeltaTable(str(root / "clients")).history() if h["operation"] == "OPTIMIZE"
    ]
    assert optimized  # the compactor really rewrote files while the collector committed
    ds = open_dataset(root)
    ids = ds.raw.collect()["capture_id"]
    assert ids.len() == ids.n_unique() == 30 and ds.unparsed == 0
    assert sorted(ds.captures.collect()["capture_id"]) == sorted(ids)


def test_captures_beyond_the_parser_backlog_are_parsed_when_collection_ends(
    valkey: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clientscope.capture.writer as writer
    import clientscope.dataset

    monkeypatch.setattr(writer, "MAX_UNPARSED_IN_MEMORY", 0)
    parse_captures = clientscope.dataset.parse_captures
    left: list[str] = []

    def spy(root: Path, ids: list[str], **kw: str) -> int:
        left.extend(ids)
        return parse_captures(root, ids, **kw)

    monkeypatch.setattr(clientscope.dataset, "parse_captures", spy)
    result = collect([valkey.url], tmp_path / "ds", interval=0.2, count=3, compact_on_exit=False)
    assert len(left) == 3 and result.left_unparsed == 0 and result.parse_error is None
    ds = open_dataset(tmp_path / "ds")
    assert ds.unparsed == 0 and ds.clients.collect().height == 3  # the collector, 3 times


def test_every_captured_row_has_its_parsed_rows_in_every_table(tmp_path: Path) -> None:
    with valkey_server() as a, valkey_server() as b, redis_server() as c:
        collect(
            [a.url, b.url, c.url], tmp_path / "ds", interval=0.2, count=3, compact_on_exit=False
        )
    ds = open_dataset(tmp_path / "ds")
    ids = set(ds.raw.collect()["capture_id"])
    assert len(ids) == 9 and ds.unparsed == 0
    assert set(ds.captures.collect()["capture_id"]) == ids
    assert set(ds.clients.collect()["capture_id"]) == ids  # every capture lists the collector
    assert set(ds.info.collect()["capture_id"]) == ids
    per_capture = ds.captures.group_by("capture_id").len().collect()
    assert per_capture["len"].max() == 1  # each once


LEAST_PRIVILEGE = "+info +time +client|list +client|setname +config|get +cluster|nodes"


def test_the_least_privilege_acl_of_the_kubernetes_doc_is_enough(
    redis7: Server, tmp_path: Path
) -> None:
    doc = (Path(__file__).parents[1] / "docs" / "kubernetes.md").read_text()
    assert LEAST_PRIVILEGE in doc
    redis7.admin().execute_command(
        "ACL", "SETUSER", "clientscope", "on", ">cs-pw", *LEAST_PRIVILEGE.split()
    )
    result = collect(
        [f"redis://clientscope:cs-pw@127.0.0.1:{redis7.port}"],
        tmp_path / "ds",
        interval=0.2,
        count=2,
    )
    assert (
        result.failed == 0 and result.targets[0].denied == () and result.targets[0].warnings == ()
    )
    row = raw_rows(tmp_path / "ds").row(0, named=True)
    assert row["client_list"] and row["info"] and json.loads(row["config"])["maxclients"] == "10000"
    assert (
        b"name=clientscope-collector" in row["client_list"]
        and b"user=clientscope" in row["client_list"]
    )


def test_the_live_count_is_what_the_server_counts_against_maxclients() -> None:
    from clientscope.capture.snapshot import connections_in

    listed = b"id=3 addr=127.0.0.1:1 fd=8\nid=4 addr=127.0.0.1:2 fd=9\n"
    info = b"# Clients\r\nconnected_clients:2\r\ncluster_connections:6\r\n# Replication\r\nconnected_slaves:1\r\n"
    assert connections_in(listed, info) == 2 + 6 + 1  # as `summary` counts: cluster links too
    assert connections_in(listed, None) == 2  # no INFO: the clients listed
    assert connections_in(listed, b"# Server\r\nredis_version:7.0.15\r\n") == 2
