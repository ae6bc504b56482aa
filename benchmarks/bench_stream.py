"""Benchmark: a raw capture dataset of N CLIENT LIST lines -> clients Parquet, streaming.

    .venv/bin/python benchmarks/bench_stream.py                   # 10,000,000 lines
    .venv/bin/python benchmarks/bench_stream.py --lines 1000000   # quicker

Builds raw captures (schema.RAW_SCHEMA; `--per-capture` lines of Redis 7.2 CLIENT
LIST each, bytes in the `client_list` column) as Parquet files under a temporary
directory in /tmp, then, in a fresh subprocess, runs

    parse_client_list(pl.scan_parquet(raw).select(capture_id, instance, ts, client_list))
        .sink_parquet(out, engine="streaming")

and prints the wall time, lines/s and the subprocess's peak RSS (target: under
2 GiB for 10M lines). The temporary directory is removed at the end unless
`--keep` is given.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))

from bench_parse import make_text

VARIANTS = 16  # distinct capture texts; captures cycle through them


def build_raw(root: Path, lines: int, per_capture: int, per_file: int) -> tuple[int, int]:
    """Write raw captures; returns (captures, bytes of CLIENT LIST text)."""
    texts = [make_text(per_capture, seed).encode() for seed in range(VARIANTS)]
    captures = -(-lines // per_capture)
    t0 = datetime(2026, 11, 26, tzinfo=UTC)
    size = 0
    for start in range(0, captures, per_file):
        ids = range(start, min(start + per_file, captures))
        bodies = [texts[i % VARIANTS] for i in ids]
        last = lines - (captures - 1) * per_capture
        if ids[-1] == captures - 1 and last < per_capture:  # the last capture is shorter
            bodies[-1] = b"\n".join(bodies[-1].split(b"\n")[:last]) + b"\n"
        size += sum(len(b) for b in bodies)
        frame = pl.DataFrame(
            {
                "capture_id": [f"cap-{i:06d}" for i in ids],
                "instance": ["cache-1"] * len(bodies),
                "ts": [t0 + timedelta(seconds=5 * i) for i in ids],
                "source": ["collect"] * len(bodies),
                "ok": [True] * len(bodies),
                "client_list": bodies,
            },
            schema_overrides={"ts": pl.Datetime("us", "UTC"), "client_list": pl.Binary},
        )
        frame.write_parquet(root / f"raw-{start:06d}.parquet", row_group_size=8)
    return captures, size


def _peak_rss() -> int:
    """VmHWM: unlike ru_maxrss it is not inherited from the parent through fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(raw_dir: str, out: str) -> None:
    """Child process: stream the parse to Parquet, print JSON with time and peak RSS."""
    from clientscope.parse import parse_client_list

    start = time.perf_counter()
    raw = pl.scan_parquet(f"{raw_dir}/*.parquet").select(
        "capture_id", "instance", "ts", "client_list"
    )
    parsed = parse_client_list(raw)
    assert isinstance(parsed, pl.LazyFrame)
    parsed.sink_parquet(out, engine="streaming")
    seconds = time.perf_counter() - start
    rows = pl.scan_parquet(out).select(pl.len()).collect().item()
    rss = _peak_rss()
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_rss": rss}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=10_000_000, help="CLIENT LIST lines in total")
    parser.add_argument("--per-capture", type=int, default=10_000, help="lines per capture")
    parser.add_argument("--per-file", type=int, default=8, help="captures per raw Parquet file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--worker", nargs=2, metavar=("RAW", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(*args.worker)
        return
    tmp = Path(tempfile.mkdtemp(prefix="cs-stream-", dir="/tmp"))
    try:
        raw_dir = tmp / "raw"
        raw_dir.mkdir()
        t0 = time.perf_counter()
        captures, size = build_raw(raw_dir, args.lines, args.per_capture, args.per_file)
        on_disk = sum(p.stat().st_size for p in raw_dir.iterdir())
        print(
            f"raw dataset: {captures:,} captures, {args.lines:,} lines, {size / 2**30:.2f} GiB of "
            f"CLIENT LIST text ({on_disk / 2**20:.0f} MiB Parquet), built in {time.perf_counter() - t0:.0f} s"
        )
        out = tmp / "clients.parquet"
        result = subprocess.run(
            [sys.executable, __file__, "--worker", str(raw_dir), str(out)],
            check=True,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        r = json.loads(result.stdout.strip().splitlines()[-1])
        assert r["rows"] == args.lines, r
        print(
            f"streaming parse -> Parquet: {r['seconds']:.1f} s, {args.lines / r['seconds']:,.0f} lines/s, "
            f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB (target < 2 GiB), "
            f"output {out.stat().st_size / 2**20:.0f} MiB"
        )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
