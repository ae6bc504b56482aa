"""`collect`: capture from many servers at once, each on its own schedule, flushing as it goes.

Each target keeps a fixed-rate schedule (`start + k * interval`); a pool of at
most `threads` threads takes each target's capture when it is due, one thread
per target while there are few. A slow or dead server only delays its own
captures: every command has one deadline for its whole reply. A failed capture
is recorded as a row, then the target backs off (exponential, with jitter) and
reconnects. A target whose worker stopped on an error of its own (not the
server's: those are rows) is reported in `TargetSummary.stopped`. A writer
thread flushes each capture's raw row as soon as it is taken (several at once
only when they queued up during the previous write), so a killed collector
loses at most what was in flight; a parser thread writes the parsed tables
behind it (see `capture.writer`). `--cluster` follows at most `max_nodes` nodes.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from clientscope.capture.channel import Channel, Timeouts, open_channel
from clientscope.capture.cluster import discover_cluster
from clientscope.capture.compaction import CompactResult, compact
from clientscope.capture.resp import MAX_REPLY_BYTES, ReplyLimits
from clientscope.capture.snapshot import (
    CONFIG_NAMES,
    CaptureOptions,
    CaptureState,
    announce_once,
    connections_in,
    maxclients_seen,
    take_capture,
)
from clientscope.capture.targets import Target, parse_target
from clientscope.capture.writer import Parser, Writer
from clientscope.errors import CaptureError, ConfigError
from clientscope.escape import printable

__all__ = [
    "MAX_NODES",
    "MAX_REPLY_BYTES",
    "MIN_INTERVAL",
    "OUTCOMES",
    "THREADS",
    "CaptureEvent",
    "CollectResult",
    "TargetSummary",
    "collect",
]

MIN_INTERVAL = 0.1  # seconds; below this the collector itself becomes load
MAX_BACKOFF = 30.0  # seconds between attempts to a failing server, at most
REDISCOVER = 30.0  # seconds between CLUSTER NODES refreshes with --cluster
MAX_NODES = 1000  # cluster nodes followed, at most (--max-nodes); Redis advises 1,000 at most
THREADS = 32  # captures taken at once, at most
MIN_REPLY_BYTES = 64 * 1024  # --max-reply-bytes below this would refuse a small INFO

# CollectResult.outcome, best first; nothing captured is told by its cause (see _cause)
OUTCOMES = ("ok", "partial", "unreachable", "auth", "timeout", "failed", "stopped")
# error kind -> cause of a run that captured nothing; every other kind: "failed"
_CAUSES = {
    "connection_refused": "unreachable",
    "io": "unreachable",
    "auth": "auth",
    "timeout": "timeout",
}


@dataclass(frozen=True)
class CaptureEvent:
    """Sent to `on_event` after every capture attempt (from the target's thread)."""

    instance: str
    ok: bool
    ts: datetime
    clients: int | None
    maxclients: int | None
    total_ms: float
    error_kind: str | None
    error_message: str | None
    new_warnings: tuple[str, ...]  # said once per target; also kept in the row's notes


@dataclass(frozen=True)
class TargetSummary:
    """How collection from one target went."""

    instance: str
    origin: str
    attempts: int
    ok: int
    failed: int
    errors: dict[str, int]  # error_kind -> count
    late: int  # started more than a quarter interval after their slot
    missed: int  # slots skipped because the capture before overran
    restarts: int  # run_id changes seen
    denied: tuple[str, ...]  # commands the server refused
    last_clients: int | None
    maxclients: int | None
    warnings: tuple[str, ...]
    stopped: str | None = None  # why its worker stopped before the end (an error of ours), if so
    last_error_kind: str | None = None  # of its latest failed capture
    last_error_message: str | None = None
    last_error_at: datetime | None = None


@dataclass(frozen=True)
class CollectResult:
    """What `collect` did."""

    out: Path
    started: datetime
    finished: datetime
    stopped_by: str  # count | duration | signal | stop
    captures_written: int
    targets: tuple[TargetSummary, ...]
    compacted: CompactResult | None = None
    compactions: int = 0  # compactions run while collecting (every `compact_every` seconds)
    most_per_write: int = 0  # most captures flushed in one write (queued while the last one ran)
    left_unparsed: int = 0  # captures not parsed (the next command that writes parses them)
    parse_error: str | None = None  # why the parser stopped, if it did (raw rows are kept)
    cluster_changes: tuple[str, ...] = ()  # nodes that joined / left the cluster while collecting

    @property
    def captures(self) -> int:
        return sum(t.attempts for t in self.targets)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.targets)

    @property
    def stopped(self) -> tuple[TargetSummary, ...]:
        """Targets whose worker stopped before the end (its error is in `stopped`)."""
        return tuple(t for t in self.targets if t.stopped is not None)

    @property
    def failed_targets(self) -> tuple[TargetSummary, ...]:
        """Targets asked at least once whose every capture failed."""
        return tuple(t for t in self.targets if t.attempts and not t.ok)

    @property
    def outcome(self) -> str:
        """How the run went, one of OUTCOMES (`collect` exits with a code for each).

        stopped: a worker stopped on an error of ours. ok: no target failed every
        capture. partial: some targets captured, some never did. Otherwise nothing was
        captured, told by the cause of most failed captures: unreachable (refused,
        reset, no route, a --via command failing), auth, timeout, or failed (any other
        kind: server full, loading, protocol...).
        """
        if self.stopped:
            return "stopped"
        failed = self.failed_targets
        if not failed:
            return "ok"
        if any(t.ok for t in self.targets):
            return "partial"
        return _cause(failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "stopped_by": self.stopped_by,
            "captures": self.captures,
            "failed": self.failed,
            "stopped": len(self.stopped),
            "outcome": self.outcome,
            "captures_written": self.captures_written,
            "most_per_write": self.most_per_write,
            "left_unparsed": self.left_unparsed,
            "parse_error": self.parse_error,
            "cluster_changes": list(self.cluster_changes),
            "targets": [
                {
                    **t.__dict__,
                    "denied": list(t.denied),
                    "warnings": list(t.warnings),
                    "last_error_at": t.last_error_at.isoformat() if t.last_error_at else None,
                }
                for t in self.targets
            ],
            "compacted": self.compacted.to_dict() if self.compacted else None,
            "compactions": self.compactions,
        }


def _cause(failed: Sequence[TargetSummary]) -> str:
    """The cause of most of these targets' failed captures; a tie goes to the first in OUTCOMES."""
    counts: Counter[str] = Counter()
    for t in failed:
        for kind, n in t.errors.items():
            counts[_CAUSES.get(kind, "failed")] += n
    return max(counts, key=lambda c: (counts[c], -OUTCOMES.index(c)), default="failed")


@dataclass(frozen=True)
class _Plan:
    interval: float
    count: int | None
    deadline: float | None  # time.monotonic() value


@dataclass
class _Tally:
    attempts: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    late: int = 0
    missed: int = 0
    restarts: int = 0
    last_clients: int | None = None
    maxclients: int | None = None
    warnings: list[str] = field(default_factory=list)
    last_error: tuple[str, str, datetime] | None = None  # kind, message, when


class _Compactor(threading.Thread):
    """Compacts the dataset every `every` seconds while collection goes on (a failure is kept
    for the summary, not raised: the captures matter more than their file count)."""

    def __init__(self, root: Path, every: float | None, stop: threading.Event) -> None:
        super().__init__(name="collect-compactor", daemon=True)
        self.root, self.every, self.stop = root, every, stop
        self.finished = threading.Event()
        self.done = 0
        self.error: str | None = None

    def start(self) -> None:
        if self.every:
            super().start()

    def run(self) -> None:
        assert self.every
        while not self.finished.wait(self.every) and not self.stop.is_set():
            try:
                compact(self.root)
                self.done += 1
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"

    def finish(self) -> None:
        self.finished.set()
        if self.is_alive():
            self.join()


def collect(
    targets: Sequence[Target | str],
    out: Path | str,
    *,
    interval: float = 10.0,
    duration: float | None = None,
    count: int | None = None,
    cluster: bool = False,
    rediscover: float | None = REDISCOVER,
    info_sections: Sequence[str] = ("everything",),
    config_names: Sequence[str] = CONFIG_NAMES,
    maxclients: int | None = None,
    timeouts: Timeouts | None = None,
    slow_fraction: float = 0.1,
    compact_on_exit: bool = True,
    compact_every: float | None = 3600.0,
    on_event: Callable[[CaptureEvent], None] | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
    max_reply_bytes: int = MAX_REPLY_BYTES,
    max_nodes: int = MAX_NODES,
    threads: int = THREADS,
) -> CollectResult:
    """Capture TIME, CLIENT LIST, INFO and CONFIG GET from every target into dataset `out`.

    Runs until `count` captures per target, `duration` seconds, SIGINT/SIGTERM
    (when `handle_signals` and called from the main thread) or `stop` is set;
    the capture in flight is finished and flushed first (a reply still arriving
    gets one more second). `on_event` is called from the pool's threads after
    each capture. Each command has `timeouts.read` seconds for its whole reply,
    of at most `max_reply_bytes`; a server that breaks either is a failed
    capture. With `cluster`, at most `max_nodes` members are followed; they are
    listed again every `rediscover` seconds (None or 0: never) and a node that
    joined (failover, scale-out) is collected from then on. At most `threads`
    captures run at once. Every `compact_every` seconds (None or 0: never) the
    dataset is compacted while collection goes on, so a long run's small files and
    commits do not pile up. Returns a summary; the captures themselves are in the
    dataset.
    """
    from clientscope import __version__
    from clientscope.dataset import collecting, mend, prepare

    _validate(interval, duration, count, slow_fraction, rediscover)
    _validate_limits(max_reply_bytes, max_nodes, threads)
    timeouts = timeouts or Timeouts(connect=min(3.0, max(interval, 1.0)), read=max(5.0, interval))
    limits = ReplyLimits(max_bytes=max_reply_bytes)
    seeds = _parse_targets(targets)
    resolved = _resolve_targets(seeds, cluster, timeouts, limits, max_nodes)
    root = prepare(out)
    mend(root)  # captures a killed writer left unparsed (another collector's are its own)
    options = CaptureOptions(
        info_sections=tuple(info_sections),
        config_names=tuple(config_names),
        maxclients=maxclients,
        interval=interval,
        slow_fraction=slow_fraction,
        collector_version=__version__,
    )
    stop = stop or threading.Event()
    plan = _Plan(interval, count, time.monotonic() + duration if duration else None)
    started = datetime.now(UTC)
    parser = Parser(root)
    writer = Writer(root, stop, parser)
    spread = min(interval, 1.0) / len(resolved)  # start targets apart: no pile-up of captures
    pool = _Pool(threads, stop)

    def worker(target: Target, joined: bool = False) -> _Worker:
        said = ("joined the cluster while collecting: collected from now on",) if joined else ()
        return _Worker(
            target, plan, options, timeouts, limits, writer.put, on_event, stop, said=said
        )

    topology = (  # rediscover None or 0: the members found at start only
        _Topology(seeds, pool, worker, rediscover, timeouts, limits, max_nodes)
        if cluster and rediscover
        else None
    )
    reason = "stop"
    compactor = _Compactor(root, compact_every, stop)
    with collecting(root):
        with _stop_on_signals(stop, handle_signals) as signalled:
            compactor.start()
            parser.start()
            writer.start()
            start = time.monotonic()
            for i, target in enumerate(resolved):
                pool.add(worker(target), due=start + i * spread)
            if topology is not None:
                topology.start()
            _wait(pool, topology)
            reason = "signal" if signalled else _why_stopped(plan, stop)
        writer.finish()
        parser.finish()
        compactor.finish()
        if writer.error is None:
            parser.parse_left()
    if writer.error is not None:
        raise writer.error
    compacted = compact(root) if compact_on_exit else None
    return CollectResult(
        out=root,
        started=started,
        finished=datetime.now(UTC),
        stopped_by=reason,
        captures_written=writer.written,
        targets=tuple(w.summary() for w in pool.workers),
        compacted=compacted,
        compactions=compactor.done,
        most_per_write=writer.most_queued,
        left_unparsed=parser.left_for_open,
        parse_error=parser.error,
        cluster_changes=tuple(topology.changes) if topology else (),
    )


def _validate(
    interval: float,
    duration: float | None,
    count: int | None,
    slow_fraction: float,
    rediscover: float | None,
) -> None:
    if interval < MIN_INTERVAL:
        raise ConfigError(
            f"--interval {interval:g}s is below the minimum of {MIN_INTERVAL:g}s: a collector that "
            "asks that often adds load to a server already short of connections"
        )
    if count is not None and count < 1:
        raise ConfigError(f"--count must be at least 1, not {count}")
    if duration is not None and duration <= 0:
        raise ConfigError(f"--duration must be greater than zero, not {duration:g}")
    if not 0 < slow_fraction <= 1:
        raise ConfigError(f"the slow CLIENT LIST fraction must be in (0, 1], not {slow_fraction:g}")
    if rediscover is not None and 0 < rediscover < MIN_INTERVAL:
        raise ConfigError(
            f"--rediscover {rediscover:g}s is below the minimum of {MIN_INTERVAL:g}s "
            "(0 turns rediscovery off)"
        )


def _validate_limits(max_reply_bytes: int, max_nodes: int, threads: int) -> None:
    if max_reply_bytes < MIN_REPLY_BYTES:
        raise ConfigError(
            f"--max-reply-bytes {max_reply_bytes} is below the minimum of {MIN_REPLY_BYTES}: "
            "a plain INFO reply would not fit"
        )
    if max_nodes < 1:
        raise ConfigError(f"--max-nodes must be at least 1, not {max_nodes}")
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, not {threads}")


def _parse_targets(targets: Sequence[Target | str]) -> list[Target]:
    if not targets:
        raise ConfigError("no target: give at least one redis:// URL or a --via command")
    return [parse_target(t) if isinstance(t, str) else t for t in targets]


def _resolve_targets(
    resolved: list[Target],
    cluster: bool,
    timeouts: Timeouts,
    limits: ReplyLimits,
    max_nodes: int,
) -> list[Target]:
    if cluster:
        resolved = _unique_addresses(
            [n for seed in resolved for n in discover_cluster(seed, timeouts, limits=limits)]
        )
        if len(resolved) > max_nodes:
            raise ConfigError(
                f"--cluster: CLUSTER NODES lists {len(resolved)} nodes, more than --max-nodes "
                f"{max_nodes}; if the cluster really is that large, raise --max-nodes"
            )
    names = Counter(t.instance for t in resolved)
    clashes = sorted(name for name, n in names.items() if n > 1)
    if clashes:
        raise ConfigError(
            f"instance name(s) {', '.join(printable(c) for c in clashes)} given to more than "
            "one target; "
            "give each target its own --instance"
        )
    return resolved


def _unique_addresses(targets: list[Target]) -> list[Target]:
    seen: dict[str, Target] = {}
    for target in targets:
        seen.setdefault(target.address, target)
    return list(seen.values())


def _why_stopped(plan: _Plan, stop: threading.Event) -> str:
    if stop.is_set():
        return "stop"
    return "count" if plan.count is not None else "duration"


def _wait(pool: _Pool, topology: _Topology | None) -> None:
    """Until every worker is done, those the topology thread adds while we wait included."""
    pool.wait_idle()
    if topology is not None:
        topology.halt.set()
        while topology.is_alive():
            topology.join(0.2)  # a timeout keeps the main thread free to take signals
        pool.wait_idle()  # nodes found by the last refresh
    pool.close()


class _Pool:
    """Takes each worker's capture when it is due, on at most `size` threads.

    Workers wait in a heap by due time; a thread takes the earliest once it is due,
    runs its capture, and puts it back with its next due time (or drops it when it
    is done). Threads are started as workers come, one per worker up to `size`.
    """

    def __init__(self, size: int, stop: threading.Event) -> None:
        self.size = size
        self.stop = stop
        self.workers: list[_Worker] = []  # every worker added, in order
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Worker]] = []
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._active = 0  # workers not done yet
        self._closed = False

    @property
    def active(self) -> int:
        return self._active

    def add(self, worker: _Worker, due: float) -> None:
        with self._cond:
            self.workers.append(worker)
            self._active += 1
            heapq.heappush(self._heap, (due, next(self._order), worker))
            if len(self._threads) < min(self.size, self._active):
                thread = threading.Thread(
                    target=self._serve, name=f"collect-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify()

    def wait_idle(self) -> None:
        """Until no worker is left; wakes the threads once `stop` is set."""
        with self._cond:
            while self._active:
                self._cond.wait(0.2)  # a timeout keeps the main thread free to take signals
                if self.stop.is_set():
                    self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        while True:
            with self._cond:
                taken = self._next_due()
                if taken is None:
                    return
            due, worker = taken
            then = self._run(worker, due)
            with self._cond:
                if then is None:
                    self._active -= 1
                    self._cond.notify_all()
                else:
                    heapq.heappush(self._heap, (then, next(self._order), worker))
                    self._cond.notify()

    def _next_due(self) -> tuple[float, _Worker] | None:
        """The earliest worker once it is due (at once when stopping); None when closed."""
        while True:
            if not self._heap:
                if self._closed:
                    return None
                self._cond.wait()
                continue
            wait = self._heap[0][0] - time.monotonic()
            if wait <= 0 or self.stop.is_set():
                due, _, worker = heapq.heappop(self._heap)
                return due, worker
            self._cond.wait(wait)

    def _run(self, worker: _Worker, due: float) -> float | None:
        """One capture, then the worker's next due time; None when it is done or stopped."""
        try:
            if not worker.done(due):
                return worker.capture(due)
        except Exception as exc:  # ours, not the server's (those are rows): say it, go on
            worker.stopped = f"{type(exc).__name__}: {exc}"[:500]
        with contextlib.suppress(OSError):
            worker.close()
        return None


class _Topology(threading.Thread):
    """`--cluster`: lists the members again every `every` seconds; starts a worker per new node.

    Asked in turn: the seeds, then every member seen so far (the seed may be the node
    that failed). A node no longer listed keeps its worker (its failures are data) and
    is said once in `changes`. At most `max_nodes` nodes are followed; more are said once.
    """

    def __init__(
        self,
        seeds: list[Target],
        pool: _Pool,
        make_worker: Callable[..., _Worker],
        every: float,
        timeouts: Timeouts,
        limits: ReplyLimits,
        max_nodes: int,
    ) -> None:
        super().__init__(name="collect-topology", daemon=True)
        self.seeds = seeds
        self.pool = pool
        self.make_worker = make_worker
        self.every = every
        self.timeouts = timeouts
        self.limits = limits
        self.max_nodes = max_nodes
        self.halt = threading.Event()
        self.changes: list[str] = []
        self._gone: set[str] = set()
        self._unreachable = False
        self._over_cap = False

    def run(self) -> None:
        while not self.halt.wait(self.every):
            if not self.pool.active:
                return
            self.refresh()

    def refresh(self) -> None:
        members = self._members()
        if members is None:
            return
        known = {w.target.address: w for w in list(self.pool.workers)}
        listed = {m.address for m in members}
        for member in members:
            if member.address in known or self.halt.is_set():
                continue
            if len(self.pool.workers) >= self.max_nodes:
                if not self._over_cap:
                    self._over_cap = True
                    self._note(f"CLUSTER NODES lists more than --max-nodes {self.max_nodes} "
                               "nodes; those beyond it are not collected")  # fmt: skip
                break
            self.pool.add(self.make_worker(member, joined=True), due=time.monotonic())
            self._note(f"{member.instance} joined the cluster: collecting it from now on")
        for address, w in known.items():
            if address not in listed and address not in self._gone:
                self._gone.add(address)
                self._note(f"{w.target.instance} is no longer listed by CLUSTER NODES "
                           "(still asked; its failed captures are recorded)")  # fmt: skip
            elif address in listed and address in self._gone:
                self._gone.discard(address)
                self._note(f"{w.target.instance} is listed by CLUSTER NODES again")

    def _members(self) -> list[Target] | None:
        asked = _unique_addresses([*self.seeds, *(w.target for w in list(self.pool.workers))])
        for target in asked:
            try:
                members = discover_cluster(target, self.timeouts, limits=self.limits)
            except CaptureError:
                continue
            self._unreachable = False
            return members
        if not self._unreachable:
            self._unreachable = True
            self._note("no known node answered CLUSTER NODES; the last member list is kept")
        return None

    def _note(self, text: str) -> None:
        self.changes.append(f"{datetime.now(UTC):%H:%M:%S} {text}")


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, enabled: bool) -> Iterator[list[int]]:
    """SIGINT / SIGTERM set `stop` (the capture in flight finishes); a second one interrupts at once.

    Everything flushed before stays; the old handlers come back after.
    """
    signalled: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield signalled
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if signalled:  # a second Ctrl-C: do not wait for the capture in flight
            raise KeyboardInterrupt
        signalled.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signalled
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Worker:
    """One target: its schedule, its channel and what its captures told; run by the pool."""

    def __init__(
        self,
        target: Target,
        plan: _Plan,
        options: CaptureOptions,
        timeouts: Timeouts,
        limits: ReplyLimits,
        emit: Callable[[dict[str, Any]], None],
        on_event: Callable[[CaptureEvent], None] | None,
        stop: threading.Event,
        *,
        said: tuple[str, ...] = (),
    ) -> None:
        self.pending = said  # told with the first capture
        self.target = target
        self.plan = plan
        self.options = options
        self.timeouts = timeouts
        self.limits = limits
        self.emit = emit
        self.on_event = on_event
        self.stop = stop
        self.state = CaptureState()
        self.tally = _Tally()
        self.failures = 0  # failed captures in a row
        self.stopped: str | None = None
        self._channel: Channel | None = None

    def done(self, due: float) -> bool:
        if self.stop.is_set() or self.stopped is not None:
            return True
        if self.plan.count is not None and self.tally.attempts >= self.plan.count:
            return True
        return self.plan.deadline is not None and due >= self.plan.deadline

    def capture(self, due: float) -> float:
        """Take the capture due at `due`; returns when the next one is due."""
        if self._channel is None:
            self._channel = open_channel(
                self.target, self.timeouts, limits=self.limits, abort=self.stop
            )
        self._note_lateness(time.monotonic() - due)
        row = take_capture(self._channel, self.target, self.options, self.state)
        notes = _json(row["notes"])
        self._count(row, notes)
        try:
            self._tell(row, notes)
        finally:
            self.emit(row)  # written even when the callback fails
        if row["ok"]:
            self.failures = 0
            return self._next_slot(due)
        self.failures += 1
        return time.monotonic() + backoff(self.failures, self.plan.interval)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def _next_slot(self, due: float) -> float:
        due += self.plan.interval
        behind = time.monotonic() - due
        if behind > 0:  # the capture overran its slot(s): skip them, count them missed
            skipped = math.ceil(behind / self.plan.interval)
            self.tally.missed += skipped
            due += skipped * self.plan.interval
        return due

    def _note_lateness(self, lateness: float) -> None:
        if lateness > self.plan.interval / 4:
            self.tally.late += 1

    def _tell(self, row: dict[str, Any], notes: dict[str, Any]) -> None:
        fresh = self._announce(notes)
        if self.on_event is not None:
            self.on_event(self._event(row, fresh))

    def _count(self, row: dict[str, Any], notes: dict[str, Any]) -> None:
        tally = self.tally
        tally.attempts += 1
        if row["ok"]:
            tally.ok += 1
            tally.last_clients = connections_in(row["client_list"], row["info"])
        else:
            tally.errors[str(row["error_kind"])] += 1
            tally.last_error = (str(row["error_kind"]), str(row["error_message"]), row["ts"])
        tally.restarts += "restart" in notes
        seen = maxclients_seen(_json(row["config"]) or None, row["info"], self.options.maxclients)
        if seen["effective"] is not None:
            tally.maxclients = seen["effective"]

    def _announce(self, notes: dict[str, Any]) -> tuple[str, ...]:
        """Warnings and refused commands not said before for this target."""
        said = [
            f"{cmd} refused by the server ({why}); collecting without it"
            for cmd, why in notes.get("denied", {}).items()
        ]
        said += [str(w) for w in notes.get("warnings", [])]
        said, self.pending = [*self.pending, *said], ()
        fresh = announce_once(self.state, said)
        self.tally.warnings.extend(fresh)
        return tuple(fresh)

    def _event(self, row: dict[str, Any], fresh: tuple[str, ...]) -> CaptureEvent:
        return CaptureEvent(
            instance=self.target.instance,
            ok=bool(row["ok"]),
            ts=row["ts"],
            clients=self.tally.last_clients if row["ok"] else None,
            maxclients=self.tally.maxclients,
            total_ms=float(row["total_ms"]),
            error_kind=row["error_kind"],
            error_message=row["error_message"],
            new_warnings=fresh,
        )

    def summary(self) -> TargetSummary:
        t = self.tally
        return TargetSummary(
            instance=self.target.instance,
            origin=self.target.origin,
            attempts=t.attempts,
            ok=t.ok,
            failed=t.attempts - t.ok,
            errors=dict(t.errors),
            late=t.late,
            missed=t.missed,
            restarts=t.restarts,
            denied=tuple(sorted(self.state.denied)),
            last_clients=t.last_clients,
            maxclients=t.maxclients,
            warnings=tuple(t.warnings),
            stopped=self.stopped,
            last_error_kind=t.last_error[0] if t.last_error else None,
            last_error_message=t.last_error[1] if t.last_error else None,
            last_error_at=t.last_error[2] if t.last_error else None,
        )


def backoff(failures: int, interval: float) -> float:
    """Seconds to wait after `failures` failed captures in a row: doubling, capped, +-25% jitter."""
    cap = max(interval, min(MAX_BACKOFF, 8 * interval))
    delay = min(cap, interval * 2 ** (failures - 1))
    return float(max(MIN_INTERVAL, delay * random.uniform(0.75, 1.25)))


def _json(text: str | None) -> dict[str, Any]:
    import json

    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}
