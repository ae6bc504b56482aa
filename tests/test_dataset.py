"""The capture dataset: lossless raw layer, append-only, atomic, readable by other engines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.dataset as pads
import pytest

from clientscope import open_dataset
from clientscope.dataset import append_raw, known_content_hashes, repair
from clientscope.errors import DatasetError, DatasetWriteError
from clientscope.schema import TABLES

T0 = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
LINES = (
    b"id=3 addr=10.0.0.1:5000 laddr=10.0.0.9:6379 fd=8 name=api age=60 idle=2 flags=N db=0 cmd=get\n"
    b"id=4 addr=10.0.0.2:5001 laddr=10.0.0.9:6379 fd=9 name= age=700 idle=650 flags=N db=0 cmd=ping\n"
)
INFO = b"# Server\r\nredis_version:7.2.4\r\nrun_id:abc123\r\n\r\n# Clients\r\nconnected_clients:2\r\nmaxclients:100\r\n"


def raw_rows(n: int, instance: str = "cache-1", start: datetime = T0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "capture_id": [f"{instance}-{start:%m%d%H%M}-{i}" for i in range(n)],
            "instance": [instance] * n,
            "ts": [start + timedelta(seconds=10 * i) for i in range(n)],
            "ts_source": ["server_time"] * n,
            "source": ["collect"] * n,
            "ok": [True] * n,
            "client_list": [LINES] * n,
            "info": [INFO] * n,
            "config": [json.dumps({"maxclients": "100", "timeout": "0"})] * n,
            "content_sha256": [f"h{instance}{start:%m%d%H%M}{i}" for i in range(n)],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def test_raw_bytes_come_back_exactly(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(3))
    raw = open_dataset(tmp_path).raw.collect()
    assert raw["client_list"].to_list() == [LINES] * 3
    assert raw["info"].to_list() == [INFO] * 3


def test_parsed_tables_are_written_beside_raw(tmp_path: Path) -> None:
    result = append_raw(tmp_path, raw_rows(3))
    ds = open_dataset(tmp_path)
    assert ds.captures.collect().height == 3
    clients = ds.clients.collect()
    assert clients.height == 6
    assert clients.filter(pl.col("id") == 4)["name"].to_list() == [None] * 3  # `name=` is null
    assert set(clients["run_id"].to_list()) == {"abc123"}
    caps = ds.captures.collect()
    assert caps["maxclients"].to_list() == [100] * 3
    assert caps["timeout"].to_list() == [0] * 3
    assert len(result.files) == 1 + len(TABLES)


def test_hive_layout_is_readable_by_pyarrow(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2, instance="redis-master-0:6379"))
    folders = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "clients").glob("*/*"))
    assert folders == ["clients/instance=redis-master-0%3A6379/date=2026-11-26"]
    table = pads.dataset(tmp_path / "clients", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 4


def test_appending_never_overwrites(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    append_raw(tmp_path, raw_rows(2, start=T0 + timedelta(hours=1)))
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    assert all(after[p] == m for p, m in before.items())
    assert len(after) == 2 * len(before)
    assert open_dataset(tmp_path).captures.collect().height == 4


def test_captures_spanning_midnight_land_in_two_date_partitions(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2, start=datetime(2026, 11, 26, 23, 59, 55, tzinfo=UTC)))
    dates = sorted(p.name for p in (tmp_path / "raw").glob("*/*"))
    assert dates == ["date=2026-11-26", "date=2026-11-27"]


def test_a_batch_killed_before_its_parsed_tables_is_repaired(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2))
    for name in ("clients", "info"):  # as if the writer died after raw + captures
        for f in (tmp_path / name).rglob("*.parquet"):
            f.unlink()
    assert repair(tmp_path) != []
    assert open_dataset(tmp_path).clients.collect().height == 4
    assert repair(tmp_path) == []


def test_temporary_files_of_a_dead_writer_are_ignored(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(1))
    part = next((tmp_path / "clients").glob("*/*"))
    (part / ".tmp-half-written.parquet").write_bytes(b"PAR1 truncated")
    assert open_dataset(tmp_path).clients.collect().height == 2


def test_content_hashes_are_known(tmp_path: Path) -> None:
    rows = raw_rows(2).with_columns(pl.Series("content_sha256", ["a b", "c"]))
    append_raw(tmp_path, rows)
    assert known_content_hashes(tmp_path) == {"a", "b", "c"}


def test_lazy_scans_push_filters_down(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2, instance="a"))
    append_raw(tmp_path, raw_rows(2, instance="b"))
    ds = open_dataset(tmp_path)
    plan = ds.clients.filter(pl.col("instance") == "b").select("name").explain()
    assert "SELECTION" in plan.upper() or "FILTER" in plan.upper()
    assert ds.clients.filter(pl.col("instance") == "b").collect().height == 4
    assert ds.instances() == ["a", "b"]


def test_pandas_and_reprs(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2))
    ds = open_dataset(tmp_path)
    frame = ds.to_pandas("clients")
    assert len(frame) == 4  # type: ignore[arg-type]
    assert "2 captures" in repr(ds)
    assert "<table>" in ds._repr_html_()


def test_empty_dataset_tables_have_their_schema(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    ds = open_dataset(tmp_path)
    assert ds.clients.collect().height == 0
    assert "idle" in ds.clients.collect_schema()


def test_opening_a_wrong_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*clientscope import"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"no raw/ or captures/ folder.*--out"):
        open_dataset(tmp_path)


def test_rows_missing_required_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="instance"):
        append_raw(tmp_path, raw_rows(1).drop("instance"))


def test_unwritable_dataset_fails_before_writing() -> None:
    # /proc refuses new files even to root, so this holds wherever the tests run
    with pytest.raises(DatasetWriteError, match=r"/proc/clientscope-ds is not writable.*--out"):
        append_raw("/proc/clientscope-ds", raw_rows(1))


def test_a_failing_write_leaves_existing_files_and_no_temp_file(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(1))
    before = sorted(tmp_path.rglob("*"))
    # a directory where the next batch's date partition should be: the write must fail cleanly
    blocker = tmp_path / "raw" / "instance=cache-1" / "date=2026-11-27"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")
    with pytest.raises(DatasetWriteError, match=r"could not write .*date=2026-11-27"):
        append_raw(tmp_path, raw_rows(1, start=T0 + timedelta(days=1)))
    blocker.unlink()
    assert sorted(tmp_path.rglob("*")) == [p for p in before if p.exists()]
    assert not list(tmp_path.rglob(".tmp-*"))
