"""The fast CLIENT LIST reader: lines grouped by field layout, cut by Polars' CSV tokenizer.

Within one reply nearly every line has the same keys in the same order (the
server's layout), and no value holds a space. So a reply is read as a
space-separated table with one column per token (Polars' multi-threaded CSV
reader, quoting off); a line belongs to the layout when it has exactly the
layout's tokens and token *i* starts with `key_i=`. Its values are then sliced at
the known offset and typed, column by column; no per-field regex, no key/value
explosion. Lines that do not fit (unix paths with spaces, a second layout, blank
lines, garbage, a truncated last line) go to `_client_generic`, and come back in
their place. Python only runs per reply or per chunk of replies, never per line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from clientscope.parse._client_generic import (
    FIELD_BOUNDS,
    FIELD_SCHEMA,
    GARBAGE,
    KEY,
    KEY_START,
    KNOWN_FIELDS,
    read_lines,
    stage1_columns,
)
from clientscope.parse._text import CUT, FIRST_COUNT, LINE
from clientscope.schema import CLIENT_EXTRA_DTYPE, CLIENT_INT_FIELDS
from clientscope.staging import ahead

CHUNK_BYTES = 32 << 20  # replies are read in pieces of about this size (bounds memory)
MAX_LAYOUTS = 4  # layouts tried per chunk before the rest goes to the general reader
_KEY_RE = re.compile(KEY)
_KEY_START_RE = re.compile(KEY_START)
_LINE_SEPARATORS = (b"\x1f", b"\x1e", b"\x1d", b"\x1c", b"\x01")
_REPLACEMENT = "\ufffd".encode()
_BOM = b"\xef\xbb\xbf"
_INTS = frozenset(CLIENT_INT_FIELDS)
Reply = str | bytes
STAGE1_SCHEMA: dict[str, pl.DataType] = {"_rid": pl.Int64(), **FIELD_SCHEMA}
_FITS = "_fits"
Fields = frozenset[str] | None  # stage-1 columns a read gives (None: all; see stage1_columns)


@dataclass(frozen=True)
class Layout:
    """The keys of a line in order; `fields[i]` is the column of key i, None if unknown."""

    keys: tuple[str, ...]
    fields: tuple[str | None, ...]


@dataclass(frozen=True)
class Piece:
    """A run of whole lines of one reply (`data` ends with a newline)."""

    rid: int
    data: bytes
    first_line_no: int
    cut_last: bool  # its last line is the reply's last and had no newline
    first_count: int  # keys in the reply's first line (for truncation)
    n_lines: int


def layout_of(line: str) -> Layout | None:
    """The layout of a plain `k=v k=v` line, or None if it is not one."""
    keys = tuple(token.partition("=")[0] for token in line.split(" "))
    if not all(_KEY_RE.fullmatch(k) for k in keys) or "=" not in line:
        return None
    if any("=" not in token for token in line.split(" ")):
        return None
    fields = tuple(_field_of(k) for k in keys)
    known = [f for f in fields if f is not None]
    if len(set(keys)) != len(keys) or len(set(known)) != len(known) or "addr" not in fields:
        return None
    return Layout(keys, fields)


def _field_of(key: str) -> str | None:
    snake = key.replace("-", "_")
    return snake if snake in KNOWN_FIELDS else None


def _first_layout(data: Reply, probe: int = 5) -> Layout | None:
    head = data[: 64 * 1024]
    text = head if isinstance(head, str) else head.decode("utf-8", "replace")
    for line in text.split("\n")[:probe]:
        layout = layout_of(line)
        if layout is not None:
            return layout
    return None


# ------------------------------------------------------------------ pieces
def _pieces(rid: int, data: Reply, chunk_bytes: int) -> Iterator[Piece]:
    """Cut one reply into newline-terminated pieces of about `chunk_bytes` (as UTF-8)."""
    text = isinstance(data, str)
    nl: str | bytes = "\n" if text else b"\n"
    cut = not data.endswith(nl)  # type: ignore[arg-type]
    first = data[: data.find(nl)] if nl in data else data  # type: ignore[arg-type,operator]
    first_text = first if isinstance(first, str) else first.decode("utf-8", "replace")
    first_count = len(_KEY_START_RE.findall(first_text))
    start, line_no = 0, 1
    while start < len(data):
        end = data.find(nl, min(start + chunk_bytes, len(data)) - 1)  # type: ignore[arg-type]
        end = len(data) if end < 0 else end + 1
        part = data[start:end] if (start, end) != (0, len(data)) else data
        piece = part.encode("utf-8", "replace") if isinstance(part, str) else part
        last = end >= len(data)
        if last and cut:
            piece += b"\n"
        n_lines = piece.count(b"\n")
        yield Piece(rid, piece, line_no, last and cut, first_count, n_lines)
        line_no += n_lines
        start = end


def chunks(
    replies: Sequence[Reply], rids: Sequence[int], chunk_bytes: int
) -> Iterator[list[Piece]]:
    """Pieces of the given replies, packed into chunks of about `chunk_bytes`."""
    batch: list[Piece] = []
    size = 0
    for rid in rids:
        for piece in _pieces(rid, replies[rid], chunk_bytes):
            if batch and size + len(piece.data) > chunk_bytes:
                yield batch
                batch, size = [], 0
            batch.append(piece)
            size += len(piece.data)
    if batch:
        yield batch


def _index(pieces: list[Piece]) -> pl.DataFrame:
    """One row per line of the pieces: `_rid`, `line_no`, `_cut`, `_first_count`."""
    reps = pl.DataFrame(
        {
            "_rid": [p.rid for p in pieces],
            "_start": [p.first_line_no for p in pieces],
            "_n": [p.n_lines for p in pieces],
            CUT: [p.cut_last for p in pieces],
            FIRST_COUNT: [p.first_count for p in pieces],
        },
        schema={
            "_rid": pl.Int64,
            "_start": pl.Int64,
            "_n": pl.Int64,
            CUT: pl.Boolean,
            FIRST_COUNT: pl.UInt32,
        },
    )
    last = pl.col("_start") + pl.col("_n") - 1
    return (
        reps.lazy()
        .with_columns(pl.int_ranges(pl.col("_start"), last + 1, dtype=pl.Int64).alias("line_no"))
        .explode("line_no")
        .select(
            "_rid", "line_no", (pl.col(CUT) & (pl.col("line_no") == last)).alias(CUT), FIRST_COUNT
        )
        .collect()
    )


# ------------------------------------------------------------------ readers
def _csv(buf: bytes, schema: dict[str, pl.DataType], separator: str) -> pl.DataFrame:
    return pl.read_csv(
        buf,
        has_header=False,
        separator=separator,
        quote_char=None,
        schema=schema,
        truncate_ragged_lines=True,
        missing_columns="insert",
        extra_columns="ignore",
        encoding="utf8-lossy",
        raise_if_empty=False,
    )


def _lines(buf: bytes, height: int) -> pl.Series | None:
    """The lines of `buf` (newline-terminated) as a String column, or None if unsure."""
    for sep in _LINE_SEPARATORS:
        if sep not in buf:
            lines = _csv(buf, {LINE: pl.String()}, sep.decode()).to_series().fill_null("")
            return lines if len(lines) == height else None
    return None


def _general(index: pl.DataFrame, lines: pl.Series, fields: Fields) -> pl.DataFrame:
    # one chunk: lines filtered out of a CSV read keep its chunks, and the general reader's
    # when/then chains over them can index past a chunk's end (Polars 2.1 panics)
    frame = index.with_columns(lines.rechunk().alias(LINE)).lazy()
    return read_lines(frame, keep=("_rid",), fields=fields).collect()


def _stage1_names(fields: Fields) -> list[str]:
    return ["_rid", *stage1_columns(fields)]


def field_value(i: int, key: str, field: str) -> pl.Expr:
    """The typed value of known field `field` from token column i (`key=value`)."""
    token = pl.col(f"_t{i}")
    value = token.str.tail(-(len(key) + 1))  # cheaper than str.slice
    if field in _INTS:
        return value.str.to_integer(strict=False).alias(field)
    return pl.when(token.str.len_bytes() > len(key) + 1).then(value).alias(field)


def _columns(layout: Layout, fields: Fields) -> list[pl.Expr]:
    """The stage-1 columns of lines that fit the layout, from the token columns.

    Every number field is typed whatever `fields` says: `_fits` checks it. A string
    field or `extra` outside `fields` is not built at all.
    """
    wanted = set(stage1_columns(fields))
    columns: list[pl.Expr] = []
    extra: list[pl.Expr] = []
    for i, (key, field) in enumerate(zip(layout.keys, layout.fields, strict=True)):
        if field is None:
            if "extra" in wanted:
                value = pl.col(f"_t{i}").str.tail(-(len(key) + 1))
                pair = pl.struct(pl.lit(key.replace("-", "_")).alias("key"), value.alias("value"))
                extra.append(pair)
        elif field in _INTS or field in wanted:
            columns.append(field_value(i, key, field))
    present = {f for f in layout.fields if f is not None}
    for name, dtype in FIELD_SCHEMA.items():
        if name not in present and name not in ("line_no", "extra", "parse_error", "raw_line"):
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    if "extra" in wanted:
        extra_col = pl.concat_list(extra) if extra else pl.lit([], dtype=CLIENT_EXTRA_DTYPE)
        columns.append(extra_col.cast(CLIENT_EXTRA_DTYPE).alias("extra"))
    columns.append(pl.lit(None, dtype=pl.String).alias("parse_error"))
    columns.append(pl.lit(None, dtype=pl.String).alias("raw_line"))
    return columns


def _fits(layout: Layout) -> pl.Expr:
    """A line fits the layout: exactly its tokens, token i starting with `key_i=`, and
    every number field empty or a number within `FIELD_BOUNDS` (checked on the typed
    column, so no second parse). A layout never repeats a key, so a line that does
    (`id=1 id=2`) never fits: the general reader says why it is not read."""
    checks = [pl.col(f"_t{len(layout.keys)}").is_null()]
    for i, (key, field) in enumerate(zip(layout.keys, layout.fields, strict=True)):
        token = pl.col(f"_t{i}")
        checks.append(token.str.starts_with(f"{key}="))
        if field in FIELD_BOUNDS:
            low, high, _ = FIELD_BOUNDS[field]
            checks.append(pl.col(field).is_between(low, high) | (token == f"{key}="))
        elif field in _INTS:
            checks.append(pl.col(field).is_not_null() | (token == f"{key}="))
    return pl.all_horizontal(checks).fill_null(False).alias(_FITS)


def _typed(buf: bytes, layout: Layout, fields: Fields) -> pl.DataFrame:
    """Every line of `buf` read as the layout, with `_fits` saying which lines really are.

    One lazy plan on the streaming engine: the token columns exist one morsel at a
    time, so the text is tokenized, typed and checked in a single pass over it.
    """
    width = len(layout.keys)
    # `buf` is valid UTF-8 (`_valid_utf8`, or a str encoded), so strict "utf8" reads the
    # same tokens: it checks the bytes in bulk, where "utf8-lossy" checks field by field
    # (about a quarter of the read's CPU). Were it not valid, the error falls back below.
    tokens = pl.scan_csv(
        buf,
        has_header=False,
        separator=" ",
        quote_char=None,
        schema={f"_t{i}": pl.String() for i in range(width + 1)},
        truncate_ragged_lines=True,
        missing_columns="insert",
        encoding="utf8",
        raise_if_empty=False,
    )
    columns = _columns(layout, fields)
    names = [c.meta.output_name() for c in columns]
    return (
        tokens.with_columns(columns)
        .select(*(n for n in names if n in _stage1_names(fields)), _fits(layout))
        .collect(engine="streaming")
    )


def _has_control_bytes(buf: bytes, n_lines: int) -> bool:
    """Any byte below 0x20 other than the `n_lines` newlines, or DEL (one numpy pass)."""
    below_space = int(np.count_nonzero(np.frombuffer(buf, dtype=np.uint8) < 0x20))
    return below_space != n_lines or b"\x7f" in buf


@dataclass(frozen=True)
class Text:
    """Whole lines to read (one `index` row per line) and what the reading asks of their
    bytes first: found in one place, so `read_parts` can do it for the next chunk in a
    worker thread while the engine reads this one."""

    buf: bytes
    index: pl.DataFrame
    dropped_bytes: bool  # a CR or a BOM, which the CSV reader would drop
    replaced: bool  # U+FFFD in the text: the fast reader could not tell it from a bad byte
    control: bool  # a control byte other than the newlines: garbage lines to judge

    @classmethod
    def of(cls, buf: bytes, index: pl.DataFrame) -> Text:
        return cls(
            buf,
            index,
            dropped_bytes=b"\r" in buf or buf.startswith(_BOM),
            replaced=not buf.isascii() and _REPLACEMENT in buf,
            control=_has_control_bytes(buf, index.height),
        )


def _read(text: Text, layout: Layout | None, depth: int, fields: Fields = None) -> pl.DataFrame:
    """Stage-1 rows of the lines of `text`, in index order."""
    buf, index = text.buf, text.index
    if text.dropped_bytes:
        return _general_split(buf, index, fields)
    if layout is None or depth >= MAX_LAYOUTS or text.replaced:
        lines = _lines(buf, index.height)
        if lines is None:
            return _general_split(buf, index, fields)
        return _general(index, lines, fields)
    try:
        typed = _typed(buf, layout, fields)
    except pl.exceptions.PolarsError:
        return _read(text, None, depth, fields)
    if typed.height != index.height:
        return _read(text, None, depth, fields)
    fits = typed.get_column(_FITS) & ~index.get_column(CUT)
    typed = pl.concat([index.select("_rid", "line_no"), typed.drop(_FITS)], how="horizontal")
    lines = None
    if text.control:  # garbage lines are the general reader's to judge
        lines = _lines(buf, index.height)
        if lines is None:
            return _read(text, None, depth, fields)
        fits = fits & ~lines.str.contains(GARBAGE)
    if fits.all():
        return typed.select(_stage1_names(fields))
    good = typed.filter(fits).select(_stage1_names(fields))
    del typed
    lines = _lines(buf, index.height) if lines is None else lines
    if lines is None:
        return _read(text, None, depth, fields)
    rest = _read_misfits(lines.filter(~fits), index.filter(~fits), depth, fields)
    return pl.concat([good, rest]).sort("_rid", "line_no")


def _read_misfits(
    lines: pl.Series, index: pl.DataFrame, depth: int, fields: Fields
) -> pl.DataFrame:
    """Lines that did not fit: try their own layout, else the general reader."""
    layout = None
    probe = lines.filter(~index[CUT]).head(5).to_list()
    for line in probe:
        layout = layout_of(line)
        if layout is not None:
            break
    if layout is None or len(lines) < 2:
        return _general(index, lines, fields)
    buf = (lines.str.join("\n").item() + "\n").encode()
    return _read(Text.of(buf, index), layout, depth + 1, fields)


def split_lines(data: Reply) -> pl.Series:
    """The lines of a reply as the parser numbers them (bad UTF-8 made U+FFFD; a last newline
    ends the last line, it does not start another); none for an empty reply."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if not text:
        return pl.Series(LINE, [], dtype=pl.String)
    return pl.Series(LINE, [text]).str.strip_suffix("\n").str.split("\n").explode()


def _general_split(buf: bytes, index: pl.DataFrame, fields: Fields) -> pl.DataFrame:
    return _general(index, split_lines(buf), fields)


def _valid_utf8(buf: bytes) -> bytes:
    """`buf` with bytes that are not UTF-8 made U+FFFD, so both readers see the same text."""
    if buf.isascii():
        return buf
    try:
        buf.decode("utf-8")
    except UnicodeDecodeError:
        return buf.decode("utf-8", "replace").encode()
    return buf


def read_parts(
    replies: Sequence[Reply | None], chunk_bytes: int = CHUNK_BYTES, fields: Fields = None
) -> Iterator[pl.DataFrame]:
    """Stage-1 rows of every line of every reply, chunk by chunk (`_rid` = reply position).

    `fields`: the stage-1 columns to give (None: all). Which lines are rejects, and
    every value given, are the same whatever `fields` is: each line is still judged
    on all its keys.

    Each part is in (`_rid`, `line_no`) order; parts of different layouts may
    interleave, so sort the whole when there is more than one layout group.
    """
    groups: dict[Layout | None, list[int]] = {}
    present: list[Reply] = []
    for rid, data in enumerate(replies):
        present.append(data or b"")
        if data:
            groups.setdefault(_first_layout(data), []).append(rid)
    texts = (
        (layout, _text(pieces))
        for layout, rids in groups.items()
        for pieces in chunks(present, rids, chunk_bytes)
    )
    for layout, text in ahead(texts):
        yield _read(text, layout, 0, fields)


def _text(pieces: list[Piece]) -> Text:
    buf = pieces[0].data if len(pieces) == 1 else b"".join(p.data for p in pieces)
    return Text.of(_valid_utf8(buf), _index(pieces))


def read_replies(replies: Sequence[Reply | None], chunk_bytes: int = CHUNK_BYTES) -> pl.DataFrame:
    """All stage-1 rows of the replies in (`_rid`, `line_no`) order."""
    parts = list(read_parts(replies, chunk_bytes))
    if not parts:
        return pl.DataFrame(schema=STAGE1_SCHEMA)
    return pl.concat(parts, rechunk=False).sort("_rid", "line_no")
