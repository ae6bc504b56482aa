"""`compact`: merge the small files a collector leaves, and delete what no reader needs.

Each table is a Delta table, so this is delta-rs' own maintenance, table by
table: `optimize.compact()` rewrites a partition's small files into large ones
in one commit (rows unchanged: a reader holding the old version still reads
the old files, a new reader the new ones), then `vacuum` deletes the files no
version newer than `retain` uses: those compaction replaced, and any file a
killed writer left uncommitted. A reader in flight holds a version for seconds,
a `version=`/`as_of` read for as long as you keep old files: `retain` is that
window (never under an hour).

Before that, captures a killed writer left unparsed are parsed (`dataset.mend`).
Collectors, imports and other compactions may run at the same time: a commit
that lost a race is retried on the new version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from clientscope.config import span_text
from clientscope.errors import DatasetError, DatasetWriteError

__all__ = ["DEFAULT_RETAIN", "CompactResult", "compact"]

DEFAULT_RETAIN = timedelta(hours=24)
MIN_RETAIN = timedelta(hours=1)
_ATTEMPTS = 20


@dataclass(frozen=True)
class CompactResult:
    """What one `compact` run did."""

    tables: int  # tables compacted
    files_before: int  # data files in the tables' newest versions, before
    files_after: int  # and after
    files_deleted: int  # files vacuum deleted (older than `retain`, in no newer version)
    mended: int  # captures parsed that a killed writer had left unparsed
    retain_hours: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def compact(path: Path | str, *, retain: timedelta = DEFAULT_RETAIN) -> CompactResult:
    """Compact every table of the dataset at `path`, then vacuum what is older than `retain`."""
    from clientscope.dataset import TABLE_NAMES, is_table, mend, prepare

    root = Path(path)
    if retain < MIN_RETAIN:
        raise DatasetError(
            f"--retain {span_text(retain.total_seconds())} is under {span_text(MIN_RETAIN.total_seconds())}: "
            "files a reader may still be reading would be deleted; give --retain 1h or more"
        )
    if not root.is_dir() or not any(is_table(root / n) for n in TABLE_NAMES):
        from clientscope.dataset import is_hive_layout

        if not is_hive_layout(root):
            raise DatasetError(
                f"{root} holds no clientscope tables; point at the folder given to collect --out"
            )
    prepare(root)  # refuses the old layout, naming `clientscope upgrade`
    mended = mend(root)
    hours = int(-(-retain.total_seconds() // 3600))
    before = after = deleted = 0
    for name in TABLE_NAMES:
        b, a, d = _compact_table(root / name, hours)
        before, after, deleted = before + b, after + a, deleted + d
    return CompactResult(
        tables=len(TABLE_NAMES),
        files_before=before,
        files_after=after,
        files_deleted=deleted,
        mended=mended,
        retain_hours=hours,
    )


def _compact_table(path: Path, retain_hours: int) -> tuple[int, int, int]:
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError, DeltaError

    from clientscope.dataset import io_reason

    try:
        table = DeltaTable(str(path))
        before = len(table.file_uris())
        for attempt in range(_ATTEMPTS):
            try:
                table.optimize.compact()
                break
            except CommitFailedError:  # a writer's commit removed files we merged: again
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
                table = DeltaTable(str(path))
        table = DeltaTable(str(path))
        after = len(table.file_uris())
        deleted = table.vacuum(  # full: also files no commit ever named (a killed writer's)
            retention_hours=retain_hours, dry_run=False, enforce_retention_duration=False, full=True
        )
        table.create_checkpoint()  # later loads read one file, not every commit since
    except CommitFailedError as exc:
        raise DatasetWriteError(
            f"could not compact {path}: other commits kept winning ({exc}); run compact again"
        ) from exc
    except (OSError, RuntimeError, DeltaError) as exc:
        raise DatasetWriteError(f"could not compact {path}: {io_reason(exc, path)}") from exc
    return before, after, len(deleted)
