"""compact: merges small batch files; a crash at any step never loses or duplicates a row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import clientscope.capture.compaction as compaction
from clientscope.capture import collect, compact
from clientscope.dataset import open_dataset
from clientscope.errors import DatasetError
from servers import Server, valkey_server

TABLES = ("raw", "captures", "clients", "info", "info_fields", "rejects")
CLIENTSCOPE = [sys.executable, "-c", "from clientscope.cli import main; main()"]


class Crash(BaseException):
    """Stands for the process dying at this point."""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real dataset of two instances, one batch file per capture (not compacted)."""
    out = tmp_path_factory.mktemp("collected") / "ds"
    with valkey_server() as a, valkey_server() as b:
        leak = [a.client(name=f"leak-{i}") for i in range(3)]
        collect([a.url, b.url], out, interval=0.2, count=4, compact_on_exit=False)
        for r in leak:
            r.close()
    return out


def copy_of(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ds"
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return target


def snapshot(root: Path) -> dict[str, pl.DataFrame]:
    ds = open_dataset(root, repair_missing=False)
    return {t: ds.scan(t).collect().sort(_order(t)) for t in TABLES}  # type: ignore[arg-type]


def _order(table: str) -> list[str]:
    return ["capture_id", "line_no"] if table in ("clients", "rejects") else ["capture_id"]


def files_per_table(root: Path) -> dict[str, int]:
    return {
        t: len([p for p in (root / t).rglob("*.parquet") if not p.name.startswith(".tmp-")])
        for t in TABLES
    }


def test_compact_merges_each_partition_and_keeps_every_row(source: Path, tmp_path: Path) -> None:
    ds = copy_of(source, tmp_path)
    before = snapshot(ds)
    files = files_per_table(ds)["raw"]  # one per capture, fewer when captures queued during a write
    assert 4 <= files <= 8 and files_per_table(ds) == dict.fromkeys(TABLES, files)
    result = compact(ds)
    assert files_per_table(ds) == dict.fromkeys(TABLES, 2)  # one per instance (and day)
    assert (result.partitions, result.batches_merged) == (2, files)
    assert (result.files_before, result.files_after) == (6 * files, 12)
    after = snapshot(ds)
    for table in TABLES:
        assert after[table].equals(before[table]), table
    assert compact(ds).partitions == 0  # nothing left to merge


def test_compact_then_more_captures_then_compact_again(source: Path, tmp_path: Path) -> None:
    ds = copy_of(source, tmp_path)
    compact(ds)
    with valkey_server() as srv:
        collect([srv.url], ds, interval=0.2, count=2, compact_on_exit=False)
    rows = open_dataset(ds).raw.collect().height
    compact(ds)
    assert open_dataset(ds).raw.collect().height == rows == 10


def _crash_on(name: str, at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the `at`-th call of os.<name> inside compaction die like a killed process."""
    real: Callable[..., Any] = getattr(os, name)
    calls = {"n": 0}

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == at:
            raise Crash(f"killed at {name} #{at}")
        return real(*args, **kwargs)

    fake_os = type(sys)("os_with_crash")
    fake_os.__dict__.update(os.__dict__)
    setattr(fake_os, name, dying)
    monkeypatch.setattr(compaction, "os", fake_os)


# a compaction of 2 partitions: 2 x (2 journal writes + 6 renames) os.replace calls
@pytest.mark.parametrize("at", range(1, 17))
def test_crash_at_any_rename_then_compact_recovers(source: Path, tmp_path: Path, at: int) -> None:
    _crash_then_recover(source, tmp_path, "replace", at)


@pytest.mark.parametrize("at", [1, 2, 5, 9, 12])
def test_crash_at_fsync_then_compact_recovers(source: Path, tmp_path: Path, at: int) -> None:
    _crash_then_recover(source, tmp_path, "fsync", at)


def _crash_then_recover(source: Path, tmp_path: Path, name: str, at: int) -> None:
    ds = copy_of(source, tmp_path)
    before = snapshot(ds)
    with pytest.MonkeyPatch.context() as mp:
        _crash_on(name, at, mp)
        with pytest.raises(Crash):
            compact(ds)
    left = [p for p in (ds / ".compact").glob("*.json") if not p.name.startswith(".tmp-")]
    result = compact(ds)  # the next run finishes or undoes what the crash left
    assert result.recovered == len(left) <= 1
    after = snapshot(ds)
    for table in TABLES:
        assert after[table].height == before[table].height, table
        assert after[table].equals(before[table]), table
    assert not list((ds / ".compact").glob("*.json"))
    assert not list(ds.rglob(".tmp-*"))


def test_crash_while_deleting_sources_is_finished_by_recover(source: Path, tmp_path: Path) -> None:
    ds = copy_of(source, tmp_path)
    before = snapshot(ds)
    real_unlink = Path.unlink
    calls = {"n": 0}

    def dying_unlink(self: Path, missing_ok: bool = False) -> None:
        if self.suffix == ".parquet":
            calls["n"] += 1
            if calls["n"] == 5:
                raise Crash("killed while removing merged sources")
        real_unlink(self, missing_ok=missing_ok)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "unlink", dying_unlink)
        with pytest.raises(Crash):
            compact(ds)
    assert compaction.recover(ds) == 1
    after = snapshot(ds)
    for table in TABLES:
        assert after[table].equals(before[table]), table


def test_compact_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a clientscope dataset"):
        compact(tmp_path)


def test_compact_command(source: Path, tmp_path: Path) -> None:
    ds = copy_of(source, tmp_path)
    done = subprocess.run(
        [*CLIENTSCOPE, "compact", str(ds), "--json"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files_after"] == 12
    text = subprocess.run(
        [*CLIENTSCOPE, "compact", str(ds)], capture_output=True, text=True, timeout=60
    )
    assert "compacted 0 batches" in text.stdout


def test_collect_compacts_at_exit(valkey: Server, tmp_path: Path) -> None:
    result = collect([valkey.url], tmp_path / "ds", interval=0.2, count=3)
    assert result.compacted is not None and result.compacted.batches_merged == 3
    assert files_per_table(tmp_path / "ds") == dict.fromkeys(TABLES, 1)
    assert open_dataset(tmp_path / "ds").captures.collect().height == 3
