"""The collector's writer thread: appends captures to the dataset as they come."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

from clientscope.capture.snapshot import add_content_hash
from clientscope.errors import DatasetWriteError

__all__ = ["Writer"]

_FINISH = object()


class Writer(threading.Thread):
    """Appends captures to the dataset as they come (whatever queued during the last write)."""

    def __init__(self, root: Path, stop: threading.Event) -> None:
        super().__init__(name="collect-writer", daemon=True)
        self.root = root
        self.stop = stop
        self.queue: queue.Queue[object] = queue.Queue()
        self.written = 0
        self.most_queued = 0  # the most captures one write took at once: >1 means the writer lagged
        self.error: Exception | None = None

    def put(self, row: dict[str, Any]) -> None:
        self.queue.put(row)

    def finish(self) -> None:
        self.queue.put(_FINISH)
        self.join()

    def run(self) -> None:
        finishing = False
        while not finishing:
            batch: list[dict[str, Any]] = []
            item = self.queue.get()
            while True:
                if item is _FINISH:
                    finishing = True
                elif isinstance(item, dict):
                    batch.append(item)
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if batch and self.error is None:
                self.most_queued = max(self.most_queued, len(batch))
                self._write(batch)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        import polars as pl

        from clientscope.dataset import append_raw
        from clientscope.schema import RAW_SCHEMA

        try:
            hashed = [add_content_hash(row) for row in rows]
            append_raw(self.root, pl.DataFrame(hashed, schema=RAW_SCHEMA))
            self.written += len(rows)
        except DatasetWriteError as exc:
            self.error = DatasetWriteError(
                f"{exc} Collection stopped; the {self.written} captures written before are kept."
            )
            self.stop.set()
        except Exception as exc:
            self.error = exc
            self.stop.set()
