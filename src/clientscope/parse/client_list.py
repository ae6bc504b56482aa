"""CLIENT LIST replies -> the typed `clients` table.

A CLIENT LIST line is `key=value` tokens separated by single spaces. Values never
hold spaces, except the unix-socket path in `addr` / `laddr`; a value may hold `=`
(`name=a=b`: split on the first `=` only). Which keys appear, and in which order,
depends on the server and its version. Reading happens in two stages:

1. fields: `_client_fast` reads the lines that share their reply's layout,
   `_client_generic` every other line (and says why a line is not a client line);
2. derived columns (this module): addr / laddr split, one boolean per flag
   letter, `created_at` / `last_active` from `ts`, `raw_line` for rejects.

A LazyFrame stays lazy: it is a Polars IO-plugin source (`scan_client_list`) that
parses batches of replies as the engine pulls them, so a dataset larger than memory
streams to Parquet. The source is told which columns a query uses and only derives
those (a string field, `extra`, the flag booleans, the address split, the times);
every line is still judged on all its keys, so which lines are rejects and every
value are the same whatever a query selects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from clientscope.errors import InputError
from clientscope.escape import printable
from clientscope.parse._client_fast import CHUNK_BYTES, Reply, read_parts, split_lines
from clientscope.parse._text import TextInput, decode_utf8
from clientscope.schema import CLIENT_DERIVED, CLIENT_FLAGS, TS, client_fields_schema, conform

__all__ = ["clients_schema", "parse_client_list", "scan_client_list", "split_rejects"]


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


def _flag_columns(flags: pl.Series, columns: Sequence[str]) -> list[pl.Expr]:
    """One boolean per flag letter (of those whose column is in `columns`). A server has
    few distinct flag strings: decode those (one `str.contains` per letter) into a bit
    mask, and look each row's mask up once."""
    letters = {bit: (letter, col) for bit, (letter, col) in enumerate(CLIENT_FLAGS.items())}
    letters = {bit: lc for bit, lc in letters.items() if lc[1] in columns}
    if not letters:
        return []
    distinct = flags.drop_nulls().unique()
    if distinct.len() * 20 > flags.len() or distinct.is_empty():
        return [
            pl.col("flags").str.contains(letter, literal=True).alias(col)
            for letter, col in letters.values()
        ]
    masks = pl.select(
        pl.sum_horizontal(
            distinct.str.contains(letter, literal=True).cast(pl.Int32) * (1 << bit)
            for bit, (letter, _) in letters.items()
        )
    ).to_series()
    mask = pl.lit(flags.replace_strict(distinct, masks, default=None, return_dtype=pl.Int32))
    return [(mask & (1 << bit)).ne(0).alias(col) for bit, (_, col) in letters.items()]


_ADDR_PARTS = {"": ("ip", "port", "family"), "laddr_": ("laddr_ip", "laddr_port", "laddr_family")}
_ADDR_SOURCE = {"": "addr", "laddr_": "laddr"}  # prefix -> the field it is split from


@dataclass(frozen=True)
class Projection:
    """What a parse gives: `columns` of the output (None: all), and what that needs."""

    columns: frozenset[str] | None = None

    def wants(self, *names: str) -> bool:
        return self.columns is None or any(n in self.columns for n in names)

    def flag_columns(self) -> list[str]:
        """Flag booleans to derive: those asked for, and `is_unix_socket` for addresses."""
        needed = [c for c in CLIENT_FLAGS.values() if self.wants(c)]
        if self.wants(*_ADDR_PARTS[""], *_ADDR_PARTS["laddr_"]) and "is_unix_socket" not in needed:
            needed.append("is_unix_socket")
        return needed

    def fields(self) -> frozenset[str] | None:
        """The stage-1 (`read_parts`) columns the output needs."""
        if self.columns is None:
            return None
        fields = set(self.columns)
        if self.flag_columns():
            fields.add("flags")
        for prefix, parts in _ADDR_PARTS.items():
            if self.wants(*parts):
                fields.add(_ADDR_SOURCE[prefix])
        if self.wants("created_at"):
            fields.add("age")
        if self.wants("last_active"):
            fields.add("idle")
        return frozenset(fields)

    def carried(self, names: Sequence[str]) -> tuple[str, ...]:
        """The carried columns to repeat onto client rows (`ts` for the derived times)."""
        times = self.wants(*CLIENT_DERIVED)
        return tuple(n for n in names if self.wants(n) or (n == "ts" and times))

    def select(self, schema: dict[str, pl.DataType]) -> list[str]:
        return [c for c in schema if self.wants(c)]


def _times(with_ts: bool, projection: Projection) -> list[pl.Expr]:
    ts = pl.col("ts").cast(TS)
    derived: list[pl.Expr] = []
    if with_ts and projection.wants("created_at"):
        derived.append((ts - pl.duration(seconds=pl.col("age"))).alias("created_at"))
    if with_ts and projection.wants("last_active"):
        derived.append((ts - pl.duration(seconds=pl.col("idle"))).alias("last_active"))
    return derived


def _derive(
    frame: pl.DataFrame, carried: tuple[str, ...], with_ts: bool, projection: Projection
) -> pl.DataFrame:
    """Stage 2: flag booleans, addresses, times (those the projection needs); columns in
    the output order, with `line_no` always (the rows' order)."""
    if flag_columns := projection.flag_columns():
        frame = frame.with_columns(_flag_columns(frame.get_column("flags"), flag_columns))
    if projection.wants(*_ADDR_PARTS[""]):
        frame = _split_address(frame, "", "addr")
    if projection.wants(*_ADDR_PARTS["laddr_"]):
        frame = _split_few_addresses(frame, "laddr_", "laddr")
    schema = client_fields_schema(with_ts=with_ts)
    names = [c for c in schema if c == "line_no" or projection.wants(c)]
    return frame.with_columns(_times(with_ts, projection)).select(
        *carried, *(pl.col(c).cast(schema[c]) for c in names), "parse_error", "raw_line"
    )


ENGINE_FAILED = "the parser's engine failed on this reply ({}); the line is kept as it was"


def _is_engine_panic(exc: BaseException) -> bool:
    """A Rust panic inside Polars: pyo3's PanicException, a BaseException (no `except
    Exception` catches it), which a reply from a stranger must not turn into a crash."""
    return type(exc).__name__ == "PanicException"


def _parse_replies(
    replies: Sequence[Reply | None],
    carried: pl.DataFrame,
    projection: Projection = Projection(),
) -> pl.DataFrame:
    """`_parse_all`, and when the engine panics on the replies, each reply on its own; the
    lines of a reply it still panics on are all kept as rejects (`ENGINE_FAILED`)."""
    try:
        return _parse_all(replies, carried, projection)
    except BaseException as exc:
        if not _is_engine_panic(exc):
            raise
    alone = (_parse_alone(r, carried.slice(i, 1), projection) for i, r in enumerate(replies))
    return pl.concat(alone, how="vertical")


def _parse_alone(reply: Reply | None, carried: pl.DataFrame, projection: Projection) -> pl.DataFrame:
    try:
        return _parse_all([reply], carried, projection)
    except BaseException as exc:
        if not _is_engine_panic(exc):
            raise
        return _unread(reply, carried, projection, exc)


def _unread(
    reply: Reply | None, carried: pl.DataFrame, projection: Projection, exc: BaseException
) -> pl.DataFrame:
    """Every line of `reply` as a reject saying the engine failed on it, in the parse's columns."""
    why = printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, limit=200)
    rows = split_lines(reply or "").alias("raw_line").to_frame().with_columns(
        line_no=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
        parse_error=pl.lit(ENGINE_FAILED.format(why)),
    )
    schema = clients_schema(carried.schema)
    full = conform(carried.join(rows, how="cross"), schema)
    return full if projection.columns is None else full.select(projection.select(schema))


def _parse_all(
    replies: Sequence[Reply | None],
    carried: pl.DataFrame,
    projection: Projection = Projection(),
) -> pl.DataFrame:
    """Parse replies[i] with carried row i repeated on each of its lines.

    Chunk by chunk, so the temporaries of the derived columns stay chunk-sized.
    With a projection, only its columns, in the output order.
    """
    names = projection.carried(carried.columns)
    carried = carried.select(names)
    with_ts = "ts" in carried.columns
    parts = []
    for fields in read_parts(replies, fields=projection.fields()):
        rid = fields.get_column("_rid")
        if names:
            fields = pl.concat([carried.select(pl.all().gather(rid)), fields], how="horizontal")
        parts.append(_derive(fields, names, with_ts, projection).with_columns(rid))
    schema = clients_schema(carried.schema)
    if not parts:
        return pl.DataFrame(schema=schema).select(projection.select(schema))
    # the order part by part: a select on the concatenated frame would copy it into one chunk
    key = (pl.col("_rid") * (1 << 32) + pl.col("line_no")).alias("_order")
    order = pl.concat([p.select(key) for p in parts]).to_series()
    # `_rid` dropped part by part too: dropping it from the whole would copy the whole
    out = pl.concat([p.drop("_rid") for p in parts], rechunk=False)
    if not order.is_sorted():  # replies of several layouts: put every line back in its place
        out = out.with_columns(order).sort("_order").drop("_order")
    return out if projection.columns is None else out.select(projection.select(schema))


def _reply_values(column: pl.Series) -> list[Reply | None]:
    if column.dtype == pl.Binary:
        return list(column.to_list())
    if column.dtype in (pl.String, pl.Null):
        return list(column.cast(pl.String).to_list())
    raise InputError(
        f"column {column.name!r} holds {column.dtype}, not text: give the CLIENT LIST replies "
        "as String or Binary."
    )


def _parse_frame(
    frame: pl.DataFrame, text_column: str, projection: Projection = Projection()
) -> pl.DataFrame:
    replies = _reply_values(frame.get_column(text_column))
    return _parse_replies(replies, frame.drop(text_column), projection)


def _reply_bytes(batch: pl.DataFrame, text_column: str) -> np.ndarray:
    column = batch.get_column(text_column)
    if column.dtype == pl.Binary:
        sizes = column.bin.size()
    elif column.dtype == pl.String:
        sizes = column.str.len_bytes()
    else:
        return np.zeros(batch.height, dtype=np.int64)
    return sizes.fill_null(0).cast(pl.Int64).to_numpy()


def reply_batches(
    raw: pl.LazyFrame, text_column: str, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pl.DataFrame]:
    """Rows of `raw` (streamed), regrouped into runs of about `chunk_bytes` of reply text
    (a longer reply alone): what one parse holds in memory."""
    pending: list[pl.DataFrame] = []
    size = 0
    for batch in raw.collect_batches(lazy=True):
        ends = np.cumsum(_reply_bytes(batch, text_column))
        start, base = 0, 0
        while start < batch.height:
            end = int(np.searchsorted(ends, base + chunk_bytes - size, side="right"))
            end = max(end, start + 1) if not pending else end
            if end > start:
                pending.append(batch.slice(start, end - start))
                size += int(ends[end - 1]) - base
                base = int(ends[end - 1])
            if end < batch.height or size >= chunk_bytes:
                yield pl.concat(pending)
                pending, size = [], 0
            start = end
    if pending:
        yield pl.concat(pending)


@dataclass(frozen=True)
class _Scan:
    """One `scan_client_list` source: its input and what the engine asked of it."""

    data: pl.LazyFrame
    text_column: str
    carried: tuple[str, ...]
    schema: dict[str, pl.DataType]

    def batches(
        self,
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        """Parsed rows, batch by batch: only `with_columns`, `predicate` applied, at most
        `n_rows`. A predicate on carried columns only drops whole replies unparsed."""
        columns = list(self.schema) if with_columns is None else list(with_columns)
        roots = set() if predicate is None else set(predicate.meta.root_names())
        wanted = frozenset(columns) | roots
        # every column: the plain parse, with no projection to apply along the way
        projection = Projection(None if wanted >= self.schema.keys() else wanted)
        raw = self.data.select(self.text_column, *projection.carried(self.carried))
        if predicate is not None and roots <= set(self.carried):
            raw = raw.filter(predicate)
        left = n_rows
        for batch in reply_batches(raw, self.text_column):
            if left is not None and left <= 0:
                return
            out = _parse_frame(batch, self.text_column, projection)
            if predicate is not None:
                out = out.filter(predicate)
            if left is not None:
                out = out.head(left)
                left -= out.height
            out = out.select(columns)
            yield from (out,) if batch_size is None else out.iter_slices(batch_size)


def scan_client_list(data: pl.LazyFrame, *, text_column: str = "client_list") -> pl.LazyFrame:
    """The clients of a LazyFrame of replies, as a lazy source that parses on demand.

    What `parse_client_list` gives for a LazyFrame: the columns are `clients_schema`;
    a query's projection, predicate and row limit reach the parser (see the module
    docstring), and replies are read from `data` in runs of about `CHUNK_BYTES`.
    """
    from polars.io.plugins import register_io_source

    schema = data.collect_schema()
    _check_column(schema, text_column)
    if schema[text_column] not in (pl.String, pl.Binary, pl.Null):
        _reply_values(pl.Series(text_column, [], dtype=schema[text_column]))  # raises
    carried = {c: t for c, t in schema.items() if c != text_column}
    scan = _Scan(data, text_column, tuple(carried), clients_schema(carried))
    return register_io_source(
        scan.batches, schema=scan.schema, explain_name="clientscope CLIENT LIST"
    )


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
        return scan_client_list(data, text_column=text_column)
    raise InputError(
        f"cannot parse a {type(data).__name__} as CLIENT LIST: give text, bytes, a Series of "
        "lines or a DataFrame / LazyFrame with a column of replies."
    )


def split_rejects(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(lines that parsed, lines that did not) of a `parse_client_list` result."""
    bad = pl.col("parse_error").is_not_null()
    return frame.filter(~bad), frame.filter(bad)
