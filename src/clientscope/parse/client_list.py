"""CLIENT LIST replies -> the typed `clients` table, with vectorized Polars expressions.

A CLIENT LIST line is `key=value` tokens separated by single spaces. Values never
hold spaces, except the unix-socket path in `addr` / `laddr`; a value may hold `=`
(`name=a=b`, split on the first `=` only). Which keys appear, and in which order,
depends on the server and its version, so every key is looked up by name.
"""

from __future__ import annotations

import polars as pl

from clientscope.parse._text import CUT, FIRST_COUNT, LINE, TextInput, finish, to_lines
from clientscope.schema import (
    CLIENT_EXTRA_DTYPE,
    CLIENT_FLAGS,
    CLIENT_INT_FIELDS,
    CLIENT_STR_FIELDS,
    client_fields_schema,
)

__all__ = ["parse_client_list", "split_rejects"]

KEY = r"[A-Za-z][A-Za-z0-9_-]*"
KNOWN_FIELDS = (*CLIENT_INT_FIELDS, *CLIENT_STR_FIELDS)
# both spellings of every known key: the wire form (`qbuf-free`) and snake_case
KNOWN_KEYS = tuple(sorted({*KNOWN_FIELDS, *(f.replace("_", "-") for f in KNOWN_FIELDS)}))
_GARBAGE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x{FFFD}]"
_TOKENS = rf"^{KEY}=\S*(?: (?:{KEY}=\S*|[^ =]+))*$"
_UNIX_ADDR = r"(?:^| )l?addr=\[?/"
_BARE_TOKEN = r"(?:^| )[^ =]+(?: |$)"
_KEY_START = rf"(?:^| ){KEY}="


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


def _address(prefix: str, addr: pl.Expr, unix_flag: pl.Expr) -> list[pl.Expr]:
    """ip / port / family of `host:port`, `[v6]:port`, bare `v6:port` or a unix path."""
    bracketed = addr.str.extract(r"^\[(.*)\]:(\d+)$", 1)
    plain_ip = addr.str.extract(r"^(.*?):(\d+)$", 1)
    port = pl.coalesce(addr.str.extract(r":(\d+)$", 1)).str.to_integer(strict=False)
    ip = pl.coalesce(bracketed, plain_ip, addr)
    is_unix = ip.str.starts_with("/") | unix_flag
    # valkey writes a unix socket as `[/path/to.sock:0]:0`
    ip = pl.when(is_unix & bracketed.is_not_null()).then(ip.str.replace(r":\d+$", "")).otherwise(ip)
    family = (
        pl.when(addr.is_null())
        .then(None)
        .when(is_unix)
        .then(pl.lit("unix"))
        .when(ip.str.contains(":", literal=True))
        .then(pl.lit("ipv6"))
        .when(ip.str.contains(r"^\d{1,3}(?:\.\d{1,3}){3}$"))
        .then(pl.lit("ipv4"))
    )
    return [ip.alias(f"{prefix}ip"), port.alias(f"{prefix}port"), family.alias(f"{prefix}family")]


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
    n_keys = text.str.count_matches(_KEY_START)
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
        .when(text.str.contains(_GARBAGE))
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


def _parse_lines(lines: pl.LazyFrame, carried: tuple[str, ...], with_ts: bool) -> pl.LazyFrame:
    text = pl.col(LINE).str.strip_suffix("\r")
    frame = lines.with_columns(text.alias("_text"))
    ints = {name: _value(name).str.to_integer(strict=False) for name in CLIENT_INT_FIELDS}
    strs = {name: _non_empty(_value(name)) for name in CLIENT_STR_FIELDS}
    parsed = frame.with_columns(
        *(expr.alias(name) for name, expr in ints.items()),
        *(expr.alias(name) for name, expr in strs.items()),
        _extra(),
        _line_error(ints).alias("parse_error"),
    )
    unix_flag = pl.col("flags").str.contains("U", literal=True).fill_null(False)
    flags = [
        pl.col("flags").str.contains(letter, literal=True).alias(column)
        for letter, column in CLIENT_FLAGS.items()
    ]
    derived: list[pl.Expr] = []
    if with_ts:
        derived = [
            (pl.col("ts") - pl.duration(seconds=pl.col("age"))).alias("created_at"),
            (pl.col("ts") - pl.duration(seconds=pl.col("idle"))).alias("last_active"),
        ]
    out = parsed.with_columns(
        *_address("", pl.col("addr"), unix_flag),
        *_address("laddr_", pl.col("laddr"), unix_flag),
        *flags,
        *derived,
        pl.when(pl.col("parse_error").is_not_null()).then(pl.col(LINE)).alias("raw_line"),
    )
    schema = client_fields_schema(with_ts=with_ts)
    return out.select(
        *carried, *(pl.col(c).cast(t) for c, t in schema.items()), "parse_error", "raw_line"
    )


def parse_client_list(
    data: TextInput, *, text_column: str = "client_list"
) -> pl.DataFrame | pl.LazyFrame:
    """Parse CLIENT LIST replies into one typed row per line.

    `data` is one reply (`str` / `bytes`), a `pl.Series` of lines, or a DataFrame /
    LazyFrame whose `text_column` holds whole replies (its other columns are carried
    onto every client row; a LazyFrame gives a LazyFrame back). Lines that are not
    client lines are kept, with `parse_error` saying why and `raw_line` the line.
    """
    lines = to_lines(data, text_column, count_first=_KEY_START)
    with_ts = "ts" in lines.carried
    return finish(_parse_lines(lines.frame, lines.carried, with_ts), lines.lazy)


def split_rejects(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(lines that parsed, lines that did not) of a `parse_client_list` result."""
    bad = pl.col("parse_error").is_not_null()
    return frame.filter(~bad), frame.filter(bad)
