"""`collect`: capture from many servers at once, each on its own schedule, flushing as it goes.

One thread per target keeps a fixed-rate schedule (`start + k * interval`); a
slow or dead server only delays its own thread. A failed capture is recorded as
a row, then the thread backs off (exponential, with jitter) and reconnects. A
writer thread flushes each capture's raw row as soon as it is taken (several at
once only when they queued up during the previous write), so a killed
collector loses at most what was in flight; a parser thread writes the parsed
tables behind it (see `capture.writer`).
"""

from __future__ import annotations

import contextlib
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

from clientscope.capture.channel import Timeouts, open_channel
from clientscope.capture.cluster import discover_cluster
from clientscope.capture.compaction import CompactResult, compact
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

__all__ = ["MIN_INTERVAL", "CaptureEvent", "CollectResult", "TargetSummary", "collect"]

MIN_INTERVAL = 0.1  # seconds; below this the collector itself becomes load
MAX_BACKOFF = 30.0  # seconds between attempts to a failing server, at most
REDISCOVER = 30.0  # seconds between CLUSTER NODES refreshes with --cluster


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
    most_per_write: int = 0  # most captures flushed in one write (queued while the last one ran)
    left_unparsed: int = 0  # raw batches whose parsed tables open_dataset will write
    parse_error: str | None = None  # why the parser stopped, if it did (raw rows are kept)
    cluster_changes: tuple[str, ...] = ()  # nodes that joined / left the cluster while collecting

    @property
    def captures(self) -> int:
        return sum(t.attempts for t in self.targets)

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "stopped_by": self.stopped_by,
            "captures": self.captures,
            "failed": self.failed,
            "captures_written": self.captures_written,
            "most_per_write": self.most_per_write,
            "left_unparsed": self.left_unparsed,
            "parse_error": self.parse_error,
            "cluster_changes": list(self.cluster_changes),
            "targets": [
                {**t.__dict__, "denied": list(t.denied), "warnings": list(t.warnings)}
                for t in self.targets
            ],
            "compacted": self.compacted.to_dict() if self.compacted else None,
        }


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
    on_event: Callable[[CaptureEvent], None] | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> CollectResult:
    """Capture TIME, CLIENT LIST, INFO and CONFIG GET from every target into dataset `out`.

    Runs until `count` captures per target, `duration` seconds, SIGINT/SIGTERM
    (when `handle_signals` and called from the main thread) or `stop` is set;
    the capture in flight is finished and flushed first. `on_event` is called
    from the targets' threads after each capture. With `cluster`, the members
    are listed again every `rediscover` seconds (None or 0: never) and a node
    that joined (failover, scale-out) is collected from then on. Returns a
    summary; the captures themselves are in the dataset.
    """
    from clientscope import __version__
    from clientscope.dataset import check_writable

    _validate(interval, duration, count, slow_fraction, rediscover)
    timeouts = timeouts or Timeouts(connect=min(3.0, max(interval, 1.0)), read=max(5.0, interval))
    seeds = _parse_targets(targets)
    resolved = _resolve_targets(seeds, cluster, timeouts)
    root = Path(out)
    check_writable(root)
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
    spread = min(interval, 1.0) / len(
        resolved
    )  # start targets apart so their captures do not pile up

    def worker(target: Target, offset: float = 0.0, joined: bool = False) -> _Worker:
        said = ("joined the cluster while collecting: collected from now on",) if joined else ()
        return _Worker(
            target, plan, options, timeouts, writer.put, on_event, stop, offset=offset, said=said
        )

    workers = [worker(t, offset=i * spread) for i, t in enumerate(resolved)]
    topology = (  # rediscover None or 0: the members found at start only
        _Topology(seeds, workers, worker, rediscover, timeouts) if cluster and rediscover else None
    )
    reason = "stop"
    with _stop_on_signals(stop, handle_signals) as signalled:
        parser.start()
        writer.start()
        for w in workers:
            w.start()
        if topology is not None:
            topology.start()
        _wait(workers, topology)
        reason = "signal" if signalled else _why_stopped(plan, stop)
    writer.finish()
    parser.finish()
    if writer.error is not None:
        raise writer.error
    compacted = compact(root) if compact_on_exit else None
    return CollectResult(
        out=root,
        started=started,
        finished=datetime.now(UTC),
        stopped_by=reason,
        captures_written=writer.written,
        targets=tuple(w.summary() for w in workers),
        compacted=compacted,
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


def _parse_targets(targets: Sequence[Target | str]) -> list[Target]:
    if not targets:
        raise ConfigError("no target: give at least one redis:// URL or a --via command")
    return [parse_target(t) if isinstance(t, str) else t for t in targets]


def _resolve_targets(resolved: list[Target], cluster: bool, timeouts: Timeouts) -> list[Target]:
    if cluster:
        resolved = _unique_addresses(
            [n for seed in resolved for n in discover_cluster(seed, timeouts)]
        )
    names = Counter(t.instance for t in resolved)
    clashes = sorted(name for name, n in names.items() if n > 1)
    if clashes:
        raise ConfigError(
            f"instance name(s) {', '.join(clashes)} given to more than one target; "
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


def _wait(workers: list[_Worker], topology: _Topology | None) -> None:
    """Until every worker is done, those the topology thread adds while we wait included."""
    _join(list(workers))
    if topology is not None:
        topology.halt.set()
        _join([topology])
        _join(list(workers))  # nodes found by the last refresh


def _join(threads: Sequence[threading.Thread]) -> None:
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)  # a timeout keeps the main thread free to take signals


class _Topology(threading.Thread):
    """`--cluster`: lists the members again every `every` seconds; starts a worker per new node.

    Asked in turn: the seeds, then every member seen so far (the seed may be the node
    that failed). A node no longer listed keeps its worker (its failures are data) and
    is said once in `changes`.
    """

    def __init__(
        self,
        seeds: list[Target],
        workers: list[_Worker],
        make_worker: Callable[..., _Worker],
        every: float,
        timeouts: Timeouts,
    ) -> None:
        super().__init__(name="collect-topology", daemon=True)
        self.seeds = seeds
        self.workers = workers
        self.make_worker = make_worker
        self.every = every
        self.timeouts = timeouts
        self.halt = threading.Event()
        self.changes: list[str] = []
        self._gone: set[str] = set()
        self._unreachable = False

    def run(self) -> None:
        while not self.halt.wait(self.every):
            if not any(w.is_alive() for w in self.workers):
                return
            self.refresh()

    def refresh(self) -> None:
        members = self._members()
        if members is None:
            return
        known = {w.target.address: w for w in self.workers}
        listed = {m.address for m in members}
        for member in members:
            if member.address not in known and not self.halt.is_set():
                new = self.make_worker(member, joined=True)
                self.workers.append(new)  # the main thread waits for it too
                new.start()
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
        asked = _unique_addresses([*self.seeds, *(w.target for w in self.workers)])
        for target in asked:
            try:
                members = discover_cluster(target, self.timeouts)
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


class _Worker(threading.Thread):
    """Captures one target on its own fixed-rate schedule."""

    def __init__(
        self,
        target: Target,
        plan: _Plan,
        options: CaptureOptions,
        timeouts: Timeouts,
        emit: Callable[[dict[str, Any]], None],
        on_event: Callable[[CaptureEvent], None] | None,
        stop: threading.Event,
        *,
        offset: float = 0.0,
        said: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name=f"collect-{target.instance}", daemon=True)
        self.pending = said  # told with the first capture
        self.target = target
        self.plan = plan
        self.options = options
        self.timeouts = timeouts
        self.emit = emit
        self.on_event = on_event
        self.stop = stop
        self.offset = offset
        self.state = CaptureState()
        self.tally = _Tally()

    def run(self) -> None:
        channel = open_channel(self.target, self.timeouts)
        try:
            self._loop(channel)
        finally:
            channel.close()

    def _loop(self, channel: Any) -> None:
        due = time.monotonic() + self.offset
        failures = 0
        while not self._done(due):
            if self.stop.wait(max(0.0, due - time.monotonic())):
                break
            if due - time.monotonic() > 0.001:
                continue  # woken early; wait again
            self._note_lateness(time.monotonic() - due)
            row = take_capture(channel, self.target, self.options, self.state)
            self._record(row)
            self.emit(row)
            if row["ok"]:
                failures = 0
                due = self._next_slot(due)
            else:
                failures += 1
                due = time.monotonic() + backoff(failures, self.plan.interval)

    def _done(self, due: float) -> bool:
        if self.stop.is_set():
            return True
        if self.plan.count is not None and self.tally.attempts >= self.plan.count:
            return True
        return self.plan.deadline is not None and due >= self.plan.deadline

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

    def _record(self, row: dict[str, Any]) -> None:
        notes = _json(row["notes"])
        self._count(row, notes)
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
