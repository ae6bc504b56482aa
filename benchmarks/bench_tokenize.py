"""What Polars itself costs for the pieces of a full CLIENT LIST parse: the lower bound.

    .venv/bin/python benchmarks/bench_tokenize.py                # 1,000,000 lines
    .venv/bin/python benchmarks/bench_tokenize.py --no-redis-py  # skip the 15 s baseline

`bench_parse.py` measures the parser; this measures what no parser built from
Polars expressions can go below, on the same generated lines:

- floor:        the lines into one String column (Polars' CSV reader, one column);
- tokens, 30:   the same reader cutting each line at its spaces into one String
                column per field, every field kept (a full parse needs all 30);
- tokens, 5/30: the same, only 5 of the 30 columns kept (projection pushdown:
                the reader still splits every line, it just keeps fewer columns);
- ints, 30:     the 30 columns read straight as Int64 (what typing costs inside
                the reader, were the values bare numbers);
- output:       the resident size of `parse_client_list`'s typed table alone (a
                child process with jemalloc told to return freed pages at once,
                the input dropped before measuring).

It prints each against the floor and against the two budgets of issue #2:
2.5x the floor and 1/30 of redis-py's time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
from bench_parse import make_text

FIELDS = 30  # keys in a Redis 7.2 CLIENT LIST line


def _best(work: Callable[[], int], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def read_tokens(data: bytes, dtype: pl.DataType, separator: str, columns: list[int] | None) -> int:
    n = 1 if separator == "\x1f" else FIELDS
    frame = pl.read_csv(
        data,
        has_header=False,
        separator=separator,
        quote_char=None,
        schema={f"c{i}": dtype for i in range(n)},
        columns=columns,
        ignore_errors=dtype != pl.String,
    )
    return frame.height


def _output_resident(path: Path) -> float:
    """MiB resident for the typed table alone, measured in a fresh process."""
    code = f"""
import gc
from pathlib import Path
from clientscope.parse import parse_client_list
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
base = rss()
data = Path({str(path)!r}).read_bytes()
out = parse_client_list(data)
del data
gc.collect()
print(rss() - base)
"""
    env = {**os.environ, "_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def _redis_py_seconds(data: bytes) -> float:
    from redis._parsers.helpers import parse_client_list

    start = time.perf_counter()
    parse_client_list(data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000, help="number of CLIENT LIST lines")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--no-redis-py", action="store_true", help="skip timing redis-py (about 15 s)")
    args = parser.parse_args()
    text = make_text(args.lines)
    data = text.encode()
    del text
    size = len(data)
    print(f"{args.lines:,} Redis 7.2 CLIENT LIST lines, {size / 1e6:.1f} MB "
          f"(polars {pl.__version__}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f})")  # fmt: skip
    runs = {
        "floor (lines, 1 column)": lambda: read_tokens(data, pl.String(), "\x1f", None),
        f"tokens, {FIELDS} String columns": lambda: read_tokens(data, pl.String(), " ", None),
        f"tokens, 5 of {FIELDS} kept": lambda: read_tokens(data, pl.String(), " ", [0, 3, 5, 6, 24]),
        f"tokens, {FIELDS} Int64 columns": lambda: read_tokens(data, pl.Int64(), " ", None),
    }
    seconds = {name: _best(work, args.repeat) for name, work in runs.items()}
    floor = seconds["floor (lines, 1 column)"]
    redis_py = None if args.no_redis_py else _redis_py_seconds(data)
    for name, s in seconds.items():
        print(f"  {name:32s} {s:7.3f} s  {s / floor:6.2f}x the floor")
    print(f"  budget 2.5x the floor:           {2.5 * floor:7.3f} s")
    if redis_py is not None:
        print(f"  redis-py parse_client_list:      {redis_py:7.3f} s; budget 1/30 of it: {redis_py / 30:.3f} s")
    with tempfile.NamedTemporaryFile(prefix="cs-tokenize-", suffix=".txt") as tmp:
        tmp.write(data)
        tmp.flush()
        resident = _output_resident(Path(tmp.name))
    print(f"  typed output of parse_client_list, resident: {resident:.0f} MiB = "
          f"{resident * 2**20 / size:.2f}x the input text")  # fmt: skip


if __name__ == "__main__":
    main()
