"""Hostile storage (issue 13): readers during compaction, two imports at once, a full or
read-only disk, corrupt Parquet files, and instance names that look like paths or Hive's null.

The disk tests mount a small tmpfs, so they need root (as in the test container); elsewhere
they are skipped and say why.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

import clientscope.capture.compaction as compaction
import clientscope.dataset as dataset
from clientscope.capture import CompactResult, compact
from clientscope.dataset import append_raw, known_content_hashes, open_dataset, repair
from clientscope.errors import DatasetError, DatasetWriteError
from clientscope.ingest import import_dumps
from conftest import FIXTURES
from test_dataset import T0, raw_rows

TABLES = ("raw", "captures", "clients", "info", "info_fields", "rejects")
CLI = [sys.executable, "-m", "clientscope.cli"]
DUMPS = sorted((FIXTURES / "dumps").glob("*.txt"))


class Crash(BaseException):
    """Stands for the process dying at this point."""


# ------------------------------------------------------------------ helpers
def batches(root: Path, n: int = 4, instances: tuple[str, ...] = ("cache-a", "cache-b")) -> Path:
    """A dataset of `n` one-capture batches per instance, as a collector leaves it."""
    for i in range(n):
        for instance in instances:
            append_raw(root, raw_rows(1, instance=instance, start=T0 + timedelta(minutes=i)))
    return root


def snapshot(root: Path) -> dict[str, pl.DataFrame]:
    ds = open_dataset(root, repair_missing=False)
    order = {"clients": ["capture_id", "line_no"], "rejects": ["capture_id", "line_no"]}
    return {t: ds.scan(t).collect().sort(order.get(t, ["capture_id"])) for t in TABLES}  # type: ignore[arg-type]


def assert_same_rows(root: Path, before: dict[str, pl.DataFrame]) -> None:
    after = snapshot(root)
    for table in TABLES:
        assert after[table].equals(before[table]), table


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@contextlib.contextmanager
def compaction_paused_before_commit(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], CompactResult]]:
    """`compact(root)` in a thread, stopped once its first partition's merged files are written
    and before its journal says `committing`. The block gets a function that lets it go on and
    returns its result (or raises its error)."""
    reached, go = threading.Event(), threading.Event()
    real = compaction._write_journal
    outcome: dict[str, object] = {}

    def pausing(journal: Path, entry: dict[str, object]) -> None:
        if entry["state"] == "committing" and not reached.is_set():
            reached.set()
            go.wait(120)
        real(journal, entry)

    def run() -> None:
        try:
            outcome["result"] = compact(root)
        except Exception as exc:
            outcome["error"] = exc

    def resume() -> CompactResult:
        go.set()
        thread.join(120)
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        assert isinstance(outcome.get("result"), CompactResult)
        return outcome["result"]  # type: ignore[return-value]

    monkeypatch.setattr(compaction, "_write_journal", pausing)
    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert reached.wait(120), "compaction never reached its commit"
        yield resume
    finally:
        go.set()
        thread.join(120)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up."""
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


def read_only(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)


def big_rows(n: int, start: timedelta = timedelta(0)) -> pl.DataFrame:
    """Captures of 300 clients each, so that a few of them fill a small disk."""
    lines = b"".join(
        f"id={i} addr=10.0.{i // 250}.{i % 250}:{5000 + i} fd={i} name=pool-{i % 7} age={i} "
        f"idle={i * 3} flags=N db=0 cmd=get\n".encode()
        for i in range(300)
    )
    rows = raw_rows(n, instance="cache-1", start=T0 + start)
    return rows.with_columns(pl.lit(lines, dtype=pl.Binary).alias("client_list"))


# ------------------------------------------------------------------ readers and compaction
READER = """
import sys
from clientscope.dataset import open_dataset
ds = open_dataset(sys.argv[1])
print(*(ds.scan(t).collect().height for t in ("raw", "captures", "clients")))
"""


def test_a_reader_during_compaction_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = batches(tmp_path / "ds")
    before = snapshot(root)
    with compaction_paused_before_commit(root, monkeypatch) as resume:
        files = all_files(root)  # the sources, the merged files and the journal, mid-compaction
        reader = subprocess.run(  # another process, as `clientscope summary` would be
            [sys.executable, "-c", READER, str(root)], capture_output=True, text=True, timeout=120
        )
        assert reader.returncode == 0, reader.stderr
        assert reader.stdout.split() == ["8", "8", "16"]  # raw, captures, clients: each once
        assert all_files(root) == files  # the reader removed nothing
        result = resume()
    assert (result.partitions, result.batches_merged) == (2, 8)
    assert_same_rows(root, before)


@pytest.mark.parametrize("damage", ["missing", "short"])
def test_a_commit_removes_no_source_until_every_merged_file_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    root = batches(tmp_path / "ds")
    before = snapshot(root)
    with compaction_paused_before_commit(root, monkeypatch) as resume:
        (merged,) = root.glob("clients/instance=cache-a/date=*/.tmp-*-compact.parquet")
        if damage == "missing":
            merged.unlink()
            said = "is missing"
        else:
            pl.read_parquet(merged).head(1).write_parquet(merged)
            said = "has 1 rows, its sources 8"
        with pytest.raises(
            DatasetError,
            match=rf"clients/instance=cache-a/date=2026-11-26/\S+-compact\.parquet {said}, so the "
            r"merge of instance=cache-a/date=2026-11-26 was undone and its 4 source batches kept",
        ):
            resume()
    assert_same_rows(root, before)
    assert not list(root.rglob(".tmp-*")) and not list((root / ".compact").glob("*.json"))
    assert compact(root).batches_merged == 8  # the next run does it
    assert_same_rows(root, before)


def test_a_crashed_commit_whose_merged_file_is_gone_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = batches(tmp_path / "ds")
    before = snapshot(root)

    def dying(root: Path, entry: object) -> None:
        raise Crash("killed right after the journal said `committing`")

    with monkeypatch.context() as patched:
        patched.setattr(compaction, "_commit", dying)
        with pytest.raises(Crash):
            compact(root)
    (merged,) = root.glob("clients/instance=cache-a/date=*/.tmp-*-compact.parquet")
    merged.unlink()
    assert compact(root).recovered == 1
    assert_same_rows(root, before)


def test_compaction_succeeds_while_readers_run(tmp_path: Path) -> None:
    root = batches(tmp_path / "ds", n=6)
    before = snapshot(root)
    stop, reading = threading.Event(), threading.Event()
    seen: list[int] = []
    failures: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(open_dataset(root).raw.collect().height)
            except Exception as exc:
                failures.append(exc)
            reading.set()

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        assert reading.wait(60)
        result = compact(root)
        reads_during = len(seen)
    finally:
        stop.set()
        for reader in readers:
            reader.join(60)
    assert (result.partitions, result.batches_merged) == (2, 12)
    assert_same_rows(root, before)
    assert reads_during > 0 and set(seen) == {12}, seen  # each capture once, in every read
    assert not failures, failures


def test_a_read_only_dataset_after_a_crashed_compaction_reads_each_row_once(
    tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = batches(tiny_disk / "ds")
    before = snapshot(root)
    real_unlink = Path.unlink
    calls = {"n": 0}

    def dying_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".parquet":
            calls["n"] += 1
            if calls["n"] == 3:
                raise Crash("killed while removing merged sources")
        real_unlink(self, missing_ok=missing_ok)

    with monkeypatch.context() as patched:
        patched.setattr(Path, "unlink", dying_unlink)
        with pytest.raises(Crash):
            compact(root)
    read_only(tiny_disk)
    files = all_files(root)
    assert_same_rows(root, before)  # sources and merged files are both there: each row once
    assert all_files(root) == files


# ------------------------------------------------------------------ reads never need writes
def _unparse(root: Path, batch: str) -> Path:
    """Remove a batch's parsed tables, as if its writer was killed after writing raw."""
    for table in TABLES[1:]:
        for f in (root / table).rglob(f"{batch}.parquet"):
            f.unlink()
    (raw,) = (root / "raw").rglob(f"{batch}.parquet")
    return raw


def test_a_full_disk_still_reads_an_unparsed_batch_and_says_so(tiny_disk: Path) -> None:
    root = tiny_disk / "ds"
    append_raw(root, raw_rows(2))
    unparsed = _unparse(root, append_raw(root, raw_rows(1, start=T0 + timedelta(hours=1))).batch)
    fill(tiny_disk)
    with pytest.warns(
        dataset.DatasetWarning, match=r"1 raw batch file\(s\) have no parsed tables yet"
    ):
        ds = open_dataset(root)
    assert ds.unparsed == (unparsed,)
    assert (ds.raw.collect().height, ds.captures.collect().height) == (3, 2)
    assert not list(root.rglob(".tmp-*"))
    (tiny_disk / "filler").unlink()
    ds = open_dataset(root)  # with room, opening parses it
    assert ds.unparsed == () and ds.clients.collect().height == 6


def test_a_read_only_dataset_reads_and_says_what_is_unparsed(tiny_disk: Path) -> None:
    root = tiny_disk / "ds"
    append_raw(root, raw_rows(2))
    unparsed = _unparse(root, append_raw(root, raw_rows(1, start=T0 + timedelta(hours=1))).batch)
    read_only(tiny_disk)
    with pytest.warns(dataset.DatasetWarning, match=r"opened where it can be written"):
        ds = open_dataset(root)
    assert ds.unparsed == (unparsed,)
    assert ds.clients.collect().height == 4


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
    raw = open_dataset(out).raw.collect()
    assert raw.height == raw["capture_id"].n_unique() == alone
    assert open_dataset(out).captures.collect().height == alone


def test_two_import_commands_at_once_write_each_capture_once(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    command = [*CLI, "import", *map(str, DUMPS), "--out", str(out), "--instance", "cache-1"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    alone = import_dumps(DUMPS, tmp_path / "alone", instance="cache-1").captures_written
    captures = open_dataset(out).captures.collect()
    assert captures.height == captures["capture_id"].n_unique() == alone


def test_a_capture_already_in_the_dataset_is_skipped_and_counted(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(3))
    later = raw_rows(1, start=T0 + timedelta(hours=1))
    again = append_raw(tmp_path, pl.concat([raw_rows(3), later]))
    assert (again.captures, again.skipped) == (1, 3)
    same_text = later.with_columns(pl.lit("another-id").alias("capture_id"))  # same content hash
    assert append_raw(tmp_path, same_text).skipped == 1
    assert open_dataset(tmp_path).captures.collect().height == 4


# ------------------------------------------------------------------ a full disk
def test_a_full_disk_is_a_clear_error_that_leaves_no_temp_file(tiny_disk: Path) -> None:
    root = tiny_disk / "ds"
    append_raw(root, raw_rows(1))
    fill(tiny_disk)
    files = all_files(root)
    with pytest.raises(
        DatasetWriteError,
        match=r"could not write \S+/raw/instance=cache-1/date=2026-11-26/\S+\.parquet: "
        r"No space left on device.*free disk space",
    ):
        append_raw(root, big_rows(1, timedelta(minutes=5)))
    assert all_files(root) == files
    assert open_dataset(root).captures.collect().height == 1


def test_compact_on_a_full_disk_is_a_clear_error_and_changes_nothing(tiny_disk: Path) -> None:
    root = tiny_disk / "ds"
    for i in range(4):
        append_raw(root, big_rows(1, timedelta(minutes=i)))
    before = snapshot(root)
    fill(tiny_disk, leave=8192)  # room for the journal, not for a merged file
    with pytest.raises(
        DatasetWriteError,
        match=r"compact: could not write \S+/raw/instance=cache-1/date=2026-11-26/\.tmp-\S+: .*"
        r"(No space left on device|\d+ bytes free on that disk).*free disk space and run "
        r"`clientscope compact` again",
    ):
        compact(root)
    assert not list(root.rglob(".tmp-*")) and not list((root / ".compact").glob("*.json"))
    assert_same_rows(root, before)


# ------------------------------------------------------------------ corrupt files
CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "not parquet": lambda data: b"id=3 addr=10.0.0.1:5000 fd=8 name=api\n",
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_corrupt_table_file_is_an_error_that_names_it_and_the_mend(
    tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "ds"
    append_raw(root, raw_rows(2))
    append_raw(root, raw_rows(1, start=T0 + timedelta(hours=1)))
    bad = max((root / "clients").rglob("*.parquet"), key=lambda p: p.name)
    bad.write_bytes(CORRUPTIONS[kind](bad.read_bytes()))
    ds = open_dataset(root)
    raw = root / "raw" / bad.relative_to(root / "clients")
    with pytest.raises(
        DatasetError,
        match=rf"{re.escape(str(bad))} is not a readable Parquet file \(.+\)\. Move it out of "
        rf"the dataset folder: its rows are parsed again from {re.escape(str(raw))}",
    ):
        ds.clients.collect()
    assert ds.captures.collect().height == 3  # the other tables still read
    bad.rename(tmp_path / "aside.parquet")  # the mend the message gives
    assert open_dataset(root).clients.collect().height == 6


def test_a_corrupt_raw_file_is_an_error_that_says_what_is_lost(tmp_path: Path) -> None:
    root = batches(tmp_path / "ds", instances=("cache-a",))
    bad = max((root / "raw").rglob("*.parquet"), key=lambda p: p.name)
    bad.write_bytes(bad.read_bytes()[:100])
    message = rf"{re.escape(str(bad))} is not a readable Parquet file .*raw bytes of its captures are lost"
    with pytest.raises(DatasetError, match=message):
        open_dataset(root).raw.collect()
    with pytest.raises(DatasetError, match=message):
        known_content_hashes(root)  # what `import` asks first
    files = all_files(root)
    with pytest.raises(DatasetError, match=message):
        compact(root)
    assert [f for f in all_files(root) if f.parent.name != ".compact"] == [
        f for f in files if f.parent.name != ".compact"
    ]


# ------------------------------------------------------------------ instance names
NAMES = [
    "__HIVE_DEFAULT_PARTITION__",
    "a/b",
    "..",
    "../../outside",
    ".",
    "redis-0.cache:6379",
    "crème-ö✓-缓存",
    "%2F%2e%2e",
    "x=y",
    " ",
]


@pytest.mark.parametrize("name", NAMES)
def test_an_instance_name_round_trips_and_stays_inside_the_dataset(
    tmp_path: Path, name: str
) -> None:
    root = tmp_path / "ds"
    result = append_raw(root, raw_rows(2, instance=name))
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert all(f.resolve().is_relative_to(root.resolve()) for f in result.files)
    ds = open_dataset(root)
    assert ds.instances() == [name]
    for table in TABLES:
        assert set(ds.scan(table).collect()["instance"]) <= {name}, table  # type: ignore[arg-type]
    _unparse(root, result.batch)
    assert repair(root) == [result.batch]  # the name read back from its folder is the same
    assert set(open_dataset(root).clients.collect()["instance"]) == {name}


# ------------------------------------------------------------------ a batch the parser fails on
def test_a_batch_the_parser_fails_on_is_set_aside_not_repeated(tmp_path: Path) -> None:
    """A raw batch no parser can read (here: written by another version, a number where the
    reply bytes go) is set aside with why, raw kept; every later open reads the rest and says
    so, instead of failing on the same batch again."""
    root = tmp_path / "ds"
    import_dumps([FIXTURES / "dumps" / "loop-valkey.txt"], root)
    good = open_dataset(root).captures.select(pl.len()).collect().item()
    first = sorted((root / "raw").rglob("*.parquet"))[0]
    broken = pl.read_parquet(first, hive_partitioning=False).with_columns(
        pl.lit(12345).alias("client_list"), pl.lit("other-version").alias("capture_id")
    )
    odd = first.with_name("20990101T000000-0123456789ab.parquet")
    broken.write_parquet(odd)
    for _ in range(2):  # the first open sets it aside, the second does not try again
        with pytest.warns(dataset.DatasetWarning, match="could not be parsed and are set aside"):
            ds = open_dataset(root)
        assert ds.captures.select(pl.len()).collect().item() == good
    assert odd.exists()  # raw is never lost
    assert list(dataset.quarantined(root)) == [str(odd.relative_to(root / "raw"))]
    assert "client_list" in dataset.quarantined(root)[str(odd.relative_to(root / "raw"))]
