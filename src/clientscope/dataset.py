"""The capture dataset on disk: one Delta Lake table per table, raw + parsed.

    DATASET/
      raw/            lossless captures (RAW_SCHEMA)                 each one Delta table
      captures/ clients/ info/ info_fields/ rejects/   parsed rows   (`_delta_log/` + Parquet),
      .write.lock     held by a writer while it checks and commits    partitioned by instance
      .collect.lock   held (shared) by every running collector        and date (UTC, YYYY-MM-DD)

Every write is a Delta commit: a reader sees a table as one committed version,
never a file half written or counted twice, and a file a killed writer left
behind is in no version (`compact` deletes it once it is older than the
retention). The partition values (instance names with any characters,
`redis-b:6379`, `ü-cache`, `../x`) live in the table log as strings, so every
engine that reads them from the log (this module, deltalake's pyarrow dataset and
DuckDB over it, Spark) reads back the same name; the folder names are only
percent-encoded paths under the table. Polars' own `scan_delta` decodes folder
names instead: the same, but `__HIVE_DEFAULT_PARTITION__` reads as null there.

A batch of captures is committed in this order: its raw rows, then its parsed
tables, `captures` last. The `captures` commit records the version of every
other table it goes with (`clientscope.tables` in its commit info), so
`open_dataset` reads one snapshot: the captures of one `captures` version and
exactly their rows in the other tables, even while writers and `compact` run.
Raw rows are committed first so that a killed collector loses at most the
capture in flight; captures whose parsed rows are missing (killed between the
two commits) are parsed by the next command that writes (`mend`) and counted by
reads meanwhile (`Dataset.unparsed`, a `DatasetWarning`).

Readers take no lock and write nothing. Writers serialize their commits of
parsed rows through `.write.lock`, which is also where imports check for
captures already in the dataset, so two imports of one dump write it once.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re
import shutil
import sys
import threading
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import polars as pl

from clientscope.errors import DatasetError, DatasetWriteError
from clientscope.schema import (
    CAPTURES_SCHEMA,
    CLIENTS_SCHEMA,
    INFO_FIELDS_SCHEMA,
    INFO_SCHEMA,
    RAW_SCHEMA,
    REJECTS_SCHEMA,
    TABLES,
)

if TYPE_CHECKING:
    import pandas as pd
    from deltalake import DeltaTable

__all__ = [
    "Dataset",
    "DatasetWarning",
    "WriteResult",
    "append_raw",
    "append_tables",
    "commit_parsed",
    "commit_raw",
    "commit_table",
    "known_content_hashes",
    "mend",
    "open_dataset",
    "parse_captures",
    "reparse",
]

FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)
TableName = Literal["raw", "captures", "clients", "info", "info_fields", "rejects"]
TABLE_NAMES: tuple[TableName, ...] = (
    "raw",
    "captures",
    "clients",
    "info",
    "info_fields",
    "rejects",
)
PARSED_FIRST: tuple[TableName, ...] = ("clients", "info", "info_fields", "rejects")  # captures last
PARTITION_BY = ("instance", "date")
WRITE_LOCK = ".write.lock"
COLLECT_LOCK = ".collect.lock"
PINS = "clientscope.tables"  # commit info of a captures commit: {table: version} it goes with
BATCH = "clientscope.batch"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # the folder name Hive readers take for null
_TMP_PREFIX = ".tmp-"
_PIN_LOOKBACK = 1000  # captures commits searched back for the last one that carries pins
IN_FLIGHT = timedelta(minutes=2)  # raw this recent may be a writer's in flight: counted, no warning

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "raw": RAW_SCHEMA,
    "captures": CAPTURES_SCHEMA,
    "clients": CLIENTS_SCHEMA,
    "info": INFO_SCHEMA,
    "info_fields": INFO_FIELDS_SCHEMA,
    "rejects": REJECTS_SCHEMA,
}
assert set(TABLE_NAMES) == {"raw", *TABLES} == set(SCHEMAS)


class DatasetWarning(UserWarning):
    """The dataset was read as it is, but part of it is not there yet (captures not parsed)."""


@dataclass(frozen=True)
class WriteResult:
    """What one `append_raw` / `append_tables` call committed."""

    batch: str
    captures: int
    rejects: pl.DataFrame | None = None  # lines the parser kept aside (REJECTS_SCHEMA)
    skipped: int = 0  # captures already in the dataset (same capture id or content hash)


# ------------------------------------------------------------------ locks (writers only)
def _take_lock(fd: int, *, wait: bool, shared: bool) -> bool:
    if sys.platform == "win32":  # no flock: lock the file's first byte (always exclusive)
        import msvcrt
        import time

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not wait:
                    return False
                time.sleep(0.05)
    import fcntl  # here, not at the top: readers never lock, and must import without it

    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _release_lock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive(lock_file: Path, *, wait: bool = True, shared: bool = False) -> Iterator[bool]:
    """Hold a lock on `lock_file` (made if missing) for the block, across processes.

    Yields True once it is held; with `wait=False`, False at once when it is taken.
    `shared` locks exclude only exclusive ones (on Windows every lock is exclusive).
    A lock file that cannot be made (read-only disk) is a DatasetWriteError.
    """
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DatasetWriteError(
            f"cannot lock {lock_file}: {io_reason(exc)}. Writing needs a writable dataset "
            "folder: fix its permissions or copy it somewhere writable."
        ) from exc
    try:
        held = _take_lock(fd, wait=wait, shared=shared)
        try:
            yield held
        finally:
            if held:
                _release_lock(fd)
    finally:
        os.close(fd)


def write_lock(root: Path) -> contextlib.AbstractContextManager[bool]:
    """The lock under which parsed rows are committed and imports check for duplicates."""
    return exclusive(root / WRITE_LOCK)


def collecting(root: Path) -> contextlib.AbstractContextManager[bool]:
    """Held, shared, by a running collector: `mend` leaves the captures it is parsing alone."""
    return exclusive(root / COLLECT_LOCK, shared=True)


# ------------------------------------------------------------------ helpers
def new_batch_id(now: datetime | None = None) -> str:
    """A name for one write, recorded in its commits; sorts by time and never repeats."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def empty_raw() -> pl.DataFrame:
    return pl.DataFrame(schema=RAW_SCHEMA)


def conform_raw(raw: pl.DataFrame) -> pl.DataFrame:
    """Add missing raw columns as nulls, cast to RAW_SCHEMA, order columns; refuse unknown ones."""
    unknown = sorted(set(raw.columns) - set(RAW_SCHEMA))
    if unknown:
        raise DatasetError(f"raw captures have columns the dataset does not know: {unknown}")
    for required in ("capture_id", "instance", "ts", "source", "ok"):
        if required not in raw.columns or raw[required].null_count():
            raise DatasetError(f"raw captures need a value in column {required!r} on every row")
    if (raw["instance"].cast(pl.String) == "").any():  # Delta keeps an empty partition as null
        raise DatasetError("raw captures need an instance name that is not empty")
    missing = [
        pl.lit(None, dtype=t).alias(c) for c, t in RAW_SCHEMA.items() if c not in raw.columns
    ]
    return raw.with_columns(missing).select(
        [pl.col(c).cast(t, strict=True) for c, t in RAW_SCHEMA.items()]
    )


def io_reason(exc: BaseException, folder: Path | None = None) -> str:
    """Why a read or write failed, as the OS said it ('No space left on device'). Polars may
    report a full disk as 'Invalid thrift: transport error': then the free space of `folder`'s
    disk is told too."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    for marker in ("underlying IO error: ", "Generic LocalFileSystem error: "):
        if marker in text:
            return text.rsplit(marker, 1)[-1]
    if folder is not None:
        with contextlib.suppress(OSError):
            return f"{text}; {shutil.disk_usage(folder).free} bytes free on that disk"
    return text


def check_writable(root: Path) -> None:
    """Fail early, with a clear message, when `root` cannot hold a dataset."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f"{_TMP_PREFIX}probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DatasetWriteError(
            f"dataset directory {root} is not writable: {io_reason(exc)}. "
            "Choose another --out or fix its permissions."
        ) from exc


def _empty_tables() -> dict[str, pl.DataFrame]:
    """Every table, empty, with its schema (the contract in schema.py)."""
    return {name: pl.DataFrame(schema=schema) for name, schema in SCHEMAS.items()}


def _with_date(frame: FrameT) -> FrameT:
    """The partition column: the UTC day of `ts`."""
    return frame.with_columns(pl.col("ts").dt.date().cast(pl.String).alias("date"))


def is_table(path: Path) -> bool:
    """Whether `path` holds a Delta table (a commit in its log)."""
    log = path / "_delta_log"
    return (
        (log / f"{0:020d}.json").exists()
        or (log / "_last_checkpoint").exists()  # version 0's file is cleaned up after a while
        or (log.is_dir() and any(log.glob("*.json")))
    )


def is_hive_layout(root: Path) -> bool:
    """Written by clientscope 0.1: table folders of `instance=*` partitions, no Delta log."""
    return any(
        (root / name).is_dir()
        and not is_table(root / name)
        and any((root / name).glob("instance=*"))
        for name in TABLE_NAMES
    )


def _refuse_unusable_path(root: Path) -> None:
    """delta-rs decodes `%XX` in a table's path (a folder named `a%20b` is read as `a b`)."""
    if re.search("%[0-9A-Fa-f]{2}", str(root.absolute())):
        raise DatasetError(
            f"{root}: Delta Lake cannot use a folder whose path holds a percent escape such as "
            "%20; rename or move the folder (spaces and other characters are fine)"
        )


def _refuse_old_layout(root: Path) -> None:
    _refuse_unusable_path(root)
    if is_hive_layout(root):
        raise DatasetError(
            f"{root} was written by clientscope 0.1 (folders of loose Parquet files). Run "
            f"`clientscope upgrade {root}` once to turn it into Delta Lake tables (it keeps "
            "every capture and checks that it did), then run this again."
        )


# ------------------------------------------------------------------ committing
def _write_options(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    from deltalake import CommitProperties, WriterProperties

    return {
        "partition_by": list(PARTITION_BY),
        "writer_properties": WriterProperties(compression="ZSTD"),
        "commit_properties": CommitProperties(
            custom_metadata=dict(metadata or {}), max_commit_retries=100
        ),
    }


def _write_failed(root: Path, name: str, exc: BaseException) -> DatasetWriteError:
    return DatasetWriteError(
        f"could not commit to {root / name}: {io_reason(exc, root)}. Nothing already in the "
        "dataset was changed (a commit is all or nothing); free disk space or fix permissions "
        "and run again."
    )


_OPEN: dict[str, tuple[DeltaTable, tuple[int, int], threading.Lock]] = {}
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[DeltaTable]:
    """This process's loaded copy of a table, brought up to date, held by one thread at a time.

    A write through it commits without loading the log again, and leaves it at the version it
    committed (about half the time of a write by path). A table made anew at the same path
    (its first commit file changed) is loaded anew."""
    from deltalake import DeltaTable

    try:
        first = (path / "_delta_log" / f"{0:020d}.json").stat()
        made: tuple[int, int] | None = (first.st_ino, first.st_mtime_ns)
    except OSError:
        made = None
    key = str(path.absolute())
    with _OPEN_LOCK:
        cached = _OPEN.get(key)
        if cached is None or made is None or cached[1] != made:
            cached = (DeltaTable(str(path)), made or (0, 0), threading.Lock())
            _OPEN[key] = cached
    table, _, lock = cached
    with lock:
        try:
            table.update_incremental()
            yield table
        except BaseException:
            with _OPEN_LOCK:
                _OPEN.pop(key, None)  # its state is not known: load it again next time
            raise


def commit_table(
    root: Path,
    name: str,
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    mode: Literal["append", "overwrite"] = "append",
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Commit `frame`'s rows to one table (one Delta commit, retried on conflict); returns the
    version committed."""
    options = _write_options(metadata)
    try:
        with _writing(root / name) as table:
            if isinstance(frame, pl.LazyFrame):  # streamed: memory follows a batch, not the table
                _with_date(frame).sink_delta(table, mode=mode, delta_write_options=options)
            elif mode == "append":
                _append_files(root / name, table, frame, options["commit_properties"])
            else:
                _with_date(frame).write_delta(table, mode=mode, delta_write_options=options)
            table.update_incremental()
            return int(table.version())
    except Exception as exc:  # delta-rs says IO failures in its own exception types
        raise _write_failed(root, name, exc) from exc


PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "statistics": True}


def _append_files(path: Path, table: DeltaTable, frame: pl.DataFrame, commit: Any) -> None:
    """Append by writing each partition's Parquet file with Polars (2-3x faster than delta-rs'
    writer, measured) and committing them in one transaction."""
    from deltalake.transaction import AddAction  # (RemoveAction: only from deltalake 1.6.1)

    adds: list[Any] = []
    dated = _with_date(frame)
    keys = dated.select(PARTITION_BY).unique()
    parts = (  # one partition (an import of one instance, one day): the frame, not a copy of it
        {tuple(keys.row(0)): dated}
        if keys.height == 1
        else dated.partition_by(list(PARTITION_BY), as_dict=True)
    )
    for (instance, date), part in parts.items():
        folder = f"instance={urllib.parse.quote(str(instance), safe='')}/date={date}"
        relative = f"{folder}/part-00000-{uuid.uuid4()}-c000.zstd.parquet"
        target = path / relative
        data = io.BytesIO()  # written by Python, not Polars: a full disk is the OS's own error
        part.drop(PARTITION_BY).write_parquet(data, **PARQUET_OPTIONS)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(data.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())  # on disk before a commit names it
        written = target.stat()
        adds.append(
            AddAction(
                path=relative,  # delta-rs percent-encodes it in the log
                size=written.st_size,
                partition_values={"instance": str(instance), "date": str(date)},
                modification_time=written.st_mtime_ns // 1_000_000,
                data_change=True,
                stats=json.dumps({"numRecords": part.height}),
            )
        )
    table.create_write_transaction(
        adds, mode="append", schema=table.schema(), partition_by=list(PARTITION_BY),
        commit_properties=commit,
    )  # fmt: skip


def version_of(root: Path, name: str) -> int:
    """The newest committed version of one table."""
    with _writing(root / name) as table:
        return int(table.version())


def create_tables(root: Path) -> None:
    """Make every table (empty, with its schema) that is not there yet; safe to race.

    `captures` is made last, pinned to the others' first versions, so a reader of the empty
    dataset reads every table empty even if a first batch is being committed."""
    _refuse_old_layout(root)
    missing = [name for name in (*PARSED_FIRST, "raw", "captures") if not is_table(root / name)]
    empty = _empty_tables() if missing else {}  # made only when needed: once per batch it cost
    for name in missing:
        meta = None
        if name == "captures":
            meta = {PINS: json.dumps(dict.fromkeys((*PARSED_FIRST, "raw"), 0))}
        try:
            _with_date(empty[name]).write_delta(
                str(root / name), mode="ignore", delta_write_options=_write_options(meta)
            )
        except Exception as exc:  # another writer made it at the same moment: fine
            if not is_table(root / name):
                raise _write_failed(root, name, exc) from exc


def prepare(root: Path | str) -> Path:
    """Check `root` can be written (writable, not the old layout); tables are made by the
    first commit, so a write that fails before it leaves no empty dataset behind."""
    root = Path(root)
    check_writable(root)
    _refuse_old_layout(root)
    return root


def commit_raw(root: Path, raw: pl.DataFrame, *, batch: str | None = None) -> str:
    """Commit raw rows (conformed) in one commit, no parsing and no duplicate check: for
    captures with fresh ids (the collector). Returns the batch name."""
    batch = batch or new_batch_id()
    create_tables(root)
    commit_table(root, "raw", conform_raw(raw), metadata={BATCH: batch})
    return batch


def commit_parsed(root: Path, tables: Mapping[str, pl.DataFrame], *, batch: str) -> int:
    """Commit the parsed tables of captures nobody else is parsing, `captures` last with the
    versions it goes with; holds the write lock. Returns the captures committed."""
    with write_lock(root):
        return _commit_parsed(root, tables, batch)


def _commit_parsed(root: Path, tables: Mapping[str, pl.DataFrame], batch: str) -> int:
    captures = tables["captures"]
    if captures.is_empty():
        return 0
    create_tables(root)
    pins: dict[str, int] = {}
    for name in PARSED_FIRST:
        if tables[name].is_empty():
            pins[name] = version_of(root, name)
        else:
            pins[name] = commit_table(root, name, tables[name], metadata={BATCH: batch})
    pins["raw"] = version_of(root, "raw")
    commit_table(root, "captures", captures, metadata={BATCH: batch, PINS: json.dumps(pins)})
    return captures.height


def append_raw(
    root: Path | str,
    raw: pl.DataFrame,
    *,
    batch: str | None = None,
    parsed: Mapping[str, pl.DataFrame] | None = None,
) -> WriteResult:
    """Append raw captures to the dataset, then commit their parsed tables.

    Captures already in the dataset (same capture id, or a content hash already
    there) are not written again, and `skipped` counts them: the check and both
    commits hold the dataset's write lock, so two imports of the same dumps at
    once write each capture once.

    `parsed` is `parse_raw(conform_raw(raw))` when the caller has it already: an import
    parses its next batch while this one is written. The rows of captures found to be in
    the dataset are dropped from it.
    """
    raw = conform_raw(raw)
    if raw.is_empty():
        return WriteResult(batch="", captures=0)
    root = prepare(root)
    with write_lock(root):
        fresh = _new_rows(root, raw)
        if fresh.is_empty():
            return WriteResult(batch="", captures=0, skipped=raw.height)
        batch = commit_raw(root, fresh, batch=batch)
        tables = _parsed_rows(fresh, raw, parsed)
        _commit_parsed(root, tables, batch)
    return WriteResult(
        batch=batch,
        captures=fresh.height,
        rejects=tables["rejects"],
        skipped=raw.height - fresh.height,
    )


def _parsed_rows(
    fresh: pl.DataFrame, raw: pl.DataFrame, parsed: Mapping[str, pl.DataFrame] | None
) -> dict[str, pl.DataFrame]:
    """The parsed tables of the `fresh` rows of `raw`: `parsed` (of all of `raw`) cut to them,
    or parsed here."""
    from clientscope.parse import parse_raw

    if parsed is None:
        return parse_raw(fresh)
    if fresh.height == raw.height:
        return dict(parsed)
    ids = fresh["capture_id"].implode()
    return {name: table.filter(pl.col("capture_id").is_in(ids)) for name, table in parsed.items()}


def append_tables(
    root: Path | str, tables: Mapping[str, pl.DataFrame], *, batch: str | None = None
) -> WriteResult:
    """Commit already-parsed tables (e.g. from `simulate`), and their raw rows if given."""
    root = prepare(root)
    empty = _empty_tables()
    full: dict[str, pl.DataFrame] = {
        name: tables[name].select(empty[name].columns).cast(empty[name].schema)
        if name in tables
        else empty[name]
        for name in TABLE_NAMES
    }
    batch = batch or new_batch_id()
    with write_lock(root):
        if not full["raw"].is_empty():
            commit_raw(root, full["raw"], batch=batch)
        captures = _commit_parsed(root, full, batch)
    return WriteResult(batch=batch, captures=captures)


def _new_rows(root: Path, raw: pl.DataFrame) -> pl.DataFrame:
    """The rows of `raw` whose capture id and content hashes are not in the dataset yet.

    Only the committed keys that match this batch are collected, so memory follows the batch,
    not the dataset.
    """
    hashes = pl.col("content_sha256").str.split(" ")
    mine = raw.select(hashes.explode().drop_nulls()).to_series()
    if not is_table(root / "raw"):  # nothing committed yet
        return raw
    with _writing(root / "raw") as table:  # this process's copy, brought up to date: no new load
        committed = _scan(root / "raw", table, pl.Schema(SCHEMAS["raw"])).select(
            "capture_id", hashes
        )
        ids, seen = pl.collect_all(
            [
                committed.filter(pl.col("capture_id").is_in(raw["capture_id"].implode())),
                committed.explode("content_sha256").filter(
                    pl.col("content_sha256").is_in(mine.implode())
                ),
            ]
        )
    known_hash = hashes.list.eval(pl.element().is_in(seen["content_sha256"].implode())).list.any()
    return raw.filter(
        ~pl.col("capture_id").is_in(ids["capture_id"].implode()) & ~known_hash.fill_null(False)
    )


def _latest(root: Path, name: str, instances: list[str] | None = None) -> pl.LazyFrame:
    """One table's newest version (writers' checks; readers use a Dataset's snapshot); with
    `instances`, only their partitions' files are listed and checked."""
    from deltalake import DeltaTable

    schema = pl.Schema(SCHEMAS[name])
    if not is_table(root / name):  # nothing committed yet
        return pl.LazyFrame(schema=schema)
    return _scan(root / name, DeltaTable(str(root / name)), schema, instances)


def known_content_hashes(root: Path | str) -> set[str]:
    """Every `content_sha256` already in the dataset (a row may hold several, space-separated)."""
    root = Path(root)
    if not is_table(root / "raw"):
        _refuse_old_layout(root)
        return set()
    hashes = (
        _latest(root, "raw")
        .select(pl.col("content_sha256").str.split(" ").explode())
        .drop_nulls()
        .unique()
        .collect()
    )
    return set(hashes.to_series().to_list())


# ------------------------------------------------------------------ mending and reparsing
def _unparsed_ids(raw: pl.LazyFrame, captures: pl.LazyFrame) -> pl.Series:
    parsed = captures.select("capture_id")
    return raw.select("capture_id").join(parsed, on="capture_id", how="anti").collect().to_series()


def parse_captures(
    root: Path, capture_ids: Sequence[str] | pl.Series, *, batch: str | None = None
) -> int:
    """Parse the raw rows of these captures and commit their tables (under the write lock).

    Those another writer committed meanwhile (an import holds the lock between its raw and
    parsed commits) are left out: each capture is parsed once."""
    from clientscope.parse import parse_raw

    ids = pl.Series("capture_id", list(capture_ids), dtype=pl.String)
    if ids.is_empty():
        return 0
    with write_lock(root):
        parsed = _latest(root, "captures").select("capture_id")
        raw = (
            _latest(root, "raw")
            .filter(pl.col("capture_id").is_in(ids.implode()))
            .join(parsed, on="capture_id", how="anti")
            .collect()
        )
        return _commit_parsed(root, parse_raw(raw), batch or new_batch_id())


def mend(root: Path | str) -> int:
    """Parse the captures in `raw` that have no parsed rows: a writer was killed between its
    raw and its parsed commit. Returns how many were parsed.

    Does nothing while a collector runs on the dataset (it parses its own captures; the next
    command that writes after it stops mends what it left). A parser failure leaves them
    unparsed and says why in a DatasetWarning: the raw rows stay, and reads count them.
    """
    root = Path(root)
    if not is_table(root / "raw") or not is_table(root / "captures"):
        return 0
    with exclusive(root / COLLECT_LOCK, wait=False) as no_collector:
        if not no_collector:
            return 0
        ids = _unparsed_ids(_latest(root, "raw"), _latest(root, "captures"))
        if ids.is_empty():
            return 0
        try:
            return parse_captures(root, ids)
        except DatasetWriteError:
            raise
        except BaseException as exc:  # a Polars panic is a BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            from clientscope.escape import printable

            warnings.warn(DatasetWarning(
                f"{root}: {ids.len()} captures in raw could not be parsed "
                f"({printable(f'{type(exc).__name__}: {exc}', limit=300)}); their raw rows are "
                "kept. Run `clientscope reparse` after upgrading clientscope."
            ), stacklevel=2)  # fmt: skip
            return 0


@dataclass(frozen=True)
class ReparseResult:
    """What `reparse` committed: the captures parsed and the rows of each parsed table."""

    captures: int
    rows: dict[str, int]
    kept: int = 0  # captures with no raw text (simulated, say), kept as they were

    def to_dict(self) -> dict[str, object]:
        return {"captures": self.captures, "rows": dict(self.rows), "kept": self.kept}


def reparse(root: Path | str) -> ReparseResult:
    """Parse every raw capture again and replace each parsed table in one commit.

    For a dataset parsed by an older clientscope (or a parser fix). Raw is only read. Parsed
    one (instance, date) partition at a time into a staging folder, then each table is
    committed from it in one streamed commit (delta-rs keeps a writer open per partition, so
    memory grows with the partitions, not the rows: ~2.5 GB for 8 x 500k client rows).
    A capture with no raw text (a simulated dataset has none) cannot be parsed again: its rows
    are carried over as they are, never dropped (`ReparseResult.kept`). Refused while a
    collector runs on the dataset.
    """
    from clientscope.parse import parse_raw

    root = Path(root)
    _refuse_old_layout(root)
    if not is_table(root / "raw"):
        raise DatasetError(f"{root} has no raw table: there is nothing to parse again")
    staging = root / f"{_TMP_PREFIX}reparse-{uuid.uuid4().hex[:8]}"
    with exclusive(root / COLLECT_LOCK, wait=False) as no_collector:
        if not no_collector:
            raise DatasetError(f"a collector is writing to {root}: stop it, then run reparse again")
        with write_lock(root):
            raw = _latest(root, "raw")
            keys = raw.select(pl.col("instance"), pl.col("ts").dt.date().alias("d")).unique()
            try:
                for n, (instance, day) in enumerate(
                    keys.collect().sort("instance", "d").iter_rows()
                ):
                    part = raw.filter(
                        (pl.col("instance") == instance) & (pl.col("ts").dt.date() == day)
                    ).collect()
                    for name, table in parse_raw(part).items():
                        (staging / name).mkdir(parents=True, exist_ok=True)
                        table.write_parquet(staging / name / f"{n:06d}.parquet")
                kept = _carry_over(root, raw.select("capture_id").unique(), staging)
                rows: dict[str, int] = {}
                batch = new_batch_id()
                empty = _empty_tables()
                pins: dict[str, int] = {}
                for name in (*PARSED_FIRST, "captures"):
                    files = sorted((staging / name).glob("*.parquet"))
                    staged = pl.scan_parquet(files) if files else empty[name].lazy()
                    rows[name] = int(staged.select(pl.len()).collect().item())
                    meta = {BATCH: batch}
                    if name == "captures":
                        pins["raw"] = version_of(root, "raw")
                        meta[PINS] = json.dumps(pins)
                    pins[name] = commit_table(root, name, staged, mode="overwrite", metadata=meta)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return ReparseResult(captures=rows["captures"] - kept, rows=rows, kept=kept)


def _parsed_captures(root: Path) -> pl.DataFrame:
    """(capture_id, instance) of every parsed capture: the captures table names them all (it is
    committed last); only when it cannot be read, every other table that can be."""
    for names in (("captures",), PARSED_FIRST):
        seen = [ids for name in names if (ids := _capture_ids(root, name)) is not None]
        if seen:
            return pl.concat(seen).unique()
    return pl.DataFrame(schema={"capture_id": pl.String, "instance": pl.String})


def _capture_ids(root: Path, name: str) -> pl.DataFrame | None:
    """A parsed table's (capture_id, instance), or None when it cannot be read (reparse rebuilds
    what it held from raw)."""
    try:
        return _latest(root, name).select("capture_id", "instance").unique().collect()
    except (DatasetError, pl.exceptions.PolarsError):
        return None


def _carry_over(root: Path, with_raw: pl.LazyFrame, staging: Path) -> int:
    """Stage each parsed table's rows of the captures that have no raw text (a simulated
    dataset's) as they are, so the overwrite keeps them; how many such captures. Their rows are
    read only from their instances' partitions: a damaged file elsewhere is what reparse
    rebuilds from raw."""
    listed = _parsed_captures(root)
    missing = listed.join(with_raw.collect(), on="capture_id", how="anti")
    if missing.is_empty():
        return 0
    instances = sorted(str(i) for i in missing["instance"].unique().to_list())
    ids = missing.select("capture_id").unique()
    for name in (*PARSED_FIRST, "captures"):
        (staging / name).mkdir(parents=True, exist_ok=True)
        try:
            rows = _latest(root, name, instances).join(ids.lazy(), on="capture_id", how="semi")
            rows.sink_parquet(staging / name / "kept.parquet")
        except (DatasetError, pl.exceptions.PolarsError) as exc:
            said = exc.fact if isinstance(exc, _DamagedFile) else str(exc)  # not "run reparse"
            raise DatasetError(
                f"{ids.height} captures of {root} (instance {', '.join(instances)}) have no raw text "
                f"to parse again (simulated, say), and their rows in its {name} table cannot be "
                f"read: {said}. reparse would drop them, so nothing was changed: restore that file "
                "from a backup, then run reparse again."
            ) from exc
    return ids.height


# ------------------------------------------------------------------ reading
def _scan(
    path: Path, table: DeltaTable, schema: pl.Schema, instances: list[str] | None = None
) -> pl.LazyFrame:
    """One loaded table version as a LazyFrame in the contract's column order and dtypes.

    The files and partition values come from the version's log, not from folder names: an
    instance is the string its writer committed whatever its characters (Hive decoding would
    read `__HIVE_DEFAULT_PARTITION__` as null), and a dataset folder may have any name
    (Polars' own `scan_delta` cannot open one whose path needs percent-encoding).
    """
    adds = pl.DataFrame(table.get_add_actions(flatten=True))
    if instances is not None and not adds.is_empty():
        adds = adds.filter(pl.col("partition.instance").is_in(instances))
    if adds.is_empty():
        return pl.LazyFrame(schema=schema)
    in_files = {name: dtype for name, dtype in schema.items() if name not in PARTITION_BY}
    files = [str(path / urllib.parse.unquote(file)) for file in adds["path"]]
    for file, size in zip(files, adds["size_bytes"], strict=True):
        _check_file(path, Path(file), size)
    if _folders_say_the_instance(adds):  # Polars prunes by folder: a filter reads one instance
        return pl.scan_parquet(
            files,
            schema=in_files,
            missing_columns="insert",
            extra_columns="ignore",
            hive_partitioning=True,
            hive_schema={"instance": pl.String(), "date": pl.String()},
        ).select(schema.names())
    parts = [
        pl.scan_parquet(
            [files[i] for i in rows["i"]],
            schema=in_files,
            missing_columns="insert",
            extra_columns="ignore",
            hive_partitioning=False,
        ).with_columns(pl.lit(instance, pl.String).alias("instance"))
        for (instance,), rows in adds.with_row_index("i").group_by(
            "partition.instance", maintain_order=True
        )
    ]
    return pl.concat(parts, how="vertical").select(schema.names())


class _DamagedFile(DatasetError):
    """A committed data file missing or not the size its commit logged; `fact` says which, without
    the mend, for a caller whose mend differs (reparse's carry-over)."""

    def __init__(self, fact: str, mend: str) -> None:
        super().__init__(f"{fact}{mend}")
        self.fact = fact


def _check_file(table: Path, file: Path, size: int) -> None:
    """A committed file must be there with the size its commit logged (a `stat`, no read):
    otherwise a DatasetError naming it and the mend, not a Parquet error naming nothing."""
    try:
        found: int | None = file.stat().st_size
    except OSError:
        found = None
    if found == size:
        return
    state = "missing" if found is None else f"{found} bytes where its commit logged {size}"
    what = f"{file}, a file of the {table.name} table of {table.parent}, is {state}"
    if table.name == "raw":
        raise _DamagedFile(
            what,
            ": the raw bytes of the captures in it are lost unless you restore it from a "
            "backup. Their parsed rows in the other tables are intact.",
        )
    raise _DamagedFile(
        what, f". Run `clientscope reparse {table.parent}` to rebuild the parsed tables from raw."
    )


def _folders_say_the_instance(adds: pl.DataFrame) -> bool:
    """Whether every file's `instance=` folder decodes (as Hive readers do) to the instance
    its log entry holds: not so for `__HIVE_DEFAULT_PARTITION__` (read as null)."""
    pairs = adds.select(
        pl.col("path").str.split("/").list.first().alias("folder"), "partition.instance"
    ).unique()
    for folder, instance in pairs.iter_rows():
        decoded = urllib.parse.unquote(urllib.parse.unquote(folder).removeprefix("instance="))
        if instance is None or instance == HIVE_NULL or decoded != instance:
            return False
    return True


def _log(table: Path, version: int) -> list[dict[str, Any]] | None:
    """The actions of one commit of a table, from its Delta log; None when that file is gone."""
    try:
        text = (table / "_delta_log" / f"{version:020d}.json").read_text("utf-8")
    except OSError:
        return None
    actions = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            action = json.loads(line)
            if isinstance(action, dict):
                actions.append(action)
    return actions


def _changes_data(actions: list[dict[str, Any]]) -> bool:
    """Whether a commit adds or removes rows (a compaction rewrites files: dataChange false)."""
    return any(
        isinstance(a.get(kind), dict) and a[kind].get("dataChange", True)
        for a in actions
        for kind in ("add", "remove")
    )


def _pins(captures: Path, version: int) -> dict[str, int] | None:
    """The versions of the other tables that captures version `version` goes with: those its
    newest clientscope commit recorded. None for a table no clientscope commit pinned."""
    for v in range(version, max(-1, version - _PIN_LOOKBACK), -1):
        actions = _log(captures, v)
        if actions is None:
            return None
        info: dict[str, Any] = next(
            (a["commitInfo"] for a in actions if isinstance(a.get("commitInfo"), dict)), {}
        )
        if PINS in info:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                pins = json.loads(info[PINS])
                return {str(k): int(v) for k, v in pins.items()}
            return None
        if _changes_data(actions):  # rows committed by another tool: no pins to trust
            return None
    return None


def _committed_at(table: Path, version: int) -> datetime:
    """When one commit of a table was made (its commit info's timestamp)."""
    for action in _log(table, version) or []:
        info = action.get("commitInfo")
        if isinstance(info, dict) and isinstance(info.get("timestamp"), int):
            return datetime.fromtimestamp(info["timestamp"] / 1000, UTC)
    raise DatasetError(f"{table}: the log of version {version} is gone; open a newer version")


def _quiet_for(path: Path, table: DeltaTable) -> timedelta:
    """How long ago a table's newest version read was committed."""
    try:
        return datetime.now(UTC) - _committed_at(path, int(table.version()))
    except DatasetError:
        return timedelta.max


def _same_rows_until(table: Path, pinned: int, newest: int) -> int:
    """The newest version at or after `pinned` with the same rows: the commits after it that
    change no data (compaction, vacuum) are taken, so a snapshot reads compacted files."""
    version = pinned
    while version < newest:
        actions = _log(table, version + 1)
        if actions is None or _changes_data(actions):
            break
        version += 1
    return version


def _load(path: Path, version: int | datetime | None) -> DeltaTable:
    from deltalake import DeltaTable

    table = DeltaTable(str(path))
    if version is not None:
        _go_back(table, path, version)
    return table


def _go_back(table: DeltaTable, path: Path, version: int | datetime) -> None:
    """Load an older version into a loaded table (no second read of its log from the start)."""
    newest = table.version()
    try:
        table.load_as_version(version)
    except Exception as exc:
        raise DatasetError(
            f"{path.parent} has no version {_when(version)} of its {path.name} table "
            f"({exc}); versions 0 to {newest} were committed, and "
            "the files of old ones are kept for `compact --retain` only"
        ) from exc


def _when(version: int | datetime) -> str:
    return f"as of {version.isoformat()}" if isinstance(version, datetime) else str(version)


def _snapshot(root: Path, version: int | datetime | None) -> dict[str, DeltaTable]:
    """Every table at the versions one captures version goes with (see the module doc)."""
    captures = _load(root / "captures", version)
    pins = _pins(root / "captures", int(captures.version())) or {}
    tables = {"captures": captures}
    for name in TABLE_NAMES:
        if name == "captures":
            continue
        table = tables[name] = _load(root / name, None)
        newest = int(table.version())
        if name == "raw" and version is None:
            continue  # everything captured: rows not parsed yet are counted
        if name in pins and pins[name] <= newest:
            same = _same_rows_until(root / name, pins[name], newest)
            if same != newest:
                _go_back(table, root / name, same)
        elif version is not None:  # not pinned: the table as it was when that version was committed
            _go_back(table, root / name, _committed_at(root / "captures", captures.version()))
    return tables


class Dataset:
    """A capture dataset: each table a Polars LazyFrame over one committed Delta version.

    The versions are fixed when it is opened (`versions`), so every scan of it, however late,
    reads the same snapshot. `unparsed` counts captures in `raw` whose parsed rows were not
    committed yet; 0 for a complete dataset.

    >>> ds = open_dataset("incident.cs")           # doctest: +SKIP
    >>> ds.clients.filter(pl.col("idle") > 600)    # doctest: +SKIP
    >>> ds.to_pandas("captures")                   # doctest: +SKIP
    """

    def __init__(self, root: Path, tables: Mapping[str, DeltaTable], *, unparsed: int = 0) -> None:
        self.root = root
        self.tables = dict(tables)
        self.unparsed = unparsed
        self._schemas = {name: pl.Schema(schema) for name, schema in SCHEMAS.items()}
        self._scans: dict[str, pl.LazyFrame] = {}

    @property
    def version(self) -> int:
        """The version of the `captures` table read: the dataset's version (`open_dataset(version=)`)."""
        return int(self.tables["captures"].version())

    @property
    def versions(self) -> dict[str, int]:
        """The version of every table read."""
        return {name: int(table.version()) for name, table in self.tables.items()}

    def scan(self, table: TableName) -> pl.LazyFrame:
        """All rows of one table, lazily; filters and column selections are pushed down."""
        if table not in self._schemas:
            raise DatasetError(f"no table {table!r}; tables are: {', '.join(self._schemas)}")
        if table not in self._scans:  # its files are listed and checked once
            self._scans[table] = _scan(self.root / table, self.tables[table], self._schemas[table])
        return self._scans[table]

    @property
    def raw(self) -> pl.LazyFrame:
        return self.scan("raw")

    @property
    def captures(self) -> pl.LazyFrame:
        return self.scan("captures")

    @property
    def clients(self) -> pl.LazyFrame:
        return self.scan("clients")

    @property
    def info(self) -> pl.LazyFrame:
        return self.scan("info")

    @property
    def info_fields(self) -> pl.LazyFrame:
        return self.scan("info_fields")

    @property
    def rejects(self) -> pl.LazyFrame:
        return self.scan("rejects")

    def to_pandas(self, table: TableName) -> pd.DataFrame:
        """One table as a pandas DataFrame (collects it into memory), nulls kept as `<NA>`.

        Counts stay integers: columns get pandas' nullable dtypes (see `pandas_frame`).
        """
        return pandas_frame(self.scan(table).collect())

    def instances(self) -> list[str]:
        frame = self.captures.select(pl.col("instance").unique().sort()).collect()
        return [str(v) for v in frame.to_series().to_list()]

    def overview(self) -> dict[str, object]:
        """Counts and time range, for reprs and `summary`."""
        caps = self.captures.select(
            pl.len().alias("captures"),
            pl.col("ok").not_().sum().alias("failed"),
            pl.col("ts").min().alias("first"),
            pl.col("ts").max().alias("last"),
            pl.col("instance").n_unique().alias("instances"),
            pl.col("n_clients").sum().alias("client_rows"),
            pl.col("n_rejects").sum().alias("rejected_lines"),
        ).collect()
        return caps.row(0, named=True)

    def __repr__(self) -> str:
        o = self.overview()
        return (
            f"<clientscope Dataset {self.root} v{self.version}: {o['captures']} captures "
            f"({o['failed']} failed) of {o['instances']} instance(s), {o['client_rows']} client rows, "
            f"{o['first']} .. {o['last']}>"
        )

    def _repr_html_(self) -> str:
        o = {"version": self.version, **self.overview()}
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in o.items()
        )
        return (
            f"<div><strong>clientscope dataset</strong> <code>{html.escape(str(self.root))}</code>"
            f"<table>{rows}</table><small>tables: {', '.join(self._schemas)}</small></div>"
        )


def pandas_frame(frame: pl.DataFrame) -> pd.DataFrame:
    """A Polars frame as pandas with its nullable dtypes: Int64, Float64, boolean, string.

    Polars' own `to_pandas()` gives float64 for an integer column with a null (`258.0`,
    `NaN`) and object for such a boolean one. These are the dtypes
    `pd.read_parquet(..., dtype_backend="numpy_nullable")` gives; timestamps stay
    `datetime64[us, UTC]` (null: `NaT`), binary and list columns Python objects.
    """
    from clientscope.extras import require

    require("pandas", "pandas")
    require("pyarrow", "pandas")
    converted: pd.DataFrame = frame.to_arrow().to_pandas(types_mapper=_nullable_dtypes().get)
    return converted


def _nullable_dtypes() -> dict[object, object]:
    """Arrow type -> pandas' nullable dtype; other types keep pyarrow's default."""
    import pandas as pd
    import pyarrow as pa

    nullable: dict[object, object] = {
        pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
        pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
        pa.float32(): pd.Float32Dtype(), pa.float64(): pd.Float64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype(),
    }  # fmt: skip
    if hasattr(pa, "string_view"):  # pyarrow >= 16
        nullable[pa.string_view()] = pd.StringDtype()
    return nullable


def open_dataset(
    path: Path | str,
    *,
    version: int | None = None,
    as_of: datetime | str | float | None = None,
) -> Dataset:
    """Open a capture dataset directory (written by `collect`, `import` or `simulate`).

    Reads one snapshot and writes nothing. `version=N` reads the dataset as its `captures`
    table's version N was (`Dataset.version` says which a read got); `as_of` as it was at a
    time (a datetime, or text as every time option takes it: ISO 8601, naive means UTC; epoch
    seconds; `-2h`, before now). Captures in `raw` whose parsed
    rows are not committed yet are counted in `Dataset.unparsed` and a `DatasetWarning`.
    """
    root = Path(path)
    if version is not None and as_of is not None:
        raise DatasetError("give version or as_of, not both")
    if not root.is_dir():
        raise DatasetError(
            f"{root} is not a clientscope dataset directory (it does not exist). "
            "Create one with `clientscope import` or `clientscope collect --out`."
        )
    _refuse_old_layout(root)
    if not all(is_table(root / name) for name in TABLE_NAMES):
        raise DatasetError(
            f"{root} is not a clientscope dataset: it does not hold its tables ("
            + ", ".join(f"{n}/" for n in TABLE_NAMES if not is_table(root / n))
            + " missing). Point at the folder given to --out."
        )
    when: int | datetime | None = version
    if as_of is not None:
        when = _as_datetime(as_of)
    tables = _snapshot(root, when)
    dataset = Dataset(root, tables)
    try:
        dataset.unparsed = _unparsed_ids(dataset.raw, dataset.captures).len()
    except DatasetError as exc:  # a damaged raw file: the parsed tables still read
        warnings.warn(DatasetWarning(str(exc)), stacklevel=2)
        return dataset
    if dataset.unparsed and _quiet_for(root / "raw", tables["raw"]) > IN_FLIGHT:  # no writer
        warnings.warn(DatasetWarning(_unparsed_message(root, dataset.unparsed)), stacklevel=2)
    return dataset


def _as_datetime(value: datetime | str | float) -> datetime:
    """`as_of` in the one time grammar (`config.moment`); `-2h` counts back from now."""
    from clientscope.config import Where, moment, resolve_moment

    where = Where.option("as_of")
    return resolve_moment(moment(value, where), datetime.now(UTC), where)


def _unparsed_message(root: Path, unparsed: int) -> str:
    return (
        f"{root}: {unparsed} capture(s) are in `raw` but not parsed yet, so they are missing "
        "from captures, clients and the other tables: a collector still parsing them, or a "
        "writer stopped between its two commits. The next command that writes to the dataset "
        "(import, collect, compact) parses them."
    )
