"""`upgrade`: turn a dataset written by clientscope 0.1 into the Delta Lake tables of this
version, in place, losing nothing.

    DATASET/                      clientscope 0.1                         after the upgrade
      raw/ captures/ ...          instance=<quoted>/date=/<batch>.parquet   Delta tables
      .append.lock .compact/ quarantine.jsonl                            in .hive-0.1/ (kept)
      .upgrade/                   staging: the new tables, then `verified.json`

1. Every table's 0.1 files are read as 0.1's reader read them (no `.tmp-` file; of an
   interrupted 0.1 compaction, the sources of a merged file in place are left out) and
   committed to Delta tables in `.upgrade/`, in slices of at most 100,000 rows and about
   16 MiB of Parquet, so memory follows a slice, not the dataset. The parsed files of a batch
   0.1 had not finished parsing are left out: its captures land in raw only, and the next
   write parses them (`dataset.mend`), as 0.1 would have on its next open.
2. The staged tables, read as clientscope reads them, are checked against the 0.1 files:
   per table and instance the same rows, and the same multiset of row contents (a sum of
   64-bit hashes of every column, raw's exact `client_list` and `info` bytes included). Any
   difference is a DatasetError and the staging folder is removed; the 0.1 files were only
   read.
3. `verified.json` is written, then the 0.1 folders and files move into `.hive-0.1/` (or
   `.hive-0.1-2` ...) and the staged tables into place, one rename each. Killed during this
   swap, `upgrade` run again finishes it.

The 0.1 files are never deleted: the user removes `.hive-0.1/` once satisfied.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from clientscope.dataset import (
    BATCH,
    COLLECT_LOCK,
    PARSED_FIRST,
    PINS,
    SCHEMAS,
    TABLE_NAMES,
    Dataset,
    DatasetWarning,
    commit_table,
    create_tables,
    exclusive,
    io_reason,
    is_hive_layout,
    is_table,
    new_batch_id,
    open_dataset,
    version_of,
    write_lock,
)
from clientscope.errors import DatasetError, DatasetWriteError

__all__ = ["UpgradeResult", "upgrade"]

STAGING = ".upgrade"
VERIFIED = "verified.json"  # in STAGING: the staged tables were checked; the swap may run
BACKUP = ".hive-0.1"
OLD_FILES = (".append.lock", ".compact", "quarantine.jsonl")  # 0.1's, beside its tables
_APPEND_LOCK = ".append.lock"
_JOURNALS = ".compact"  # 0.1's compaction journals and lock
_TMP = ".tmp-"
_COMMIT_ORDER = ("raw", *PARSED_FIRST, "captures")  # captures last, with the versions it goes with
_COMMIT_ROWS = 100_000  # rows in one staging commit at most (see `_slices`)
_COMMIT_BYTES = 16 * 2**20  # and about this much Parquet of the 0.1 files

Progress = Callable[[str], None]
Fingerprints = dict[str | None, tuple[int, int, int]]  # instance -> rows, sums of row hashes


@dataclass(frozen=True)
class UpgradeResult:
    """What `upgrade` did: the rows of each new table, the captures parsed (`captures`) and
    those in raw only, parsed by the next write (`unparsed`), and where the 0.1 files are."""

    path: Path
    already: bool
    rows: dict[str, int]
    captures: int
    unparsed: int
    instances: tuple[str, ...]
    backup: Path | None

    @property
    def note(self) -> str:
        if self.already:
            return f"{self.path} already holds Delta Lake tables: nothing to upgrade."
        note = (
            f"{self.path} upgraded: {self.captures} captures of {len(self.instances)} "
            f"instance(s), every row checked against the clientscope 0.1 files. Those files "
            f"are kept in {self.backup}: delete that folder once you are satisfied."
        )
        if self.unparsed:
            note += (
                f" {self.unparsed} captures 0.1 had not parsed are in raw only; the next "
                "command that writes to the dataset parses them."
            )
        return note

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "already": self.already,
            "rows": dict(self.rows),
            "captures": self.captures,
            "unparsed": self.unparsed,
            "instances": list(self.instances),
            "backup": None if self.backup is None else str(self.backup),
            "note": self.note,
        }


def upgrade(path: Path | str, *, progress: Progress | None = None) -> UpgradeResult:
    """Turn the clientscope 0.1 dataset at `path` into Delta Lake tables, in place; see the
    module doc. A dataset already upgraded gives `already=True`; an upgrade killed midway is
    finished. Refused while a collector (or a 0.1 import, collect or compact) writes to it:
    stop 0.1 collectors before upgrading."""
    root = Path(path)
    say = progress or (lambda _text: None)
    _check_layout(root)  # before the locks: they would make files in any folder
    if _is_new(root) and not (root / STAGING / VERIFIED).exists():
        return _already(root)  # no lock: a collector may be running
    with _locks(root):
        result = _verified(root, say)
        if result.already:
            return result
        assert result.backup is not None
        _move_tables(root, result.backup)
    _move_old_files(root, result.backup)  # 0.1's lock files too, so after they are let go
    (root / STAGING / VERIFIED).unlink(missing_ok=True)  # the last step: the upgrade is done
    shutil.rmtree(root / STAGING, ignore_errors=True)
    say(f"done: the clientscope 0.1 files are in {result.backup}")
    return result


# ------------------------------------------------------------------ which layout
def _is_new(root: Path) -> bool:
    return all(is_table(root / name) for name in TABLE_NAMES)


def _already(root: Path) -> UpgradeResult:
    shutil.rmtree(root / STAGING, ignore_errors=True)  # empty: left by a run killed as it ended
    return _tally(root, root, already=True, backup=None)


def _check_layout(root: Path) -> None:
    """Refuse a folder that is neither layout and holds no upgrade to finish."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: point `upgrade` at a dataset folder")
    if (root / STAGING / VERIFIED).exists() or _is_new(root) or is_hive_layout(root):
        return
    backups = sorted(p.name for p in root.glob(f"{BACKUP}*"))
    seen = f" (an earlier upgrade left {', '.join(backups)})" if backups else ""
    raise DatasetError(
        f"{root} is not a clientscope dataset{seen}: it has neither Delta tables "
        f"({', '.join(f'{n}/_delta_log' for n in TABLE_NAMES)}) nor the clientscope 0.1 "
        "folders (raw/instance=*/, captures/instance=*/ ...). Point at the folder given to --out."
    )


@contextlib.contextmanager
def _locks(root: Path) -> Iterator[None]:
    """The write lock, and no collector of either version or 0.1 compaction at work."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(write_lock(root))
        if not stack.enter_context(exclusive(root / COLLECT_LOCK, wait=False)):
            raise DatasetError(
                f"a collector is writing to {root}: stop it, then run `clientscope upgrade` again"
            )
        for lock, who in (
            (root / _APPEND_LOCK, "a clientscope 0.1 import or collect"),
            (root / _JOURNALS / "lock", "a clientscope 0.1 compact"),
        ):
            if lock.exists() and not stack.enter_context(exclusive(lock, wait=False)):
                raise DatasetError(
                    f"{who} is writing to {root} (it holds {lock}): let it finish or stop it, "
                    "then run `clientscope upgrade` again"
                )
        yield


def _verified(root: Path, say: Progress) -> UpgradeResult:
    """The result of a verified staging: one found (an upgrade to finish) or made now."""
    staging = root / STAGING
    if (staging / VERIFIED).exists():
        say(f"finishing the upgrade verified in {staging}")
        return _read_marker(root)
    if _is_new(root):  # another upgrade finished while this one waited for the lock
        return _already(root)
    _check_layout(root)  # again, under the lock
    shutil.rmtree(staging, ignore_errors=True)  # a run killed before it had verified
    try:
        old = _old_parts(root, say)
        _stage(staging, old, say)
        _verify(staging, old)
        result = _tally(staging, root, already=False, backup=_free_backup(root))
        _write_marker(result)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"verified: {', '.join(f'{n} {r}' for n, r in result.rows.items())} rows")
    return result


# ------------------------------------------------------------------ the 0.1 files
@dataclass(frozen=True)
class _Part:
    """0.1 files of one table partition (instance and day) with one Parquet schema: one scan."""

    instance: str
    files: tuple[Path, ...]
    columns: frozenset[str]
    rows: int
    size: int  # bytes of Parquet


def _old_parts(root: Path, say: Progress) -> dict[str, list[_Part]]:
    """Every table's 0.1 files as its reader saw them, grouped for scanning."""
    merges = _journals(root)  # before listing, as 0.1's reader did (see its `superseded`)
    listed: dict[str, set[Path]] = {name: _listed(root, name) for name in TABLE_NAMES}
    _check_merged_rows(root, merges, listed)
    unparsed = _unparsed_batches(root, listed)
    parts: dict[str, list[_Part]] = {}
    for name in TABLE_NAMES:
        files = listed[name] - _superseded(root, name, listed[name], merges)
        if name != "raw":
            left_out = {f for f in files if f.relative_to(root / name) in unparsed}
            if left_out:
                say(f"{name}: {len(left_out)} file(s) of batches 0.1 had not finished parsing "
                    "left out (they are parsed again from raw)")  # fmt: skip
            files -= left_out
        parts[name] = _grouped(name, sorted(files))
    return parts


def _listed(root: Path, table: str) -> set[Path]:
    base = root / table
    if not base.is_dir() or is_table(base):
        return set()
    return {p for p in base.glob("instance=*/date=*/*.parquet") if not p.name.startswith(_TMP)}


def _journals(root: Path) -> list[dict[str, Any]]:
    """The journals of 0.1 compactions a crash interrupted (none, almost always)."""
    entries = []
    for journal in sorted((root / _JOURNALS).glob("*.json")):
        if journal.name.startswith(_TMP):
            continue
        try:
            entry = json.loads(journal.read_text("utf-8"))
            entries.append(
                {k: entry[k] for k in ("partition", "tables", "stems", "new")}
                | {"rows": dict(entry.get("rows") or {}), "journal": journal}
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"cannot read the clientscope 0.1 compaction journal {journal} ({exc}), so "
                "which files hold each row once is unknown: a merged `*-compact.parquet` file "
                "and the batches it merged may both be there. Keep a copy of the dataset; "
                "remove either that merged file or its sources in each table, and the journal, "
                "then upgrade."
            ) from exc
    return entries


def _superseded(
    root: Path, table: str, listed: set[Path], merges: list[dict[str, Any]]
) -> set[Path]:
    """The sources of every merged file in place: 0.1 read each row once, so do we."""
    hidden: set[Path] = set()
    for entry in merges:
        folder = root / table / entry["partition"]
        if table in entry["tables"] and folder / f"{entry['new']}.parquet" in listed:
            hidden.update(folder / f"{stem}.parquet" for stem in entry["stems"])
    return hidden


def _check_merged_rows(
    root: Path, merges: list[dict[str, Any]], listed: Mapping[str, set[Path]]
) -> None:
    """A merged file in place stands for its sources only if it holds all their rows."""
    for entry in merges:
        for table, expected in entry["rows"].items():
            merged = root / table / entry["partition"] / f"{entry['new']}.parquet"
            if merged not in listed.get(table, set()):
                continue
            if (rows := _rows(merged, table)) != expected:
                raise DatasetError(
                    f"{merged}, merged by a clientscope 0.1 compaction a crash interrupted "
                    f"({entry['journal']}), has {rows} rows, its sources {expected}. Run `clientscope compact` of clientscope 0.1 on the dataset "
                    "to undo that merge, then upgrade."
                )


def _unparsed_batches(root: Path, listed: Mapping[str, set[Path]]) -> set[Path]:
    """Raw batches (relative to raw/) without a file in every parsed table: 0.1 parsed them
    again on its next open, whatever parsed files they had. (A compaction renames its merged
    files in, raw last, and removes sources raw first: its batches are never among them.)"""
    raw = {p.relative_to(root / "raw") for p in listed["raw"]}
    parsed = set(raw)
    for name in _COMMIT_ORDER[1:]:
        parsed &= {p.relative_to(root / name) for p in listed[name]}
    return raw - parsed


def _grouped(table: str, files: list[Path]) -> list[_Part]:
    """`files` by partition folder and Parquet schema, so that each group is one scan."""
    groups: dict[tuple[Path, tuple[tuple[str, str], ...]], list[Path]] = {}
    for path in files:
        schema = _file_schema(path, table)
        key = (path.parent, tuple(sorted((c, str(t)) for c, t in schema.items())))
        groups.setdefault(key, []).append(path)
    return [
        _Part(
            instance=_instance_of(folder),
            files=tuple(paths),
            columns=frozenset(c for c, _ in schema),
            rows=_count(paths),
            size=sum(p.stat().st_size for p in paths),
        )
        for (folder, schema), paths in groups.items()
    ]


def _instance_of(partition: Path) -> str:
    """The instance name of an `instance=<quoted>/date=` folder, decoded as 0.1 wrote it."""
    folder = partition.parent
    try:
        return urllib.parse.unquote(folder.name.removeprefix("instance="), errors="strict")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{folder}: the folder name is not a percent-encoded instance name "
            f"({exc}); clientscope 0.1 did not write it. Move it out of the dataset, then upgrade."
        ) from exc


def _file_schema(path: Path, table: str) -> dict[str, pl.DataType]:
    try:
        schema = dict(pl.read_parquet_schema(path))
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DatasetError(
            f"{path} is not a readable Parquet file ({io_reason(exc)}), so the upgrade cannot "
            "keep its rows. Move it out of the dataset folder (keep it elsewhere), then upgrade."
        ) from exc
    unknown = sorted(set(schema) - set(SCHEMAS[table]))
    if table == "raw" and unknown:  # parsed tables: left out, as 0.1's reader did
        raise DatasetError(
            f"{path} has columns clientscope does not know: {unknown}; the upgrade would lose "
            "them, and raw is kept lossless. It was not written by clientscope 0.1: move it "
            "out of the dataset folder, then upgrade."
        )
    return schema


def _rows(path: Path, table: str) -> int:
    _file_schema(path, table)  # a file that does not read: a DatasetError naming it
    return _count([path])


def _count(files: list[Path]) -> int:
    """Rows of Parquet files, from their footers."""
    return int(pl.scan_parquet(files, hive_partitioning=False).select(pl.len()).collect().item())


def _scan_part(table: str, part: _Part) -> pl.LazyFrame:
    """One group's rows in the table's columns: instance from the folder, missing ones null."""
    frame = pl.scan_parquet(list(part.files), hive_partitioning=False)
    return frame.select(
        pl.lit(part.instance, pl.String()).alias(column)
        if column == "instance"
        else pl.col(column).cast(dtype)
        if column in part.columns
        else pl.lit(None, dtype).alias(column)
        for column, dtype in SCHEMAS[table].items()
    )


# ------------------------------------------------------------------ staging and checking
def _stage(staging: Path, old: Mapping[str, list[_Part]], say: Progress) -> None:
    """Commit every table's 0.1 rows to `staging` in slices, captures last (its last commit
    with the versions of the others, as every writer does)."""
    create_tables(staging)
    batch = f"upgrade-{new_batch_id()}"
    pins: dict[str, int] = {}
    for name in _COMMIT_ORDER:
        slices = list(_slices(name, old[name]))
        for n, frame in enumerate(slices, 1):
            last = name == "captures" and n == len(slices)
            meta = {BATCH: batch, PINS: json.dumps(pins)} if last else {BATCH: batch}
            commit_table(staging, name, frame, metadata=meta)
        pins[name] = version_of(staging, name)
        files = sum(len(p.files) for p in old[name])
        say(f"{name}: {sum(p.rows for p in old[name])} rows of {files} file(s) staged")


def _slices(table: str, parts: list[_Part]) -> Iterator[pl.LazyFrame]:
    """The rows of `parts` in slices of at most _COMMIT_ROWS rows and about _COMMIT_BYTES of
    Parquet, one commit each: delta-rs holds a writer, and its rows, for every partition a
    commit touches, so memory follows a slice, not the dataset."""
    frames: list[pl.LazyFrame] = []
    rows = size = 0.0
    for part in parts:
        step, per_row = _step(part), part.size / max(part.rows, 1)
        for offset in range(0, part.rows, step):
            n = min(step, part.rows - offset)
            if frames and (rows + n > _COMMIT_ROWS or size + n * per_row > _COMMIT_BYTES):
                yield pl.concat(frames)
                frames, rows, size = [], 0, 0
            frames.append(_scan_part(table, part).slice(offset, n))
            rows, size = rows + n, size + n * per_row
    if frames:
        yield pl.concat(frames)


def _fingerprints(frame: pl.LazyFrame, table: str) -> Fingerprints:
    """Per instance: rows, and the sum of a 64-bit hash of each whole row (in two halves, so
    it cannot overflow): equal for two tables holding the same multiset of rows."""
    row = pl.col("row")  # hashed in a select first: an aggregation of it would not stream
    sums = (
        frame.select("instance", pl.struct(list(SCHEMAS[table])).hash(seed=0).alias("row"))
        .group_by("instance")
        .agg(pl.len().alias("rows"), (row // 2**32).sum().alias("hi"), (row % 2**32).sum().alias("lo"))
        .collect(engine="streaming")
    )  # fmt: skip
    return {i: (int(n), int(hi), int(lo)) for i, n, hi, lo in sums.iter_rows()}


def _step(part: _Part) -> int:
    """Rows of `part` read at once: at most _COMMIT_ROWS, and about _COMMIT_BYTES of Parquet."""
    per_row = part.size / max(part.rows, 1)
    return max(1, min(_COMMIT_ROWS, int(_COMMIT_BYTES / per_row)))


def _in_slices(frame: pl.LazyFrame, table: str, rows: int, step: int) -> Fingerprints:
    """`_fingerprints` of `frame` read `step` rows at a time: Polars reads ahead in the files of
    one scan, so a scan of them all takes memory that grows with the files."""
    summed: Fingerprints = {}
    for offset in range(0, rows, step):
        _add(summed, _fingerprints(frame.slice(offset, step), table))
    return summed


def _add(total: Fingerprints, more: Fingerprints) -> None:
    for instance, (rows, hi, lo) in more.items():
        before = total.get(instance, (0, 0, 0))
        total[instance] = (before[0] + rows, before[1] + hi, before[2] + lo)


def _read(root: Path) -> Dataset:
    """The Delta tables at `root` as clientscope reads them (instance names from the log, so
    any name and any folder path), without the warning about unparsed captures."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        return open_dataset(root)


def _verify(staging: Path, old: Mapping[str, list[_Part]]) -> None:
    """Refuse the staging unless every table holds the rows of its 0.1 files, per instance."""
    staged = _read(staging)
    for name in TABLE_NAMES:
        want: Fingerprints = {}
        for part in old[name]:  # a part at a time, each in its own steps
            _add(want, _in_slices(_scan_part(name, part), name, part.rows, _step(part)))
        frame, step = staged.scan(name), min(map(_step, old[name]), default=_COMMIT_ROWS)
        got = _in_slices(frame, name, int(frame.select(pl.len()).collect().item()), step)
        if want != got:
            why, mend = _difference(want, got)
            raise DatasetError(
                f"upgrade: the staged {name} table is not what the clientscope 0.1 files hold: "
                f"{why}. Nothing was changed: the 0.1 layout is as it was (clientscope 0.1 "
                f"still reads it) and the staged tables are removed. {mend}"
            )


def _difference(want: Fingerprints, got: Fingerprints) -> tuple[str, str]:
    """What differs between the 0.1 files and the staged table, and what to do about it."""
    report = "Please report this, with the dataset's file list."
    lost = sorted((i for i in want if i not in got), key=repr)
    if lost:
        extra = sorted((i for i in got if i not in want), key=repr)
        return f"instance {lost[0]!r} is not in it; it has instance(s) {extra!r} instead", report
    for instance, (rows, *_) in want.items():
        if got.get(instance, (0,))[0] != rows:
            staged = got.get(instance, (0,))[0]
            return (
                f"instance {instance!r} has {rows} rows in the 0.1 files, {staged} staged",
                report,
            )
    changed = next(i for i in {*want, *got} if want.get(i) != got.get(i))
    return f"instance {changed!r} has as many rows, but their contents differ", report


def _tally(tables: Path, root: Path, *, already: bool, backup: Path | None) -> UpgradeResult:
    """The counts of the Delta tables in `tables`, for the dataset at `root`."""
    dataset = _read(tables)
    frames = {name: dataset.scan(name) for name in TABLE_NAMES}
    rows: dict[str, int] = {n: int(f.select(pl.len()).collect().item()) for n, f in frames.items()}
    names = pl.concat([f.select("instance") for f in frames.values()]).unique().drop_nulls()
    return UpgradeResult(
        path=root,
        already=already,
        rows=rows,
        captures=rows["captures"],
        unparsed=dataset.unparsed,
        instances=tuple(sorted(str(i) for i in names.collect().to_series())),
        backup=backup,
    )


# ------------------------------------------------------------------ the swap
def _free_backup(root: Path) -> Path:
    """`.hive-0.1`, or `.hive-0.1-2`, `-3` ... when an earlier upgrade left one."""
    candidate, n = root / BACKUP, 1
    while candidate.exists():
        n += 1
        candidate = root / f"{BACKUP}-{n}"
    return candidate


def _write_marker(result: UpgradeResult) -> None:
    """Written last in staging: from here on, a killed upgrade is finished, not redone."""
    marker = result.path / STAGING / VERIFIED
    assert result.backup is not None
    data = result.to_dict() | {"backup": result.backup.name}
    tmp = marker.with_name(f"{_TMP}{marker.name}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, marker)
    except OSError as exc:
        raise DatasetWriteError(
            f"could not write {marker}: {io_reason(exc)}. Nothing was changed; free disk space "
            "and run `clientscope upgrade` again."
        ) from exc


def _read_marker(root: Path) -> UpgradeResult:
    marker = root / STAGING / VERIFIED
    try:
        data = json.loads(marker.read_text("utf-8"))
        return UpgradeResult(
            path=root,
            already=False,
            rows={str(k): int(v) for k, v in data["rows"].items()},
            captures=int(data["captures"]),
            unparsed=int(data["unparsed"]),
            instances=tuple(str(i) for i in data["instances"]),
            backup=root / str(data["backup"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(
            f"cannot read {marker} ({exc}), which says where an interrupted upgrade stands. "
            f"The 0.1 files are in {root} and {root}/{BACKUP}*; the verified tables in "
            f"{root / STAGING}. Move the tables back by hand, or report this."
        ) from exc


def _move_tables(root: Path, backup: Path) -> None:
    """The 0.1 table folders into `backup`, then the staged tables into place; each step is
    one rename and skipped when done, so a second run finishes what a killed one began."""
    backup.mkdir(exist_ok=True)
    for name in TABLE_NAMES:
        if (root / name).exists() and not is_table(root / name):
            _move(root / name, backup / name)
    for name in TABLE_NAMES:
        if (root / STAGING / name).exists():
            _move(root / STAGING / name, root / name)


def _move_old_files(root: Path, backup: Path) -> None:
    for name in OLD_FILES:
        if (root / name).exists():
            _move(root / name, backup / name)


def _move(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError as exc:
        raise DatasetWriteError(
            f"could not move {source} to {target}: {io_reason(exc)}. Fix that, then run "
            "`clientscope upgrade` again: it finishes the upgrade where it stopped."
        ) from exc
