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
    clients_in,
    maxclients_seen,
    take_capture,
)
from clientscope.capture.targets import Target, parse_target
from clientscope.capture.writer import Parser, Writer
from clientscope.errors import ConfigError

__all__ = ["MIN_INTERVAL", "CaptureEvent", "CollectResult", "TargetSummary", "collect"]

MIN_INTERVAL = 0.1  # seconds; below this the collector itself becomes load
MAX_BACKOFF = 30.0  # seconds between attempts to a failing server, at most


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
    from the targets' threads after each capture. Returns a summary; the
    captures themselves are in the dataset.
    """
    from clientscope import __version__
    from clientscope.dataset import check_writable

    _validate(interval, duration, count, slow_fraction)
    timeouts = timeouts or Timeouts(connect=min(3.0, max(interval, 1.0)), read=max(5.0, interval))
    resolved = _resolve_targets(targets, cluster, timeouts)
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
    workers = [
        _Worker(t, plan, options, timeouts, writer.put, on_event, stop, offset=i * spread)
        for i, t in enumerate(resolved)
    ]
    reason = "stop"
    with _stop_on_signals(stop, handle_signals) as signalled:
        parser.start()
        writer.start()
        for worker in workers:
            worker.start()
        _wait(workers)
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
    )


def _validate(
    interval: float, duration: float | None, count: int | None, slow_fraction: float
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


def _resolve_targets(
    targets: Sequence[Target | str], cluster: bool, timeouts: Timeouts
) -> list[Target]:
    if not targets:
        raise ConfigError("no target: give at least one redis:// URL or a --via command")
    resolved = [parse_target(t) if isinstance(t, str) else t for t in targets]
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


def _wait(workers: Sequence[threading.Thread]) -> None:
    for worker in workers:
        while worker.is_alive():
            worker.join(0.2)  # a timeout keeps the main thread free to take signals


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
    ) -> None:
        super().__init__(name=f"collect-{target.instance}", daemon=True)
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
            tally.last_clients = clients_in(row["client_list"])
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
