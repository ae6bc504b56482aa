"""The general CLIENT LIST line reader: any key order, odd lines, unix paths with spaces.

Every field is looked up by name with a regex, so it is slower than the layout
reader in `_client_fast`; it gets the lines that one cannot take (and says why a
line is not a client line). Input: a frame of lines with `_line`, `line_no`,
`_cut` and `_first_count` (see `_text`); output: the stage-1 columns of
`client_list` (`FIELD_SCHEMA` plus `parse_error`, `raw_line`).
"""

from __future__ import annotations

import polars as pl

from clientscope.parse._text import CUT, FIRST_COUNT, LINE
from clientscope.schema import CLIENT_EXTRA_DTYPE, CLIENT_INT_FIELDS, CLIENT_STR_FIELDS

KEY = r"[A-Za-z][A-Za-z0-9_-]*"
KNOWN_FIELDS = (*CLIENT_INT_FIELDS, *CLIENT_STR_FIELDS)
# both spellings of every known key: the wire form (`qbuf-free`) and snake_case
KNOWN_KEYS = tuple(sorted({*KNOWN_FIELDS, *(f.replace("_", "-") for f in KNOWN_FIELDS)}))
KEY_START = rf"(?:^| ){KEY}="
GARBAGE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x{FFFD}]"
_TOKENS = rf"^{KEY}=\S*(?: (?:{KEY}=\S*|[^ =]+))*$"
_UNIX_ADDR = r"(?:^| )l?addr=\[?/"
_BARE_TOKEN = r"(?:^| )[^ =]+(?: |$)"

FIELD_SCHEMA: dict[str, pl.DataType] = {
    "line_no": pl.Int64(),
    **{name: pl.Int64() for name in CLIENT_INT_FIELDS},
    **{name: pl.String() for name in CLIENT_STR_FIELDS},
    "extra": CLIENT_EXTRA_DTYPE,
    "parse_error": pl.String(),
    "raw_line": pl.String(),
}


def _wire_pattern(field: str) -> str:
    return field.replace("_", "[-_]")


def _value(field: str) -> pl.Expr:
    """The raw text after `field=` (null when the key is absent, '' when empty)."""
    key = _wire_pattern(field)
    text = pl.col("_text")
    if field in ("addr", "laddr"):  # a unix path may hold spaces: up to the next ` key=`
        return text.str.extract(rf"(?:^| ){key}=(.*?)(?: {KEY}=|$)", 1)
    return text.str.extract(rf"(?:^| ){key}=([^ ]*)", 1)


def _non_empty(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr != "").then(expr)


def _extra() -> pl.Expr:
    """Every `key=value` token whose key the parser does not know, keys in snake_case."""
    token = pl.element()
    key = token.str.extract(r"^([^=]*)=", 1)
    unknown = token.str.contains("=", literal=True) & ~key.is_in(KNOWN_KEYS)
    pair = pl.struct(
        key.str.replace_all("-", "_", literal=True).alias("key"),
        token.str.splitn("=", 2).struct.field("field_1").alias("value"),
    )
    return (
        pl.col("_text")
        .str.split(" ")
        .list.eval(pair.filter(unknown))
        .cast(CLIENT_EXTRA_DTYPE)
        .alias("extra")
    )


def _line_error(ints: dict[str, pl.Expr]) -> pl.Expr:
    """Why a line is not a client line, or null when it is one."""
    text = pl.col("_text")
    grammar_ok = text.str.contains(_TOKENS) & (
        ~text.str.contains(_BARE_TOKEN) | text.str.contains(_UNIX_ADDR)
    )
    n_keys = text.str.count_matches(KEY_START)
    reply_keys = pl.col(FIRST_COUNT)
    bad_int = [
        pl.when(raw.is_not_null() & (raw != "") & value.is_null()).then(
            pl.format("field {} is not an integer: {}", pl.lit(name.replace("_", "-")), raw)
        )
        for name, (raw, value) in _int_pairs(ints).items()
    ]
    return (
        pl.when(text.str.strip_chars() == "")
        .then(pl.lit("blank line"))
        .when(text.str.contains(GARBAGE))
        .then(pl.lit("binary garbage: bytes that are not text"))
        .when(~grammar_ok & pl.col(CUT))
        .then(pl.lit("truncated line: the reply ends in the middle of this line"))
        .when(~grammar_ok)
        .then(pl.lit("not a CLIENT LIST line: expected space-separated key=value fields"))
        .when(~text.str.contains(r"(?:^| )addr="))
        .then(pl.lit("not a CLIENT LIST line: no addr= field"))
        .when(pl.col(CUT) & (n_keys < reply_keys))
        .then(
            pl.lit("truncated line: fewer fields than the reply's first line and no final newline")
        )
        .otherwise(pl.coalesce(bad_int) if bad_int else None)
    )


def _int_pairs(ints: dict[str, pl.Expr]) -> dict[str, tuple[pl.Expr, pl.Expr]]:
    return {name: (_value(name), value) for name, value in ints.items()}


def read_lines(lines: pl.LazyFrame, keep: tuple[str, ...] = ()) -> pl.LazyFrame:
    """Stage-1 columns of every line (`keep` columns are passed through)."""
    text = pl.col(LINE).str.strip_suffix("\r")
    frame = lines.with_columns(text.alias("_text"))
    ints = {name: _value(name).str.to_integer(strict=False) for name in CLIENT_INT_FIELDS}
    strs = {name: _non_empty(_value(name)) for name in CLIENT_STR_FIELDS}
    parsed = frame.with_columns(
        *(expr.alias(name) for name, expr in ints.items()),
        *(expr.alias(name) for name, expr in strs.items()),
        _extra(),
        _line_error(ints).alias("parse_error"),
    ).with_columns(
        pl.when(pl.col("parse_error").is_not_null()).then(pl.col(LINE)).alias("raw_line")
    )
    return parsed.select(*keep, *(pl.col(c).cast(t) for c, t in FIELD_SCHEMA.items()))
