"""Capture datasets for named scenarios with known ground truth.

    result = simulate("leak", "out/leak.cs", seed=1, captures=240, clients=500)
    result.leaking        # (LeakTruth(group='orders-svc', rate_per_min=2.0, ...),)

A scenario is a set of client groups (an app's pool on its pods, a leaking
service, per-request clients, blocked consumers, subscribers, a replica and the
collector's own connection). Every connection is an interval of life
`[born, died)` with fixed attributes; a capture at time `ts` sees the
connections alive then. The parsed tables (`captures`, `clients`, `info`) are
built from those intervals with numpy and Polars, a batch of captures at a
time, and written with `dataset.append_tables`, so millions of client rows take
seconds. What a real server would show stays consistent: ids are unique per
`run_id` and restart with the server, `age` and `idle` grow across captures,
`total_connections_received` counts every connection the server accepted
(including per-request ones no capture saw) and `rejected_connections` every
one it refused.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from clientscope.errors import ConfigError
from clientscope.schema import (
    CAPTURES_SCHEMA,
    CLIENT_ADDR_FIELDS,
    CLIENT_CONTEXT_COLUMNS,
    CLIENT_DERIVED,
    CLIENT_FLAGS,
    CLIENT_INT_FIELDS,
    CLIENT_STR_FIELDS,
    COLLECTOR_CLIENT_NAME,
    INFO_INT_FIELDS,
    INFO_STR_FIELDS,
    TS,
    conform,
    unnamed_group,
)
from clientscope.vocabulary import SCENARIOS

__all__ = ["SCENARIOS", "LeakTruth", "SimulationResult", "simulate", "simulate_tables"]


DEFAULT_START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
_LADDR = "10.0.0.10:6379"
_VERSION = "7.2.4"
# flag codes of a connection
NORMAL, BLOCKED, PUBSUB, REPLICA, COLLECTOR = 0, 1, 2, 3, 4
_FLAG_TEXT = {NORMAL: "N", BLOCKED: "b", PUBSUB: "P", REPLICA: "S", COLLECTOR: "N"}


@dataclass(frozen=True)
class LeakTruth:
    """A group that really leaks: its key as analyses name it, and how fast."""

    group: str
    rate_per_min: float
    ips: tuple[str, ...]


@dataclass(frozen=True)
class SimulationResult:
    """Where a simulated dataset went and what is true about it."""

    path: Path
    scenario: str
    seed: int
    instance: str
    captures: int
    failed_captures: int
    client_rows: int
    start: datetime
    end: datetime
    interval: float
    maxclients: int
    timeout: int
    leaking: tuple[LeakTruth, ...] = ()
    expected: tuple[str, ...] = ()  # finding kinds a diagnosis should report
    groups: tuple[str, ...] = ()  # the groups in the scenario, by analysis key
    notes: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["path"] = str(self.path)
        out["start"] = self.start.isoformat()
        out["end"] = self.end.isoformat()
        return out

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in self.to_dict().items()
        )
        return f"<div><strong>simulated dataset</strong><table>{rows}</table></div>"


# ------------------------------------------------------------------ model
@dataclass(frozen=True)
class _Group:
    name: str | None
    lib: str | None
    ver: str | None
    cmds: tuple[str, ...]
    flag: int = NORMAL
    user: str = "default"
    resp: int = 2

    def key(self, ip: str) -> str:
        return self.name if self.name else unnamed_group(self.lib, ip)


@dataclass
class _Conns:
    """Connections as parallel arrays (one element per connection)."""

    born: list[np.ndarray] = field(default_factory=list)
    died: list[np.ndarray] = field(default_factory=list)
    gid: list[np.ndarray] = field(default_factory=list)
    ip: list[np.ndarray] = field(default_factory=list)
    period: list[np.ndarray] = field(
        default_factory=list
    )  # seconds between uses; inf: never reused
    omem_rate: list[np.ndarray] = field(
        default_factory=list
    )  # output buffer bytes gained per second

    def add(self, born: np.ndarray, died: np.ndarray, gid: int, ip: np.ndarray,
            period: np.ndarray, omem_rate: np.ndarray | None = None) -> None:  # fmt: skip
        n = born.size
        self.born.append(born.astype(np.float64))
        self.died.append(np.broadcast_to(died, (n,)).astype(np.float64))
        self.gid.append(np.full(n, gid, dtype=np.int32))
        self.ip.append(np.broadcast_to(ip, (n,)).astype(np.int32))
        self.period.append(np.broadcast_to(period, (n,)).astype(np.float64))
        rate = np.zeros(n) if omem_rate is None else np.broadcast_to(omem_rate, (n,))
        self.omem_rate.append(rate.astype(np.float64))

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("born", "died", "gid", "ip", "period", "omem_rate")
        return {n: np.concatenate(getattr(self, n)) for n in names}


class _Builder:
    """Collects groups, pod IPs and connection intervals for one scenario."""

    def __init__(self, rng: np.random.Generator, times: np.ndarray, interval: float) -> None:
        self.rng = rng
        self.times = times
        self.interval = interval
        self.duration = float(times[-1] - times[0]) + interval
        self.groups: list[_Group] = []
        self.ip_list: list[str] = []
        self.conns = _Conns()
        self.churn_rate = 0.0  # per-request connections per second no capture sees
        self.restarts: list[float] = []

    def group(self, name: str | None, lib: str | None, ver: str | None, cmds: tuple[str, ...],
              flag: int = NORMAL, **kw: object) -> int:  # fmt: skip
        self.groups.append(_Group(name, lib, ver, cmds, flag, **kw))  # type: ignore[arg-type]
        return len(self.groups) - 1

    def pods(self, subnet: int, n: int, first: int = 11) -> np.ndarray:
        start = len(self.ip_list)
        self.ip_list += [f"10.0.{subnet}.{first + i}" for i in range(n)]
        return np.arange(start, start + n, dtype=np.int32)

    def active_period(self, n: int, low: float = 1.0, high: float = 30.0) -> np.ndarray:
        return self.rng.uniform(low, high, n)

    # -- processes
    def pool(self, gid: int, pods: np.ndarray, per_pod: int, *, start: float | None = None,
             mean_life: float = 4 * 3600, period: tuple[float, float] = (1.0, 30.0),
             ramp: float = 0.0) -> None:  # fmt: skip
        """`per_pod` slots per pod, each a renewal process: a connection lives, is replaced."""
        slots = pods.size * per_pod
        if slots == 0:
            return
        origin = -2 * 86400.0 if start is None else start
        end = self.duration
        k = int(np.ceil((end - origin) / mean_life * 2)) + 4
        lives = self.rng.exponential(mean_life, (slots, k))
        if start is None:  # running long before the window: first connection born at a random age
            lives[:, 0] = self.rng.uniform(0, 2 * 86400.0, slots)
        offsets = self.rng.uniform(0, ramp, slots) if ramp else self.rng.uniform(0, 20.0, slots)
        gaps = self.rng.uniform(0.01, 2.0, (slots, k))
        ends = origin + offsets[:, None] + np.cumsum(lives + gaps, axis=1)
        born = ends - lives
        ip = np.repeat(pods, per_pod)[:, None] + np.zeros((1, k), dtype=np.int32)
        keep = (ends > 0) & (born < end)
        lo, hi = period
        n = int(keep.sum())
        self.conns.add(born[keep], ends[keep], gid, ip[keep], self.rng.uniform(lo, hi, n))

    def leak(self, gid: int, pods: np.ndarray, rate_per_min: float, t0: float = 0.0,
             t1: float | None = None) -> np.ndarray:  # fmt: skip
        """Connections opened at `rate_per_min` that are used once and never closed."""
        t1 = self.duration if t1 is None else t1
        n = int(self.rng.poisson(rate_per_min * (t1 - t0) / 60.0))
        born = np.sort(self.rng.uniform(t0, t1, n))
        ip = self.rng.choice(pods, n)
        self.conns.add(born, np.array(np.inf), gid, ip, np.array(np.inf))
        return born

    def fluctuating(self, gid: int, pods: np.ndarray, mean: float, mean_life: float,
                    period: tuple[float, float] = (1.0, 20.0)) -> None:  # fmt: skip
        """An M/M/inf population around `mean`: arrivals and departures all the time."""
        n0 = int(self.rng.poisson(mean))
        born0 = -self.rng.exponential(mean_life, n0)
        n1 = int(self.rng.poisson(mean / mean_life * self.duration))
        born = np.concatenate([born0, self.rng.uniform(0, self.duration, n1)])
        died = np.where(born < 0, 0.0, born) + self.rng.exponential(mean_life, born.size)
        ip = self.rng.choice(pods, born.size)
        self.conns.add(born, died, gid, ip, self.rng.uniform(*period, born.size))

    def churn(self, gid: int, pods: np.ndarray, per_second: float, life: float = 0.4) -> None:
        """Per-request connections: `per_second` opened, each lives `life` seconds."""
        self.churn_rate += per_second
        counts = self.rng.poisson(per_second * life, self.times.size)
        ts = np.repeat(self.times, counts)
        born = ts - self.rng.uniform(0, life, ts.size)
        ip = self.rng.choice(pods, ts.size)
        self.conns.add(born, born + life, gid, ip, np.array(0.05))

    def cycle(self, gid: int, pods: np.ndarray, per_pod: int, day: float = 86400.0) -> None:
        """Pool connections alive while load (a daily sine) is above each slot's threshold."""
        rel = self.times
        load = 0.55 + 0.4 * np.sin(2 * np.pi * rel / day + self.rng.uniform(0, 2 * np.pi))
        slots = pods.size * per_pod
        thresholds = np.linspace(0.1, 0.95, slots)[:, None]
        alive = np.pad(load[None, :] >= thresholds, ((0, 0), (1, 1)))
        edges = np.diff(alive.astype(np.int8), axis=1)
        slot_up, cap_up = np.nonzero(edges == 1)
        _, cap_down = np.nonzero(edges == -1)  # same order: row-major, paired per slot
        born = rel[cap_up] - self.rng.uniform(0, self.interval, cap_up.size)
        born = np.where(cap_up == 0, born - self.rng.uniform(0, 86400, cap_up.size), born)
        last = np.minimum(cap_down, rel.size) - 1
        died = rel[last] + self.rng.uniform(0.01, self.interval * 0.99, last.size)
        died = np.where(cap_down >= rel.size, np.inf, died)
        ip = np.repeat(pods, per_pod)[slot_up]
        self.conns.add(born, died, gid, ip, self.active_period(born.size))

    def fixed(self, gid: int, ip: np.ndarray, n: int, period: float, age: float = 86400.0) -> None:
        born = -self.rng.uniform(age * 0.5, age, n)
        self.conns.add(born, np.array(np.inf), gid, ip, np.full(n, period))


# ------------------------------------------------------------------ scenarios
@dataclass
class _Plan:
    """What a scenario builder decides besides the connections."""

    maxclients: int = 10000
    timeout: int = 0
    leaking: list[LeakTruth] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    saturate: bool = False
    leak_rate: float | None = None  # connections/min for the leak scenarios (None: their default)


def _base(b: _Builder, n: int, *, timeout_ok: bool = True) -> None:
    """A healthy mix: a named pool on 4 pods, a named worker pool, an unnamed pool."""
    api = b.group("api-pool", "redis-py", "5.0.8", ("get", "set", "hget", "mget", "expire"))
    b.pool(api, b.pods(1, 4), max(1, round(n * 0.4 / 4)))
    worker = b.group("worker", "go-redis(,go1.22.5)", "9.5.1", ("hset", "incr", "lpush", "evalsha"))
    b.pool(worker, b.pods(2, 3), max(1, round(n * 0.3 / 3)))
    web = b.group(None, "jedis", "5.1.0", ("get", "setex", "del"))
    b.pool(web, b.pods(3, 2), max(1, round(n * 0.3 / 2)))


def _infra(b: _Builder) -> None:
    """The replica and the collector's own connection, present in every scenario."""
    rep = b.group(None, None, None, ("replconf",), REPLICA, user="replicator")
    b.fixed(rep, b.pods(9, 1, first=2), 1, period=1.0)
    col = b.group(COLLECTOR_CLIENT_NAME, "redis-py", "5.0.8", ("client|list",), COLLECTOR)
    b.fixed(col, b.pods(0, 1, first=5), 1, period=0.01, age=3600.0)


def _truth(b: _Builder, gid: int, rate: float, pods: np.ndarray) -> LeakTruth:
    g = b.groups[gid]
    ips = tuple(b.ip_list[i] for i in pods)
    return LeakTruth(g.key(ips[0]), rate, ips)


def _sc_healthy(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n)
    p.timeout = 300


def _sc_leak(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n)
    gid = b.group("orders-svc", "redis-py", "4.6.0", ("get", "set"))
    pods = b.pods(4, 1, first=31)
    b.pool(gid, pods, 5)
    rate = p.leak_rate or 2.0
    b.leak(gid, pods, rate)
    p.leaking.append(_truth(b, gid, rate, pods))
    p.expected += ["leak", "no_idle_timeout"]


def _sc_slow_leak(b: _Builder, n: int, p: _Plan) -> None:
    noisy = b.group("sessions", "redis-py", "5.0.8", ("get", "set", "expire"))
    b.fluctuating(noisy, b.pods(5, 4), n * 0.5, mean_life=300.0)
    _base(b, n // 2)
    gid = b.group(None, "node-redis", "4.6.13", ("get",))
    pods = b.pods(7, 1, first=23)
    b.fluctuating(gid, pods, max(5.0, n * 0.1), mean_life=240.0)  # busy churn in the same group
    rate = p.leak_rate or 1.0
    b.leak(gid, pods, rate)
    p.leaking.append(_truth(b, gid, rate, pods))
    p.expected += ["leak", "no_idle_timeout"]


def _sc_no_pooling(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n)
    gid = b.group("checkout-api", "redis-py", "5.0.8", ("get",))
    b.churn(gid, b.pods(6, 4), per_second=max(20.0, n / 10))
    p.timeout = 300
    p.expected += ["no_pooling"]


def _sc_oversized(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n // 4)
    gid = b.group("analytics", "lettuce", "6.3.2", ("get", "zrange"))
    pods = b.pods(8, 8)
    per_pod = max(4, round(n * 0.75 / 8))
    b.pool(gid, pods, per_pod, period=(1800.0, 7200.0), mean_life=3 * 86400)
    total = n // 4 + per_pod * 8 + 2
    p.maxclients = int(np.ceil(total / 0.88))
    p.expected += ["oversized_pool", "no_idle_timeout", "saturation"]


def _sc_blocking(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n)
    gid = b.group("jobs-consumer", "redis-py", "5.0.8", ("blpop", "brpop", "xread"), BLOCKED)
    b.pool(gid, b.pods(10, 4), max(4, round(n * 0.1)), period=(60.0, 600.0))
    p.timeout = 300
    p.expected += ["blocking"]


def _sc_pubsub(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n)
    gid = b.group("notifier", "ioredis", "5.4.1", ("subscribe",), PUBSUB)
    pods = b.pods(11, 2)
    born = b.leak(gid, pods, 2.0)
    slow = b.rng.random(born.size) < 0.15
    b.conns.omem_rate[-1] = np.where(slow, b.rng.uniform(2000, 20000, born.size), 0.0)
    p.timeout = 300
    p.expected += ["pubsub_pileup", "output_buffer"]


def _sc_warmup(b: _Builder, n: int, p: _Plan) -> None:
    ramp = min(600.0, b.duration / 3)
    api = b.group("api-pool", "redis-py", "5.0.8", ("get", "set", "hget"))
    b.pool(api, b.pods(1, 4), max(1, round(n * 0.6 / 4)), start=0.0, ramp=ramp)
    worker = b.group("worker", "go-redis(,go1.22.5)", "9.5.1", ("hset", "incr"))
    b.pool(worker, b.pods(2, 3), max(1, round(n * 0.4 / 3)), start=0.0, ramp=ramp)
    p.timeout = 300


def _sc_scale_out(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n // 2)
    api = b.group("search-api", "redis-py", "5.0.8", ("get", "mget"))
    per_pod = max(2, round(n * 0.5 / 10))
    b.pool(api, b.pods(12, 4), per_pod)
    b.pool(api, b.pods(12, 6, first=40), per_pod, start=b.duration / 3, ramp=120.0)
    p.timeout = 300


def _sc_daily(b: _Builder, n: int, p: _Plan) -> None:
    api = b.group("api-pool", "redis-py", "5.0.8", ("get", "set"))
    b.cycle(api, b.pods(1, 4), max(1, round(n * 0.7 / 4)))
    worker = b.group("worker", "go-redis(,go1.22.5)", "9.5.1", ("hset",))
    b.pool(worker, b.pods(2, 3), max(1, round(n * 0.3 / 3)))
    p.timeout = 300


def _sc_restart(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n)
    b.restarts.append(b.duration / 2)
    p.timeout = 300


def _sc_incident(b: _Builder, n: int, p: _Plan) -> None:
    _base(b, n)
    gid = b.group("orders-svc", "redis-py", "4.6.0", ("get", "set"))
    pods = b.pods(4, 1, first=31)
    b.pool(gid, pods, 5)
    stable = round(n * 0.4 / 4) * 4 + round(n * 0.3 / 3) * 3 + round(n * 0.3 / 2) * 2 + 5 + 2
    p.maxclients = max(stable + 20, int(stable * 1.25))
    rate = (p.maxclients - stable) / (0.7 * b.duration / 60.0) * 1.3
    b.leak(gid, pods, rate)  # attempts; the server refuses those above maxclients
    # the truth is the rate it leaks at until the limit stops it (was the slower average to
    # fill the limit, which no estimator should have matched)
    p.leaking.append(_truth(b, gid, round(rate, 3), pods))
    p.saturate = True
    p.expected += ["leak", "exhaustion", "no_idle_timeout", "saturation"]


def _sc_mixed(b: _Builder, n: int, p: _Plan) -> None:
    third = b.duration / 3
    api = b.group("api", "redis-py", "5.0.8", ("get", "set", "hget"))
    b.pool(api, b.pods(1, 4), 8, start=0.0, ramp=third / 2)  # warms up
    b.pool(api, b.pods(1, 2, first=40), 8, start=third, ramp=60.0)  # scales out, then settles
    batch = b.group("batch", "go-redis(,go1.22.5)", "9.5.1", ("hset", "incr"))
    b.cycle(batch, b.pods(2, 2), 10, day=b.duration / 2)  # two cycles in the window
    consumers = b.group("jobs-consumer", "redis-py", "5.0.8", ("blpop",), BLOCKED)
    b.pool(consumers, b.pods(3, 4), 1, period=(300.0, 900.0))
    per_request = b.group("reports-cron", "redis-py", "5.0.8", ("get",))
    b.churn(per_request, b.pods(4, 2), per_second=5.0)
    named = b.group("billing-worker", "redis-py", "4.6.0", ("get", "set"))
    pods = b.pods(5, 1, first=31)
    b.pool(named, pods, 3)
    rate = p.leak_rate or 0.9
    b.leak(named, pods, rate)
    p.leaking.append(_truth(b, named, rate, pods))
    unnamed = b.group(None, None, None, ("get",))
    upods = b.pods(6, 1, first=10)
    b.leak(unnamed, upods, 0.8)
    p.leaking.append(_truth(b, unnamed, 0.8, upods))
    p.maxclients = 400
    p.expected += ["leak", "no_pooling", "no_idle_timeout"]


_BUILDERS: dict[str, Callable[[_Builder, int, _Plan], None]] = {
    "healthy": _sc_healthy,
    "leak": _sc_leak,
    "slow_leak": _sc_slow_leak,
    "no_pooling": _sc_no_pooling,
    "oversized_pool": _sc_oversized,
    "blocking": _sc_blocking,
    "pubsub": _sc_pubsub,
    "warmup": _sc_warmup,
    "scale_out": _sc_scale_out,
    "daily_cycle": _sc_daily,
    "restart": _sc_restart,
    "incident": _sc_incident,
    "mixed": _sc_mixed,
}
# scenario -> (captures, interval) when the caller does not say
_DEFAULT_SHAPE = {"daily_cycle": (576, 300.0), "mixed": (120, 10.0)}


# ------------------------------------------------------------------ server-side effects
def _apply_restarts(
    c: dict[str, np.ndarray], restarts: list[float], rng: np.random.Generator
) -> None:
    """A restart closes every connection; each client that was connected reconnects soon after."""
    for t in restarts:
        cut = (c["born"] < t) & (c["died"] > t)
        clones = {k: v[cut].copy() for k, v in c.items()}
        clones["born"] = t + rng.uniform(1.0, 30.0, int(cut.sum()))
        c["died"][cut] = t
        for k in c:
            c[k] = np.concatenate([c[k], clones[k]])


def _saturate(c: dict[str, np.ndarray], maxclients: int) -> np.ndarray:
    """Refuse leaked connections once the server is full; returns the refused attempts' times."""
    leak = np.isinf(c["died"]) & np.isinf(c["period"]) & (c["born"] >= 0)
    births = np.sort(c["born"][~leak])
    deaths = np.sort(c["died"][~leak])
    attempts = np.sort(c["born"][leak])
    others = np.searchsorted(births, attempts, "right") - np.searchsorted(deaths, attempts, "right")
    fits = others + np.arange(1, attempts.size + 1) <= maxclients
    kept = int(np.cumprod(fits).sum())
    refused = attempts[kept:]
    drop = leak & (c["born"] >= (refused[0] if refused.size else np.inf))
    for k in c:
        c[k] = c[k][~drop]
    return refused


@dataclass(frozen=True)
class _Runs:
    starts: np.ndarray  # start time (relative seconds) of each server run
    ids: tuple[str, ...]  # run_id of each run
    bases: np.ndarray  # first client id of each run


def _assign_ids(c: dict[str, np.ndarray], runs: _Runs, restarts: list[float], churn: float) -> None:
    """Order connections by (run, birth); ids count every accepted connection in the run."""
    run = np.searchsorted(np.asarray(restarts), c["born"], "right")
    order = np.lexsort((c["born"], run))
    for k in c:
        c[k] = c[k][order]
    run = run[order]
    first = np.searchsorted(run, run, "left")
    rank = np.arange(run.size) - first
    unseen = np.floor(churn * (c["born"] - runs.starts[run])).astype(np.int64)
    c["run"] = run
    c["id"] = runs.bases[run] + rank + np.maximum(unseen, 0)


def _counter_at(c: dict[str, np.ndarray], runs: _Runs, rel: np.ndarray, cap_run: np.ndarray,
                churn: float) -> np.ndarray:  # fmt: skip
    """total_connections_received at each capture (restarts reset it)."""
    out = np.zeros(rel.size, dtype=np.int64)
    for r in np.unique(cap_run):
        births = np.sort(c["born"][c["run"] == r])
        at = cap_run == r
        seen = np.searchsorted(births, rel[at], "right")
        unseen = np.floor(churn * (rel[at] - runs.starts[r])).astype(np.int64)
        out[at] = runs.bases[r] + seen + unseen
    return out


# ------------------------------------------------------------------ frames
def _target_schemas() -> dict[str, pl.Schema]:
    """The parsed tables' schemas: the parser's when it is importable, else built from schema.py."""
    try:
        from clientscope.dataset import empty_raw
        from clientscope.parse import parse_raw

        return {k: v.schema for k, v in parse_raw(empty_raw()).items()}
    except ImportError:
        return _fallback_schemas()


def _fallback_schemas() -> dict[str, pl.Schema]:
    clients: dict[str, pl.DataType] = {c: pl.String() for c in CLIENT_CONTEXT_COLUMNS}
    clients.update(ts=TS, line_no=pl.Int64(), run_id=pl.String())
    clients.update({f: pl.Int64() for f in CLIENT_INT_FIELDS})
    clients.update({f: pl.String() for f in CLIENT_STR_FIELDS})
    clients.update(CLIENT_ADDR_FIELDS)
    clients.update({f: pl.Boolean() for f in CLIENT_FLAGS.values()})
    clients.update(CLIENT_DERIVED)
    clients["extra"] = pl.List(pl.Struct({"key": pl.String(), "value": pl.String()}))
    info: dict[str, pl.DataType] = {"capture_id": pl.String(), "instance": pl.String(), "ts": TS}
    info.update({f: pl.Int64() for f in INFO_INT_FIELDS})
    info.update({f: pl.String() for f in INFO_STR_FIELDS})
    return {
        "captures": pl.Schema(CAPTURES_SCHEMA),
        "clients": pl.Schema(clients),
        "info": pl.Schema(info),
    }


def _timestamps(start: datetime, rel: np.ndarray) -> pl.Series:
    us = int(start.timestamp() * 1_000_000) + np.round(rel * 1e6).astype(np.int64)
    return pl.Series("ts", us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


@dataclass(frozen=True)
class _Frame:
    """Everything fixed for a simulated dataset, shared by its batches."""

    b: _Builder
    c: dict[str, np.ndarray]
    conn_strings: pl.DataFrame  # one row per connection
    start: datetime
    instance: str
    capture_ids: list[str]
    cap_run: np.ndarray
    failed: np.ndarray
    runs: _Runs
    plan: _Plan
    tcr: np.ndarray
    rejected: np.ndarray
    origin: str


def _conn_strings(b: _Builder, c: dict[str, np.ndarray]) -> pl.DataFrame:
    g = pl.DataFrame(
        {
            "name": [x.name for x in b.groups],
            "lib_name": [x.lib for x in b.groups],
            "lib_ver": [x.ver for x in b.groups],
            "user": [x.user for x in b.groups],
            "resp": [x.resp for x in b.groups],
            "flag": [x.flag for x in b.groups],
        },
        schema_overrides={"name": pl.String, "lib_name": pl.String, "lib_ver": pl.String},
    )
    cmd_lists = [x.cmds for x in b.groups]
    pick = (c["id"] % np.array([len(x) for x in cmd_lists])[c["gid"]]).astype(np.int64)
    cmds = [cmd_lists[gi][pi] for gi, pi in zip(c["gid"].tolist(), pick.tolist(), strict=True)]
    port = 32768 + (c["id"] * 7919) % 28000
    ips = pl.Series("ip", b.ip_list, dtype=pl.String).gather(c["ip"])
    frame = g[c["gid"]].with_columns(
        ip=ips, port=pl.Series(port), cmd=pl.Series(cmds, dtype=pl.String)
    )
    flags = pl.col("flag").replace_strict(_FLAG_TEXT, return_dtype=pl.String)
    return frame.with_columns(addr=pl.col("ip") + ":" + pl.col("port").cast(pl.String), flags=flags)


# what every simulated client line says the same way (an idle Redis 7.2 client)
_CONSTANT_FIELDS = {
    "family": pl.lit("ipv4"), "laddr": pl.lit(_LADDR), "laddr_ip": pl.lit(_LADDR.split(":")[0]),
    "laddr_port": pl.lit(6379, dtype=pl.Int64), "laddr_family": pl.lit("ipv4"), "events": pl.lit("r"),
    **{k: pl.lit(v, dtype=pl.Int64) for k, v in {
        "db": 0, "psub": 0, "ssub": 0, "multi": -1, "watch": 0, "qbuf": 0, "qbuf_free": 0,
        "argv_mem": 0, "multi_mem": 0, "rbs": 1024, "rbp": 0, "obl": 0, "redir": -1}.items()},
}  # fmt: skip


def _client_rows(f: _Frame, caps: np.ndarray, rel: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    """Client rows of the captures `caps` (indices); also the per-capture row counts."""
    c = f.c
    t = rel[caps]
    first = np.searchsorted(t, c["born"], "left")
    last = np.searchsorted(t, c["died"], "left")
    n = np.maximum(last - first, 0)
    conn = np.repeat(np.arange(n.size), n)
    offsets = np.repeat(np.cumsum(n) - n, n)
    local = np.repeat(first, n) + (np.arange(conn.size) - offsets)
    order = np.argsort(local, kind="stable")
    conn, local = conn[order], local[order]
    keep = ~f.failed[caps][local]
    conn, local = conn[keep], local[keep]
    counts = np.bincount(local, minlength=caps.size)
    line_no = np.arange(conn.size) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    ts_rel = t[local]
    life = ts_rel - c["born"][conn]
    period = c["period"][conn]
    phase = (c["id"][conn] * 0.618034) % 1.0
    reused = np.isfinite(period)
    safe = np.where(reused, period, 1.0)
    idle = np.where(reused, np.minimum((life + phase * safe) % safe, life), life - phase * 2)
    age = np.floor(life).astype(np.int64)
    idle_i = np.clip(np.floor(idle), 0, age).astype(np.int64)
    omem = np.floor(c["omem_rate"][conn] * life).astype(np.int64)
    flag = f.conn_strings["flag"].to_numpy()[conn]
    strings = f.conn_strings.select("addr", "ip", "port", "name", "flags", "cmd", "user",
                                    "lib_name", "lib_ver", "resp")[conn]  # fmt: skip
    ts = _timestamps(f.start, ts_rel)
    frame = (
        strings.with_columns(
            capture_id=pl.Series([f.capture_ids[i] for i in caps], dtype=pl.String).gather(local),
            instance=pl.lit(f.instance),
            ts=ts,
            line_no=pl.Series(line_no),
            run_id=pl.Series(f.runs.ids, dtype=pl.String).gather(c["run"][conn]),
            id=pl.Series(c["id"][conn]),
            fd=pl.Series(8 + c["id"][conn] % 10000),
            age=pl.Series(age),
            idle=pl.Series(idle_i),
            sub=pl.Series((flag == PUBSUB).astype(np.int64)),
            oll=pl.Series((omem + 16383) // 16384),
            omem=pl.Series(omem),
            tot_mem=pl.Series(22400 + omem),
            is_blocked=pl.Series(flag == BLOCKED),
            is_pubsub=pl.Series(flag == PUBSUB),
            is_replica=pl.Series(flag == REPLICA),
            **_CONSTANT_FIELDS,
        )
        .with_columns(
            [
                pl.lit(False).alias(col)
                for col in CLIENT_FLAGS.values()
                if col not in ("is_blocked", "is_pubsub", "is_replica")
            ]
        )
        .with_columns(
            created_at=pl.col("ts") - pl.duration(seconds=pl.col("age")),
            last_active=pl.col("ts") - pl.duration(seconds=pl.col("idle")),
        )
    )
    return frame, counts


def _info_rows(f: _Frame, caps: np.ndarray, rel: np.ndarray, clients: pl.DataFrame) -> pl.DataFrame:
    ok = caps[~f.failed[caps]]
    per = clients.group_by("capture_id").agg(
        connected_clients=pl.col("is_replica").not_().sum().cast(pl.Int64),
        connected_slaves=pl.col("is_replica").sum().cast(pl.Int64),
        blocked_clients=pl.col("is_blocked").sum().cast(pl.Int64),
        pubsub_clients=pl.col("is_pubsub").sum().cast(pl.Int64),
        client_recent_max_output_buffer=pl.col("omem").max(),
        mem_clients_normal=pl.col("tot_mem").filter(~pl.col("is_replica")).sum(),
    )
    run = f.cap_run[ok]
    uptime = rel[ok] - f.runs.starts[run]
    base = pl.DataFrame(
        {
            "capture_id": [f.capture_ids[i] for i in ok],
            "ts": _timestamps(f.start, rel[ok]),
            "uptime_in_seconds": np.floor(uptime).astype(np.int64),
            "total_connections_received": f.tcr[ok],
            "rejected_connections": np.searchsorted(f.rejected, rel[ok], "right").astype(np.int64),
            "total_commands_processed": (uptime * 1500).astype(np.int64),
            "run_id": [f.runs.ids[r] for r in run],
        },
        schema_overrides={"capture_id": pl.String, "run_id": pl.String},
    )
    return base.join(per, on="capture_id", how="left").with_columns(
        instance=pl.lit(f.instance),
        maxclients=pl.lit(f.plan.maxclients, dtype=pl.Int64),
        cluster_connections=pl.lit(0, dtype=pl.Int64),
        clients_in_timeout_table=pl.col("blocked_clients"),
        client_recent_max_input_buffer=pl.lit(20480, dtype=pl.Int64),
        evicted_clients=pl.lit(0, dtype=pl.Int64),
        tcp_port=pl.lit(6379, dtype=pl.Int64),
        process_id=pl.lit(4242, dtype=pl.Int64) + pl.col("run_id").rank("dense").cast(pl.Int64),
        used_memory=pl.lit(1 << 30, dtype=pl.Int64),
        maxmemory=pl.lit(0, dtype=pl.Int64),
        redis_version=pl.lit(_VERSION),
        redis_mode=pl.lit("standalone"),
        role=pl.lit("master"),
        os=pl.lit("Linux 6.1.0 x86_64"),
    )


_COBL = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"


def _capture_rows(f: _Frame, caps: np.ndarray, rel: np.ndarray, counts: np.ndarray) -> pl.DataFrame:
    ts = _timestamps(f.start, rel[caps])
    cfg = {"maxclients": str(f.plan.maxclients), "timeout": str(f.plan.timeout),
           "tcp-keepalive": "300", "tcp-backlog": "511", "client-output-buffer-limit": _COBL}  # fmt: skip
    ms = f.b.rng.gamma(2.0, 1.5, caps.size) + counts * 0.002
    known_when_ok = {  # a failed capture (max_clients) learnt none of these
        "n_clients": pl.col("n_clients"), "run_id": pl.col("run_id"), "n_rejects": pl.lit(0),
        "maxclients": pl.lit(f.plan.maxclients), "maxclients_source": pl.lit("config"),
        "timeout": pl.lit(f.plan.timeout), "tcp_keepalive": pl.lit(300), "tcp_backlog": pl.lit(511),
        "client_output_buffer_limit": pl.lit(_COBL), "config": pl.lit(json.dumps(cfg)),
    }  # fmt: skip
    frame = pl.DataFrame(
        {
            "capture_id": [f.capture_ids[i] for i in caps], "ts": ts, "server_time": ts,
            "collector_time": ts, "ok": ~f.failed[caps], "total_ms": ms, "client_list_ms": ms * 0.7,
            "n_clients": counts.astype(np.int64), "run_id": [f.runs.ids[r] for r in f.cap_run[caps]],
        },
        schema_overrides={"capture_id": pl.String, "run_id": pl.String},
    )  # fmt: skip
    return frame.with_columns(
        instance=pl.lit(f.instance),
        ts_source=pl.lit("simulated"),
        source=pl.lit("simulate"),
        origin=pl.lit(f.origin),
        error_kind=pl.when(~pl.col("ok")).then(pl.lit("max_clients")),
        error_message=pl.when(~pl.col("ok")).then(pl.lit("ERR max number of clients reached")),
        **{name: pl.when(pl.col("ok")).then(value) for name, value in known_when_ok.items()},
    )


# ------------------------------------------------------------------ driver
def _prepare(scenario: str, seed: int, captures: int | None, clients: int, interval: float | None,
             start: datetime, instance: str, leak_rate: float | None = None) -> _Frame:  # fmt: skip
    if scenario not in _BUILDERS:
        raise ConfigError(f"unknown scenario {scenario!r}; choose one of: {', '.join(_BUILDERS)}")
    shape = _DEFAULT_SHAPE.get(scenario, (120, 15.0))
    n_caps = captures or shape[0]
    step = interval or shape[1]
    if n_caps < 2 or step <= 0 or clients < 1:
        raise ConfigError(
            f"simulate needs at least 2 captures, a positive interval and at least 1 client "
            f"(got captures={n_caps}, interval={step}, clients={clients})"
        )
    rng = np.random.default_rng(seed)
    rel = np.arange(n_caps) * step + rng.uniform(0, min(0.5, step / 10), n_caps)
    b = _Builder(rng, rel, step)
    plan = _Plan(maxclients=max(10000, 2 * clients), leak_rate=leak_rate)
    _infra(b)
    _BUILDERS[scenario](b, clients, plan)
    c = b.conns.arrays()
    _apply_restarts(c, b.restarts, rng)
    refused = _saturate(c, plan.maxclients) if plan.saturate else np.zeros(0)
    run_ids = tuple(rng.bytes(20).hex() for _ in range(len(b.restarts) + 1))
    runs = _Runs(np.array([-12 * 86400.0, *b.restarts]), run_ids,
                 np.array([5000, *[3] * len(b.restarts)], dtype=np.int64))  # fmt: skip
    _assign_ids(c, runs, b.restarts, b.churn_rate)
    cap_run = np.searchsorted(np.asarray(b.restarts), rel, "right")
    failed = np.zeros(n_caps, dtype=bool)
    if refused.size:
        failed = (rel > refused[0]) & (rng.random(n_caps) < 0.5)
    token = rng.bytes(4).hex()
    return _Frame(
        b=b, c=c, conn_strings=_conn_strings(b, c), start=start, instance=instance,
        capture_ids=[f"sim-{token}-{i:07d}" for i in range(n_caps)], cap_run=cap_run,
        failed=failed, runs=runs, plan=plan, tcr=_counter_at(c, runs, rel, cap_run, b.churn_rate),
        rejected=refused, origin=f"simulate:{scenario}:seed={seed}",
    )  # fmt: skip


def _batches(f: _Frame, rel: np.ndarray, rows_per_batch: int) -> list[np.ndarray]:
    c = f.c
    alive = np.searchsorted(np.sort(c["born"]), rel, "right") - np.searchsorted(
        np.sort(c["died"]), rel, "right"
    )
    cut = np.cumsum(alive) // max(rows_per_batch, 1)
    return [np.flatnonzero(cut == k) for k in np.unique(cut)]


def simulate_tables(scenario: str, *, seed: int = 0, captures: int | None = None,
                    clients: int = 200, interval: float | None = None,
                    start: datetime = DEFAULT_START, instance: str = "redis-master-0",
                    rows_per_batch: int = 2_000_000, leak_rate: float | None = None,
                    ) -> tuple[SimulationResult, list[dict[str, pl.DataFrame]]]:  # fmt: skip
    """The simulated parsed tables, in memory, one dict of frames per batch (for tests)."""
    f = _prepare(scenario, seed, captures, clients, interval, start, instance, leak_rate)
    return _result(f, Path("."), scenario, seed, 0), list(_iter_tables(f, rows_per_batch))


def _iter_tables(f: _Frame, rows_per_batch: int) -> Iterator[dict[str, pl.DataFrame]]:
    rel = f.b.times
    schemas = _target_schemas()
    for caps in _batches(f, rel, rows_per_batch):
        clients, counts = _client_rows(f, caps, rel)
        tables = {
            "captures": _capture_rows(f, caps, rel, counts),
            "clients": clients,
            "info": _info_rows(f, caps, rel, clients),
        }
        yield {k: conform(v, schemas[k]) for k, v in tables.items()}


def simulate(scenario: str, out: Path | str, *, seed: int = 0, captures: int | None = None,
             clients: int = 200, interval: float | None = None,
             start: datetime = DEFAULT_START, instance: str = "redis-master-0",
             rows_per_batch: int = 2_000_000, leak_rate: float | None = None) -> SimulationResult:  # fmt: skip
    """Write a simulated capture dataset for `scenario` (see SCENARIOS) into `out`.

    `captures` snapshots `interval` seconds apart of about `clients` connections,
    reproducible from `seed`, written in batches of about `rows_per_batch` client
    rows. `leak_rate` (connections/min) overrides the rate of `leak` / `slow_leak`.
    Returns where it went and the ground truth.
    """
    from clientscope.dataset import append_tables

    f = _prepare(scenario, seed, captures, clients, interval, start, instance, leak_rate)
    rows = 0
    for tables in _iter_tables(f, rows_per_batch):
        append_tables(out, tables)
        rows += tables["clients"].height
    return _result(f, Path(out), scenario, seed, rows)


def _result(f: _Frame, path: Path, scenario: str, seed: int, rows: int) -> SimulationResult:
    rel = f.b.times
    keys = sorted({g.key(f.b.ip_list[int(i)]) for g, i in _group_ips(f)})
    return SimulationResult(
        path=path, scenario=scenario, seed=seed, instance=f.instance, captures=rel.size,
        failed_captures=int(f.failed.sum()), client_rows=rows, start=f.start,
        end=f.start + timedelta(seconds=float(rel[-1])), interval=f.b.interval,
        maxclients=f.plan.maxclients, timeout=f.plan.timeout, leaking=tuple(f.plan.leaking),
        expected=tuple(f.plan.expected), groups=tuple(keys),
        notes={"restarts": len(f.b.restarts), "refused": int(f.rejected.size),
               "churn_per_second": f.b.churn_rate},
    )  # fmt: skip


def _group_ips(f: _Frame) -> list[tuple[_Group, int]]:
    pairs = np.unique(np.stack([f.c["gid"], f.c["ip"]]), axis=1)
    return [(f.b.groups[int(g)], int(i)) for g, i in pairs.T]
