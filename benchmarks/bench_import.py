"""Benchmark: `clientscope import` of many text dumps (time, and memory that must not grow).

    .venv/bin/python benchmarks/bench_import.py                       # 2,000 dumps x 1,000 clients
    .venv/bin/python benchmarks/bench_import.py --files 500           # quicker

Writes N `redis-cli client list` dumps (Redis 7.2 lines from bench_parse, one capture
each, timestamps in the file names, 5 s apart) to a temporary folder, then runs
`clientscope import FOLDER --out DATASET` in a fresh process and prints wall time,
captures/s, client rows/s, the CPU time it took (user + system, all its threads) and that
process's peak RSS. The import writes in batches of `IMPORT_BATCH_BYTES` of text, so its
peak should stay flat as N grows.

On a shared machine, wall time follows the load; CPU time much less so. Compare two
versions back to back (`--repeat 3` prints the best of three, and each run).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_parse import make_text

# the CLI, then its own peak RSS (VmHWM: ru_maxrss would carry this process's through fork)
CHILD = """
import sys
from clientscope.cli import main
sys.argv = ["clientscope", *sys.argv[1:]]
try:
    main()
finally:
    print([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0], file=sys.stderr)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="number of dump files")
    parser.add_argument("--clients", type=int, default=1000, help="client lines per dump")
    parser.add_argument("--repeat", type=int, default=1, help="imports, each into a new dataset")
    args = parser.parse_args()
    text = make_text(args.clients)
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    with tempfile.TemporaryDirectory(prefix="cs-bench-import-") as tmp:
        folder = Path(tmp) / "dumps"
        folder.mkdir()
        for i in range(args.files):
            ts = start + timedelta(seconds=5 * i)
            # each dump its own content (a different first id), as real captures are
            body = text.replace("id=", f"id={i}", 1)
            (folder / f"clients-{ts:%Y%m%d-%H%M%S}.txt").write_text(body)
        size = sum(p.stat().st_size for p in folder.iterdir())
        rows = args.files * args.clients
        print(f"{args.files:,} dumps x {args.clients:,} clients = {rows:,} client lines, {size / 1e6:.0f} MB "
              f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
        runs = [_import(folder, Path(tmp) / f"ds{n}") for n in range(args.repeat)]
    for seconds, cpu, peak in runs if args.repeat > 1 else []:
        print(f"  run: {seconds:.1f} s, cpu {cpu:.1f} s, peak RSS {peak / 2**20:,.0f} MiB")
    seconds, cpu, peak = min(runs)
    print(f"  import: {seconds:.1f} s, {args.files / seconds:,.0f} captures/s, {rows / seconds:,.0f} client "
          f"lines/s, cpu {cpu:.1f} s ({rows / cpu:,.0f} lines per cpu-s), peak RSS {peak / 2**20:,.0f} MiB "
          f"({peak / size:.2f}x the text); load {os.getloadavg()[0]:.2f}")  # fmt: skip


def _import(folder: Path, out: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS of one `clientscope import`."""
    argv = ["import", str(folder), "--out", str(out), "--instance", "bench", "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    peak = int(done.stderr.strip().splitlines()[-1].split()[1]) * 1024
    return seconds, cpu, peak


if __name__ == "__main__":
    main()
