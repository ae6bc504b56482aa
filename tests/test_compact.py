"""compact: Delta optimize + vacuum. It keeps every row, merges small files, never deletes a
file a reader of an older version still needs, and deletes what a killed writer left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from clientscope.capture import collect, compact
from clientscope.capture.compaction import CompactResult
from clientscope.dataset import open_dataset
from clientscope.errors import DatasetError
from servers import Server, valkey_server
from test_hostile_storage import TABLES, assert_same_rows, listing, rows_of, snapshot

CLIENTSCOPE = [sys.executable, "-c", "from clientscope.cli import main; main()"]
TWO_DAYS_AGO = time.time() - 2 * 86400


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real dataset of two instances, one commit per capture batch (not compacted)."""
    out = tmp_path_factory.mktemp("collected") / "ds"
    with valkey_server() as a, valkey_server() as b:
        leak = [a.client(name=f"leak-{i}") for i in range(3)]
        collect([a.url, b.url], out, interval=0.2, count=4, compact_on_exit=False)
        for r in leak:
            r.close()
    return out


def copy_of(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ds"
    shutil.copytree(source, target)
    return target


def data_files(root: Path) -> dict[str, list[str]]:
    """The data files of each table's newest version, from its Delta log."""
    return {t: DeltaTable(str(root / t)).file_uris() for t in TABLES}


def partitions(root: Path) -> dict[str, int]:
    """The (instance, date) partitions each table's newest version has files in."""
    return {t: len({Path(f).parent for f in files}) for t, files in data_files(root).items()}


def file_count(root: Path) -> dict[str, int]:
    return {t: len(files) for t, files in data_files(root).items()}


def age(files: list[Path], seconds_since_epoch: float = TWO_DAYS_AGO) -> None:
    for f in files:
        os.utime(f, (seconds_since_epoch, seconds_since_epoch))


# ------------------------------------------------------------------ merging
def test_compact_merges_each_partition_and_keeps_every_row(source: Path, tmp_path: Path) -> None:
    ds = copy_of(source, tmp_path)
    before = snapshot(ds)
    files = file_count(ds)
    parts = partitions(ds)
    assert files["raw"] > parts["raw"] == 2  # several small files per instance (and day)
    result = compact(ds)
    assert file_count(ds) == parts  # one file per partition
    assert (result.tables, result.files_before, result.files_after) == (
        6, sum(files.values()), sum(parts.values())
    )  # fmt: skip
    assert (result.files_deleted, result.mended, result.retain_hours) == (0, 0, 24)
    assert_same_rows(snapshot(ds), before)
    again = compact(ds)  # nothing left to merge
    assert again.files_before == again.files_after == sum(parts.values())
    assert_same_rows(snapshot(ds), before)


def test_compact_then_more_captures_then_compact_again(source: Path, tmp_path: Path) -> None:
    ds = copy_of(source, tmp_path)
    compact(ds)
    with valkey_server() as srv:
        collect([srv.url], ds, interval=0.2, count=2, compact_on_exit=False)
    before = snapshot(ds)
    assert before["raw"].height == before["captures"].height == 10
    compact(ds)
    assert file_count(ds) == partitions(ds) and partitions(ds)["raw"] == 3
    assert_same_rows(snapshot(ds), before)


# ------------------------------------------------------------------ what vacuum keeps and deletes
def test_a_reader_opened_before_compact_reads_the_same_rows_after_vacuum(
    source: Path, tmp_path: Path
) -> None:
    ds = copy_of(source, tmp_path)
    before = snapshot(ds)
    reader = open_dataset(ds)  # holds the versions it opened, and their files
    its_files = [Path(f) for table in reader.tables.values() for f in table.file_uris()]
    age(its_files)  # written long ago: only the retention protects them now
    result = compact(ds, retain=timedelta(hours=1))
    assert result.files_after < result.files_before
    assert all(f.exists() for f in its_files)  # replaced less than an hour ago: kept
    assert_same_rows(rows_of(reader), before)
    assert_same_rows(snapshot(ds), before)  # and a new reader reads the compacted files


def test_compact_refuses_a_retention_under_an_hour(source: Path, tmp_path: Path) -> None:
    ds = copy_of(source, tmp_path)
    files = listing(ds)
    with pytest.raises(
        DatasetError,
        match=r"--retain 5m is under 1h: files a reader may still be reading would be "
        r"deleted; give --retain 1h or more",
    ):
        compact(ds, retain=timedelta(minutes=5))
    assert listing(ds) == files


def test_an_uncommitted_file_is_never_read_and_compact_deletes_it_once_old(
    source: Path, tmp_path: Path
) -> None:
    ds = copy_of(source, tmp_path)
    before = snapshot(ds)
    committed = Path(data_files(ds)["clients"][0])
    stray = committed.with_name("part-00000-0123abcd-0000-4000-8000-000000000000-c000.zstd.parquet")
    shutil.copyfile(committed, stray)  # what a writer killed before its commit leaves
    assert pl.read_parquet(stray).height > 0
    assert_same_rows(snapshot(ds), before)  # in no version: never read
    compact(ds)
    assert stray.exists()  # younger than the retention: a writer may be about to commit it
    age([stray])  # vacuum goes by a file's modification time
    result = compact(ds)
    assert not stray.exists()
    assert result.files_deleted == 1
    assert all(Path(f).exists() for files in data_files(ds).values() for f in files)
    assert_same_rows(snapshot(ds), before)


# ------------------------------------------------------------------ what compact refuses
def test_compact_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(DatasetError, match=rf"{tmp_path} holds no clientscope tables; point at "):
        compact(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(DatasetError, match="holds no clientscope tables"):
        compact(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_compact_names_upgrade_for_a_dataset_of_clientscope_0_1(
    source: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"  # the 0.1 layout: Hive folders of loose Parquet files, no Delta log
    for table, rows in snapshot(source).items():
        part = old / table / "instance=cache-1" / "date=2026-11-26"
        part.mkdir(parents=True)
        rows.drop("instance").write_parquet(part / "20261126T093000-0123456789ab.parquet")
    files = listing(old)
    with pytest.raises(
        DatasetError,
        match=rf"{old} was written by clientscope 0\.1 .* Run `clientscope upgrade {old}` once",
    ):
        compact(old)
    assert listing(old) == files


# ------------------------------------------------------------------ the command and collect
def test_compact_command_prints_what_it_did(source: Path, tmp_path: Path) -> None:
    ds = copy_of(source, tmp_path)
    files = sum(file_count(ds).values())
    done = subprocess.run(
        [*CLIENTSCOPE, "compact", str(ds), "--json", "--retain", "2h"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert list(said) == list(CompactResult.__dataclass_fields__)
    assert said == {
        "tables": 6,
        "files_before": files,
        "files_after": sum(partitions(ds).values()),
        "files_deleted": 0,
        "mended": 0,
        "retain_hours": 2,
    }
    text = subprocess.run(
        [*CLIENTSCOPE, "compact", str(ds)], capture_output=True, text=True, timeout=60
    )
    after = said["files_after"]
    assert text.returncode == 0, text.stderr
    assert text.stdout == (
        f"compacted 6 tables: {after} -> {after} files; 0 old files deleted (kept 24 h)\n"
    )
    short = subprocess.run(
        [*CLIENTSCOPE, "compact", str(ds), "--retain", "5m"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert short.returncode == 1
    assert "--retain 5m is under 1h" in short.stderr and short.stdout == ""


def test_collect_compacts_at_exit(valkey: Server, tmp_path: Path) -> None:
    result = collect([valkey.url], tmp_path / "ds", interval=0.2, count=3)
    assert result.compacted is not None
    assert result.compacted.files_after == sum(partitions(tmp_path / "ds").values())
    assert result.compacted.files_after < result.compacted.files_before
    assert file_count(tmp_path / "ds") == partitions(tmp_path / "ds")
    assert open_dataset(tmp_path / "ds").captures.collect().height == 3
