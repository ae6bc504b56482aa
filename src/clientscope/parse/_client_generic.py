"""The general CLIENT LIST line reader: any key order, odd lines, unix paths with spaces.

Every field is looked up by name with a regex, so it is slower than the layout
reader in `_client_fast`; it gets the lines that one cannot take (and says why a
line is not a client line). Input: a frame of lines with `_line`, `line_no`,
`_cut` and `_first_count` (see `_text`); output: the stage-1 columns of
`client_list` (`FIELD_SCHEMA` plus `parse_error`, `raw_line`).

A line is not read, and says why, when a field appears twice (`id=1 id=2`: which
value is right is unknown) or is outside what a server can send (`FIELD_BOUNDS`:
`age=-5` would put the connection in the future); the fast reader leaves such lines
to this one. A key the parser does not know may repeat: all its values are kept in
`extra`.
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
# a connection can't be older, or idle longer, than the server has existed (Redis: 2009)
MAX_CLIENT_SECONDS = 30 * 365 * 86400
FIELD_BOUNDS: dict[str, tuple[int, int, str]] = {
    "age": (0, MAX_CLIENT_SECONDS, "seconds since the connection opened"),
    "idle": (0, MAX_CLIENT_SECONDS, "seconds since its last command"),
}

FIELD_SCHEMA: dict[str, pl.DataType] = {
    "line_no": pl.Int64(),
    **{name: pl.Int64() for name in CLIENT_INT_FIELDS},
    **{name: pl.String() for name in CLIENT_STR_FIELDS},
    "extra": CLIENT_EXTRA_DTYPE,
    "parse_error": pl.String(),
    "raw_line": pl.String(),
}
# stage-1 columns a projected read still gives: the row's place and whether it is a reject
ALWAYS_READ = frozenset({"line_no", "parse_error", "raw_line"})


def stage1_columns(fields: frozenset[str] | None) -> list[str]:
    """The `FIELD_SCHEMA` columns a read of `fields` gives (None: all), in schema order."""
    return [c for c in FIELD_SCHEMA if fields is None or c in fields or c in ALWAYS_READ]


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


def _repeated_key(n_keys: pl.Expr) -> pl.Expr:
    """The first known field a line gives twice (`qbuf-free` and `qbuf_free` are one), or null.

    Cheap for most lines: a field is repeated when the line has more keys than the known
    fields found plus the unknown ones (kept, all of them, in `extra`); only such a line is
    split to name the field.
    """
    present = pl.sum_horizontal(_raw(name).is_not_null() for name in KNOWN_FIELDS)
    repeated = n_keys > present + pl.col("extra").list.len()
    keys = (
        pl.when(repeated)
        .then(pl.col("_text"))
        .otherwise(pl.lit(""))
        .str.split(" ")
        .list.eval(
            pl.element().str.extract(rf"^({KEY})=", 1).str.replace_all("_", "-", literal=True)
        )
        .list.drop_nulls()
    )
    return keys.list.eval(pl.element().filter(pl.element().is_duplicated())).list.first()


def _bad_value(name: str, raw: pl.Expr, value: pl.Expr) -> pl.Expr:
    """Why the number in field `name` cannot be used, or null."""
    wire = name.replace("_", "-")
    reason = pl.when(raw.is_not_null() & (raw != "") & value.is_null()).then(
        pl.format("field {} is not an integer: {}", pl.lit(wire), raw)
    )
    if name not in FIELD_BOUNDS:
        return reason
    low, high, meaning = FIELD_BOUNDS[name]
    return reason.when(~value.is_between(low, high)).then(
        pl.format(f"field {wire} is {{}}: {meaning} must be {low} to {high:,} (30 years)", value)
    )


def _line_error(parsed: dict[str, pl.Expr]) -> pl.Expr:
    """Why a line is not a client line, or null when it is one."""
    text = pl.col("_text")
    grammar_ok = text.str.contains(_TOKENS) & (
        ~text.str.contains(_BARE_TOKEN) | text.str.contains(_UNIX_ADDR)
    )
    n_keys = text.str.count_matches(KEY_START)
    reply_keys = pl.col(FIRST_COUNT)
    bad_int = [_bad_value(name, _raw(name), value) for name, value in parsed.items()]
    repeated = _repeated_key(n_keys)
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
        .when(repeated.is_not_null())
        .then(pl.format("field {} is given twice: a server writes each field once", repeated))
        .otherwise(pl.coalesce(bad_int) if bad_int else None)
    )


def _in_bounds(name: str, value: pl.Expr) -> pl.Expr:
    """`value`, null when outside FIELD_BOUNDS (a rejected line's `created_at` stays null)."""
    if name not in FIELD_BOUNDS:
        return value
    low, high, _ = FIELD_BOUNDS[name]
    return pl.when(value.is_between(low, high)).then(value)


def _raw(name: str) -> pl.Expr:
    """The text after `name=`, read once by `read_lines` (null when absent, '' when empty)."""
    return pl.col(f"_raw_{name}")


def read_lines(
    lines: pl.LazyFrame, keep: tuple[str, ...] = (), fields: frozenset[str] | None = None
) -> pl.LazyFrame:
    """Stage-1 columns of every line (`keep` columns are passed through).

    `fields`: only these columns (see `stage1_columns`); every key is still read to
    judge the line, but a value no column needs is left to the optimizer to drop.
    """
    text = pl.col(LINE).str.strip_suffix("\r")
    frame = lines.with_columns(text.alias("_text")).with_columns(
        *(_value(name).alias(f"_raw_{name}") for name in KNOWN_FIELDS), _extra()
    )
    ints = {name: _raw(name).str.to_integer(strict=False) for name in CLIENT_INT_FIELDS}
    strs = {name: _non_empty(_raw(name)) for name in CLIENT_STR_FIELDS}
    parsed = frame.with_columns(
        *(_in_bounds(name, expr).alias(name) for name, expr in ints.items()),
        *(expr.alias(name) for name, expr in strs.items()),
        _line_error(ints).alias("parse_error"),
    ).with_columns(
        pl.when(pl.col("parse_error").is_not_null()).then(pl.col(LINE)).alias("raw_line")
    )
    names = stage1_columns(fields)
    return parsed.select(*keep, *(pl.col(c).cast(FIELD_SCHEMA[c]) for c in names))
