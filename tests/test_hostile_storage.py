"""Hostile storage (issue 13): readers while compact and writers commit, two writers at once,
a writer killed between its commits, a full or read-only disk, corrupt data files, a parser
that fails, and instance names that look like paths, numbers or Hive's null.

The disk tests mount a small tmpfs, so they need root (as in the test container); elsewhere
they are skipped and say why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable

import clientscope.dataset as dataset
import clientscope.parse
from clientscope.capture import compact
from clientscope.dataset import (
    Dataset,
    DatasetWarning,
    append_raw,
    commit_raw,
    mend,
    open_dataset,
    reparse,
)
from clientscope.errors import DatasetError, DatasetWriteError
from clientscope.ingest import import_dumps
from conftest import FIXTURES
from test_dataset import T0, raw_rows

TABLES = ("raw", "captures", "clients", "info", "info_fields", "rejects")
CLI = [sys.executable, "-m", "clientscope.cli"]
DUMPS = sorted((FIXTURES / "dumps").glob("*.txt"))
NOT_PARSED_YET = r"1 capture\(s\) are in `raw` but not parsed yet"


def as_if_its_writer_stopped_long_ago(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read raw's last commit as older than a live writer takes to parse it (2 minutes): its
    captures that have no parsed rows are then a stopped writer's, and reads warn."""
    monkeypatch.setattr(dataset, "IN_FLIGHT", timedelta(0))


# ------------------------------------------------------------------ helpers
ORDER = {
    "clients": ["capture_id", "line_no"],
    "rejects": ["capture_id", "table", "line_no"],
    "info_fields": ["capture_id", "section", "key"],
}


def rows_of(ds: Dataset) -> dict[str, pl.DataFrame]:
    """Every table's rows, in one order."""
    return {t: ds.scan(t).collect().sort(ORDER.get(t, ["capture_id"])) for t in TABLES}  # type: ignore[arg-type]


def snapshot(root: Path) -> dict[str, pl.DataFrame]:
    return rows_of(open_dataset(root))


def assert_same_rows(after: dict[str, pl.DataFrame], before: dict[str, pl.DataFrame]) -> None:
    for table in TABLES:
        assert after[table].height == before[table].height, table
        assert after[table].equals(before[table]), table


def listing(root: Path) -> dict[str, int]:
    """Every file and folder under `root`, with its modification time."""
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def data_file(root: Path, table: str) -> Path:
    """The newest committed data file of a table."""
    return max((Path(f) for f in DeltaTable(str(root / table)).file_uris()), key=os.path.getmtime)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up, and can be remounted read-only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the test container runs as root)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Take the tmpfs at `disk` down to `leave` free bytes."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        os.posix_fallocate(fd, 0, free - leave)
    finally:
        os.close(fd)
    stat = os.statvfs(disk)
    assert stat.f_bavail * stat.f_frsize <= leave


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


def big_rows(n: int, start: timedelta = timedelta(0)) -> pl.DataFrame:
    """Captures of 300 clients each, so that a few of them fill a small disk."""
    lines = b"".join(
        f"id={i} addr=10.0.{i // 250}.{i % 250}:{5000 + i} fd={i} name=pool-{i % 7} age={i} "
        f"idle={i * 3} flags=N db=0 cmd=get\n".encode()
        for i in range(300)
    )
    rows = raw_rows(n, instance="cache-1", start=T0 + start)
    return rows.with_columns(pl.lit(lines, dtype=pl.Binary).alias("client_list"))


# ------------------------------------------------------------------ readers, compact and writers
def test_readers_see_only_committed_counts_while_compact_and_a_writer_run(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    append_raw(root, raw_rows(2, instance="cache-a"))
    appends, per_append = 3, 3  # each append: 3 captures of 2 clients
    committed = {2 + per_append * i for i in range(appends + 1)}
    stop = threading.Event()
    compacted = threading.Semaphore(0)
    seen: list[tuple[int, int, int, int]] = []
    failures: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                ds = open_dataset(root)
                raw, captures, clients = (
                    ds.scan(t).select(pl.len()).collect().item()
                    for t in ("raw", "captures", "clients")
                )
                seen.append((raw, captures, clients, ds.unparsed))
            except Exception as exc:
                failures.append(exc)

    def compact_again_and_again() -> None:
        while not stop.is_set():
            try:
                compact(root)
            except Exception as exc:
                failures.append(exc)
            compacted.release()

    threads = [threading.Thread(target=read) for _ in range(2)]
    threads.append(threading.Thread(target=compact_again_and_again))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        for thread in threads:
            thread.start()
        try:
            for i in range(appends):
                start = T0 + timedelta(minutes=i)
                append_raw(root, raw_rows(per_append, instance="cache-b", start=start))
                while compacted.acquire(blocking=False):
                    pass
                assert compacted.acquire(timeout=60)  # a compaction ended after this append
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
    assert not failures, failures
    assert len(seen) > appends
    torn = [
        (raw, captures, clients, unparsed)
        for raw, captures, clients, unparsed in seen
        if not {raw, captures} <= committed  # a count nobody committed
        or captures > raw
        or (clients, raw - captures) != (2 * captures, unparsed)
    ]
    assert not torn, f"reads of (raw, captures, clients, unparsed) never committed: {torn}"
    final = open_dataset(root)
    assert final.captures.collect()["capture_id"].n_unique() == final.captures.collect().height
    assert final.captures.collect().height == max(committed)
    # no other warning than captures not parsed yet (a reader between a writer's two commits)
    assert all(isinstance(w.message, DatasetWarning) for w in said), [str(w.message) for w in said]
    assert all("not parsed yet" in str(w.message) for w in said)


def test_mend_while_an_import_commits_parses_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`compact` and `import` mend first: the captures another import has committed raw but
    not parsed yet (it holds the write lock) must not be parsed a second time."""
    root = tmp_path / "ds"
    append_raw(root, raw_rows(1))
    raw_committed, mend_asked_for_the_lock = threading.Event(), threading.Event()
    real_parse, real_lock = clientscope.parse.parse_raw, dataset.write_lock
    errors: list[BaseException] = []

    def parse_after_mend_looked(raw: pl.DataFrame) -> dict[str, pl.DataFrame]:
        if threading.current_thread() is writer:
            raw_committed.set()
            mend_asked_for_the_lock.wait(60)
        return real_parse(raw)

    def lock(root: Path) -> Any:
        if threading.current_thread() is threading.main_thread():
            mend_asked_for_the_lock.set()
        return real_lock(root)

    def write() -> None:
        try:
            append_raw(root, raw_rows(3, start=T0 + timedelta(hours=1)))
        except BaseException as exc:
            errors.append(exc)

    monkeypatch.setattr(clientscope.parse, "parse_raw", parse_after_mend_looked)
    monkeypatch.setattr(dataset, "write_lock", lock)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert raw_committed.wait(60)
        assert open_dataset(root).unparsed == 3  # what mend sees now (in flight: no warning)
        mended = mend(root)
    finally:
        mend_asked_for_the_lock.set()
        writer.join(60)
    assert not errors, errors
    ids = open_dataset(root).captures.collect()["capture_id"]
    assert ids.len() == ids.n_unique() == 4, ids.to_list()
    assert mended == 0


# ------------------------------------------------------------------ a writer killed between commits
def test_captures_committed_raw_only_are_counted_then_parsed_by_mend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    append_raw(root, raw_rows(2))
    commit_raw(root, raw_rows(1, start=T0 + timedelta(hours=1)))  # the collector's first commit
    ds = open_dataset(root)  # just committed: its collector may be parsing it, no warning
    assert (ds.unparsed, ds.raw.collect().height, ds.captures.collect().height) == (1, 3, 2)
    as_if_its_writer_stopped_long_ago(monkeypatch)
    with pytest.warns(DatasetWarning, match=NOT_PARSED_YET + ".*The next command that writes"):
        ds = open_dataset(root)
    assert ds.unparsed == 1
    assert (ds.raw.collect().height, ds.captures.collect().height) == (3, 2)
    assert mend(root) == 1
    ds = open_dataset(root)  # no warning (warnings are errors here)
    assert (ds.unparsed, ds.captures.collect().height, ds.clients.collect().height) == (0, 3, 6)
    assert mend(root) == 0


def test_a_read_only_dataset_reads_without_writing_and_says_what_is_unparsed(
    tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_disk / "ds"
    append_raw(root, raw_rows(2))
    commit_raw(root, raw_rows(1, start=T0 + timedelta(hours=1)))
    as_if_its_writer_stopped_long_ago(monkeypatch)
    remount(tiny_disk, "ro")
    files = listing(root)
    with pytest.warns(DatasetWarning, match=NOT_PARSED_YET):
        ds = open_dataset(root)
    assert ds.unparsed == 1
    assert (ds.raw.collect().height, ds.clients.collect().height) == (3, 4)
    assert listing(root) == files
    with pytest.raises(DatasetWriteError, match=r"cannot lock \S+/\.collect\.lock: Read-only file"):
        mend(root)
    remount(tiny_disk, "rw")
    assert mend(root) == 1
    assert open_dataset(root).clients.collect().height == 6


# ------------------------------------------------------------------ a full disk
def test_a_full_disk_is_a_clear_error_that_changes_nothing(tiny_disk: Path) -> None:
    root = tiny_disk / "ds"
    append_raw(root, raw_rows(1))
    before, versions = snapshot(root), open_dataset(root).versions
    fill(tiny_disk)
    with pytest.raises(
        DatasetWriteError,
        match=rf"could not commit to {re.escape(str(root))}/raw: .*No space left on device.*"
        r"Nothing already in the dataset was changed .*free disk space",
    ):
        append_raw(root, big_rows(1, timedelta(minutes=5)))
    assert open_dataset(root).versions == versions
    assert_same_rows(snapshot(root), before)


def test_compact_on_a_full_disk_is_a_clear_error_and_changes_no_row(tiny_disk: Path) -> None:
    root = tiny_disk / "ds"
    for i in range(4):
        append_raw(root, big_rows(1, timedelta(minutes=i)))
    before = snapshot(root)
    fill(tiny_disk, leave=8192)  # room for a commit, not for a merged file
    with pytest.raises(
        DatasetWriteError,
        match=rf"could not compact {re.escape(str(root))}/\w+: .*No space left on device",
    ):
        compact(root)
    assert_same_rows(snapshot(root), before)


# ------------------------------------------------------------------ two imports at once
def test_two_imports_of_the_same_dumps_at_once_write_each_capture_once(tmp_path: Path) -> None:
    alone = import_dumps(DUMPS, tmp_path / "alone", instance="cache-1").captures_written
    out = tmp_path / "ds"
    both_planned = threading.Barrier(2, timeout=120)  # both checked the dataset, none wrote yet
    errors: list[BaseException] = []

    def planned(path: Path) -> None:
        if path.name == DUMPS[-1].name:
            both_planned.wait()

    def run() -> None:
        try:
            import_dumps(DUMPS, out, instance="cache-1", progress=planned)
        except BaseException as exc:
            errors.append(exc)

    imports = [threading.Thread(target=run) for _ in range(2)]
    for thread in imports:
        thread.start()
    for thread in imports:
        thread.join(120)
    assert not errors, errors
    ds = open_dataset(out)
    raw = ds.raw.collect()
    assert raw.height == raw["capture_id"].n_unique() == alone
    assert ds.captures.collect().height == alone


def test_two_import_commands_at_once_write_each_capture_once(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    command = [*CLI, "import", *map(str, DUMPS), "--out", str(out), "--instance", "cache-1"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    alone = import_dumps(DUMPS, tmp_path / "alone", instance="cache-1").captures_written
    ds = open_dataset(out)
    captures, raw = ds.captures.collect(), ds.raw.collect()
    assert captures.height == captures["capture_id"].n_unique() == alone
    assert raw.height == raw["capture_id"].n_unique() == alone


def test_a_capture_already_in_the_dataset_is_skipped_and_counted(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(3))
    later = raw_rows(1, start=T0 + timedelta(hours=1))
    again = append_raw(tmp_path, pl.concat([raw_rows(3), later]))
    assert (again.captures, again.skipped) == (1, 3)
    same_text = later.with_columns(pl.lit("another-id").alias("capture_id"))  # same content hash
    assert append_raw(tmp_path, same_text).skipped == 1
    ds = open_dataset(tmp_path)
    assert ds.captures.collect().height == ds.raw.collect().height == 4


# ------------------------------------------------------------------ corrupt data files
CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "not parquet": lambda data: b"id=3 addr=10.0.0.1:5000 fd=8 name=api\n",
}


def _corrupt(root: Path, table: str, kind: str) -> Path:
    bad = data_file(root, table)
    bad.write_bytes(CORRUPTIONS[kind](bad.read_bytes()))
    return bad


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_corrupt_parsed_file_is_an_error_that_names_it(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "ds"
    append_raw(root, raw_rows(2))
    append_raw(root, raw_rows(1, start=T0 + timedelta(hours=1)))
    bad = _corrupt(root, "clients", kind)
    ds = open_dataset(root)  # the log is whole: the dataset opens
    assert ds.captures.collect().height == 3  # and the other tables read
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        ds.clients.collect()


def test_a_corrupt_parsed_file_is_mended_by_reparse(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    append_raw(root, raw_rows(2))
    append_raw(root, raw_rows(1, start=T0 + timedelta(hours=1)))
    before = snapshot(root)
    _corrupt(root, "clients", "truncated")
    with pytest.raises((DatasetError, pl.exceptions.ComputeError)):  # unreadable (see above)
        open_dataset(root).clients.collect()
    reparse(root)  # the parsed tables are made again from raw
    assert_same_rows(snapshot(root), before)


def test_a_corrupt_raw_file_is_named_and_the_parsed_tables_still_read(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    append_raw(root, raw_rows(2))
    append_raw(root, raw_rows(1, start=T0 + timedelta(hours=1)))
    bad = _corrupt(root, "raw", "truncated")
    with pytest.warns(DatasetWarning, match=re.escape(str(bad)) + ".*raw bytes.*are lost"):
        ds = open_dataset(root)  # opens: the parsed tables are intact and read
    assert ds.captures.collect().height == 3 and ds.clients.collect().height == 6
    with pytest.raises(DatasetError, match=re.escape(str(bad))):
        ds.raw.collect()


# ------------------------------------------------------------------ instance names
NAMES = [
    "redis-b:6379",
    "ü-cache",
    "../x",
    "a/b",
    "..",
    "__HIVE_DEFAULT_PARTITION__",
    "123",
    "with space",
    "%2F%2e%2e",
    "x=y",
]


@pytest.mark.parametrize("name", NAMES)
def test_an_instance_name_round_trips_and_stays_inside_the_dataset(
    tmp_path: Path, name: str
) -> None:
    root = tmp_path / "ds"
    append_raw(root, raw_rows(2, instance=name))
    commit_raw(root, raw_rows(1, instance=name, start=T0 + timedelta(hours=1)))
    assert mend(root) == 1  # parsed from raw: the name raw's log gives back is the same
    assert all(p.is_relative_to(root) for p in tmp_path.rglob("*") if p != root)
    for table in TABLES:
        for file in DeltaTable(str(root / table)).file_uris():
            assert Path(file).resolve().is_relative_to((root / table).resolve()), file

    ds = open_dataset(root)
    assert ds.instances() == [name]
    for table in TABLES:
        assert set(ds.scan(table).collect()["instance"]) <= {name}, table  # type: ignore[arg-type]
    assert set(ds.clients.collect()["instance"]) == {name}

    arrow = DeltaTable(str(root / "clients")).to_pyarrow_dataset()
    assert set(arrow.to_table(columns=["instance"])["instance"].to_pylist()) == {name}
    assert duckdb.connect().from_arrow(arrow).select("instance").distinct().fetchall() == [(name,)]

    polars_own = pl.scan_delta(str(root / "clients")).select("instance").unique().collect()
    assert polars_own.schema["instance"] == pl.String
    # Polars' own reader decodes the folder names as Hive does: that name is Hive's null
    # (dataset._scan takes the values from the log instead)
    hive_null = name == "__HIVE_DEFAULT_PARTITION__"
    assert polars_own["instance"].to_list() == [None if hive_null else name]


def test_an_empty_instance_name_is_refused(tmp_path: Path) -> None:
    """Delta stores an empty partition value as null: it could not be read back."""
    with pytest.raises(DatasetError, match="instance"):
        append_raw(tmp_path / "ds", raw_rows(1, instance=""))


# ------------------------------------------------------------------ a parser that fails
def test_captures_the_parser_fails_on_are_kept_and_parsed_by_a_later_mend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ds"
    append_raw(root, raw_rows(2))
    commit_raw(root, raw_rows(1, start=T0 + timedelta(hours=1)))
    as_if_its_writer_stopped_long_ago(monkeypatch)

    def broken(raw: pl.DataFrame) -> dict[str, pl.DataFrame]:
        raise ValueError("a parser bug")

    with monkeypatch.context() as patched:
        patched.setattr(clientscope.parse, "parse_raw", broken)
        with pytest.warns(
            DatasetWarning,
            match=r"1 captures in raw could not be parsed \(ValueError: a parser bug\); their raw "
            r"rows are kept\. Run `clientscope reparse`",
        ):
            assert mend(root) == 0
        with pytest.warns(DatasetWarning, match=NOT_PARSED_YET):
            ds = open_dataset(root)  # the dataset still opens, and counts them
        assert (ds.unparsed, ds.raw.collect().height, ds.captures.collect().height) == (1, 3, 2)
    assert mend(root) == 1  # the parser works again
    ds = open_dataset(root)
    assert (ds.unparsed, ds.captures.collect().height, ds.clients.collect().height) == (0, 3, 6)
