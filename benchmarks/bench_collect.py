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
    Also reports what the writer thread (raw flush) and the parser thread (parsed
    tables) cost per capture; both run off the capture schedule.
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
from clientscope.capture.snapshot import (  # noqa: E402
    CaptureOptions,
    CaptureState,
    add_content_hash,
    take_capture,
)
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
    """Interleaves bare and collector CLIENT LISTs; each is paired with its own server time."""
    target = parse_target(srv.url)
    channel = open_channel(target, Timeouts(connect=3, read=30))
    options = CaptureOptions(interval=10.0, collector_version="bench")
    state = CaptureState()
    take_capture(channel, target, options, state)  # connect, warm up
    bare = _BareClient(srv)
    m: dict[str, list[float]] = {k: [] for k in ("bare", "bare_srv", "cl", "total", "cpu", "srv")}
    rows = []
    for _ in range(captures):
        before = commandstats(srv)
        m["bare"].append(bare.client_list_ms())
        middle = commandstats(srv)
        cpu0 = time.thread_time()
        row = take_capture(channel, target, options, state)
        m["cpu"].append((time.thread_time() - cpu0) * 1000)
        after = commandstats(srv)
        m["bare_srv"].append((middle[1] - before[1]) / 1000)
        m["srv"].append((after[1] - middle[1]) / 1000)
        m["cl"].append(row["client_list_ms"])
        m["total"].append(row["total_ms"])
        rows.append(row)
    channel.close()
    bare.close()
    _report_overhead(m, rows, captures)


def _report_overhead(
    m: dict[str, list[float]], rows: list[dict[str, object]], captures: int
) -> None:
    from clientscope.capture.writer import Parser, write_raw

    hash_ms = []
    for row in rows:
        started = time.perf_counter()
        add_content_hash(row)
        hash_ms.append((time.perf_counter() - started) * 1000)
    raw_ms, parse_ms = [], []
    with tempfile.TemporaryDirectory() as tmp:
        parser = Parser(Path(tmp) / "ds")
        for row in rows[:6]:  # the first commit also makes the tables: the median leaves it out
            started = time.perf_counter()
            batch = write_raw(Path(tmp) / "ds", [row])
            raw_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            parser._parse([batch])
            parse_ms.append((time.perf_counter() - started) * 1000)
    med = {k: statistics.median(v) for k, v in m.items()}
    ratios = {
        "wall_vs_server": [(t - s) / s for t, s in zip(m["total"], m["srv"], strict=True)],
        "wall_vs_bare": [(t - b) / b for t, b in zip(m["total"], m["bare"], strict=True)],
        "cl_vs_bare": [(c - b) / b for c, b in zip(m["cl"], m["bare"], strict=True)],
        "cpu_vs_server": [c / s for c, s in zip(m["cpu"], m["srv"], strict=True)],
    }
    r = {k: statistics.median(v) for k, v in ratios.items()}
    listed = rows[-1]["client_list"]
    assert isinstance(listed, bytes)
    lines = listed.count(b"\n")
    print(f"(a) one server, {lines} clients in CLIENT LIST ({len(listed) / 1e6:.1f} MB), "
          f"{captures} captures, medians:")  # fmt: skip
    print(f"    server CLIENT LIST time (commandstats usec)      {med['srv']:7.2f} ms")
    print(
        f"    bare CLIENT LIST round trip, plain socket        {med['bare']:7.2f} ms  (server {med['bare_srv']:.2f} ms)"
    )
    print(f"    collector CLIENT LIST request (wall)             {med['cl']:7.2f} ms")
    print(
        f"    collector whole capture: TIME+CLIENT LIST+INFO+CONFIG+row (wall) {med['total']:7.2f} ms"
    )
    print(f"    collector CPU per whole capture (capture thread) {med['cpu']:7.2f} ms")
    print(
        f"    writer thread per capture: content_sha256      {statistics.median(hash_ms):7.2f} ms"
    )
    print(
        f"    writer thread: raw commit per capture (one Delta commit)     {statistics.median(raw_ms):7.1f} ms"
    )
    print(
        f"    parser thread: parsed tables per capture (parse_raw + 5 commits) {statistics.median(parse_ms):7.1f} ms"
    )
    print("    overhead ratios (target < 25%):")
    print(
        f"      whole capture wall beyond the server's CLIENT LIST time (total - server) / server {r['wall_vs_server']:7.1%}"
    )
    print(
        f"      whole capture wall beyond a bare round trip             (total - bare) / bare     {r['wall_vs_bare']:7.1%}"
    )
    print(
        f"      CLIENT LIST request beyond a bare round trip            (request - bare) / bare   {r['cl_vs_bare']:7.1%}"
    )
    print(
        f"      collector CPU per capture / server CLIENT LIST time                                {r['cpu_vs_server']:7.1%}"
    )


class _BareClient:
    """CLIENT LIST on a plain socket, the reply read with no parsing at all."""

    def __init__(self, srv: Server) -> None:
        import socket

        self.sock = socket.create_connection((srv.host, srv.port))
        self.reader = self.sock.makefile("rb", buffering=256 * 1024)

    def client_list_ms(self) -> float:
        started = time.perf_counter()
        self.sock.sendall(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
        size = int(self.reader.readline()[1:-2])
        self.reader.read(size + 2)
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


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
          f"failed {result.failed}, missed {missed}, late {late}, written {result.captures_written}, "
          f"most captures per write {result.most_per_write}, left unparsed {result.left_unparsed}")  # fmt: skip
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
