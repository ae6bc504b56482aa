"""reparse: every raw capture parsed again, each parsed table replaced in one commit, raw
only read; refused while a collector writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from clientscope.dataset import (
    collecting,
    commit_raw,
    open_dataset,
    reparse,
)
from clientscope.errors import DatasetError
from clientscope.ingest import import_dumps
from clientscope.simulation import simulate
from conftest import FIXTURES
from test_dataset import T0, raw_rows
from test_hostile_storage import TABLES, listing, snapshot

PARSED = ("captures", "clients", "info", "info_fields", "rejects")
DUMPS = sorted((FIXTURES / "dumps").glob("*.txt"))
CLIENTSCOPE = [sys.executable, "-m", "clientscope.cli"]


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    """A dataset of every dump fixture: clients, info, config and rejected lines."""
    root = tmp_path / "ds"
    import_dumps(DUMPS, root, instance="cache-1")
    return root


def test_reparse_replaces_each_parsed_table_in_one_commit(imported: Path) -> None:
    before, versions = snapshot(imported), open_dataset(imported).versions
    assert all(before[t].height for t in TABLES)  # every table has rows to replace
    result = reparse(imported)
    after = open_dataset(imported).versions
    assert {t: after[t] - versions[t] for t in PARSED} == dict.fromkeys(PARSED, 1)
    assert after["raw"] == versions["raw"]  # raw is only read
    assert result.captures == before["captures"].height
    assert result.rows == {t: before[t].height for t in PARSED}
    for table in TABLES:  # parsed by the same parser: the same rows
        assert snapshot(imported)[table].equals(before[table]), table
    assert not list(imported.glob(".tmp-*"))  # the staging folder is gone


def test_a_reader_opened_before_reparse_reads_the_same_rows_after(imported: Path) -> None:
    reader = open_dataset(imported)
    before = {t: reader.scan(t).select(pl.len()).collect().item() for t in TABLES}  # type: ignore[arg-type]
    reparse(imported)
    assert {t: reader.scan(t).select(pl.len()).collect().item() for t in TABLES} == before  # type: ignore[arg-type]


def test_reparse_parses_the_captures_left_unparsed(imported: Path) -> None:
    captures = open_dataset(imported).captures.collect().height
    commit_raw(imported, raw_rows(2, start=T0 + timedelta(days=1)))  # a writer killed after raw
    assert open_dataset(imported).unparsed == 2
    assert reparse(imported).captures == captures + 2
    ds = open_dataset(imported)
    assert (ds.unparsed, ds.captures.collect().height) == (0, captures + 2)


def test_reparse_keeps_the_captures_that_have_no_raw_text(tmp_path: Path) -> None:
    """A simulated server's captures have no raw text to parse again: reparse carries their rows
    over as they are, and parses again the imported server's beside them."""
    root = tmp_path / "ds"
    simulate("leak", root, seed=3, captures=12, clients=20)
    simulated = snapshot(root)
    import_dumps(DUMPS, root, instance="cache-1")
    before = snapshot(root)
    imported = before["captures"].height - simulated["captures"].height
    result = reparse(root)
    assert (result.kept, result.captures) == (simulated["captures"].height, imported)
    assert result.rows == {t: before[t].height for t in PARSED}
    after = snapshot(root)
    for table in TABLES:
        assert after[table].equals(before[table]), table
    done = subprocess.run(
        [*CLIENTSCOPE, "reparse", str(root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"kept {simulated['captures'].height} captures that have no raw text" in done.stdout
    assert snapshot(root)["clients"].equals(before["clients"])


def _damage(root: Path, table: str, instance: str) -> Path:
    """Cut one committed data file of `instance` in `table` short."""
    files = [Path(f) for f in DeltaTable(str(root / table)).file_uris() if f"instance={instance}/" in f]
    bad = files[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    return bad


@pytest.mark.parametrize("table", ["clients", "captures"])
def test_a_damaged_file_beside_captures_without_raw(tmp_path: Path, table: str) -> None:
    """Captures without raw text (simulated) beside imported ones. A damaged file of the imported
    server is rebuilt from raw and the simulated rows are carried over; a damaged file of the
    simulated server holds rows reparse cannot make again: it changes nothing and says so."""
    root = tmp_path / "ds"
    simulate("leak", root, seed=3, captures=12, clients=20)
    import_dumps(DUMPS, root, instance="cache-1")
    before = snapshot(root)
    shutil.copytree(root, tmp_path / "copy")
    _damage(root, table, "cache-1")
    result = reparse(root)
    assert result.kept == 12
    after = snapshot(root)
    for name in TABLES:
        assert after[name].equals(before[name]), name
    copy = tmp_path / "copy"
    _damage(copy, table, "redis-master-0")
    files = listing(copy)
    with pytest.raises(DatasetError, match=r"12 captures of .* \(instance redis-master-0\) have no raw "
                       r"text to parse again .*their rows in its (clients|captures) table cannot be read"
                       r".*nothing was changed: restore that file from a backup"):  # fmt: skip
        reparse(copy)
    assert listing(copy) == files


def test_reparse_is_refused_while_a_collector_writes(imported: Path) -> None:
    with collecting(imported):
        files = listing(imported)
        with pytest.raises(
            DatasetError,
            match=rf"a collector is writing to {imported}: stop it, then run reparse again",
        ):
            reparse(imported)
        assert listing(imported) == files


def test_reparse_refuses_a_folder_without_raw(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"{tmp_path} has no raw table: there is nothing"):
        reparse(tmp_path)


def test_reparse_command_prints_what_it_committed(imported: Path) -> None:
    rows = {t: h.height for t, h in snapshot(imported).items()}
    done = subprocess.run(
        [*CLIENTSCOPE, "reparse", str(imported), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout)
    assert said == {"captures": rows["captures"], "rows": {t: rows[t] for t in PARSED}, "kept": 0}
    text = subprocess.run(
        [*CLIENTSCOPE, "reparse", str(imported)], capture_output=True, text=True, timeout=60
    )
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"reparsed {rows['captures']} captures: ")
    assert f"clients {rows['clients']}" in text.stdout
