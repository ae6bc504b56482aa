"""Collector benchmarks against real servers on loopback.

(a) overhead: one Valkey server holding N connected clients (default 10,000, opened
    from a helper subprocess with raw sockets). Per capture, compares the
    collector's own cost with the server's CLIENT LIST time:
      server      usec per CLIENT LIST from INFO commandstats (the server's work)
      bare        wall time of a bare CLIENT LIST round trip (raw redis-py connection)
      collector   wall time of the collector's CLIENT LIST request, and the CPU time
                  of its thread for the whole capture (TIME, CLIENT LIST, INFO, CONFIG,
                  row building, sha256)
    Target: (collector CLIENT LIST wall - server) / server < 25%.
    Also reports what the writer thread (append_raw: Parquet raw + parsed tables)
    costs per capture, which runs off the capture schedule.
(b) schedule: 20 servers, 1 s interval, ~30 s, one collector process; prints
    missed / late captures per server (target: none missed).

    .venv/bin/python benchmarks/bench_collect.py            # both
    .venv/bin/python benchmarks/bench_collect.py --part a --clients 10000 --captures 20
    .venv/bin/python benchmarks/bench_collect.py --part b --servers 20 --seconds 30
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from clientscope.capture import collect, parse_target  # noqa: E402
from clientscope.capture.channel import Timeouts, open_channel  # noqa: E402
from clientscope.capture.snapshot import CaptureOptions, CaptureState, take_capture  # noqa: E402
from servers import Server, valkey_server  # noqa: E402

HOLDER = textwrap.dedent(
    """
    import socket, sys
    port, n = int(sys.argv[1]), int(sys.argv[2])
    held = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"CLIENT SETNAME app-%d-pool\\r\\n" % (i % 400))
        held.append(s)
    for s in held:
        s.recv(64)
    print("ready", flush=True)
    sys.stdin.read()
    """
)
_CMDSTAT = re.compile(r"cmdstat_client\|list:calls=(\d+),usec=(\d+)")


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if min(need, hard) < need:
        sys.exit(f"need {need} open files, the hard limit is {hard}: raise `ulimit -Hn`")


def commandstats(srv: Server) -> tuple[int, int]:
    import redis

    conn = redis.Connection(host=srv.host, port=srv.port, protocol=2)  # type: ignore[no-untyped-call]
    conn.connect()
    conn.send_command("INFO", "commandstats")
    text = conn.read_response().decode()
    conn.disconnect()
    match = _CMDSTAT.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def bench_overhead(clients: int, captures: int) -> None:
    raise_fd_limit(clients + 200)
    with valkey_server(maxclients=clients + 100) as srv:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(srv.port), str(clients)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            _measure(srv, clients, captures)
        finally:
            holder.communicate("", timeout=30)


def _measure(srv: Server, clients: int, captures: int) -> None:
    import polars as pl

    from clientscope.dataset import append_raw
    from clientscope.schema import RAW_SCHEMA

    bare = _bare_round_trips(srv, captures)
    target = parse_target(srv.url)
    channel = open_channel(target, Timeouts(connect=3, read=30))
    options = CaptureOptions(interval=10.0, collector_version="bench")
    state = CaptureState()
    take_capture(channel, target, options, state)  # connect, warm up
    calls0, usec0 = commandstats(srv)
    walls, cpus, totals, rows = [], [], [], []
    for _ in range(captures):
        cpu0 = time.thread_time()
        row = take_capture(channel, target, options, state)
        cpus.append((time.thread_time() - cpu0) * 1000)
        walls.append(row["client_list_ms"])
        totals.append(row["total_ms"])
        rows.append(row)
    calls1, usec1 = commandstats(srv)
    channel.close()
    server_ms = (usec1 - usec0) / max(1, calls1 - calls0) / 1000
    n_lines = rows[-1]["client_list"].count(b"\n")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        for row in rows[:5]:
            append_raw(Path(tmp) / "ds", pl.DataFrame([row], schema=RAW_SCHEMA))
        write_ms = (time.perf_counter() - started) * 1000 / 5
    wall, cpu, bare_ms = statistics.median(walls), statistics.median(cpus), statistics.median(bare)
    print(f"(a) one server, {n_lines} clients in CLIENT LIST ({len(rows[-1]['client_list']) / 1e6:.1f} MB), "
          f"{captures} captures, medians:")  # fmt: skip
    print(f"    server CLIENT LIST time (commandstats)       {server_ms:8.2f} ms")
    print(f"    bare CLIENT LIST round trip (wall)           {bare_ms:8.2f} ms")
    print(f"    collector CLIENT LIST request (wall)         {wall:8.2f} ms")
    print(f"    collector whole capture (wall)               {statistics.median(totals):8.2f} ms")
    print(f"    collector CPU per whole capture (its thread) {cpu:8.2f} ms")
    print(f"    writer per capture (append_raw + parse, off-schedule) {write_ms:8.1f} ms")
    ratio = (wall - server_ms) / server_ms
    print(f"    overhead ratio (collector wall - server) / server = {ratio:.1%}  (target < 25%)")
    print(
        f"    overhead ratio vs bare round trip (collector - bare) / bare = {(wall - bare_ms) / bare_ms:.1%}"
    )


def _bare_round_trips(srv: Server, n: int) -> list[float]:
    import redis

    conn = redis.Connection(host=srv.host, port=srv.port, protocol=2, socket_timeout=30)  # type: ignore[no-untyped-call]
    conn.connect()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        conn.send_command("CLIENT", "LIST")
        conn.read_response()
        times.append((time.perf_counter() - started) * 1000)
    conn.disconnect()
    return times


def bench_schedule(servers: int, seconds: float) -> None:
    raise_fd_limit(servers * 80 + 200)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        started = [stack.enter_context(valkey_server()) for _ in range(servers)]
        apps = [srv.client(name=f"app-{i}") for srv in started for i in range(50)]
        for r in apps:
            r.ping()
        t0 = time.monotonic()
        result = collect([s.url for s in started], Path(tmp) / "ds", interval=1.0, duration=seconds)
        elapsed = time.monotonic() - t0
        for r in apps:
            r.close()
    attempts = [t.attempts for t in result.targets]
    missed = sum(t.missed for t in result.targets)
    late = sum(t.late for t in result.targets)
    print(f"(b) {servers} servers x 1 s interval for {seconds:g} s (ran {elapsed:.1f} s incl. compaction): "
          f"captures per server min {min(attempts)} max {max(attempts)}, "
          f"failed {result.failed}, missed {missed}, late {late}, written {result.captures_written}")  # fmt: skip
    if result.compacted:
        print(
            f"    compaction at exit: {result.compacted.files_before} -> {result.compacted.files_after} files"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--captures", type=int, default=20)
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.part in ("a", "both"):
        bench_overhead(args.clients, args.captures)
    if args.part in ("b", "both"):
        bench_schedule(args.servers, args.seconds)


if __name__ == "__main__":
    main()
