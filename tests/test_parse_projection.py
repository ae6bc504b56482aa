"""Projection pushdown: a LazyFrame of replies parses only the columns a query uses,
and every line still parses to the same values, and the same rejects, whatever is selected."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import clientscope.parse._client_fast as fast
import clientscope.parse.client_list as client_list
from clientscope.errors import InputError
from clientscope.parse import parse_client_list
from clientscope.parse.client_list import clients_schema, reply_batches
from test_parse_properties import client_lines, noise

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TS = datetime(2026, 11, 26, tzinfo=UTC)
CARRIED = {"capture_id": pl.String(), "instance": pl.String(), "ts": pl.Datetime("us", "UTC")}
COLUMNS = list(clients_schema(CARRIED))
LINE = (
    "id=7 addr=10.1.2.3:52114 laddr=10.0.0.5:6379 fd=9 name=orders-api-1 age=120 idle=30 "
    "flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=20474 argv-mem=0 "
    "multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=22298 events=r cmd=get "
    "user=default redir=-1 resp=2 lib-name=redis-py lib-ver=5.0.1"
)

valid = client_lines().map(lambda case: case[0])
any_line = st.one_of(
    valid,
    client_lines(bounded=False).map(lambda case: case[0]),  # age / idle may be out of bounds
    valid.map(lambda line: f"{line} {line.split(' ')[0]}"),  # a key given twice
    valid.map(lambda line: line.replace("idle=", "idle=x", 1)),  # a number that is not one
    noise,
)
# several lines of one layout, so the layout reader (not only the general one) is used
same_layout = st.integers(1, 12).map(lambda n: [LINE.replace("id=7", f"id={i}") for i in range(n)])
reply = st.tuples(same_layout, st.lists(any_line, max_size=5), st.booleans()).map(
    lambda t: "\n".join(t[0] + t[1]) + ("\n" if t[2] else "")
)
replies = st.lists(reply, min_size=1, max_size=2)
subsets = st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=8, unique=True)


def raw_frame(texts: list[str]) -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "capture_id": [f"c{i}" for i in range(len(texts))],
            "instance": [f"cache-{i % 2}" for i in range(len(texts))],
            "ts": [TS] * len(texts),
            "client_list": [t.encode() for t in texts],
        },
        schema={**CARRIED, "client_list": pl.Binary()},
    )


def both(texts: list[str]) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """(the lazy parse, the eager full parse of the same replies)."""
    source = raw_frame(texts)
    lazy = parse_client_list(source)
    full = parse_client_list(source.collect())
    assert isinstance(lazy, pl.LazyFrame)
    assert isinstance(full, pl.DataFrame)
    return lazy, full


@SETTINGS
@given(replies, subsets)
def test_a_projected_parse_equals_the_full_parse_row_for_row(
    texts: list[str], columns: list[str]
) -> None:
    lazy, full = both(texts)
    assert_frame_equal(lazy.select(columns).collect(), full.select(columns))
    assert_frame_equal(lazy.select(columns).collect(engine="streaming"), full.select(columns))


@SETTINGS
@given(replies, subsets)
def test_rejects_do_not_depend_on_the_selection(texts: list[str], columns: list[str]) -> None:
    lazy, full = both(texts)
    judged = ["line_no", "parse_error", "raw_line"]
    picked = [*columns, *(c for c in judged if c not in columns)]
    assert_frame_equal(lazy.select(picked).collect(), full.select(picked))


@SETTINGS
@given(replies, subsets, st.integers(-1, 100))
def test_a_pushed_predicate_gives_the_rows_of_filtering_after(
    texts: list[str], columns: list[str], idle: int
) -> None:
    lazy, full = both(texts)
    for predicate in (
        pl.col("idle") > idle,
        pl.col("parse_error").is_not_null(),
        pl.col("instance") == "cache-1",  # carried only: whole replies dropped unparsed
        (pl.col("instance") == "cache-0") & pl.col("name").is_null(),
    ):
        got = lazy.filter(predicate).select(columns).collect(engine="streaming")
        assert_frame_equal(got, full.filter(predicate).select(columns))


@SETTINGS
@given(replies, subsets, st.integers(0, 50))
def test_n_rows_stops_after_that_many_rows(texts: list[str], columns: list[str], n: int) -> None:
    lazy, full = both(texts)
    want = full.select(columns).head(n)
    assert_frame_equal(lazy.select(columns).head(n).collect(engine="streaming"), want)
    assert_frame_equal(lazy.head(n).select(columns).collect(), want)


def test_the_whole_frame_and_a_count_are_unchanged() -> None:
    lazy, full = both([LINE + "\n" + LINE + "\njunk\n", ""])
    assert_frame_equal(lazy.collect(), full)
    assert lazy.select(pl.len()).collect().item() == 3
    assert lazy.collect_schema() == pl.Schema(clients_schema(CARRIED))


class Spy:
    """Counts calls of a parse step, still running it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        self.calls: list[tuple[object, ...]] = []
        real = getattr(module, name)

        def spy(*args: object, **kwargs: object) -> object:
            self.calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)


def test_a_projected_query_skips_the_fields_it_does_not_select(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    split = Spy(monkeypatch, client_list, "_split_address")
    flags = Spy(monkeypatch, client_list, "_flag_columns")
    typed = Spy(monkeypatch, fast, "field_value")
    lazy, _ = both([LINE + "\n" + LINE + "\n"])
    for spy in (split, flags, typed):
        spy.calls.clear()  # `both` ran the full eager parse

    lazy.select("idle", "name").collect()
    assert split.calls == [] and flags.calls == []
    # number fields are still typed (the fit test checks every one); strings only if asked
    typed_fields = {call[2] for call in typed.calls}
    assert "name" in typed_fields and "idle" in typed_fields
    assert {"cmd", "user", "addr", "flags", "lib_name"}.isdisjoint(typed_fields)

    typed.calls.clear()
    lazy.select("ip", "is_unix_socket").collect()
    assert len(split.calls) == 1  # addr, not laddr
    assert flags.calls[-1][1] == ["is_unix_socket"]
    assert {"addr", "flags"} <= {call[2] for call in typed.calls}

    lazy.collect()
    assert len(split.calls) == 3  # addr, then laddr (its one listening address)
    assert len(flags.calls[-1][1]) == len(client_list.CLIENT_FLAGS)


def test_a_predicate_on_carried_columns_drops_replies_before_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = Spy(monkeypatch, client_list, "read_parts")
    lazy, _ = both([LINE + "\n", LINE + "\n" + LINE + "\n"])
    parsed.calls.clear()  # `both` ran the full eager parse
    out = lazy.filter(pl.col("capture_id") == "c1").select("capture_id", "id").collect()
    assert out.rows() == [("c1", 7), ("c1", 7)]
    assert [len(call[0]) for call in parsed.calls] == [1]  # one reply parsed, not two


def test_replies_are_read_in_runs_of_about_chunk_bytes() -> None:
    texts = ["a" * 10, "b" * 30, "c" * 5, "d" * 5, "e" * 100, "", None]
    raw = pl.LazyFrame({"client_list": texts}, schema={"client_list": pl.String()})
    runs = [run["client_list"].to_list() for run in reply_batches(raw, "client_list", 20)]
    assert [v for run in runs for v in run] == texts
    for run in runs:
        assert len(run) == 1 or sum(len(v or "") for v in run) <= 20


def test_a_lazy_frame_whose_replies_are_not_text_is_refused_at_once() -> None:
    with pytest.raises(InputError, match=r"column 'client_list' holds Int64, not text"):
        parse_client_list(pl.LazyFrame({"client_list": [1]}))
