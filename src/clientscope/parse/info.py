"""INFO replies -> a wide row of the fields that matter, or long (section, key, value) rows.

INFO text is `# Section` headers and `key:value` lines (CRLF line ends). Values that
are themselves `k=v,k=v` lists (`db0:keys=1,expires=0`, `cmdstat_get:calls=..`,
`errorstat_ERR:count=..`, `latency_percentiles_usec_get:p50=..`, `slave0:ip=..`,
`module:name=..`) expand in the long form into one row each, keyed `db0.keys`,
`cmdstat_get.calls`, ... and `module.<name>.ver` for modules.
"""

from __future__ import annotations

from typing import Literal

import polars as pl

from clientscope.errors import InputError
from clientscope.parse._text import LINE, TextInput, finish, to_lines, to_replies
from clientscope.schema import INFO_INT_FIELDS, INFO_STR_FIELDS

__all__ = ["parse_info"]

_KEY_LINE = r"^([A-Za-z0-9_.|-]+):(.*)$"
_VALID = r"^[A-Za-z0-9_.|-]+:(?:[^ ].*)?$"
_SUBFIELDS = r"^[^=,]+=[^,]*(?:,[^=,]+=[^,]*)*$"
LONG_SCHEMA: dict[str, pl.DataType] = {
    "line_no": pl.Int64(),
    "section": pl.String(),
    "key": pl.String(),
    "value": pl.String(),
}


def _field(name: str) -> pl.Expr:
    """The value of `name:` anywhere in a whole INFO reply (null when absent)."""
    return pl.col("_text").str.extract(rf"(?m)^{name}:([^\r\n]*)", 1)


def _non_empty(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr != "").then(expr)


def _wide(frame: pl.LazyFrame, text_column: str, carried: tuple[str, ...]) -> pl.LazyFrame:
    return frame.with_columns(pl.col(text_column).alias("_text")).select(
        *carried,
        *(_field(name).str.to_integer(strict=False).alias(name) for name in INFO_INT_FIELDS),
        *(_non_empty(_field(name)).alias(name) for name in INFO_STR_FIELDS),
    )


def _long(lines: pl.LazyFrame, carried: tuple[str, ...]) -> pl.LazyFrame:
    text = pl.col(LINE).str.strip_suffix("\r")
    header = text.str.extract(r"^# ?(.+?)\s*$", 1).str.to_lowercase()
    reply = [*carried] if carried else None
    section = header.fill_null(strategy="forward")
    if reply:
        section = section.over(reply)
    is_blank = text.str.strip_chars() == ""
    error = (
        pl.when(header.is_not_null() | is_blank)
        .then(None)
        .when(~text.str.contains(_VALID))
        .then(pl.lit("not an INFO line: expected `key:value` or `# Section`"))
    )
    rows = lines.with_columns(
        text.alias("_text"), section.alias("section"), error.alias("parse_error")
    ).filter(header.is_null() & ~is_blank)
    key = pl.col("_text").str.extract(_KEY_LINE, 1)
    value = pl.col("_text").str.extract(_KEY_LINE, 2)
    # a typed field that does not read as a number would be a silent null in the wide table
    not_int = (
        pl.col("key").is_in(INFO_INT_FIELDS)
        & (pl.col("value").str.strip_chars() != "")
        & pl.col("value").str.strip_chars().str.to_integer(strict=False).is_null()
    )
    return rows.with_columns(key.alias("key"), value.alias("value")).with_columns(
        pl.when(pl.col("parse_error").is_null() & not_int)
        .then(pl.format("field {} is not an integer: {}", pl.col("key"), pl.col("value")))
        .otherwise(pl.col("parse_error"))
        .alias("parse_error")
    )


def _expand(rows: pl.LazyFrame) -> pl.LazyFrame:
    """`k:a=1,b=2` -> rows `k.a = 1`, `k.b = 2`; other rows unchanged."""
    expands = pl.col("value").str.contains(_SUBFIELDS) & pl.col("parse_error").is_null()
    prefix = (
        pl.when(pl.col("key") == "module")
        .then(pl.format("module.{}", pl.col("value").str.extract(r"(?:^|,)name=([^,]*)", 1)))
        .otherwise(pl.col("key"))
    )
    parts = (
        pl.when(expands)
        .then(pl.col("value").str.split(","))
        .otherwise(pl.concat_list(pl.lit(None, pl.String)))
    )
    exploded = rows.with_columns(
        prefix.alias("_prefix"), expands.alias("_expands"), parts.alias("_part")
    ).explode("_part")
    sub = pl.col("_part").str.splitn("=", 2)
    return exploded.with_columns(
        pl.when(pl.col("_expands"))
        .then(pl.format("{}.{}", pl.col("_prefix"), sub.struct.field("field_0")))
        .otherwise(pl.col("key"))
        .alias("key"),
        pl.when(pl.col("_expands"))
        .then(sub.struct.field("field_1"))
        .otherwise(pl.col("value"))
        .alias("value"),
    )


def parse_info(
    data: TextInput,
    *,
    text_column: str = "info",
    form: Literal["wide", "long"] = "wide",
) -> pl.DataFrame | pl.LazyFrame:
    """Parse INFO replies.

    `form="wide"`: one row per reply, typed columns for schema.INFO_INT_FIELDS /
    INFO_STR_FIELDS (null when the server does not report them) plus the carried
    columns. `form="long"`: one row per field of every section (carried..., line_no,
    section, key, value, parse_error, raw_line); lines that cannot be read are kept
    with `parse_error` set.
    """
    if form not in ("wide", "long"):
        raise InputError(f"form must be 'wide' or 'long', not {form!r}")
    if form == "wide":
        replies = to_replies(data, text_column)
        return finish(_wide(replies.frame, text_column, replies.carried), replies.lazy)
    lines = to_lines(data, text_column)
    rows = _expand(_long(lines.frame, lines.carried))
    out = rows.select(
        *lines.carried,
        *(pl.col(c).cast(t) for c, t in LONG_SCHEMA.items()),
        "parse_error",
        pl.when(pl.col("parse_error").is_not_null()).then(pl.col(LINE)).alias("raw_line"),
    )
    return finish(out, lines.lazy)
