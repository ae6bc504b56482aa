"""CLIENT LIST replies -> the typed `clients` table.

A CLIENT LIST line is `key=value` tokens separated by single spaces. Values never
hold spaces, except the unix-socket path in `addr` / `laddr`; a value may hold `=`
(`name=a=b`: split on the first `=` only). Which keys appear, and in which order,
depends on the server and its version. Reading happens in two stages:

1. fields: `_client_fast` reads the lines that share their reply's layout,
   `_client_generic` every other line (and says why a line is not a client line);
2. derived columns (this module): addr / laddr split, one boolean per flag
   letter, `created_at` / `last_active` from `ts`, `raw_line` for rejects.

A LazyFrame stays lazy: replies are parsed batch by batch as the (streaming)
engine pulls them, so a dataset larger than memory streams to Parquet.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from clientscope.errors import InputError
from clientscope.parse._client_fast import Reply, read_parts
from clientscope.parse._text import TextInput, decode_utf8
from clientscope.schema import CLIENT_FLAGS, TS, client_fields_schema

__all__ = ["clients_schema", "parse_client_list", "split_rejects"]


def clients_schema(carried: pl.Schema | dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The output schema of `parse_client_list` for input with these carried columns."""
    schema = dict(carried)
    schema.update(client_fields_schema(with_ts="ts" in carried))
    schema.update({"parse_error": pl.String(), "raw_line": pl.String()})
    return schema


def _split_address(frame: pl.DataFrame, prefix: str, column: str) -> pl.DataFrame:
    """Add ip / port / family for `host:port`, `[v6]:port`, bare `v6:port` or a unix path.

    Eager on purpose: the rare shapes (brackets) are only handled when present.
    """
    addr, port, ip = pl.col(column), pl.col("_port"), pl.col(f"{prefix}ip")
    frame = frame.with_columns(addr.str.extract(r":(\d+)$", 1).alias("_port"))
    host = addr.str.head(-1 - port.str.len_bytes().cast(pl.Int64))
    frame = frame.with_columns(
        pl.when(port.is_null()).then(addr).otherwise(host).alias(f"{prefix}ip")
    )
    unix_flag = pl.col("is_unix_socket").fill_null(False)
    if frame.get_column(f"{prefix}ip").str.starts_with("[").any():
        bracketed = ip.str.starts_with("[") & ip.str.ends_with("]")
        inner = ip.str.slice(1, ip.str.len_bytes().cast(pl.Int64) - 2)
        # valkey writes a unix socket as `[/path/to.sock:0]:0`
        inner = (
            pl.when(inner.str.starts_with("/") | unix_flag)
            .then(inner.str.strip_suffix(":0"))
            .otherwise(inner)
        )
        frame = frame.with_columns(
            pl.when(bracketed).then(inner).otherwise(ip).alias(f"{prefix}ip")
        )
    family = (
        pl.when(addr.is_null())
        .then(None)
        .when(ip.str.starts_with("/") | unix_flag)
        .then(pl.lit("unix"))
        .when(ip.str.contains(":", literal=True))
        .then(pl.lit("ipv6"))
        .when(ip.str.contains(".", literal=True))
        .then(pl.lit("ipv4"))
    )
    return frame.with_columns(
        port.str.to_integer(strict=False).alias(f"{prefix}port"), family.alias(f"{prefix}family")
    )


def _split_few_addresses(frame: pl.DataFrame, prefix: str, column: str) -> pl.DataFrame:
    """`_split_address` on the distinct values only, when there are few (laddr: the
    server's own listening addresses); the parts are then looked up per row."""
    keys = [column, "is_unix_socket"]
    distinct = frame.select(keys).unique()
    if distinct.height * 20 > frame.height:
        return _split_address(frame, prefix, column)
    parts = _split_address(distinct, prefix, column).select(
        *keys, f"{prefix}ip", f"{prefix}port", f"{prefix}family"
    )
    if parts.height == 1:  # one listening address: nothing to look up
        return frame.with_columns(
            pl.lit(parts[c][0], dtype=parts[c].dtype).alias(c) for c in parts.columns[2:]
        )
    return frame.join(parts, on=keys, how="left", nulls_equal=True, maintain_order="left")


def _flag_columns(flags: pl.Series) -> list[pl.Expr]:
    """One boolean per flag letter. A server has few distinct flag strings: decode those
    (one `str.contains` per letter) into a bit mask, and look each row's mask up once."""
    distinct = flags.drop_nulls().unique()
    if distinct.len() * 20 > flags.len() or distinct.is_empty():
        return [
            pl.col("flags").str.contains(letter, literal=True).alias(col)
            for letter, col in CLIENT_FLAGS.items()
        ]
    masks = pl.select(
        pl.sum_horizontal(
            distinct.str.contains(letter, literal=True).cast(pl.Int32) * (1 << bit)
            for bit, letter in enumerate(CLIENT_FLAGS)
        )
    ).to_series()
    mask = pl.lit(flags.replace_strict(distinct, masks, default=None, return_dtype=pl.Int32))
    return [(mask & (1 << bit)).ne(0).alias(col) for bit, col in enumerate(CLIENT_FLAGS.values())]


def _derive(frame: pl.DataFrame, carried: tuple[str, ...], with_ts: bool) -> pl.DataFrame:
    """Stage 2: flag booleans, addresses, times; columns in the output order."""
    frame = frame.with_columns(_flag_columns(frame.get_column("flags")))
    frame = _split_address(frame, "", "addr")
    frame = _split_few_addresses(frame, "laddr_", "laddr")
    derived: list[pl.Expr] = []
    if with_ts:
        ts = pl.col("ts").cast(TS)
        derived += [
            (ts - pl.duration(seconds=pl.col("age"))).alias("created_at"),
            (ts - pl.duration(seconds=pl.col("idle"))).alias("last_active"),
        ]
    schema = client_fields_schema(with_ts=with_ts)
    return frame.with_columns(derived).select(
        *carried, *(pl.col(c).cast(t) for c, t in schema.items()), "parse_error", "raw_line"
    )


def _parse_replies(replies: Sequence[Reply | None], carried: pl.DataFrame) -> pl.DataFrame:
    """Parse replies[i] with carried row i repeated on each of its lines.

    Chunk by chunk, so the temporaries of the derived columns stay chunk-sized.
    """
    names = tuple(carried.columns)
    parts = []
    for fields in read_parts(replies):
        rid = fields.get_column("_rid")
        if names:
            fields = pl.concat([carried.select(pl.all().gather(rid)), fields], how="horizontal")
        parts.append(_derive(fields, names, with_ts="ts" in names).with_columns(rid))
    if not parts:
        return pl.DataFrame(schema=clients_schema(carried.schema))
    # the order part by part: a select on the concatenated frame would copy it into one chunk
    key = (pl.col("_rid") * (1 << 32) + pl.col("line_no")).alias("_order")
    order = pl.concat([p.select(key) for p in parts]).to_series()
    # `_rid` dropped part by part too: dropping it from the whole would copy the whole
    out = pl.concat([p.drop("_rid") for p in parts], rechunk=False)
    if not order.is_sorted():  # replies of several layouts: put every line back in its place
        out = out.with_columns(order).sort("_order").drop("_order")
    return out


def _reply_values(column: pl.Series) -> list[Reply | None]:
    if column.dtype == pl.Binary:
        return list(column.to_list())
    if column.dtype in (pl.String, pl.Null):
        return list(column.cast(pl.String).to_list())
    raise InputError(
        f"column {column.name!r} holds {column.dtype}, not text: give the CLIENT LIST replies "
        "as String or Binary."
    )


def _parse_frame(frame: pl.DataFrame, text_column: str) -> pl.DataFrame:
    replies = _reply_values(frame.get_column(text_column))
    return _parse_replies(replies, frame.drop(text_column))


def _check_column(schema: pl.Schema, text_column: str) -> None:
    if text_column not in schema:
        raise InputError(
            f"the frame has no column {text_column!r} (it has {', '.join(schema.names())}); "
            "pass text_column= to name the column that holds the CLIENT LIST replies."
        )


def _series_text(lines: pl.Series) -> str:
    values = decode_utf8(lines) if lines.dtype == pl.Binary else lines
    if values.dtype not in (pl.String, pl.Null):
        raise InputError(f"a Series of CLIENT LIST lines must hold strings, not {values.dtype}")
    if values.is_empty():
        return ""
    joined = values.cast(pl.String).fill_null("").str.join("\n").item()
    return str(joined) + "\n"


def parse_client_list(
    data: TextInput, *, text_column: str = "client_list"
) -> pl.DataFrame | pl.LazyFrame:
    """Parse CLIENT LIST replies into one typed row per line.

    `data` is one reply (`str` / `bytes`), a `pl.Series` of lines, or a DataFrame /
    LazyFrame whose `text_column` holds whole replies (String or Binary); its other
    columns are carried onto every client row, and a LazyFrame gives a LazyFrame
    back. Lines that are not client lines are kept, with `parse_error` saying why
    and `raw_line` the line as it was. The columns are always the same
    (`clients_schema`), whatever the input.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        return _parse_replies([bytes(data)], pl.DataFrame())
    if isinstance(data, str):
        return _parse_replies([data], pl.DataFrame())
    if isinstance(data, pl.Series):
        return _parse_replies([_series_text(data)], pl.DataFrame())
    if isinstance(data, pl.DataFrame):
        _check_column(data.schema, text_column)
        return _parse_frame(data, text_column)
    if isinstance(data, pl.LazyFrame):
        schema = data.collect_schema()
        _check_column(schema, text_column)
        carried = {c: t for c, t in schema.items() if c != text_column}
        return data.map_batches(
            lambda batch: _parse_frame(batch, text_column),
            schema=clients_schema(carried),
            streamable=True,
        )
    raise InputError(
        f"cannot parse a {type(data).__name__} as CLIENT LIST: give text, bytes, a Series of "
        "lines or a DataFrame / LazyFrame with a column of replies."
    )


def split_rejects(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(lines that parsed, lines that did not) of a `parse_client_list` result."""
    bad = pl.col("parse_error").is_not_null()
    return frame.filter(~bad), frame.filter(bad)
