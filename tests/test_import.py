"""`clientscope import`: text dumps taken with redis-cli from real servers into a dataset."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from clientscope import open_dataset
from clientscope.errors import DatasetWriteError, InputError, TimestampError
from clientscope.ingest import import_dumps, parse_date_line, split_dump, timestamp_from_name
from servers import Server, valkey_server

REDIS_CLI = shutil.which("redis-cli")
needs_cli = pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli missing: run `make test`")
CLI = [sys.executable, "-m", "clientscope.cli"]


def cli(server: Server, *args: str) -> bytes:
    """What `redis-cli -p PORT ARGS` prints: the dumps users actually have."""
    assert REDIS_CLI is not None
    return subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(server.port), *args],
        check=True,
        capture_output=True,
        timeout=10,
    ).stdout


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Server, list[object]]]:
    """A Valkey server with 5 named pool connections, 2 unnamed ones and one blocked BLPOP."""
    with valkey_server() as srv:
        conns: list[object] = [srv.client(name="api-pool") for _ in range(5)]
        conns += [srv.client() for _ in range(2)]
        for c in conns:
            c.ping()  # type: ignore[attr-defined]
        yield srv, conns


def test_date_lines_in_the_formats_shells_print() -> None:
    expected = datetime(2026, 11, 26, 9, 30, 0, tzinfo=UTC)
    for line in (
        "Thu Nov 26 09:30:00 UTC 2026",  # date
        "Thu, 26 Nov 2026 09:30:00 +0000",  # date -R
        "2026-11-26T09:30:00Z",  # date -u -Iseconds
        "2026-11-26T10:30:00+01:00",
        "2026-11-26 09:30:00",  # naive: read in UTC by default
        "1795685400",  # date +%s
        "1795685400000",  # ms
        "=== 2026-11-26T09:30:00Z ===",  # decorated separator
    ):
        assert parse_date_line(line) == expected, line
    for not_a_date in ("id=3 addr=127.0.0.1:5 fd=8", "# Clients", "connected_clients:5", ""):
        assert parse_date_line(not_a_date) is None


def test_an_ambiguous_zone_is_an_error_that_says_to_use_tz() -> None:
    with pytest.raises(TimestampError, match=r"dump.txt:3: time zone 'XYZT'.*--tz"):
        parse_date_line("Thu Nov 26 09:30:00 XYZT 2026", where="dump.txt:3")


def test_timestamps_in_file_names() -> None:
    expected = datetime(2026, 11, 26, 9, 30, 0, tzinfo=UTC)
    for name in (
        "clients-20261126-093000.txt",
        "clients-20261126T093000.txt",
        "client-list-2026-11-26T09:30:00Z.log",
        "cl_2026-11-26_09-30-00.txt",
        "dump-1795685400.txt",
        "dump.1795685400000.txt",
    ):
        assert timestamp_from_name(name) == expected, name
    assert timestamp_from_name("clients-0930.txt") is None


def test_a_loop_dump_splits_at_date_lines_and_keeps_stray_lines() -> None:
    dump = (
        b"Warning: Using a password with '-a' may not be safe.\n"
        b"Thu Nov 26 09:30:00 UTC 2026\n"
        b"id=3 addr=10.0.0.1:5000 fd=8 name=a\n"
        b"id=4 addr=10.0.0.1:5001 fd=9 name=a\n"
        b"\n"
        b"Thu Nov 26 09:30:05 UTC 2026\n"
        b"id=3 addr=10.0.0.1:5000 fd=8 name=a\n"
        b"# Clients\r\nconnected_clients:1\r\n"
    )
    first, second = split_dump(dump)
    assert first.ts == datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    assert first.client_list is not None and first.client_list.count(b"\n") == 3  # warning kept
    assert first.client_lines == (1, 3, 4)
    assert second.ts == datetime(2026, 11, 26, 9, 30, 5, tzinfo=UTC)
    assert second.info == b"# Clients\nconnected_clients:1\n"
    assert second.client_lines == (7,)
    assert second.info_lines == (8, 9)


def test_config_get_output_is_read_as_config() -> None:
    (seg,) = split_dump(b"maxclients\n10000\ntimeout\n0\n")
    assert seg.config == {"maxclients": "10000", "timeout": "0"}
    assert seg.client_list is None


@needs_cli
def test_import_real_dumps_with_timestamps_in_names(
    live: tuple[Server, list[object]], tmp_path: Path
) -> None:
    srv, _ = live
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    (dumps / "clients-20261126-093000.txt").write_bytes(cli(srv, "client", "list"))
    (dumps / "info-20261126-093000.txt").write_bytes(cli(srv, "info"))
    (dumps / "config-20261126-093000.txt").write_bytes(cli(srv, "config", "get", "maxclients"))
    result = import_dumps([dumps], tmp_path / "ds", instance="cache-1")
    assert result.captures_written == 1  # the three files are one capture
    assert {f.ts_source for f in result.files} == {"filename"}

    ds = open_dataset(tmp_path / "ds")
    caps = ds.captures.collect()
    assert caps.height == 1
    row = caps.row(0, named=True)
    assert row["instance"] == "cache-1"
    assert row["ts"] == datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    assert row["maxclients"] == 10000 and row["maxclients_source"] == "config"
    assert row["run_id"] == srv.admin().info("server")["run_id"]
    clients = ds.clients.collect()
    # 5 pool connections + 2 unnamed + redis-cli itself, as the server listed them
    assert clients.filter(pl.col("name") == "api-pool").height == 5
    assert clients.height == row["n_clients"] >= 8
    assert clients["run_id"].unique().to_list() == [row["run_id"]]


@needs_cli
def test_importing_the_same_files_twice_adds_nothing(
    live: tuple[Server, list[object]], tmp_path: Path
) -> None:
    srv, _ = live
    dump = tmp_path / "clients-1795685400.txt"
    dump.write_bytes(cli(srv, "client", "list"))
    first = import_dumps([dump], tmp_path / "ds")
    copy = tmp_path / "copy" / dump.name
    copy.parent.mkdir()
    shutil.copy(dump, copy)
    second = import_dumps([dump, copy], tmp_path / "ds")
    assert first.captures_written == 1
    assert second.captures_written == 0
    assert all(f.skipped for f in second.files)
    assert open_dataset(tmp_path / "ds").captures.collect().height == 1


@needs_cli
def test_a_shell_loop_output_becomes_one_capture_per_date_line(tmp_path: Path) -> None:
    with valkey_server() as srv:
        held = []
        chunks = []
        for i in range(3):
            held.append(srv.client(name="leaky"))
            held[-1].ping()
            chunks.append(
                f"{datetime(2026, 11, 26, 9, 30, i * 5, tzinfo=UTC):%a %b %d %H:%M:%S UTC %Y}\n".encode()
            )
            chunks.append(cli(srv, "client", "list"))
        dump = tmp_path / "loop.txt"
        dump.write_bytes(b"".join(chunks))
    result = import_dumps([dump], tmp_path / "ds", instance="r0")
    assert result.captures_written == 3
    assert result.files[0].ts_source == "date_line"
    counts = (
        open_dataset(tmp_path / "ds")
        .clients.filter(pl.col("name") == "leaky")
        .group_by("ts")
        .len()
        .sort("ts")
        .collect()
    )
    assert counts["len"].to_list() == [1, 2, 3]


def test_lines_that_are_not_client_lines_are_kept_with_file_line_numbers(tmp_path: Path) -> None:
    dump = tmp_path / "clients.txt"
    dump.write_bytes(
        b"W1126 09:30:00.000 warning: kubectl exec is deprecated\n"
        b"id=3 addr=10.0.0.1:5000 laddr=10.0.0.9:6379 fd=8 name=a age=5 idle=5 flags=N db=0\n"
        b"id=4 addr=10.0.0.1:5001 laddr=10.0.0.9:6379 fd=9 na"  # truncated last line
    )
    result = import_dumps([dump], tmp_path / "ds", at=datetime(2026, 11, 26, 9, 30))
    (report,) = result.files
    assert report.ts_source == "explicit"
    assert [line for line, _ in report.rejected_lines] == [1, 3]
    ds = open_dataset(tmp_path / "ds")
    assert ds.clients.collect().height == 1
    assert ds.rejects.collect()["line_no"].to_list() == [1, 3]


def test_mtime_is_the_last_resort_and_is_said(tmp_path: Path) -> None:
    dump = tmp_path / "clients.txt"
    dump.write_bytes(b"id=3 addr=10.0.0.1:5000 fd=8 name=a age=1 idle=1\n")
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    os.utime(dump, (stamp, stamp))
    (report,) = import_dumps([dump], tmp_path / "ds").files
    assert report.ts_source == "mtime"
    assert report.first_ts == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_at_refuses_a_file_with_several_captures(tmp_path: Path) -> None:
    dump = tmp_path / "loop.txt"
    dump.write_bytes(b"1795685400\nid=1 addr=a:1 fd=1\n1764149405\nid=1 addr=a:1 fd=1\n")
    with pytest.raises(TimestampError, match=r"loop.txt: holds 2 captures.*Drop --at"):
        import_dumps([dump], tmp_path / "ds", at=datetime(2026, 11, 26, tzinfo=UTC))


def test_missing_input_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope.txt: no such file or directory"):
        import_dumps([tmp_path / "nope.txt"], tmp_path / "ds")
    with pytest.raises(InputError, match=r"the pattern matched no file"):
        import_dumps([str(tmp_path / "*.dump")], tmp_path / "ds")


def test_unwritable_dataset_is_a_clear_error(tmp_path: Path) -> None:
    dump = tmp_path / "clients.txt"
    dump.write_bytes(b"id=3 addr=10.0.0.1:5000 fd=8\n")
    with pytest.raises(DatasetWriteError, match="not writable"):
        import_dumps([dump], "/proc/clientscope-ds")


def test_cli_import_json_and_error_message(tmp_path: Path) -> None:
    dump = tmp_path / "clients-20261126-093000.txt"
    dump.write_bytes(b"id=3 addr=10.0.0.1:5000 fd=8 name=a age=1 idle=1\n")
    ok = subprocess.run(
        [*CLI, "import", str(dump), "--out", str(tmp_path / "ds"), "--instance", "r0", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    payload = json.loads(ok.stdout)
    assert payload["captures_written"] == 1
    assert payload["files"][0]["ts_source"] == "filename"
    bad = subprocess.run(
        [*CLI, "import", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "ds")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "clientscope: error:" in bad.stderr and "missing.txt: no such file" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress),
                                                  (".xz", lzma.compress)])  # fmt: skip
def test_compressed_dumps_are_read_as_their_text(
    live: tuple[Server, list[object]], tmp_path: Path, suffix: str, compress: object
) -> None:
    srv, _ = live
    text = cli(srv, "client", "list")
    packed = tmp_path / f"clients-20261126-093000.txt{suffix}"
    packed.write_bytes(compress(text))  # type: ignore[operator]
    result = import_dumps([packed], tmp_path / "ds", instance="r0")
    assert result.captures_written == 1 and result.files[0].ts_source == "filename"
    ds = open_dataset(tmp_path / "ds")
    clients = ds.clients.collect()
    assert clients.height == text.count(b"\n") and clients["name"].to_list().count("api-pool") == 5
    assert ds.rejects.collect().is_empty()
    assert ds.raw.collect()["client_list"][0] == text  # the raw layer keeps the text, not the archive
    plain = tmp_path / "clients-20261126-093000.txt"  # the same dump, not compressed: a duplicate
    plain.write_bytes(text)
    assert import_dumps([plain], tmp_path / "ds", instance="r0").captures_written == 0


def test_a_truncated_archive_is_an_error_that_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "clients.txt.gz"
    broken.write_bytes(gzip.compress(b"id=3 addr=10.0.0.1:5000 fd=8 name=x\n" * 50)[:40])
    with pytest.raises(InputError, match=r"clients\.txt\.gz: starts like gzip data but does not decompress"):
        import_dumps([broken], tmp_path / "ds")


@needs_cli
def test_a_dump_piped_to_standard_input(live: tuple[Server, list[object]], tmp_path: Path) -> None:
    srv, _ = live
    assert REDIS_CLI is not None
    pipe = (f"{REDIS_CLI} -h 127.0.0.1 -p {srv.port} client list | {' '.join(CLI)} import - "
            f"-o {tmp_path / 'ds'} --instance r0 --json")  # fmt: skip
    done = subprocess.run(pipe, shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["captures_written"] == 1
    assert result["files"][0]["path"] == "<stdin>" and result["files"][0]["ts_source"] == "read"
    names = open_dataset(tmp_path / "ds").clients.collect()["name"].to_list()
    assert names.count("api-pool") == 5
    empty = subprocess.run([*CLI, "import", "-", "-o", str(tmp_path / "ds")], input="",
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert empty.returncode == 1 and "standard input was empty" in empty.stderr


def _dump(n: int, *, bad_line: bool = False) -> bytes:
    lines = [f"id={i} addr=10.0.0.{n}:{5000 + i} fd={i} name=app-{n} age=9 idle=1" for i in range(3)]
    if bad_line:
        lines.insert(1, "W1126 09:30:00.000 warning: kubectl exec is deprecated")
    return ("\n".join(lines) + "\n").encode()


def test_copies_given_in_one_run_are_imported_once(tmp_path: Path) -> None:
    dump = tmp_path / "clients-20261126-093000.txt"
    dump.write_bytes(_dump(1))
    copy = tmp_path / "copy" / dump.name
    copy.parent.mkdir()
    copy.write_bytes(_dump(1))
    result = import_dumps([dump, copy], tmp_path / "ds", instance="r0")
    assert result.captures_written == 1
    assert [(f.captures, f.skipped) for f in result.files] == [(1, False), (0, True)]
    assert open_dataset(tmp_path / "ds").captures.collect()["capture_id"].n_unique() == 1


def test_a_large_import_is_written_in_batches_and_keeps_every_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clientscope.ingest as ingest

    monkeypatch.setattr(ingest, "IMPORT_BATCH_BYTES", 1)  # one capture per batch
    paths = []
    for n in range(1, 4):
        paths.append(tmp_path / f"clients-20261126-09300{n}.txt")
        paths[-1].write_bytes(_dump(n, bad_line=n == 3))
    progress: list[tuple[int, int]] = []
    result = import_dumps(paths, tmp_path / "ds", instance="r0", written=lambda *a: progress.append(a))
    assert result.captures_written == 3 and len(set(result.batches)) == 3
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert result.batch == result.batches[0]
    assert [f.rejected_lines for f in result.files][2] == (
        (2, "not a CLIENT LIST line: expected space-separated key=value fields"),
    )
    clients = open_dataset(tmp_path / "ds").clients.collect()
    assert sorted(clients["name"].unique()) == ["app-1", "app-2", "app-3"] and clients.height == 9


def test_a_file_that_changes_during_the_import_is_an_error(tmp_path: Path) -> None:
    first, second = tmp_path / "a-20261126-093000.txt", tmp_path / "b-20261126-093005.txt"
    first.write_bytes(_dump(1))
    second.write_bytes(_dump(2))

    def planned(path: Path) -> None:
        if path == second.resolve():  # both planned: change the first before it is written
            first.write_bytes(_dump(7))

    with pytest.raises(InputError, match=r"a-20261126-093000\.txt: changed while it was being imported"):
        import_dumps([first, second], tmp_path / "ds", progress=planned)


def test_a_dump_with_nothing_readable_is_a_gap_not_zero_clients(tmp_path: Path) -> None:
    loop = tmp_path / "loop.txt"  # the loop ran; redis-cli could not connect that time
    loop.write_bytes(b"Thu Nov 26 09:30:00 UTC 2026\n"
                     b"Could not connect to Redis at 10.0.0.1:6379: Connection refused\n")  # fmt: skip
    result = import_dumps([loop], tmp_path / "ds", instance="r0")
    assert result.captures_written == 1 and result.files[0].rejected_lines == (
        (2, "not a CLIENT LIST line: expected space-separated key=value fields"),
    )
    ds = open_dataset(tmp_path / "ds")
    capture = ds.captures.collect().row(0, named=True)
    assert capture["ok"] is False and capture["error_kind"] == "unreadable"  # analyses skip it
    assert capture["ts"] == datetime(2026, 11, 26, 9, 30, tzinfo=UTC)  # the loop's time, not mtime
    assert ds.rejects.collect()["raw_line"].to_list() == [  # kept, not dropped
        "Could not connect to Redis at 10.0.0.1:6379: Connection refused"
    ]


def test_a_file_that_is_not_a_dump_is_skipped_and_listed(tmp_path: Path) -> None:
    junk = tmp_path / "garbage-20261126-093000.gz"  # not gzip at all, whatever its name says
    junk.write_bytes(b"this is not a dump\n")
    result = import_dumps([junk], tmp_path / "ds", instance="r0")
    assert result.captures_written == 0 and result.files == ()
    assert result.not_dumps == (junk.resolve(),)
    assert result.to_dict()["not_dumps"] == [str(junk.resolve())]


def test_an_info_dump_with_a_kubectl_line_still_pairs_and_junk_files_stay_apart(
    live: tuple[Server, list[object]], tmp_path: Path
) -> None:
    srv, _ = live
    folder = tmp_path / "dumps"
    folder.mkdir()
    (folder / "clients-20261126-093000.txt").write_bytes(cli(srv, "client", "list"))
    kubectl = b'Defaulted container "redis" out of: redis, metrics (init)\n'
    (folder / "info-20261126-093001.txt").write_bytes(kubectl + cli(srv, "info"))
    (folder / "notes-20261126-093000.json").write_bytes(b'{"ticket": "INC-1"}\n')
    result = import_dumps([folder], tmp_path / "ds", instance="r0")
    ds = open_dataset(tmp_path / "ds")
    caps = ds.captures.collect()
    assert caps["ok"].to_list() == [True]  # the dump (client list + its INFO); no junk capture
    assert caps["maxclients"][0] is not None and caps["n_clients"][0] > 0  # INFO went to it
    assert [p.name for p in result.not_dumps] == ["notes-20261126-093000.json"]  # listed
    rejects = ds.rejects.collect()
    assert ('Defaulted container "redis" out of: redis, metrics (init)', "info") in rejects.select(
        "raw_line", "table"
    ).rows()
    assert result.captures_written == 1


def test_a_loop_dump_that_spans_batches_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clientscope.ingest as ingest

    monkeypatch.setattr(ingest, "IMPORT_BATCH_BYTES", 1)  # one capture per batch
    loop = tmp_path / "loop.txt"
    loop.write_bytes(b"".join(
        f"{datetime(2026, 11, 26, 9, 30, i * 5, tzinfo=UTC):%a %b %d %H:%M:%S UTC %Y}\n".encode() + _dump(i)
        for i in range(1, 4)
    ))  # fmt: skip
    reads: list[Path] = []
    real = ingest._segments
    monkeypatch.setattr(ingest, "_segments", lambda path, tz: reads.append(path) or real(path, tz))
    result = import_dumps([loop], tmp_path / "ds", instance="r0")
    assert result.captures_written == 3 and len(result.batches) == 3
    assert len(reads) == 1  # read once for its three batches (was 1 + 3, then 2)
