"""The capture dataset on disk: Hive-partitioned Parquet, raw + parsed.

    DATASET/
      raw/instance=<id>/date=<YYYY-MM-DD>/<batch>.parquet          lossless captures (RAW_SCHEMA)
      captures|clients|info|info_fields|rejects/instance=<id>/date=<YYYY-MM-DD>/<batch>.parquet
      .append.lock                                                 held while a batch is appended
      .compact/                                                    compaction journals and lock

`<id>` is the instance name percent-encoded (`__HIVE_DEFAULT_PARTITION__`, the
name Hive keeps for null, reads back as itself). The raw file of a batch is
written first, then its parsed tables; every file is written to a temporary
name and renamed, so a killed writer leaves at most an unparsed batch. Nothing
is ever overwritten: a batch name is new every time.

Reading never needs a write. `open_dataset` parses unparsed batches and
finishes an interrupted compaction only when it can take the compaction lock
at once and the disk takes the writes; otherwise it reads what is there and
says so (`Dataset.unparsed`, a `DatasetWarning`). A file that is not Parquet
is a `DatasetError` naming it and the mend, not a Polars traceback.
"""

from __future__ import annotations

import contextlib
import html
import io
import os
import shutil
import sys
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from clientscope.errors import DatasetError, DatasetWriteError
from clientscope.schema import RAW_SCHEMA, TABLES

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Dataset",
    "DatasetWarning",
    "RawPart",
    "WriteResult",
    "append_raw",
    "append_tables",
    "known_content_hashes",
    "open_dataset",
    "quarantined",
]

TableName = Literal["raw", "captures", "clients", "info", "info_fields", "rejects"]
_TMP_PREFIX = ".tmp-"
APPEND_LOCK = ".append.lock"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # Hive's folder name for null: Polars reads it so


class DatasetWarning(UserWarning):
    """The dataset was read as it is, but part of it is not there yet (unparsed batches)."""


@dataclass(frozen=True)
class WriteResult:
    """What one `append_raw` call wrote."""

    batch: str
    captures: int
    files: tuple[Path, ...]
    rejects: pl.DataFrame | None = None  # lines the parser kept aside (REJECTS_SCHEMA)
    skipped: int = 0  # captures already in the dataset (same capture id or content hash)


# ------------------------------------------------------------------ locks
if sys.platform == "win32":  # no flock: lock the lock file's first byte
    import msvcrt
    import time

    def _take_lock(fd: int, wait: bool) -> bool:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not wait:
                    return False
                time.sleep(0.05)

    def _release_lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _take_lock(fd: int, wait: bool) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _release_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive(lock_file: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `lock_file` (made if missing) for the block, across processes.

    Yields True once it is held. With `wait=False` it yields False at once when someone else
    holds it. A lock file that cannot be made (read-only disk) is a DatasetWriteError.
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
        held = _take_lock(fd, wait)
        try:
            yield held
        finally:
            if held:
                _release_lock(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ writing
def new_batch_id(now: datetime | None = None) -> str:
    """A file stem that sorts by time and never repeats."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def partition_dir(root: Path, table: str, instance: str, date: str) -> Path:
    return root / table / f"instance={urllib.parse.quote(instance, safe='')}" / f"date={date}"


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
    if "underlying IO error: " in text:
        return text.rsplit("underlying IO error: ", 1)[-1]
    if folder is not None:
        with contextlib.suppress(OSError):
            return f"{text}; {shutil.disk_usage(folder).free} bytes free on that disk"
    return text


def _write_atomic(frame: pl.DataFrame, target: Path) -> None:
    tmp = target.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}")
    data = io.BytesIO()  # written by Python, not Polars: a failure is the OS's own error
    frame.write_parquet(data, compression="zstd", statistics=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise DatasetWriteError(
            f"could not write {target}: {io_reason(exc)}. Nothing already in the dataset "
            "was changed; free disk space or fix permissions and run again."
        ) from exc


def write_partition_file(frame: pl.DataFrame, target: Path) -> None:
    """Write one table file of a partition, atomically.

    `instance` is left out of the file: the `instance=` folder carries it, as Hive
    layout wants (pyarrow, Spark and DuckDB refuse a column that is both in the
    file and in the path).
    """
    _write_atomic(frame.drop("instance", strict=False), target)


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


@dataclass(frozen=True)
class RawPart:
    """The raw rows of one (instance, date) partition, as written under one batch name."""

    instance: str
    date: str
    batch: str
    frame: pl.DataFrame


def by_partition(frame: pl.DataFrame) -> dict[tuple[str, str], pl.DataFrame]:
    """Rows of a table split by (instance, UTC date of ts), in first-seen order."""
    parts = frame.with_columns(pl.col("ts").dt.date().cast(pl.String).alias("_date")).partition_by(
        ["instance", "_date"], as_dict=True, maintain_order=True
    )
    return {(str(i), str(d)): part.drop("_date") for (i, d), part in parts.items()}


def write_raw(root: Path, raw: pl.DataFrame, batch: str) -> list[RawPart]:
    """Write conformed raw rows, one file per (instance, date); no parsing."""
    written = []
    for (instance, date), part in by_partition(raw).items():
        target = partition_dir(root, "raw", instance, date) / f"{batch}.parquet"
        write_partition_file(part, target)
        written.append(RawPart(instance, date, batch, part))
    return written


def append_raw(root: Path | str, raw: pl.DataFrame, *, batch: str | None = None) -> WriteResult:
    """Append raw captures to the dataset, then write their parsed tables.

    One file per table and (instance, date) partition; never overwrites anything.
    Captures already in the dataset (same capture id, or a content hash already
    there) are not written again, and `skipped` counts them: the check and the
    write hold the dataset's append lock, so two imports of the same dumps at
    once still write each capture once.
    """
    root = Path(root)
    raw = conform_raw(raw)
    if raw.is_empty():
        return WriteResult(batch="", captures=0, files=())
    check_writable(root)
    with exclusive(root / APPEND_LOCK):
        fresh = _new_rows(root, raw)
        if fresh.is_empty():
            return WriteResult(batch="", captures=0, files=(), skipped=raw.height)
        batch = batch or new_batch_id()
        files: list[Path] = []
        rejects: list[pl.DataFrame] = []
        for part in write_raw(root, fresh, batch):
            files.append(partition_dir(root, "raw", part.instance, part.date) / f"{batch}.parquet")
            paths, tables = _write_parsed(root, part.frame, part.instance, part.date, batch)
            files.extend(paths)
            rejects.append(tables["rejects"])
    return WriteResult(
        batch=batch,
        captures=fresh.height,
        files=tuple(files),
        rejects=pl.concat(rejects),
        skipped=raw.height - fresh.height,
    )


def _new_rows(root: Path, raw: pl.DataFrame) -> pl.DataFrame:
    """The rows of `raw` whose capture id and content hashes are not in the dataset yet.

    Only the committed keys that match this batch are collected, so memory follows the batch,
    not the dataset.
    """
    files = readable_files(_files(root, "raw"), "raw")
    if not files:
        return raw
    hashes = pl.col("content_sha256").str.split(" ")
    mine = raw.select(hashes.explode().drop_nulls()).to_series()
    committed = pl.scan_parquet(files, hive_partitioning=False).select("capture_id", hashes)
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


def _write_parsed(
    root: Path, raw_part: pl.DataFrame, instance: str, date: str, batch: str
) -> tuple[list[Path], dict[str, pl.DataFrame]]:
    from clientscope.parse import parse_raw

    tables = parse_raw(raw_part)
    written = []
    for name in TABLES:
        target = partition_dir(root, name, instance, date) / f"{batch}.parquet"
        write_partition_file(tables[name], target)
        written.append(target)
    return written, tables


def append_tables(
    root: Path | str, tables: dict[str, pl.DataFrame], *, batch: str | None = None
) -> WriteResult:
    """Write already-parsed tables (e.g. from `simulate`), partitioned like `append_raw`.

    Tables not given are written empty, so every batch has every table.
    """
    root = Path(root)
    check_writable(root)
    batch = batch or new_batch_id()
    empty = _empty_tables()
    captures = tables.get("captures", empty["captures"])
    parts = {name: by_partition(tables.get(name, empty[name])) for name in ("raw", *TABLES)}
    files: list[Path] = []
    for instance, date in parts["captures"]:
        for name in ("raw", *TABLES):
            part = parts[name].get((instance, date))
            if part is None and name == "raw":
                continue
            frame = (empty[name] if part is None else part).select(empty[name].columns)
            target = partition_dir(root, name, instance, date) / f"{batch}.parquet"
            write_partition_file(frame.cast(empty[name].schema), target)
            files.append(target)
    return WriteResult(batch=batch, captures=captures.height, files=tuple(files))


# ------------------------------------------------------------------ reading
def _files(root: Path, table: str) -> list[Path]:
    """The table's files as a reader should see them: no temporary files, and no source of a
    compaction whose merged file is already in place (so each row is read once)."""
    from clientscope.capture.compaction import merges_in_flight, superseded

    merges = merges_in_flight(root)  # read before listing: see `superseded`
    listed = _listed(root, table)
    return sorted(listed - superseded(root, table, listed, merges))


def _listed(root: Path, table: str) -> set[Path]:
    base = root / table
    if not base.is_dir():
        return set()
    return {
        p for p in base.glob("instance=*/date=*/*.parquet") if not p.name.startswith(_TMP_PREFIX)
    }


def readable_files(
    files: list[Path], table: str, known_good: set[Path] | None = None
) -> list[Path]:
    """`files` less those gone since they were listed (compacted away); a file whose Parquet
    footer does not read is a DatasetError naming it and the mend. `known_good` are skipped
    and grow with the files checked."""
    checked = set() if known_good is None else known_good
    kept = []
    for path in files:
        if path not in checked:
            try:
                pl.read_parquet_schema(path)
            except (OSError, pl.exceptions.PolarsError) as exc:
                if not path.exists():
                    continue
                raise DatasetError(_unreadable(path, table, exc)) from exc
            checked.add(path)
        kept.append(path)
    return kept


def _unreadable(path: Path, table: str, exc: BaseException) -> str:
    """What is wrong with a file that is not Parquet, and how to get a readable dataset back."""
    root = path.parents[3]  # root / table / instance= / date= / file
    found = f"{path} is not a readable Parquet file ({io_reason(exc)})"
    if table == "raw":
        return (
            f"{found}. The raw bytes of its captures are lost. Move it out of the dataset folder; "
            f"the parsed rows of those captures stay (the files named {path.name} in the other "
            "tables). To import their dumps again, move those files out too, or the captures "
            "count twice."
        )
    raw = root / "raw" / path.relative_to(root / table)
    mend = (
        f"its rows are parsed again from {raw} when the dataset is next opened where it can be "
        "written"
        if raw.exists()
        else "its rows are lost unless you write them again (import or simulate)"
    )
    return f"{found}. Move it out of the dataset folder: {mend}."


def unparsed_batches(root: Path) -> list[Path]:
    """Raw files whose parsed tables are not all there (a writer killed mid-batch, a parser
    behind or broken): their captures are in `raw` but missing from the other tables.

    Batches a compaction is merging are complete by its rule; their files come and go while
    the tables are listed one after the other, so they are left out."""
    from clientscope.capture.compaction import merges_in_flight

    merging = {f"{s}.parquet" for m in merges_in_flight(root) for s in (*m["stems"], m["new"])}
    raw = {p.relative_to(root / "raw") for p in _listed(root, "raw")}
    parsed = set(raw)
    for name in TABLES:
        parsed &= {p.relative_to(root / name) for p in _listed(root, name)}
    set_aside = {Path(rel) for rel in quarantined(root)}
    return sorted(
        root / "raw" / rel for rel in raw - parsed - set_aside if rel.name not in merging
    )


QUARANTINE = "quarantine.jsonl"
"""Raw batches the parser failed on: kept (raw is lossless), set aside so that no later command
repeats the failure, listed with why. `clientscope` parses them again once this line is removed."""


def quarantined(root: Path) -> dict[str, str]:
    """Raw files (relative to raw/) set aside because parsing them failed, with the reason."""
    import json

    path = root / QUARANTINE
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text("utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError):
            entry = json.loads(line)
            out[str(entry["raw"])] = str(entry["why"])
    return out


def _set_aside(root: Path, raw_file: Path, exc: BaseException) -> None:
    import json

    from clientscope.escape import printable

    entry = {"raw": str(raw_file.relative_to(root / "raw")), "at": datetime.now(UTC).isoformat(),
             "why": printable(f"{type(exc).__name__}: {exc}", limit=500)}  # fmt: skip
    with open(root / QUARANTINE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def repair(root: Path) -> list[str]:
    """Parse raw batches whose parsed tables are missing (a writer killed mid-batch).

    Returns the repaired batch file stems. Raw files are only read; nothing is
    deleted (a table file written before the kill is replaced by the same rows).
    """
    repaired = []
    for raw_file in readable_files(unparsed_batches(root), "raw"):
        instance_dir, date_dir = raw_file.relative_to(root / "raw").parts[:2]
        instance = urllib.parse.unquote(instance_dir.removeprefix("instance="))
        try:
            part = pl.read_parquet(raw_file, hive_partitioning=False).with_columns(
                pl.lit(instance).alias("instance")
            )
            _write_parsed(root, part, instance, date_dir.removeprefix("date="), raw_file.stem)
        except (OSError, DatasetWriteError):
            raise  # the disk, not the batch: nothing to set aside
        except BaseException as exc:  # a Polars panic is a BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            _set_aside(root, raw_file, exc)  # the next command must not fail on it again
            continue
        repaired.append(raw_file.stem)
    return repaired


def known_content_hashes(root: Path | str) -> set[str]:
    """Every `content_sha256` already in the dataset (a row may hold several, space-separated)."""
    files = readable_files(_files(Path(root), "raw"), "raw")
    if not files:
        return set()
    hashes = (
        pl.scan_parquet(files, hive_partitioning=False)
        .select(pl.col("content_sha256").str.split(" ").explode())
        .drop_nulls()
        .unique()
        .collect()
    )
    return set(hashes.to_series().to_list())


def _empty_tables() -> dict[str, pl.DataFrame]:
    from clientscope.parse import parse_raw

    return {"raw": empty_raw(), **parse_raw(empty_raw())}


class Dataset:
    """A capture dataset: each table a Polars LazyFrame over its Parquet files.

    `unparsed` lists raw files whose parsed tables were missing when it was opened
    (their captures are in `raw` only); empty for a complete dataset.

    >>> ds = open_dataset("incident.cs")           # doctest: +SKIP
    >>> ds.clients.filter(pl.col("idle") > 600)    # doctest: +SKIP
    >>> ds.to_pandas("captures")                   # doctest: +SKIP
    """

    def __init__(self, root: Path, *, unparsed: tuple[Path, ...] = ()) -> None:
        self.root = root
        self.unparsed = unparsed
        self._schemas = {name: frame.schema for name, frame in _empty_tables().items()}
        self._readable: set[Path] = set()  # files whose footer was read once already

    def scan(self, table: TableName) -> pl.LazyFrame:
        """All rows of one table, lazily; filters and column selections are pushed down."""
        if table not in self._schemas:
            raise DatasetError(f"no table {table!r}; tables are: {', '.join(self._schemas)}")
        files = readable_files(_files(self.root, table), table, self._readable)
        schema = self._schemas[table]
        if not files:
            return pl.LazyFrame(schema=schema)
        in_files = {name: dtype for name, dtype in schema.items() if name != "instance"}
        frame = pl.scan_parquet(
            files,
            hive_partitioning=True,
            hive_schema={"instance": pl.String(), "date": pl.String()},
            schema=in_files,
            missing_columns="insert",
            extra_columns="ignore",
        ).select(schema.names())
        if any(f.parts[-3] == f"instance={HIVE_NULL}" for f in files):
            # Hive reads that folder as null; an instance is never null, so it is this name
            frame = frame.with_columns(pl.col("instance").fill_null(HIVE_NULL))
        return frame

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
            f"<clientscope Dataset {self.root}: {o['captures']} captures "
            f"({o['failed']} failed) of {o['instances']} instance(s), {o['client_rows']} client rows, "
            f"{o['first']} .. {o['last']}>"
        )

    def _repr_html_(self) -> str:
        o = self.overview()
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


def open_dataset(path: Path | str, *, repair_missing: bool = True) -> Dataset:
    """Open a capture dataset directory (written by `collect`, `import` or `simulate`).

    With `repair_missing`, what a killed writer left (unparsed batches, an
    interrupted compaction) is finished first when nobody holds the compaction
    lock and the disk takes the writes. Otherwise the dataset is read as it is:
    a `DatasetWarning` says which captures have no parsed rows (`Dataset.unparsed`).
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(
            f"{root} is not a clientscope dataset directory (it does not exist). "
            "Create one with `clientscope import` or `clientscope collect --out`."
        )
    if not (root / "raw").is_dir() and not (root / "captures").is_dir():
        raise DatasetError(
            f"{root} has no raw/ or captures/ folder, so it is not a clientscope dataset. "
            "Point at the folder given to --out."
        )
    unparsed = _mend_if_free(root) if repair_missing else unparsed_batches(root)
    if unparsed:
        warnings.warn(DatasetWarning(_unparsed_message(root, unparsed)), stacklevel=2)
    if set_aside := quarantined(root):
        first, why = next(iter(set_aside.items()))
        warnings.warn(DatasetWarning(
            f"{root}: {len(set_aside)} raw batch file(s) could not be parsed and are set aside "
            f"(their raw bytes are kept; see {QUARANTINE}); the first: raw/{first}: {why}"
        ), stacklevel=2)  # fmt: skip
    return Dataset(root, unparsed=tuple(unparsed))


def _mend_if_free(root: Path) -> list[Path]:
    """Parse unparsed batches and settle an interrupted compaction, if nobody else holds the
    compaction lock and the disk takes it; returns the raw files still unparsed."""
    from clientscope.capture.compaction import mend, merges_in_flight

    unparsed = unparsed_batches(root)
    if not unparsed and not merges_in_flight(root):
        return []
    with contextlib.suppress(OSError, DatasetWriteError):  # read-only, full: read what is there
        mend(root, wait=False)
    return unparsed_batches(root)


def _unparsed_message(root: Path, unparsed: list[Path]) -> str:
    return (
        f"{root}: {len(unparsed)} raw batch file(s) have no parsed tables yet (the first: "
        f"{unparsed[0]}), so their captures are in `raw` but missing from captures, clients and "
        "the other tables. They are parsed when the dataset is opened where it can be written "
        "(free disk space, not read-only) while no `clientscope compact` runs."
    )
