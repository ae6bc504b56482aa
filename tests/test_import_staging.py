"""How an import holds what it read until it writes it: the spill, reading ahead, parsing ahead."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from clientscope import open_dataset
from clientscope.dataset import append_raw, conform_raw
from clientscope.ingest import import_dumps
from clientscope.parse import parse_raw
from clientscope.staging import Spill, ahead, read_ahead
from test_dataset import raw_rows


def test_the_spill_gives_back_each_part_and_leaves_no_file(tmp_path: Path) -> None:
    with Spill(tmp_path) as spill:
        first = spill.put([b"id=1 addr=a:1\n", b"", b"\x00\xff" * 1000])
        second = spill.put([b"# Server\n"])
        assert spill.get(second) == [b"# Server\n"]
        assert spill.get(first) == [b"id=1 addr=a:1\n", b"", b"\x00\xff" * 1000]
        assert list(tmp_path.iterdir()) == []  # a file with no name: nothing left if killed


def test_read_ahead_keeps_the_order_whatever_finishes_first() -> None:
    def slow_first(n: int) -> int:
        time.sleep(0.05 if n == 0 else 0)
        return n * n

    out = list(read_ahead(list(range(10)), slow_first, weight=lambda _: 1, budget=3))
    assert out == [(n, n * n) for n in range(10)]


def test_read_ahead_raises_at_the_failing_items_turn() -> None:
    def work(n: int) -> int:
        if n in (3, 5):
            raise ValueError(f"item {n}")
        return n

    seen = []
    with pytest.raises(ValueError, match="item 3"):  # not item 5, though it may fail first
        for n, _ in read_ahead(list(range(8)), work, weight=lambda _: 1, budget=8):
            seen.append(n)
    assert seen == [0, 1, 2]


def test_read_ahead_stays_within_its_budget() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return n

    heavy = list(read_ahead(list(range(6)), work, weight=lambda _: 100, budget=10, workers=4))
    # over the budget each: the one waited for and the next, not 4 at once
    assert [n for n, _ in heavy] == list(range(6)) and most <= 2
    most = 0
    light = list(read_ahead(list(range(12)), work, weight=lambda _: 1, budget=10, workers=2))
    assert [n for n, _ in light] == list(range(12)) and most <= 2


def test_tables_parsed_ahead_lose_the_rows_of_captures_already_written(tmp_path: Path) -> None:
    first = raw_rows(2)
    append_raw(tmp_path, first)
    both = conform_raw(pl.concat([first.head(1), raw_rows(3).tail(1)]))  # one old, one new
    result = append_raw(tmp_path, both, parsed=parse_raw(both))
    assert (result.captures, result.skipped) == (1, 1)
    ds = open_dataset(tmp_path)
    assert ds.raw.collect()["capture_id"].n_unique() == ds.raw.collect().height == 3
    captures = ds.captures.collect()
    assert captures.height == captures["capture_id"].n_unique() == 3
    clients = ds.clients.collect().group_by("capture_id").len()
    assert clients["len"].max() == parse_raw(conform_raw(raw_rows(1)))["clients"].height


def test_an_import_of_many_batches_reads_each_file_once_and_writes_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clientscope.ingest as ingest

    monkeypatch.setattr(ingest, "IMPORT_BATCH_BYTES", 1)  # one capture per batch: parsed ahead
    reads: list[Path] = []
    real = ingest._read
    monkeypatch.setattr(ingest, "_read", lambda path, limit: reads.append(path) or real(path, limit))
    paths = []
    for n in range(6):
        paths.append(tmp_path / f"clients-20261126-09300{n}.txt")
        lines = [f"id={i} addr=10.0.0.{n}:{5000 + i} fd={i} name=app-{n} age=9 idle=1" for i in range(4)]
        paths[-1].write_text("\n".join(lines) + "\n")
    result = import_dumps(paths, tmp_path / "ds", instance="r0")
    assert result.captures_written == 6 and len(result.batches) == 6
    assert sorted(reads) == sorted(p.resolve() for p in paths)  # each once
    clients = open_dataset(tmp_path / "ds").clients.collect()
    assert clients.height == 24 and sorted(clients["name"].unique()) == [f"app-{n}" for n in range(6)]
    assert [p.name for p in (tmp_path / "ds").iterdir() if p.name.startswith(".tmp")] == []


def test_a_batch_parsed_in_chunks_is_one_append_and_keeps_reject_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clientscope.ingest as ingest

    monkeypatch.setattr(ingest, "PARSE_BYTES", 1)  # each capture parsed on its own
    paths = []
    for n in range(4):
        lines = [f"id={i} addr=10.0.0.{n}:{5000 + i} fd={i} name=app-{n}" for i in range(3)]
        lines.insert(n % 3, f"warning {n}: not a client line")
        paths.append(tmp_path / f"clients-20261126-09300{n}.txt")
        paths[-1].write_text("\n".join(lines) + "\n")
    result = import_dumps(paths, tmp_path / "ds", instance="r0")
    assert result.captures_written == 4 and len(result.batches) == 1  # one append for all four
    assert [f.rejected_lines for f in result.files] == [
        ((n % 3 + 1, "not a CLIENT LIST line: expected space-separated key=value fields"),)
        for n in range(4)
    ]
    ds = open_dataset(tmp_path / "ds")
    assert ds.clients.collect().height == 12 and ds.captures.collect().height == 4


def test_a_full_disk_while_setting_text_aside_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from clientscope.errors import DatasetWriteError

    def full(self: Spill, parts: object) -> object:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spill, "put", full)
    dump = tmp_path / "clients-20261126-093000.txt"
    dump.write_text("id=1 addr=10.0.0.1:5000 fd=1 name=app\n")
    with pytest.raises(DatasetWriteError, match=r"could not set the text of .*clients-20261126-093000\.txt "
                       r"aside in .*ds until it is written: No space left on device\. Captures written"):  # fmt: skip
        import_dumps([dump], tmp_path / "ds", instance="r0")
    assert not (tmp_path / "ds" / "raw").exists()  # nothing committed


def test_ahead_makes_the_next_item_in_a_worker_while_the_caller_holds_this_one() -> None:
    made: list[tuple[int, str]] = []
    second_made = threading.Event()

    def items() -> Iterator[int]:
        for i in range(3):
            made.append((i, threading.current_thread().name))
            if i == 1:
                second_made.set()
            yield i

    it = ahead(items())
    assert next(it) == 0
    assert second_made.wait(10)  # item 1 is made before the caller asks for it
    assert list(it) == [1, 2]
    assert all(name.startswith("clientscope-parse") for _, name in made)


def test_ahead_raises_at_the_failing_items_turn_and_stops_its_thread() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("bad chunk")

    before = threading.active_count()
    it = ahead(items())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad chunk"):
        next(it)
    assert threading.active_count() == before
