"""Turn what the parsers accept (text, bytes, Series, frames) into a LazyFrame of lines.

Every parser works on the same shape: the carried columns of the input, `line_no`
(1-based within its reply), `_line` (the exact line, without its newline) and
`_cut` (true for the last line of a reply that did not end with a newline, the
only place a truncated line can be). With `count_first`, `_first_count` holds how
often that pattern occurs in the first line of the reply.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from clientscope.errors import InputError

TextInput = str | bytes | pl.Series | pl.DataFrame | pl.LazyFrame

LINE = "_line"
CUT = "_cut"
FIRST_COUNT = "_first_count"


@dataclass(frozen=True)
class Lines:
    """Lines of one or more replies, lazily, and how to hand the result back."""

    frame: pl.LazyFrame
    carried: tuple[str, ...]
    lazy: bool


def decode_utf8(series: pl.Series) -> pl.Series:
    """Binary -> String; bytes that are not UTF-8 become U+FFFD (once per reply, not per line)."""
    if series.dtype == pl.String:
        return series
    try:
        return series.cast(pl.String)
    except pl.exceptions.InvalidOperationError:
        values = [None if v is None else v.decode("utf-8", "replace") for v in series.to_list()]
        return pl.Series(series.name, values, dtype=pl.String)


def text_expr(column: str, dtype: pl.DataType) -> pl.Expr:
    """The reply column as text, whatever its type (String, Binary, Null)."""
    col = pl.col(column)
    if dtype == pl.String:
        return col
    if dtype == pl.Binary:
        return col.map_batches(decode_utf8, return_dtype=pl.String)
    if dtype == pl.Null:
        return col.cast(pl.String)
    raise InputError(
        f"column {column!r} holds {dtype}, not text: give the CLIENT LIST / INFO replies "
        "as String or Binary."
    )


@dataclass(frozen=True)
class Replies:
    """Whole replies, one per row, in a String column named like the input's text column."""

    frame: pl.LazyFrame
    carried: tuple[str, ...]
    lazy: bool


def to_replies(data: TextInput, text_column: str) -> Replies:
    """Normalise text / bytes / a frame of replies; a Series counts as the lines of one reply."""
    if isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data).decode("utf-8", "replace")
    if isinstance(data, pl.Series):
        values = decode_utf8(data) if data.dtype == pl.Binary else data
        if values.dtype not in (pl.String, pl.Null):
            raise InputError(f"a Series of lines must hold strings, not {values.dtype}")
        data = "\n".join("" if v is None else v for v in values.cast(pl.String).to_list())
    if isinstance(data, str):
        frame = pl.LazyFrame({text_column: [data]}, schema={text_column: pl.String})
        return Replies(frame, (), lazy=False)
    if isinstance(data, pl.DataFrame | pl.LazyFrame):
        lazy = isinstance(data, pl.LazyFrame)
        frame = data.lazy()
        schema = frame.collect_schema()
        if text_column not in schema:
            raise InputError(
                f"the frame has no column {text_column!r} (it has {', '.join(schema.names())}); "
                f"pass text_column= to name the column that holds the replies."
            )
        carried = tuple(c for c in schema.names() if c != text_column)
        text = text_expr(text_column, schema[text_column]).alias(text_column)
        return Replies(frame.with_columns(text), carried, lazy)
    raise InputError(
        f"cannot parse a {type(data).__name__}: give text, bytes, a Series of lines or a "
        "DataFrame / LazyFrame with a column of replies."
    )


def to_lines(data: TextInput, text_column: str, count_first: str | None = None) -> Lines:
    """Normalise any accepted input into lines (see module docstring)."""
    if isinstance(data, pl.Series):
        values = decode_utf8(data) if data.dtype == pl.Binary else data
        if values.dtype not in (pl.String, pl.Null):
            raise InputError(f"a Series of lines must hold strings, not {values.dtype}")
        frame = pl.LazyFrame(
            {
                LINE: values.cast(pl.String).fill_null(""),
                "line_no": pl.int_range(1, len(values) + 1, eager=True, dtype=pl.Int64),
                CUT: pl.repeat(False, len(values), eager=True),
            }
        )
        if count_first is not None:
            frame = frame.with_columns(pl.lit(None, dtype=pl.UInt32).alias(FIRST_COUNT))
        return Lines(frame, (), lazy=False)
    replies = to_replies(data, text_column)
    frame = _explode(replies.frame, text_column, count_first)
    return Lines(frame, replies.carried, replies.lazy)


def _explode(frame: pl.LazyFrame, text_column: str, count_first: str | None) -> pl.LazyFrame:
    """One row per line; `_cut` marks the last line of a reply without a final newline."""
    text = pl.col(text_column)
    ends_nl = text.str.ends_with("\n")
    body = pl.when(ends_nl).then(text.str.head(-1)).otherwise(text)
    lines = pl.when(text.str.len_bytes() > 0).then(body.str.split("\n"))
    n_lines = pl.col(LINE).list.len()
    per_reply = [lines.alias(LINE), (~ends_nl).alias(CUT)]
    if count_first is not None:
        first = text.str.extract(r"^([^\n]*)", 1)
        per_reply.append(first.str.count_matches(count_first).alias(FIRST_COUNT))
    return (
        frame.with_columns(per_reply)
        .drop(text_column)
        .with_columns(
            pl.int_ranges(1, n_lines + 1, dtype=pl.Int64).alias("line_no"),
            (pl.col(CUT) & (n_lines > 0)).alias(CUT),
            n_lines.alias("_n"),
        )
        .explode(LINE, "line_no")
        .filter(pl.col(LINE).is_not_null())
        .with_columns((pl.col(CUT) & (pl.col("line_no") == pl.col("_n"))).alias(CUT))
        .drop("_n")
    )


def finish(frame: pl.LazyFrame, lazy: bool) -> pl.DataFrame | pl.LazyFrame:
    return frame if lazy else frame.collect()
