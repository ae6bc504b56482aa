"""`compact`: merge the many small batch files a collector leaves into one per partition.

A batch is one file per table (raw, captures, clients, info, info_fields,
rejects) with the same name in each `instance=/date=` partition. Compaction
merges complete batches (all parsed tables present) of a partition into one new
batch, so the dataset keeps that shape and the repair of half-written batches
still works.

Crash safety comes from a journal per partition, in `DATASET/.compact/`:

1. journal `writing`: merged files are written under hidden temporary names
   (readers skip them); a crash here leaves the sources as they were.
2. journal `committing` (with each merged file's row count): temporary files
   are renamed into place (parsed tables first, raw last). The sources are
   removed (raw first) only once every merged file is in place with the rows
   of its sources; if one is missing or short, the merge is undone and every
   source kept. A crash here is settled the same way by the next `compact`.

Everything that renames or removes files holds the compaction lock
(`.compact/lock`): `compact` and `recover` wait for it; `open_dataset` settles
what a crash left only if it can take the lock at once. A reader that cannot
still reads each row once: `superseded` leaves out the sources of a merged
file that is already in place.
"""

from __future__ import annotations

import contextlib
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
    """Merge each partition's small complete batches into one batch, safely; see the module doc.

    Waits while another compaction (or a reader settling a crashed one) holds the lock.
    """
    root = Path(path)
    if not (root / "raw").is_dir() and not (root / "captures").is_dir():
        raise DatasetError(
            f"{root} has no raw/ or captures/ folder, so it is not a clientscope dataset; "
            "point at the folder given to collect --out"
        )
    with _lock(root, wait=True):
        recovered = _recover(root)
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
    with _lock(root, wait=True):
        return _recover(root)


def mend(path: Path | str, *, wait: bool = True) -> bool:
    """Settle interrupted compactions, then parse raw batches that have no parsed tables.

    With `wait=False` (a reader), does nothing and returns False when the lock is
    held: a compaction is running, and its files are not a reader's to touch.
    """
    from clientscope.dataset import repair

    root = Path(path)
    with _lock(root, wait=wait) as held:
        if held:
            _recover(root)
            repair(root)
        return held


def merges_in_flight(root: Path) -> list[dict[str, Any]]:
    """The journals of compactions running or interrupted (none, almost always)."""
    entries = []
    for journal in sorted((root / JOURNAL_DIR).glob("*.json")):
        if journal.name.startswith(_TMP):
            continue
        with contextlib.suppress(OSError, ValueError):  # finished meanwhile, or not ours
            entries.append(json.loads(journal.read_text()))
    return entries


def superseded(
    root: Path, table: str, listed: set[Path], merges: list[dict[str, Any]]
) -> set[Path]:
    """Files of `listed` a reader leaves out so each row is read once: the sources of every
    merged file that is in the listing. Sources are removed only after all merged files are in
    place, so this holds at any moment of a commit, or after a crash in one; `merges` must be
    read before the listing is made."""
    hidden: set[Path] = set()
    for entry in merges:
        folder = _part_dir(root, table, entry["partition"])
        if table in entry["tables"] and folder / f"{entry['new']}.parquet" in listed:
            hidden.update(folder / f"{stem}.parquet" for stem in entry["stems"])
    return hidden


def _recover(root: Path) -> int:
    """`recover`, for a caller holding the lock."""
    folder = root / JOURNAL_DIR
    for stale in folder.glob(f"{_TMP}*.json"):  # a journal write the crash cut short
        stale.unlink()
    journals = sorted(folder.glob("*.json"))
    for journal in journals:
        entry = json.loads(journal.read_text())
        if entry["state"] == "committing":
            _commit(root, entry)  # forward if every merged file is whole, else back
        else:
            _roll_back(root, entry)
        journal.unlink()
    return len(journals)


def _compact_partition(root: Path, partition: str, stems: list[str]) -> int:
    from clientscope.dataset import new_batch_id

    sources = [
        f"{t}/{partition}/{s}.parquet"
        for t in _ALL_TABLES
        for s in stems
        if (root / t / partition / f"{s}.parquet").exists()
    ]
    entry: dict[str, Any] = {
        "state": "writing",
        "partition": partition,
        "stems": stems,
        "new": f"{new_batch_id()}-compact",
        "tables": [t for t in _ALL_TABLES if any(s.startswith(f"{t}/") for s in sources)],
        "sources": sources,
        "rows": {},
    }
    journal = root / JOURNAL_DIR / f"{entry['new']}.json"
    _write_journal(journal, entry)
    try:
        for table in entry["tables"]:
            entry["rows"][table] = _merge(root, table, partition, stems, entry["new"])
        entry["state"] = "committing"
        _write_journal(journal, entry)
    except Exception:
        _roll_back(root, entry)  # the sources were not touched
        journal.unlink(missing_ok=True)
        raise
    problems = _commit(root, entry)
    journal.unlink()
    if problems:
        raise DatasetError(
            f"compact: {problems[0]}, so the merge of {partition} was undone and its "
            f"{len(stems)} source batches kept. Run `clientscope compact` again."
        )
    return len(stems)


def _merge(root: Path, table: str, partition: str, stems: list[str], new: str) -> int:
    """Write the table's merged file under a temporary name; returns its row count."""
    import polars as pl

    from clientscope.dataset import io_reason, readable_files

    folder = root / table / partition
    listed = [folder / f"{s}.parquet" for s in stems if (folder / f"{s}.parquet").exists()]
    sources = readable_files(listed, table)
    tmp = folder / _tmp_name(new)
    try:
        frames = [pl.scan_parquet(f) for f in sources]
        pl.concat(frames, how="diagonal_relaxed").sink_parquet(
            tmp, compression="zstd", statistics=True
        )
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except (OSError, pl.exceptions.ComputeError) as exc:  # a full disk is a ComputeError
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise DatasetWriteError(
            f"compact: could not write {tmp}: {io_reason(exc, folder)}. The dataset is unchanged; "
            "free disk space and run `clientscope compact` again."
        ) from exc
    expected = sum(_rows(f) for f in sources)
    if _rows(tmp) != expected:
        raise DatasetError(
            f"compact: {tmp} has {_rows(tmp)} rows, its sources {expected}; nothing changed"
        )
    return expected


def _commit(root: Path, entry: dict[str, Any]) -> list[str]:
    """Rename the merged files in; remove the sources only if every merged file is there with its
    rows. Otherwise undo the merge and return what was wrong."""
    partition, new = entry["partition"], entry["new"]
    for table in (t for t in _COMMIT_ORDER if t in entry["tables"]):
        folder = _part_dir(root, table, partition)
        tmp = folder / _tmp_name(new)
        if tmp.exists():
            os.replace(tmp, folder / f"{new}.parquet")
    problems = _problems(root, entry)
    if not problems:
        for table in (t for t in _DELETE_ORDER if t in entry["tables"]):
            folder = _part_dir(root, table, partition)
            for stem in entry["stems"]:
                (folder / f"{stem}.parquet").unlink(missing_ok=True)
        return []
    gone = [s for s in entry.get("sources", ()) if not (root / s).exists()]
    if gone:  # only if someone removed files behind compaction's back: touch nothing more
        raise DatasetError(
            f"compact: {problems[0]}, and {root / gone[0]} it replaces is gone too, so nothing "
            f"more is removed or undone. Keep a copy of {root}; the journal in "
            f"{root / JOURNAL_DIR} lists what was merged."
        )
    _roll_back(root, entry)
    return problems


def _problems(root: Path, entry: dict[str, Any]) -> list[str]:
    """Merged files of a committing compaction that are missing or do not hold their rows."""
    import polars as pl

    problems = []
    for table in entry["tables"]:
        merged = _part_dir(root, table, entry["partition"]) / f"{entry['new']}.parquet"
        expected = entry.get("rows", {}).get(table)  # journals of older versions have no rows
        try:
            rows = _rows(merged) if merged.exists() else None
        except (OSError, pl.exceptions.PolarsError):
            problems.append(f"{merged} does not read as Parquet")
            continue
        if rows is None:
            problems.append(f"{merged} is missing")
        elif expected is not None and rows != expected:
            problems.append(f"{merged} has {rows} rows, its sources {expected}")
    return problems


def _roll_back(root: Path, entry: dict[str, Any]) -> None:
    """Remove a compaction's merged files, temporary or in place; its sources stay."""
    for table in entry["tables"]:
        folder = _part_dir(root, table, entry["partition"])
        (folder / _tmp_name(entry["new"])).unlink(missing_ok=True)
        (folder / f"{entry['new']}.parquet").unlink(missing_ok=True)


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
    from clientscope.dataset import io_reason

    tmp = journal.with_name(f"{_TMP}{journal.name}")
    try:
        journal.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as fh:
            json.dump(entry, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, journal)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise DatasetWriteError(
            f"compact: could not write {journal}: {io_reason(exc)}. The dataset is "
            "unchanged; free disk space and run `clientscope compact` again."
        ) from exc


@contextlib.contextmanager
def _lock(root: Path, *, wait: bool) -> Iterator[bool]:
    from clientscope.dataset import exclusive

    with exclusive(root / JOURNAL_DIR / "lock", wait=wait) as held:
        yield held
