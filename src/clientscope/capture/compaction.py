"""`compact`: merge the many small batch files a collector leaves into one per partition.

A batch is one file per table (raw, captures, clients, info, info_fields,
rejects) with the same name in each `instance=/date=` partition. Compaction
merges complete batches (all parsed tables present) of a partition into one new
batch, so the dataset keeps that shape and `open_dataset`'s repair of
half-written batches still works.

Crash safety comes from a journal per partition, in `DATASET/.compact/`:

1. journal `writing`: merged files are written under hidden temporary names
   (readers skip them); a crash here leaves the sources as they were.
2. journal `committing`: temporary files are renamed into place (parsed tables
   first, raw last), then the sources are removed (raw first). A crash here is
   finished by the next `compact`, which replays the journal: renames what is
   left, removes what is left. Rows are checked by count before committing.

Between a crash in step 2 and the next `compact` (or `collect`, which runs it
at exit), a reader may see the partition's rows twice; `recover(root)` ends that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clientscope.errors import DatasetError, DatasetWriteError
from clientscope.schema import TABLES

__all__ = ["CompactResult", "compact", "recover"]

JOURNAL_DIR = ".compact"
_TMP = ".tmp-"
_ALL_TABLES = ("raw", *TABLES)
_COMMIT_ORDER = (*TABLES, "raw")  # a raw file is only visible once its parsed files are
_DELETE_ORDER = ("raw", *TABLES)  # a raw file never outlives its parsed files
SMALL_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CompactResult:
    """What one `compact` run did."""

    partitions: int  # partitions merged
    batches_merged: int  # batches that were merged away
    files_before: int
    files_after: int
    recovered: int  # interrupted compactions finished first

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def compact(path: Path | str, *, small_file_bytes: int = SMALL_FILE_BYTES) -> CompactResult:
    """Merge each partition's small complete batches into one batch, safely; see the module doc."""
    root = Path(path)
    if not (root / "raw").is_dir() and not (root / "captures").is_dir():
        raise DatasetError(
            f"{root} has no raw/ or captures/ folder, so it is not a clientscope dataset; "
            "point at the folder given to collect --out"
        )
    with _lock(root):
        recovered = recover(root)
        before = _count_files(root)
        merged = [
            _compact_partition(root, part, stems)
            for part in _partitions(root)
            if len(stems := _small_complete_stems(root, part, small_file_bytes)) > 1
        ]
        return CompactResult(
            partitions=len(merged),
            batches_merged=sum(merged),
            files_before=before,
            files_after=_count_files(root),
            recovered=recovered,
        )


def recover(path: Path | str) -> int:
    """Finish or undo compactions a crash interrupted; returns how many there were."""
    root = Path(path)
    folder = root / JOURNAL_DIR
    for stale in folder.glob(f"{_TMP}*.json"):  # a journal write the crash cut short
        stale.unlink()
    journals = sorted(folder.glob("*.json"))
    for journal in journals:
        entry = json.loads(journal.read_text())
        if entry["state"] == "committing":
            _commit(root, entry)
        else:
            for table in entry["tables"]:
                _part_dir(root, table, entry["partition"]).joinpath(_tmp_name(entry["new"])).unlink(
                    missing_ok=True
                )
        journal.unlink()
    return len(journals)


def _compact_partition(root: Path, partition: str, stems: list[str]) -> int:
    from clientscope.dataset import new_batch_id

    tables = [
        t
        for t in _ALL_TABLES
        if any((root / t / partition / f"{s}.parquet").exists() for s in stems)
    ]
    entry: dict[str, Any] = {
        "state": "writing",
        "partition": partition,
        "stems": stems,
        "new": f"{new_batch_id()}-compact",
        "tables": tables,
    }
    journal = root / JOURNAL_DIR / f"{entry['new']}.json"
    _write_journal(journal, entry)
    try:
        for table in tables:
            _merge(root, table, partition, stems, entry["new"])
    except Exception:
        recover(root)  # state is `writing`: drops the temporary files, keeps the sources
        raise
    entry["state"] = "committing"
    _write_journal(journal, entry)
    _commit(root, entry)
    journal.unlink()
    return len(stems)


def _merge(root: Path, table: str, partition: str, stems: list[str], new: str) -> None:
    import polars as pl

    folder = root / table / partition
    sources = [folder / f"{s}.parquet" for s in stems if (folder / f"{s}.parquet").exists()]
    tmp = folder / _tmp_name(new)
    try:
        frames = [pl.scan_parquet(f) for f in sources]
        pl.concat(frames, how="diagonal_relaxed").sink_parquet(
            tmp, compression="zstd", statistics=True
        )
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except OSError as exc:
        raise DatasetWriteError(
            f"compact: could not write {tmp}: {exc.strerror or exc}. The dataset is unchanged; "
            "free disk space and run `clientscope compact` again."
        ) from exc
    expected = sum(_rows(f) for f in sources)
    if _rows(tmp) != expected:
        raise DatasetError(
            f"compact: {tmp} has {_rows(tmp)} rows, its sources {expected}; nothing changed"
        )


def _commit(root: Path, entry: dict[str, Any]) -> None:
    partition, new = entry["partition"], entry["new"]
    for table in (t for t in _COMMIT_ORDER if t in entry["tables"]):
        folder = _part_dir(root, table, partition)
        tmp = folder / _tmp_name(new)
        if tmp.exists():
            os.replace(tmp, folder / f"{new}.parquet")
    for table in (t for t in _DELETE_ORDER if t in entry["tables"]):
        folder = _part_dir(root, table, partition)
        for stem in entry["stems"]:
            (folder / f"{stem}.parquet").unlink(missing_ok=True)


def _partitions(root: Path) -> list[str]:
    found = {
        str(p.relative_to(root / table))
        for table in _ALL_TABLES
        if (root / table).is_dir()
        for p in (root / table).glob("instance=*/date=*")
        if p.is_dir()
    }
    return sorted(found)


def _small_complete_stems(root: Path, partition: str, limit: int) -> list[str]:
    """Batches of this partition present in every parsed table, all of whose files are small."""
    stems: set[str] | None = None
    for table in TABLES:
        here = {p.stem for p in _visible(root / table / partition)}
        stems = here if stems is None else stems & here
    small = []
    for stem in sorted(stems or ()):
        files = [root / t / partition / f"{stem}.parquet" for t in _ALL_TABLES]
        if all(f.stat().st_size < limit for f in files if f.exists()):
            small.append(stem)
    return small


def _visible(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.glob("*.parquet") if not p.name.startswith(_TMP)]


def _count_files(root: Path) -> int:
    return sum(len(_visible(root / t / part)) for t in _ALL_TABLES for part in _partitions(root))


def _rows(path: Path) -> int:
    import polars as pl

    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def _part_dir(root: Path, table: str, partition: str) -> Path:
    return root / table / partition


def _tmp_name(new: str) -> str:
    return f"{_TMP}{new}.parquet"


def _write_journal(journal: Path, entry: dict[str, Any]) -> None:
    journal.parent.mkdir(parents=True, exist_ok=True)
    tmp = journal.with_name(f"{_TMP}{journal.name}")
    with open(tmp, "w") as fh:
        json.dump(entry, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, journal)


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    folder = root / JOURNAL_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / "lock", "a")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise DatasetWriteError(f"compact: cannot write in {root}: {exc.strerror or exc}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DatasetError(
                f"another `clientscope compact` is running on {root}; wait for it to finish"
            ) from exc
        yield
