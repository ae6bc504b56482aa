"""The capture dataset on disk: Hive-partitioned Parquet, raw + parsed.

    DATASET/
      raw/instance=<id>/date=<YYYY-MM-DD>/<batch>.parquet          lossless captures (RAW_SCHEMA)
      captures|clients|info|info_fields|rejects/instance=<id>/date=<YYYY-MM-DD>/<batch>.parquet

`<id>` is the instance name percent-encoded. The raw file of a batch is written
first, then its parsed tables; every file is written to a temporary name and
renamed, so a killed writer leaves at most an unparsed batch, which
`open_dataset` parses again. Nothing is ever overwritten: a batch name is new
every time.
"""

from __future__ import annotations

import contextlib
import html
import os
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import polars as pl

from clientscope.errors import DatasetError, DatasetWriteError
from clientscope.schema import RAW_SCHEMA, TABLES

__all__ = [
    "Dataset",
    "RawPart",
    "WriteResult",
    "append_raw",
    "append_tables",
    "known_content_hashes",
    "open_dataset",
]

TableName = Literal["raw", "captures", "clients", "info", "info_fields", "rejects"]
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class WriteResult:
    """What one `append_raw` call wrote."""

    batch: str
    captures: int
    files: tuple[Path, ...]
    rejects: pl.DataFrame | None = None  # lines the parser kept aside (REJECTS_SCHEMA)


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


def _write_atomic(frame: pl.DataFrame, target: Path) -> None:
    tmp = target.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex[:8]}-{target.name}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise DatasetWriteError(
            f"could not write {target}: {exc.strerror or exc}. Nothing already in the dataset "
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
            f"dataset directory {root} is not writable: {exc.strerror or exc}. "
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
    """
    root = Path(root)
    raw = conform_raw(raw)
    if raw.is_empty():
        return WriteResult(batch="", captures=0, files=())
    check_writable(root)
    batch = batch or new_batch_id()
    files: list[Path] = []
    rejects: list[pl.DataFrame] = []
    for part in write_raw(root, raw, batch):
        files.append(partition_dir(root, "raw", part.instance, part.date) / f"{batch}.parquet")
        paths, tables = _write_parsed(root, part.frame, part.instance, part.date, batch)
        files.extend(paths)
        rejects.append(tables["rejects"])
    return WriteResult(
        batch=batch, captures=raw.height, files=tuple(files), rejects=pl.concat(rejects)
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


def _files(root: Path, table: str) -> list[Path]:
    base = root / table
    if not base.is_dir():
        return []
    return sorted(
        p for p in base.glob("instance=*/date=*/*.parquet") if not p.name.startswith(_TMP_PREFIX)
    )


def repair(root: Path) -> list[str]:
    """Parse raw batches whose parsed tables are missing (a writer killed mid-batch).

    Returns the repaired batch file stems. Raw files are only read, never changed.
    """
    repaired = []
    for raw_file in _files(root, "raw"):
        rel = raw_file.relative_to(root / "raw")
        if all((root / name / rel).exists() for name in TABLES):
            continue
        instance_dir, date_dir = rel.parts[0], rel.parts[1]
        instance = urllib.parse.unquote(instance_dir.removeprefix("instance="))
        part = pl.read_parquet(raw_file, hive_partitioning=False).with_columns(
            pl.lit(instance).alias("instance")
        )
        date = date_dir.removeprefix("date=")
        for name in TABLES:  # a table written before the kill is rewritten identically
            (root / name / rel).unlink(missing_ok=True)
        _write_parsed(root, part, instance, date, raw_file.stem)
        repaired.append(raw_file.stem)
    return repaired


def known_content_hashes(root: Path | str) -> set[str]:
    """Every `content_sha256` already in the dataset (a row may hold several, space-separated)."""
    files = _files(Path(root), "raw")
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

    >>> ds = open_dataset("incident.cs")           # doctest: +SKIP
    >>> ds.clients.filter(pl.col("idle") > 600)    # doctest: +SKIP
    >>> ds.to_pandas("captures")                   # doctest: +SKIP
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._schemas = {name: frame.schema for name, frame in _empty_tables().items()}

    def scan(self, table: TableName) -> pl.LazyFrame:
        """All rows of one table, lazily; filters and column selections are pushed down."""
        if table not in self._schemas:
            raise DatasetError(f"no table {table!r}; tables are: {', '.join(self._schemas)}")
        files = _files(self.root, table)
        schema = self._schemas[table]
        if not files:
            return pl.LazyFrame(schema=schema)
        in_files = {name: dtype for name, dtype in schema.items() if name != "instance"}
        return pl.scan_parquet(
            files,
            hive_partitioning=True,
            hive_schema={"instance": pl.String(), "date": pl.String()},
            schema=in_files,
            missing_columns="insert",
            extra_columns="ignore",
        ).select(schema.names())

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

    def to_pandas(self, table: TableName) -> object:
        """One table as a pandas DataFrame (collects it into memory)."""
        return self.scan(table).collect().to_pandas()

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


def open_dataset(path: Path | str, *, repair_missing: bool = True) -> Dataset:
    """Open a capture dataset directory (written by `collect`, `import` or `simulate`)."""
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
    if repair_missing and os.access(root, os.W_OK):
        from clientscope.capture.compaction import recover

        recover(root)  # finish or roll back a compaction a crash interrupted
        repair(root)
    return Dataset(root)
