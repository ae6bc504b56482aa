"""Property tests: lines built from a CLIENT LIST field grammar parse back to their fields."""

from __future__ import annotations

import re
import string

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from clientscope.parse import parse_client_list
from clientscope.parse._client_fast import read_replies
from clientscope.parse._client_generic import FIELD_BOUNDS, KEY_START, KNOWN_KEYS, read_lines
from clientscope.parse._text import to_lines
from clientscope.schema import CLIENT_FLAGS, CLIENT_INT_FIELDS, CLIENT_STR_FIELDS

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PRINTABLE = "".join(chr(c) for c in range(ord("!"), ord("~") + 1))  # what servers allow in names
PLAIN_STR = [f for f in CLIENT_STR_FIELDS if f not in ("addr", "laddr", "flags")]

ints = st.integers(min_value=-1, max_value=2**62)
text_values = st.text(PRINTABLE, max_size=20)  # may hold `=`, `(`, `,`, `.`; may be empty
octet = st.integers(0, 255)
port = st.integers(0, 65535)
ipv4 = st.tuples(octet, octet, octet, octet).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF).map(lambda v: f"{v:x}"), min_size=2, max_size=8).map(
    lambda parts: parts[0] + "::" + ":".join(parts[1:])
)
unix_path = st.lists(
    st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=8),
    min_size=1,
    max_size=4,
).map(lambda parts: "/tmp/" + " ".join(parts) + ".sock")
flags = st.text("".join(CLIENT_FLAGS) + "Ngo", min_size=1, max_size=5)
unknown_keys = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True).filter(
    lambda k: k not in KNOWN_KEYS and k.replace("-", "_") not in KNOWN_KEYS
)


def ints_for(name: str, bounded: bool) -> st.SearchStrategy[int]:
    """Any number, or one a server can send (`FIELD_BOUNDS`: age, idle) when `bounded`."""
    if bounded and name in FIELD_BOUNDS:
        return st.integers(*FIELD_BOUNDS[name][:2])
    return ints


@st.composite
def client_lines(draw: st.DrawFn, bounded: bool = True) -> tuple[str, dict[str, object]]:
    """A CLIENT LIST line and what each of its fields must parse to (`bounded=False`: age
    and idle may be out of bounds, so the line may be a reject)."""
    family = draw(st.sampled_from(["ipv4", "ipv6", "ipv6-bracketed", "unix"]))
    if family == "unix":
        host, p = draw(unix_path), 0
        addr = f"{host}:{p}"
        flag_text = "U" + draw(flags)
    else:
        host, p = draw(ipv6 if family.startswith("ipv6") else ipv4), draw(port)
        addr = f"[{host}]:{p}" if family == "ipv6-bracketed" else f"{host}:{p}"
        flag_text = draw(flags).replace("U", "") or "N"
    fields: dict[str, str] = {"addr": addr, "flags": flag_text}
    for name in draw(st.lists(st.sampled_from(CLIENT_INT_FIELDS), unique=True, max_size=12)):
        fields[name] = str(draw(ints_for(name, bounded)))
    for name in draw(st.lists(st.sampled_from(PLAIN_STR), unique=True, max_size=5)):
        fields[name] = draw(text_values)
    extras = draw(
        st.lists(st.tuples(unknown_keys, text_values), unique_by=lambda kv: kv[0], max_size=3)
    )
    tokens = [(name.replace("_", "-"), value) for name, value in fields.items()] + extras
    order = draw(st.permutations(range(len(tokens))))
    line = " ".join(f"{tokens[i][0]}={tokens[i][1]}" for i in order)
    expected: dict[str, object] = {
        name: (int(value) if name in CLIENT_INT_FIELDS else value or None)
        for name, value in fields.items()
    }
    expected.update(ip=host, port=p, family=family.split("-")[0])
    expected["extra"] = [
        {"key": tokens[i][0].replace("-", "_"), "value": tokens[i][1]}
        for i in order
        if tokens[i] in extras
    ]
    return line, expected


@SETTINGS
@given(client_lines())
def test_every_field_round_trips(case: tuple[str, dict[str, object]]) -> None:
    line, expected = case
    frame = parse_client_list(line + "\n")
    assert isinstance(frame, pl.DataFrame)
    row = frame.row(0, named=True)
    assert row["parse_error"] is None, (line, row["parse_error"])
    for name, value in expected.items():
        assert row[name] == value, (name, line)
    absent = set(CLIENT_INT_FIELDS + CLIENT_STR_FIELDS) - set(expected)
    assert all(row[name] is None for name in absent)
    for letter, column in CLIENT_FLAGS.items():
        assert row[column] == (letter in str(expected["flags"]))


@SETTINGS
@given(st.lists(client_lines(), min_size=1, max_size=12), st.booleans())
def test_rows_equal_lines_in_order(
    cases: list[tuple[str, dict[str, object]]], newline: bool
) -> None:
    text = "\n".join(line for line, _ in cases) + ("\n" if newline else "")
    frame = parse_client_list(text)
    assert isinstance(frame, pl.DataFrame)
    assert frame.height == len(cases)
    assert frame["line_no"].to_list() == list(range(1, len(cases) + 1))
    errors = frame["parse_error"].to_list()
    assert errors[:-1] == [None] * (len(cases) - 1)
    # without a final newline, a last line with fewer fields than the first is taken as cut off
    n_keys = [len(re.findall(KEY_START, line)) for line, _ in cases]
    looks_cut = not newline and n_keys[-1] < n_keys[0]
    assert (errors[-1] is not None) == looks_cut
    if looks_cut:
        assert errors[-1].startswith("truncated line")
    assert frame["addr"].to_list() == [want["addr"] for _, want in cases]


noise = st.one_of(
    st.just(""),
    st.text(string.printable.replace("\n", "").replace("\r", ""), max_size=40),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").decode("utf-8", "replace")),
)


@SETTINGS
@given(st.lists(st.one_of(client_lines(bounded=False).map(lambda c: c[0]), noise), min_size=1, max_size=15))
def test_no_line_is_ever_dropped_and_both_readers_agree(lines: list[str]) -> None:
    data = ("\n".join(lines) + "\n").encode()
    fast = read_replies([data]).drop("_rid")
    assert fast["line_no"].to_list() == list(range(1, len(lines) + 1))
    general = read_lines(to_lines(data, "t", count_first=KEY_START).frame).collect()
    assert_frame_equal(fast, general)
    bad = fast.filter(pl.col("parse_error").is_not_null())
    assert bad["raw_line"].null_count() == 0
