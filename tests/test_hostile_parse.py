"""Silent choices in the CLIENT LIST parser (issue 13): a line the parser cannot read
faithfully is kept as a reject with its line and why, by both readers alike."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from clientscope.parse import parse_client_list, split_rejects
from clientscope.parse._client_fast import read_replies
from clientscope.parse._client_generic import KEY_START, MAX_CLIENT_SECONDS, read_lines
from clientscope.parse._text import LINE as LINE_COLUMN
from clientscope.parse._text import to_lines

LINE = "id={id} addr=10.0.0.1:{port} laddr=10.0.0.9:6379 fd=8 name=api age={age} idle={idle} flags=N db=0 cmd=get"
TWICE = "field {} is given twice: a server writes each field once"
BOUND = "must be 0 to 946,080,000 (30 years)"


def _line(i: int, age: object = 120, idle: object = 3) -> str:
    return LINE.format(id=i, port=40000 + i, age=age, idle=idle)


def _reply(hostile: dict[int, str], n: int = 200) -> str:
    """`n` ordinary lines of one layout (so the fast reader takes them), some replaced."""
    return "\n".join(hostile.get(i, _line(i)) for i in range(1, n + 1)) + "\n"


def _both_readers(text: str) -> pl.DataFrame:
    """The fast reader's stage-1 rows, checked equal to the general reader's."""
    data = text.encode()
    fast = read_replies([data]).drop("_rid")
    general = read_lines(to_lines(data, "t", count_first=KEY_START).frame).collect()
    assert_frame_equal(fast, general)
    return fast


CASES = {
    "id=1 id=2": (_line(7).replace("id=7", "id=7 id=8"), TWICE.format("id")),
    "name twice": (_line(7) + " name=other", TWICE.format("name")),
    "wire and snake spelling": (_line(7) + " qbuf-free=1 qbuf_free=2", TWICE.format("qbuf-free")),
    "negative age": (
        _line(7, age=-5),
        f"field age is -5: seconds since the connection opened {BOUND}",
    ),
    "absurd age": (
        _line(7, age=10**12),
        f"field age is 1000000000000: seconds since the connection opened {BOUND}",
    ),
    "negative idle": (
        _line(7, idle=-1),
        f"field idle is -1: seconds since its last command {BOUND}",
    ),
    "absurd idle": (
        _line(7, idle=MAX_CLIENT_SECONDS + 1),
        f"field idle is 946080001: seconds since its last command {BOUND}",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_line_that_cannot_be_read_faithfully_is_a_reject_with_why(case: str) -> None:
    line, reason = CASES[case]
    text = _reply({7: line})
    for frame in (_both_readers(text), parse_client_list(text)):
        assert isinstance(frame, pl.DataFrame)
        good, bad = split_rejects(frame)
        assert bad.select("line_no", "parse_error", "raw_line").rows() == [(7, reason, line)]
        assert good.height == 199


def test_alone_the_general_reader_says_the_same() -> None:
    """One line: no layout to share, the general reader reads it."""
    for line, reason in CASES.values():
        frame = parse_client_list(line + "\n")
        assert isinstance(frame, pl.DataFrame)
        assert frame["parse_error"].to_list() == [reason]


def test_an_unknown_key_given_twice_keeps_both_values() -> None:
    """Nothing is dropped: `extra` holds every key=value the parser does not know."""
    text = _reply({7: _line(7) + " x-note=a x-note=b"}, n=10)
    frame = _both_readers(text)
    assert frame["parse_error"].null_count() == 10
    assert frame["extra"][6].to_list() == [
        {"key": "x_note", "value": "a"},
        {"key": "x_note", "value": "b"},
    ]


def test_a_rejected_age_or_idle_gives_no_time_in_year_33714() -> None:
    """Before: `age=-1000000000000` put `created_at` in year 33714, as a client row."""
    ts = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    text = _reply({2: _line(2, age=-(10**12)), 3: _line(3, idle=10**12)}, n=4)
    frame = parse_client_list(pl.DataFrame({"ts": [ts], "client_list": [text]}))
    assert isinstance(frame, pl.DataFrame)
    rows = frame.select("line_no", "age", "idle", "created_at", "last_active").rows()
    assert rows[1][1:4] == (None, 3, None) and rows[2][2] is None and rows[2][4] is None
    good, _ = split_rejects(frame)
    assert good["created_at"].to_list() == [ts.replace(minute=28)] * 2  # age=120 s


def test_the_bounds_themselves_are_read() -> None:
    text = _reply(
        {1: _line(1, age=0, idle=0), 2: _line(2, age=MAX_CLIENT_SECONDS, idle=MAX_CLIENT_SECONDS)},
        n=3,
    )
    frame = _both_readers(text)
    assert frame["parse_error"].null_count() == 3
    assert frame["age"].to_list() == [0, MAX_CLIENT_SECONDS, 120]


def test_misfit_lines_of_two_replies_read_together_do_not_panic_the_engine() -> None:
    # found by test_parse_projection: the lines that did not fit the replies' layout, filtered
    # out of one CSV read, reached the general reader in several chunks and Polars panicked
    # ("assertion failed: i < self.len()"); a panic is no exception, so nothing was kept
    replies = _panicking_replies()
    parsed = parse_client_list(pl.DataFrame({"client_list": replies}))
    assert isinstance(parsed, pl.DataFrame)
    assert parsed.height == 12 + 11  # every line of both replies, read or kept as a reject
    assert parsed.filter(pl.col("name") == "orders-api-1").height == 16


def _panicking_replies() -> list[bytes]:
    """Two replies whose misfit lines, read together, made Polars 2.1 panic in the general
    reader when they reached it in several chunks (found by test_parse_projection)."""
    line = (
        "id={} addr=10.1.2.3:52114 laddr=10.0.0.5:6379 fd=9 name=orders-api-1 age=120 idle=30 "
        "flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=20474 argv-mem=0 "
        "multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=22298 events=r cmd=get "
        "user=default redir=-1 resp=2 lib-name=redis-py lib-ver=5.0.1"
    )
    odd = [
        [
            "flags=true lib-name=}X addr=6cf::f5a4:b77:3dbf:89",
            'multi=44291760486 addr=b0::ca:179:83 lib-name=Xyu"2 flags=TegNM '
            "argv-mem=40681213980 age=462 capa=else watch=48822 tot-net-in=12",
            "",
        ],
        [
            "tot-cmds=53436 fd=436 addr=db::7b1:120 flags=Ic age=772123 "
            "user=p_3R]Q::>}q~SVUXeLZ} multi-mem=29648 omem=4020162 psub=12503 "
            "io-thread=1099511627777 resp=5018",
            "oll=3614737 io-thread=1556216 qbuf-free=2455 resp=509 tot-net-in=29100651 flags=Uu "
            "user=A*RYI+ idle=x9343354 tot-net-out=2614 omem=400 "
            "addr=/tmp/Ugu u ZnD7FY7 aRx.sock:0 hxx8=zS db=2990971 ssub=505153811 sub=5305 "
            "multi-mem=1310312",
            "",
            "",
            "ssub=216240 cmd=FdO& name=t(l lib-name=: age=12902052 redir=1035 multi-mem=8397 "
            "addr=209.73.171.138:15220 db=58043808803145576 watch=268435455 tot-mem=3589380 "
            "resp=558043 flags=u io-thread=225 fd=8356823335 ssub=216240",
        ],
    ]
    return [
        "\n".join([line.format(i) for i in range(n)] + rest).encode()
        for n, rest in zip((10, 6), odd, strict=True)
    ]


def _general_in_chunks(index: pl.DataFrame, lines: pl.Series, fields: object) -> pl.DataFrame:
    """The general reader as it was before the fix: its lines in the chunks they came in."""
    frame = index.with_columns(lines.alias(LINE_COLUMN)).lazy()
    return read_lines(frame, keep=("_rid",), fields=fields).collect()  # type: ignore[arg-type]


def test_an_engine_panic_on_replies_read_together_reads_each_reply_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import clientscope.parse._client_fast as fast

    replies = _panicking_replies()
    want = parse_client_list(pl.DataFrame({"client_list": replies}))
    monkeypatch.setattr(fast, "_general", _general_in_chunks)  # the engine panics again
    got = parse_client_list(pl.DataFrame({"client_list": replies}))
    assert_frame_equal(got, want)  # alone, neither reply panics: every value as before


def test_a_reply_the_engine_still_panics_on_is_kept_line_by_line_as_rejects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import clientscope.parse._client_fast as fast

    monkeypatch.setattr(fast, "_general", _general_in_chunks)
    try:  # the real exception the engine raises (pyo3's PanicException)
        fast.read_replies(_panicking_replies())
    except BaseException as exc:  # a panic is no Exception
        panic = exc
    else:
        pytest.fail("the unfixed general reader no longer panics on these replies")

    def always_panics(*args: object) -> pl.DataFrame:
        raise panic

    monkeypatch.setattr(fast, "_general", always_panics)
    text = _line(1) + "\n" + "junk\x1b[2J\n" + _line(2) + "\n"
    frame = pl.DataFrame({"instance": ["a", "b"], "client_list": [_line(9) + "\n", text]})
    parsed = parse_client_list(frame)
    assert isinstance(parsed, pl.DataFrame)
    good, rejects = split_rejects(parsed)
    assert good["id"].to_list() == [9]  # the reply the engine read is parsed
    assert rejects["instance"].to_list() == ["b"] * 3
    assert rejects["line_no"].to_list() == [1, 2, 3]
    assert rejects["raw_line"].to_list() == text.splitlines()
    assert rejects["parse_error"].str.contains("the parser's engine failed on this reply").all()
