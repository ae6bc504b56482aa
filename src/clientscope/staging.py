"""Where an import keeps what it has read until it writes it, in bounded memory.

* `Spill`: bytes set aside in a file with no name, next to the dataset (it is gone when
  closed, or when the process dies), read back by offset. An import reads each dump once and
  still holds only one batch of text in memory, however many dumps it is given.
* `read_ahead`: a function applied to a list of items by worker threads, a few items ahead,
  results handed back in order. File reads, hashing, decompression, Polars and deltalake
  release the GIL, so reading the next files overlaps the work on this one.
* `ahead`: the items of an iterator, each made in a worker thread one item ahead of the
  caller (the parser prepares its next chunk of text while the engine reads this one).
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar, cast

__all__ = ["Spill", "Stored", "ahead", "read_ahead"]

T = TypeVar("T")
R = TypeVar("R")

Stored = tuple[int, tuple[int, ...]]  # offset in the spill, and the length of each part


class Spill:
    """An unnamed file in `folder` that parts of bytes are appended to and read back from."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # closed by close() / the with block this object is used in
        self._file = tempfile.TemporaryFile(dir=folder, prefix=".tmp-spill-")  # noqa: SIM115
        self._end = 0
        self._unflushed = False

    def put(self, parts: Sequence[bytes]) -> Stored:
        """Append `parts`; what `get` takes to hand them back."""
        offset = self._end
        for part in parts:
            self._file.write(part)
        self._end += sum(len(part) for part in parts)
        self._unflushed = True
        return offset, tuple(len(part) for part in parts)

    def get(self, stored: Stored) -> list[bytes]:
        """The parts put under `stored`."""
        if self._unflushed:
            self._file.flush()
            self._unflushed = False
        offset, sizes = stored
        data = os.pread(self._file.fileno(), sum(sizes), offset)
        if len(data) != sum(sizes):
            raise OSError(f"spill file ended at {offset + len(data)}, not {offset + sum(sizes)}")
        parts, start = [], 0
        for size in sizes:
            parts.append(data[start : start + size])
            start += size
        return parts

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_ahead(
    items: Sequence[T],
    work: Callable[[T], R],
    *,
    weight: Callable[[T], int],
    budget: int,
    workers: int = 2,
) -> Generator[tuple[T, R], None, None]:
    """`(item, work(item))` for each item, in order, computed by `workers` threads ahead of
    the caller while the items in flight weigh under `budget` (the next one is always in
    flight, however heavy). An exception is raised when its item's turn comes; the items after it are dropped.
    Close the iterator (or exhaust it) to stop the threads."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="clientscope-read")
    flight: deque[tuple[T, int, Future[R]]] = deque()
    load = taken = 0

    def fill() -> None:
        nonlocal load, taken
        while taken < len(items) and len(flight) < workers and (not flight or load < budget):
            item = items[taken]
            taken += 1
            heft = weight(item)
            flight.append((item, heft, pool.submit(work, item)))
            load += heft

    try:
        fill()
        while flight:
            item, heft, future = flight.popleft()
            load -= heft
            fill()  # the next ones run while this one is waited for and used
            yield item, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()  # what `next` gives `ahead` when the items run out


def ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, in order, each made in a worker thread while the caller works on the one
    before (the parser: a chunk's bytes work, which holds the GIL, while the engine reads the
    chunk before with the GIL released). One item ahead at most, so memory holds one item
    more; an exception is raised at its item's turn. Close the iterator (or exhaust it) to
    stop the thread."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clientscope-parse") as pool:
        future = pool.submit(next, items, _END)
        while (item := future.result()) is not _END:
            future = pool.submit(next, items, _END)
            yield cast(T, item)
