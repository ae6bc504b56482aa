"""The capture dataset: Delta tables, lossless raw, one snapshot per read, readable by other engines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from clientscope import open_dataset
from clientscope.dataset import (
    Dataset,
    DatasetWarning,
    append_raw,
    commit_raw,
    known_content_hashes,
    mend,
)
from clientscope.errors import DatasetError, DatasetWriteError
from clientscope.schema import TABLES
from servers import Server

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


def test_parsed_tables_are_committed_beside_raw(tmp_path: Path) -> None:
    result = append_raw(tmp_path, raw_rows(3))
    ds = open_dataset(tmp_path)
    assert result.captures == 3 and ds.captures.collect().height == 3
    clients = ds.clients.collect()
    assert clients.height == 6
    assert clients.filter(pl.col("id") == 4)["name"].to_list() == [None] * 3  # `name=` is null
    assert set(clients["run_id"].to_list()) == {"abc123"}
    caps = ds.captures.collect()
    assert caps["maxclients"].to_list() == [100] * 3
    assert caps["timeout"].to_list() == [0] * 3
    for name in ("raw", *TABLES):
        assert DeltaTable(str(tmp_path / name)).metadata().partition_columns == ["instance", "date"]


def test_appending_never_rewrites_a_committed_file(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    append_raw(tmp_path, raw_rows(2, start=T0 + timedelta(hours=1)))
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.parquet")}
    assert all(after[p] == m for p, m in before.items())
    assert open_dataset(tmp_path).captures.collect().height == 4


def test_captures_spanning_midnight_land_in_two_date_partitions(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2, start=datetime(2026, 11, 26, 23, 59, 55, tzinfo=UTC)))
    dates = pl.scan_delta(str(tmp_path / "raw")).select("date").collect()["date"].to_list()
    assert sorted(dates) == ["2026-11-26", "2026-11-27"]


def test_a_capture_committed_raw_only_is_counted_then_parsed_by_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clientscope.dataset

    append_raw(tmp_path, raw_rows(1))
    commit_raw(tmp_path, raw_rows(2, start=T0 + timedelta(hours=1)))  # a writer killed after it
    assert open_dataset(tmp_path).unparsed == 2  # no warning: its writer may be at work still
    monkeypatch.setattr(clientscope.dataset, "IN_FLIGHT", timedelta(0))  # ... minutes later
    with pytest.warns(DatasetWarning, match=r"2 capture\(s\) are in `raw` but not parsed"):
        ds = open_dataset(tmp_path)
    assert ds.unparsed == 2 and ds.captures.collect().height == 1 and ds.raw.collect().height == 3
    assert mend(tmp_path) == 2
    ds = open_dataset(tmp_path)
    assert ds.unparsed == 0 and ds.clients.collect().height == 6
    assert mend(tmp_path) == 0


def test_an_uncommitted_file_of_a_dead_writer_is_invisible(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(1))
    part = next((tmp_path / "clients").glob("instance=*/date=*"))
    raw_rows(5).write_parquet(part / "part-00000-never-committed.parquet")
    (part / "part-00001-half-written.parquet").write_bytes(b"PAR1 truncated")
    assert open_dataset(tmp_path).clients.collect().height == 2


def test_content_hashes_are_known(tmp_path: Path) -> None:
    rows = raw_rows(2).with_columns(pl.Series("content_sha256", ["a b", "c"]))
    append_raw(tmp_path, rows)
    assert known_content_hashes(tmp_path) == {"a", "b", "c"}


def test_lazy_scans_read_only_the_instance_asked_for(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2, instance="a"))
    append_raw(tmp_path, raw_rows(2, instance="b"))
    ds = open_dataset(tmp_path)
    plan = ds.clients.filter(pl.col("instance") == "b").select("name").explain()
    assert plan.count("SCAN") == 1  # the other instance's files are not read at all
    assert ds.clients.filter(pl.col("instance") == "b").collect().height == 4
    assert ds.instances() == ["a", "b"]


def test_pandas_and_reprs(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2))
    ds = open_dataset(tmp_path)
    frame = ds.to_pandas("clients")
    assert len(frame) == 4  # type: ignore[arg-type]
    assert "2 captures" in repr(ds) and f"v{ds.version}" in repr(ds)
    assert "<table>" in ds._repr_html_()


def test_a_fresh_dataset_has_every_table_with_its_schema(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(1).with_columns(ok=False, client_list=None, info=None))
    ds = open_dataset(tmp_path)
    assert ds.clients.collect().height == 0 and ds.rejects.collect().height == 0
    assert "idle" in ds.clients.collect_schema()


def test_opening_a_wrong_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*clientscope import"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"is not a clientscope dataset.*raw/.*--out"):
        open_dataset(tmp_path)
    old = tmp_path / "old"
    (old / "raw" / "instance=a" / "date=2026-11-26").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"clientscope 0\.1.*`clientscope upgrade "):
        open_dataset(old)
    with pytest.raises(DatasetError, match=r"percent escape"):
        append_raw(tmp_path / "a%20b", raw_rows(1))


def test_rows_missing_required_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="instance"):
        append_raw(tmp_path, raw_rows(1).drop("instance"))


def test_unwritable_dataset_fails_before_writing() -> None:
    # /proc refuses new files even to root, so this holds wherever the tests run
    with pytest.raises(DatasetWriteError, match=r"/proc/clientscope-ds is not writable.*--out"):
        append_raw("/proc/clientscope-ds", raw_rows(1))


def test_a_failed_commit_changes_nothing(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(1))
    before = open_dataset(tmp_path).versions
    log = tmp_path / "raw" / "_delta_log"
    log.chmod(0o555)  # the commit cannot be written (root ignores modes: then a file blocks it)
    blocker = log / f"{before['raw'] + 1:020d}.json"
    if os.access(log, os.W_OK):
        blocker.mkdir()
    try:
        with pytest.raises(DatasetWriteError, match=r"could not commit to .*raw.*Nothing already"):
            append_raw(tmp_path, raw_rows(1, start=T0 + timedelta(days=1)))
    finally:
        log.chmod(0o755)
        if blocker.is_dir():
            blocker.rmdir()
    ds = open_dataset(tmp_path)
    assert ds.versions == before and ds.captures.collect().height == 1


# ------------------------------------------------------------------ snapshots and versions


def test_a_dataset_reads_the_snapshot_it_opened_however_late(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2))
    ds = open_dataset(tmp_path)
    append_raw(tmp_path, raw_rows(3, start=T0 + timedelta(hours=1)))
    assert ds.captures.collect().height == 2 and ds.clients.collect().height == 4
    assert open_dataset(tmp_path).captures.collect().height == 5


def test_version_and_as_of_read_the_dataset_as_it_was(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(2))
    first = open_dataset(tmp_path)
    at = datetime.now(UTC)
    append_raw(tmp_path, raw_rows(3, start=T0 + timedelta(hours=1)))
    old = open_dataset(tmp_path, version=first.version)
    assert old.versions == first.versions
    assert old.captures.collect().height == 2 and old.clients.collect().height == 4
    then = open_dataset(tmp_path, as_of=at)
    assert then.captures.collect().height == 2 and then.clients.collect().height == 4
    for spelled in (at.timestamp(), at.isoformat(), at.strftime("%Y-%m-%d %H:%M:%S.%f")):
        assert open_dataset(tmp_path, as_of=spelled).versions == then.versions  # one grammar
    with pytest.raises(DatasetError, match=r"no version 99 of its captures table"):
        open_dataset(tmp_path, version=99)


@pytest.mark.filterwarnings("ignore::clientscope.dataset.DatasetWarning")  # raw is ahead of it
def test_a_snapshot_never_holds_rows_of_a_capture_it_does_not_have(tmp_path: Path) -> None:
    """Parsed tables are committed before `captures`; a reader opening between the two commits
    must not see the clients of a capture missing from captures."""
    import clientscope.dataset as dataset

    append_raw(tmp_path, raw_rows(1))
    opened: list[Dataset] = []
    commit = dataset.commit_table

    def open_between(root: Path, name: str, frame: pl.DataFrame, **kw: object) -> None:
        if name == "captures":
            opened.append(open_dataset(root))  # clients, info... committed; captures not yet
        commit(root, name, frame, **kw)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(dataset, "commit_table", open_between)
        append_raw(tmp_path, raw_rows(2, start=T0 + timedelta(hours=1)))
    (ds,) = opened
    captured = set(ds.captures.collect()["capture_id"])
    assert len(captured) == 1
    for name in ("clients", "info", "info_fields"):
        assert set(ds.scan(name).collect()["capture_id"]) == captured


def test_a_snapshot_reads_compacted_files_once_compaction_has_run(tmp_path: Path) -> None:
    from clientscope.capture import compact

    for hour in range(4):
        append_raw(tmp_path, raw_rows(2, start=T0 + timedelta(hours=hour)))
    before = open_dataset(tmp_path)
    compact(tmp_path)
    after = open_dataset(tmp_path)
    assert after.version > before.version  # captures was compacted too
    assert after.versions["clients"] > before.versions["clients"]  # the compacted version
    assert after.clients.collect().height == before.clients.collect().height == 16
    assert len(DeltaTable(str(tmp_path / "clients")).file_uris()) == 1


# ------------------------------------------------------------------ readers take no lock


def test_reading_needs_no_fcntl_and_writes_nothing(tmp_path: Path) -> None:
    append_raw(tmp_path, raw_rows(3))
    listing = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    code = """
import sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
import clientscope as cs
from clientscope.analysis import build_model, diagnose_from
import clientscope.dataset, clientscope.capture.compaction
ds = cs.open_dataset(sys.argv[1])
model = build_model(ds)
print(ds.captures.collect().height, len(diagnose_from(model).findings) >= 0, ds.version)
old = cs.open_dataset(sys.argv[1], version=ds.version)
print(old.clients.collect().height)
"""
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "True", str(open_dataset(tmp_path).version), "6"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == listing


# ------------------------------------------------------------------ other engines: the README


def readme_snippets() -> list[str]:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text[text.index("## The dataset") : text.index("## Performance")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_the_polars_pandas_pyarrow_and_duckdb_snippets() -> None:
    joined = "\n".join(readme_snippets())
    for engine in ("pl.scan_delta", "to_pandas", "to_pyarrow_dataset", "duckdb.sql"):
        assert engine in joined


@pytest.mark.parametrize("snippet", readme_snippets(), ids=lambda s: s.splitlines()[0])
def test_each_readme_snippet_runs_on_a_real_dataset(snippet: str, tmp_path: Path) -> None:
    root = tmp_path / "incident.cs"
    append_raw(root, raw_rows(2, instance="redis-b:6379"))
    append_raw(root, raw_rows(1, instance="ü-cache"))
    scope: dict[str, object] = {"DS": str(root)}
    exec(compile(snippet, "README.md", "exec"), scope)
    results = [v for k, v in scope.items() if k in {"clients", "per_instance", "captures", "idle"}]
    assert results, "the snippet defines what it reads"
    for value in results:
        if isinstance(value, pl.LazyFrame):
            assert value.collect().height == 6
        elif isinstance(value, pl.DataFrame):
            assert dict(value.iter_rows()) == {"redis-b:6379": 4, "ü-cache": 2}
        elif isinstance(value, list):  # DuckDB: idle > 600 is client id 4, once per capture
            assert sorted(value) == [("redis-b:6379", 2), ("ü-cache", 1)]
        else:
            assert len(value) == 3  # type: ignore[arg-type]


# ------------------------------------------------------------------ everything at once


def test_a_collector_imports_readers_and_compaction_at_once_lose_and_double_nothing(
    valkey: Server, tmp_path: Path
) -> None:
    """A real collector every 200 ms, two imports of the same dumps, a Polars and a DuckDB reader
    in a loop, compaction repeatedly: no reader error, every count a reader got is the count of the version it read,
    and every capture the collector committed is there once."""
    import duckdb

    from clientscope.capture import collect, compact

    root = tmp_path / "ds"
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[tuple[int, int]] = []  # (captures version read, clients rows counted)
    duck: list[tuple[int, int]] = []
    compactions = 0

    def polars_reader() -> None:
        while not stop.is_set():
            try:
                ds = open_dataset(root)
                seen.append((ds.version, ds.clients.select(pl.len()).collect().item()))
            except DatasetError as exc:  # only before the first commit
                if "not a clientscope dataset" not in str(exc):
                    errors.append(exc)
            except BaseException as exc:
                errors.append(exc)

    def duckdb_reader() -> None:
        while not stop.is_set():
            try:
                if not (root / "clients" / "_delta_log").is_dir():
                    continue
                table = DeltaTable(str(root / "clients"))
                arrow = table.to_pyarrow_dataset()  # noqa: F841 (DuckDB reads it by name)
                (count,) = duckdb.sql("select count(*) from arrow").fetchall()[0]
                duck.append((table.version(), count))
            except BaseException as exc:
                errors.append(exc)

    def compactor() -> None:
        nonlocal compactions
        while not stop.is_set():
            try:
                if (root / "captures" / "_delta_log").is_dir():
                    compact(root)
                    compactions += 1
            except BaseException as exc:
                errors.append(exc)

    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for i in range(6):  # an import of text dumps into the same dataset, twice at once
        (dumps / f"clients-2026-11-26T09:{i:02d}:00Z.txt").write_bytes(
            LINES.replace(b"=2 ", b"=%d " % (i + 2))
        )
    imported: list[int] = []

    def importer() -> None:
        from clientscope.ingest import import_dumps

        try:
            imported.append(import_dumps([dumps], root, instance="from-dumps").captures_written)
        except BaseException as exc:
            errors.append(exc)

    readers = (polars_reader, duckdb_reader, compactor, importer, importer)
    threads = [threading.Thread(target=f) for f in readers]
    for t in threads:
        t.start()
    try:
        result = collect([valkey.url], root, interval=0.2, count=25, compact_on_exit=False)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []
    assert compactions >= 1 and len(seen) >= 5 and len(duck) >= 5
    final = open_dataset(root)
    raw = final.raw.collect()
    assert sorted(imported) == [0, 6]  # one import wrote the dumps, the other skipped them
    assert raw.filter(pl.col("instance") == "from-dumps").height == 6
    collected = raw.filter(pl.col("source") == "collect")
    assert collected.height == result.captures_written == 25
    assert raw["capture_id"].n_unique() == raw.height == 31
    assert sorted(final.captures.collect()["capture_id"]) == sorted(raw["capture_id"])
    for version, count in seen:  # what that snapshot's clients version holds, by its log
        pinned = open_dataset(root, version=version)
        assert count == pinned.clients.select(pl.len()).collect().item()
    for version, count in duck:
        rows = DeltaTable(str(root / "clients"), version=version).get_add_actions(flatten=True)
        assert count == sum(rows.column("num_records").to_pylist())
