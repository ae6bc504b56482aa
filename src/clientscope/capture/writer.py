"""The collector's two writing threads: raw captures first, their parsed tables after.

`Writer` flushes each capture's raw row (the lossless bytes) as soon as it is
taken: one small Parquet file per instance and day, temp file + fsync + rename,
the same layout `dataset.append_raw` writes. That takes milliseconds even for
10,000 clients, so a killed collector loses at most what was in flight.

`Parser` then writes the batch's parsed tables (captures, clients, info, ...)
under the same file name. Parsing a large CLIENT LIST can take longer than the
interval; when it falls behind, raw batches wait in a bounded queue, and past
that bound they are left for `open_dataset`, which parses any raw batch whose
parsed tables are missing (and may do so while this parser is behind: a table
file already there, or a batch already compacted, is not written again). A
parser failure never stops collection: the raw rows are safe, and the failure
is reported.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clientscope.capture.snapshot import add_content_hash
from clientscope.errors import DatasetWriteError

if TYPE_CHECKING:
    from clientscope.dataset import RawPart

__all__ = ["Parser", "Writer"]

_FINISH = object()
MAX_UNPARSED_IN_MEMORY = 32  # raw batches waiting for the parser; more are left for open_dataset


def drain(q: queue.Queue[object]) -> tuple[list[Any], bool]:
    """Wait for one item, then take everything else already queued (writes and parses have a
    fixed cost, so what piled up goes in one go). Returns the items and whether FINISH came."""
    items: list[Any] = []
    finishing = False
    item = q.get()
    while True:
        if item is _FINISH:
            finishing = True
        else:
            items.append(item)
        try:
            item = q.get_nowait()
        except queue.Empty:
            return items, finishing


class _Draining(threading.Thread):
    """A thread that takes what is queued in bursts (`drain`) until `finish()`."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.queue: queue.Queue[object] = queue.Queue()

    def finish(self) -> None:
        self.queue.put(_FINISH)
        self.join()

    def run(self) -> None:
        finishing = False
        while not finishing:
            items, finishing = drain(self.queue)
            if items:
                self.take(items)

    def take(self, items: list[Any]) -> None:
        raise NotImplementedError


class Writer(_Draining):
    """Flushes raw captures as they come (whatever queued during the last write), then hands them on."""

    def __init__(self, root: Path, stop: threading.Event, parser: Parser) -> None:
        super().__init__("collect-writer")
        self.root = root
        self.stop = stop
        self.parser = parser
        self.written = 0
        self.most_queued = 0  # the most captures one write took at once: >1 means the writer lagged
        self.error: Exception | None = None

    def put(self, row: dict[str, Any]) -> None:
        self.queue.put(row)

    def take(self, items: list[Any]) -> None:
        if self.error is None:
            self.most_queued = max(self.most_queued, len(items))
            self._write(items)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            for raw in write_raw(self.root, [add_content_hash(row) for row in rows]):
                self.parser.put(raw)
            self.written += len(rows)
        except DatasetWriteError as exc:
            self.error = DatasetWriteError(
                f"{exc} Collection stopped; the {self.written} captures written before are kept."
            )
            self.stop.set()
        except Exception as exc:
            self.error = exc
            self.stop.set()


def write_raw(root: Path, rows: list[dict[str, Any]]) -> list[RawPart]:
    """One raw file per (instance, day) of these rows, all under one new batch name."""
    import polars as pl

    from clientscope import dataset
    from clientscope.schema import RAW_SCHEMA

    frame = dataset.conform_raw(pl.DataFrame(rows, schema=RAW_SCHEMA))
    return dataset.write_raw(root, frame, dataset.new_batch_id())


class Parser(_Draining):
    """Writes the parsed tables of raw batches, behind the writer; never stops collection."""

    def __init__(self, root: Path) -> None:
        super().__init__("collect-parser")
        self.root = root
        self.parsed = 0
        self.left_for_open = 0  # raw batches not parsed here; open_dataset parses them
        self.error: str | None = None

    def put(self, batch: RawPart) -> None:
        if self.error is not None or self.queue.qsize() >= MAX_UNPARSED_IN_MEMORY:
            self.left_for_open += 1
            return
        self.queue.put(batch)

    def take(self, items: list[Any]) -> None:
        self._parse_or_leave(items)

    def _parse_or_leave(self, batches: list[RawPart]) -> None:
        if self.error is None:
            try:
                self._parse(batches)
                self.parsed += len(batches)
                return
            except Exception as exc:  # the raw rows are safe; say why their tables are missing
                self.error = f"{type(exc).__name__}: {exc}"
        self.left_for_open += len(batches)

    def _parse(self, batches: list[RawPart]) -> None:
        """Parse the raw batches together, then write each one's tables under its own file name."""
        import polars as pl

        from clientscope.dataset import partition_dir, write_partition_file
        from clientscope.parse import parse_raw
        from clientscope.schema import TABLES

        tables = parse_raw(pl.concat([b.frame for b in batches], how="vertical"))
        keys = pl.concat(
            [
                b.frame.select(
                    "capture_id", pl.lit(b.date).alias("_date"), pl.lit(b.batch).alias("_batch")
                )
                for b in batches
            ]
        )
        for name in TABLES:
            table = tables[name]
            parts = table.join(keys, on="capture_id", how="left").partition_by(
                ["instance", "_date", "_batch"], as_dict=True, include_key=True
            )
            for b in batches:
                target = partition_dir(self.root, name, b.instance, b.date) / f"{b.batch}.parquet"
                if not self._still_unparsed(b, target):
                    continue
                part = parts.get((b.instance, b.date, b.batch))
                frame = table.clear() if part is None else part.drop("_date", "_batch")
                write_partition_file(frame, target)

    def _still_unparsed(self, batch: RawPart, target: Path) -> bool:
        """Whether `target` is still to write: a reader that opened the dataset may have parsed
        the batch already, and a compaction may then have merged it (its raw file is gone).
        Writing it again would put its rows in twice."""
        from clientscope.dataset import partition_dir

        raw = partition_dir(self.root, "raw", batch.instance, batch.date) / f"{batch.batch}.parquet"
        return raw.exists() and not target.exists()
