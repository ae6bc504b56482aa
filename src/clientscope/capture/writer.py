"""The collector's two writing threads: raw captures first, their parsed tables after.

`Writer` commits each burst of captures' raw rows (the lossless bytes) to the
dataset's `raw` table as soon as they are taken: one Delta commit for every
instance that captured, so a killed collector loses at most what was in flight.

`Parser` then commits the parsed tables of those captures (captures, clients,
info, ...), `captures` last. Parsing a large CLIENT LIST can take longer than
the interval; when it falls behind, raw batches wait in a bounded queue, and
past that bound their capture ids are kept and parsed when collection ends
(`dataset.parse_captures`). A parser failure never stops collection: the raw
rows are safe, the failure is reported, and the next command that writes to the
dataset parses them (`dataset.mend`).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from clientscope.capture.snapshot import add_content_hash
from clientscope.errors import DatasetWriteError

__all__ = ["Parser", "RawBatch", "Writer"]

_FINISH = object()
MAX_UNPARSED_IN_MEMORY = 32  # raw batches waiting for the parser; more are parsed at exit


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
            self.parser.put(write_raw(self.root, [add_content_hash(row) for row in rows]))
            self.written += len(rows)
        except DatasetWriteError as exc:
            self.error = DatasetWriteError(
                f"{exc} Collection stopped; the {self.written} captures written before are kept."
            )
            self.stop.set()
        except Exception as exc:
            self.error = exc
            self.stop.set()


@dataclass(frozen=True)
class RawBatch:
    """The raw rows of one commit, handed to the parser."""

    batch: str
    frame: pl.DataFrame


def write_raw(root: Path, rows: list[dict[str, Any]]) -> RawBatch:
    """Commit these raw rows (every instance's) in one commit."""
    from clientscope import dataset
    from clientscope.schema import RAW_SCHEMA

    frame = pl.DataFrame(rows, schema=RAW_SCHEMA)  # commit_raw checks and conforms it
    return RawBatch(dataset.commit_raw(root, frame), frame)


class Parser(_Draining):
    """Commits the parsed tables of raw batches, behind the writer; never stops collection."""

    def __init__(self, root: Path) -> None:
        super().__init__("collect-parser")
        self.root = root
        self.parsed = 0
        self.left: list[str] = []  # capture ids not parsed here (queue full, or a failure)
        self.error: str | None = None

    @property
    def left_for_open(self) -> int:
        return len(self.left)

    def put(self, batch: RawBatch) -> None:
        if self.error is not None or self.queue.qsize() >= MAX_UNPARSED_IN_MEMORY:
            self.left.extend(batch.frame["capture_id"].to_list())
            return
        self.queue.put(batch)

    def take(self, items: list[Any]) -> None:
        self._parse_or_leave(items)

    def _parse_or_leave(self, batches: list[RawBatch]) -> None:
        if self.error is None:
            try:
                self._parse(batches)
                self.parsed += len(batches)
                return
            except Exception as exc:  # the raw rows are safe; say why their tables are missing
                self.error = f"{type(exc).__name__}: {exc}"
        for b in batches:
            self.left.extend(b.frame["capture_id"].to_list())

    def _parse(self, batches: list[RawBatch]) -> None:
        """Parse the raw batches together and commit their tables (captures last)."""
        from clientscope.dataset import commit_parsed
        from clientscope.parse import parse_raw

        tables = parse_raw(pl.concat([b.frame for b in batches], how="vertical"))
        commit_parsed(self.root, tables, batch=batches[-1].batch)

    def parse_left(self) -> int:
        """Parse what was left (queue overflow), once collection is over; 0 after a failure
        (the next command that writes tries again)."""
        from clientscope.dataset import parse_captures

        if self.error is not None or not self.left:
            return 0
        done = parse_captures(self.root, self.left)
        self.left = []
        return done
