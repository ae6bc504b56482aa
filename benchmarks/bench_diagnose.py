"""How `diagnose` scales: 1M, 3M and 10M client rows, each timed in a fresh process.

    .venv/bin/python benchmarks/bench_diagnose.py                 # 1, 3, 10 million rows
    .venv/bin/python benchmarks/bench_diagnose.py --sizes 1 --keep

Datasets come from `simulate` (scenario `leak`, 5,000 clients per capture, captures
15 s apart: 2,000 captures for 10M rows) under --dir; they are reused when present
and removed at the end unless --keep. Each `diagnose` runs in its own Python process
so the peak RSS printed is that run's alone. Targets (issue 4): 10M rows under 10 s
wall and under 4 GiB RSS, growing linearly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
start = time.perf_counter()
from clientscope.analysis import diagnose
from clientscope.dataset import open_dataset
ds = open_dataset(sys.argv[1])
t0 = time.perf_counter()
d = diagnose(ds)
t1 = time.perf_counter()
print(json.dumps({
    "diagnose_s": t1 - t0, "process_s": t1 - start,
    # VmHWM, not ru_maxrss: through fork a child inherits the parent's high-water mark, and the
    # parent may just have simulated the dataset
    "rss_mib": next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024,
    "findings": [f"{f.kind}:{f.group}" for f in d.findings],
}))
"""


def dataset(root: Path, millions: float, clients: int) -> tuple[Path, int, float]:
    """The dataset for `millions` rows (made once), its client rows and how long it took."""
    from clientscope.simulation import simulate

    path = root / f"leak-{millions:g}M"
    meta = path / "bench.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        return path, int(info["rows"]), float(info["seconds"])
    shutil.rmtree(path, ignore_errors=True)
    captures = max(2, round(millions * 1_000_000 / clients))
    t0 = time.perf_counter()
    result = simulate("leak", path, seed=1, captures=captures, clients=clients, interval=15)
    seconds = time.perf_counter() - t0
    meta.write_text(json.dumps({"rows": result.client_rows, "seconds": seconds}))
    return path, result.client_rows, seconds


def run_child(path: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"diagnose failed on {path}:\n{out.stderr}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="1,3,10", help="millions of client rows, comma-separated"
    )
    parser.add_argument("--clients", type=int, default=5000, help="connections per capture")
    parser.add_argument(
        "--dir", type=Path, default=Path("/tmp/clientscope-bench"), help="where datasets go"
    )
    parser.add_argument("--keep", action="store_true", help="keep the datasets for the next run")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"{'rows':>12} {'captures':>9} {'simulate s':>11} {'diagnose s':>11} {'process s':>10} "
          f"{'peak RSS MiB':>13} {'s / M rows':>11}")  # fmt: skip
    try:
        for size in (float(s) for s in args.sizes.split(",")):
            path, rows, sim_s = dataset(args.dir, size, args.clients)
            r = run_child(path)
            diag = float(r["diagnose_s"])  # type: ignore[arg-type]
            print(
                f"{rows:>12,} {round(size * 1e6 / args.clients):>9,} {sim_s:>11.1f} {diag:>11.2f} "
                f"{float(r['process_s']):>10.2f} {float(r['rss_mib']):>13,.0f} "  # type: ignore[arg-type]
                f"{diag / (rows / 1e6):>11.2f}   {', '.join(r['findings'])}",  # type: ignore[arg-type]
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
