"""Experiment for issue #2's decision: what would a compiled tokenizer buy? (not product code)

    python3 -m venv /tmp/nbvenv && /tmp/nbvenv/bin/pip install numba polars pyarrow redis
    PYTHONPATH=src /tmp/nbvenv/bin/python benchmarks/proto_compiled_tokenizer.py

The product parser is Polars expressions only, as issue #2 requires. This script
measures option 1 of the #2 closing note — a compiled fast path — with Numba
standing in for a C extension: one parallel pass over the bytes that checks
every key of the reply's layout on every line (the same fit test as the Polars
reader), parses the numbers and records where each string value is; then the
string columns are gathered into Arrow buffers, and clientscope's own stage 2
(flags, addresses, output order) makes the full typed table. The result is
compared with `parse_client_list`'s, column by column, before anything is timed.

Simplifications, said so the numbers are read right: one layout (the generated
lines have one); a line that does not fit would go to the Polars readers (none
here); empty number fields are not handled (none here). Numba's compile time
is excluded (a C extension has none).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numba as nb
import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from bench_parse import make_text
from bench_tokenize import _best
from clientscope.parse import parse_client_list
from clientscope.parse._client_fast import FIELD_SCHEMA, STAGE1_SCHEMA, layout_of
from clientscope.parse.client_list import _derive
from clientscope.schema import CLIENT_EXTRA_DTYPE, CLIENT_INT_FIELDS


@nb.njit(parallel=True, cache=False)
def _cut(buf, starts, ends, keys, key_at, is_int, ints, views, fits):  # type: ignore[no-untyped-def]
    n_keys = len(key_at) - 1
    for line in nb.prange(len(starts)):
        p, end, ok, i_int, i_str = starts[line], ends[line], True, 0, 0
        for k in range(n_keys):
            k0, k1 = key_at[k], key_at[k + 1]
            if p + (k1 - k0) >= end:
                ok = False
                break
            for j in range(k1 - k0):
                if buf[p + j] != keys[k0 + j]:
                    ok = False
                    break
            if not ok or buf[p + k1 - k0] != 61:  # '='
                ok = False
                break
            p += k1 - k0 + 1
            v0 = p
            while p < end and buf[p] != 32:  # ' '
                p += 1
            if is_int[k]:
                q, sign, value = v0, 1, 0
                if q < p and buf[q] == 45:  # '-'
                    sign, q = -1, q + 1
                if q == p:
                    ok = False
                    break
                while q < p:
                    digit = buf[q] - 48
                    if digit < 0 or digit > 9:
                        ok = False
                        break
                    value = value * 10 + digit
                    q += 1
                if not ok:
                    break
                ints[i_int, line] = sign * value
                i_int += 1
            else:  # an Arrow string view: length, then the bytes inline or a prefix + offset
                view, size = views[i_str, line], p - v0
                for j in range(4):
                    view[j] = (size >> (8 * j)) & 255
                if size <= 12:
                    for j in range(12):
                        view[4 + j] = buf[v0 + j] if j < size else 0
                else:
                    for j in range(4):
                        view[4 + j] = buf[v0 + j]
                        view[8 + j] = 0  # buffer 0: the input itself
                        view[12 + j] = (v0 >> (8 * j)) & 255
                i_str += 1
            if k < n_keys - 1:
                if p >= end:
                    ok = False
                    break
                p += 1
        fits[line] = ok and p == end


def compiled_stage1(data: bytes) -> pl.DataFrame:
    """Stage-1 columns (as `_client_fast` makes them) from the compiled pass."""
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], newlines[:-1] + 1))
    layout = layout_of(data[: newlines[0]].decode())
    assert layout is not None and None not in layout.fields
    fields = [str(f) for f in layout.fields]
    int_fields = [f for f in fields if f in CLIENT_INT_FIELDS]
    str_fields = [f for f in fields if f not in CLIENT_INT_FIELDS]
    key_bytes = [k.encode() for k in layout.keys]
    keys = np.frombuffer(b"".join(key_bytes), dtype=np.uint8)
    key_at = np.cumsum([0, *map(len, key_bytes)]).astype(np.int64)
    is_int = np.array([f in CLIENT_INT_FIELDS for f in fields])
    n = len(starts)
    ints = np.empty((len(int_fields), n), np.int64)
    views = np.empty((len(str_fields), n, 16), np.uint8)
    fits = np.empty(n, np.bool_)
    assert len(data) < 2**31, "string views hold 32-bit offsets: cut bigger input into pieces"
    _cut(buf, starts, newlines, keys, key_at, is_int, ints, views, fits)
    assert fits.all(), "a line that does not fit would go to the Polars readers"
    columns: dict[str, pl.Series] = {f: pl.Series(f, ints[i]) for i, f in enumerate(int_fields)}
    text = pa.py_buffer(data)  # the values stay in the input: no copy
    for i, f in enumerate(str_fields):
        arrow = pa.Array.from_buffers(pa.string_view(), n, [None, pa.py_buffer(views[i]), text])
        series = pl.Series(f, arrow)
        columns[f] = pl.select(pl.when(series.str.len_bytes() > 0).then(series)).to_series().alias(f)
    frame = pl.DataFrame(columns).with_columns(
        pl.lit(0, pl.Int64).alias("_rid"), pl.int_range(1, n + 1, dtype=pl.Int64).alias("line_no")
    )
    missing = [
        pl.lit(None, dtype=t).alias(c)
        for c, t in FIELD_SCHEMA.items()
        if c not in frame.columns and c != "extra"
    ]
    extra = pl.lit([], dtype=CLIENT_EXTRA_DTYPE).alias("extra")
    return frame.with_columns(*missing, extra).select(STAGE1_SCHEMA.keys())


def compiled_parse(data: bytes) -> pl.DataFrame:
    return _derive(compiled_stage1(data), (), False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis-py-seconds", type=float, help="skip timing redis-py; use this")
    args = parser.parse_args()
    data = make_text(args.lines).encode()
    print(f"{args.lines:,} lines, {len(data) / 1e6:.1f} MB, numba {nb.__version__}, "
          f"{nb.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    small = data[: data.index(b"\n", 200_000) + 1]
    compiled_parse(small)  # compile
    reference = parse_client_list(data).drop("_rid", strict=False)
    assert isinstance(reference, pl.DataFrame)
    ours = compiled_parse(data).drop("_rid", strict=False)
    assert ours.columns == reference.columns, (ours.columns, reference.columns)
    for column in reference.columns:
        assert ours[column].equals(reference[column]), column
    print("  the compiled path's table equals parse_client_list's, every column")
    floor = _best(lambda: pl.read_csv(data, has_header=False, separator="\x1f", quote_char=None,
                                      schema={"l": pl.String}), args.repeat)  # fmt: skip
    stage1 = _best(lambda: compiled_stage1(data), args.repeat)
    full = _best(lambda: compiled_parse(data), args.repeat)
    polars = _best(lambda: parse_client_list(data), args.repeat)
    if args.redis_py_seconds:
        redis_py = args.redis_py_seconds
    else:
        from redis._parsers.helpers import parse_client_list as redis_py_parse

        redis_py = _best(lambda: redis_py_parse(data), 1)
    for name, s in [("floor (Polars CSV, 1 column)", floor), ("compiled stage 1 (cut + type + views)", stage1),
                    ("compiled stage 1 + clientscope stage 2", full), ("clientscope (Polars only)", polars),
                    ("redis-py parse_client_list", redis_py)]:  # fmt: skip
        print(f"  {name:40s} {s:7.3f} s  {s / floor:6.2f}x the floor  {redis_py / s:6.1f}x faster than redis-py")


if __name__ == "__main__":
    main()
