"""`plan`: how large maxclients, per-pod pools and timeout must be.

From what was observed (per-source peaks + headroom) and, when given, from a
deployment spec (apps x replicas / HPA max x pool size + buffer), with what-if
scaling. The spec is YAML (see fixtures/specs/deployment.yaml):

    buffer: 50            # admin, replicas, monitoring, collector connections
    headroom: 0.25        # share on top of the total
    apps:
      - name: api
        match: api-pool   # the client name (or lib@ip group) its connections carry
        replicas: 4
        hpa_max: 12
        pool_size: 20

Every value is checked (`clientscope.config`), by the same function whether it came
from the spec or an option: headroom 0 to 10 (--headroom too), replicas and hpa_max
whole numbers up to MAX_PODS (--what-if too), pool_size up to MAX_POOL, buffer up to
MAX_BUFFER, app names once each. An error names the file, app, line and value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from clientscope.analysis._clients import group_counts, lifecycles, oversized_groups, reuse_gaps
from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    as_tables,
    require_captures,
    timeline,
)
from clientscope.analysis.groups import suggest_timeout
from clientscope.config import (
    Where,
    check_keys,
    line_of,
    load_yaml,
    optional,
    real_number,
    shown,
    text,
    whole_number,
)
from clientscope.errors import ConfigError
from clientscope.escape import printable

FD_RESERVED = 32  # Redis keeps this many descriptors for itself (CONFIG_MIN_RESERVED_FDS)
ALERT_SHARE = 0.8  # pools should fit under the classic 80% alert


MAX_PODS = 100_000  # replicas / hpa_max of one app: more than any cluster runs
MAX_POOL = 100_000  # connections per pod
MAX_BUFFER = 1_000_000  # connections on top of the apps'
SPEC_FIELDS = {"apps", "buffer", "headroom"}
APP_FIELDS = {"name", "match", "replicas", "hpa_max", "pool_size"}


def check_headroom(value: object, where: Where) -> float:
    """The share on top of the peak, from --headroom or a spec: 0 to 10."""
    return real_number(
        value, where, 0, 10, rest="is a share on top of the peak: give 0 to 10 (0.25 = 25 %)"
    )


def check_replicas(value: object, where: Where) -> int:
    """Pods of an app, from a spec (replicas, hpa_max) or --what-if."""
    return whole_number(value, where, 0, MAX_PODS)


def check_pool_size(value: object, where: Where) -> int:
    return whole_number(value, where, 0, MAX_POOL)


def check_buffer(value: object, where: Where) -> int:
    return whole_number(value, where, 0, MAX_BUFFER)


@dataclass(frozen=True)
class AppSpec:
    name: str
    match: str
    replicas: int
    hpa_max: int
    pool_size: int

    def __post_init__(self) -> None:
        """The checks a spec file gets, for an app built in code."""
        label = f"app {shown(self.name)}:"
        check_replicas(self.replicas, Where.option(f"{label} replicas"))
        check_replicas(self.hpa_max, Where.option(f"{label} hpa_max"))
        check_pool_size(self.pool_size, Where.option(f"{label} pool_size"))
        if self.hpa_max < self.replicas:
            raise ConfigError(
                f"{label} hpa_max {self.hpa_max} is below replicas {self.replicas}; an HPA never "
                "runs more pods than its max: fix one of them"
            )


@dataclass(frozen=True)
class DeploymentSpec:
    apps: tuple[AppSpec, ...]
    buffer: int = 50
    headroom: float | None = None

    def __post_init__(self) -> None:
        """The checks a spec file gets, for a spec built in code."""
        check_buffer(self.buffer, Where.option("buffer"))
        if self.headroom is not None:
            check_headroom(self.headroom, Where.option("headroom"))
        twice = sorted(n for n, k in Counter(a.name for a in self.apps).items() if k > 1)
        if twice:
            raise ConfigError(
                f"app name(s) {', '.join(map(shown, twice))} used twice; give each app its own"
            )


def load_spec(path: Path | str) -> DeploymentSpec:
    """Read a deployment spec YAML; errors name the file, app, line and field."""
    path = Path(path)
    doc = load_yaml(path, "deployment spec")
    if not isinstance(doc, dict) or not isinstance(doc.get("apps"), list) or not doc["apps"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'apps:' list")
    check_keys(doc, SPEC_FIELDS, path, None)
    apps = tuple(_app(a, path, i + 1) for i, a in enumerate(doc["apps"]))
    _check_names(apps, doc["apps"], path)

    def at(key: str) -> Where:
        return Where.field(path, None, key, line_of(doc, key))

    headroom = doc.get("headroom")
    return DeploymentSpec(
        apps,
        check_buffer(optional(doc, "buffer", 50), at("buffer")),
        None if headroom is None else check_headroom(headroom, at("headroom")),
    )


def _check_names(apps: tuple[AppSpec, ...], items: list[Any], path: Path) -> None:
    seen: dict[str, int] = {}
    for number, (app, item) in enumerate(zip(apps, items, strict=True), 1):
        if app.name in seen:
            raise ConfigError(
                f"{path}: app {number} (line {line_of(item, 'name')}): name {shown(app.name)} is "
                f"app {seen[app.name]}'s too; give each app its own name"
            )
        seen[app.name] = number


def _app(item: Any, path: Path, number: int) -> AppSpec:
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(
            f"{path}: app {number} is {shown(item)}; expected a mapping with name, replicas, pool_size"
        )
    name = text(item["name"], Where.field(path, f"app {number}", "name", line_of(item, "name")))
    label = f"app {number} ({printable(name, 60)})"
    check_keys(item, APP_FIELDS, path, label)
    for key in ("replicas", "pool_size"):
        if key not in item:
            raise ConfigError(f"{path}: {label}: field {key!r} is missing")

    def at(key: str) -> Where:
        return Where.field(path, label, key, line_of(item, key))

    replicas = check_replicas(item["replicas"], at("replicas"))
    hpa_max = check_replicas(optional(item, "hpa_max", replicas), at("hpa_max"))
    if hpa_max < replicas:
        raise ConfigError(
            f"{path}: {label}: hpa_max {hpa_max} is below replicas {replicas}; an HPA never runs "
            "more pods than its max: fix one of them"
        )
    match = text(optional(item, "match", name), at("match"))
    pool_size = check_pool_size(item["pool_size"], at("pool_size"))
    return AppSpec(name, match, replicas, hpa_max, pool_size)


@dataclass(frozen=True)
class CapacityPlan(ResultMixin):
    """Recommended settings with the numbers behind them."""

    instance: str
    current_maxclients: int
    peak_used: int
    peak_at: Any
    observed_recommended: int  # peak used x (1 + headroom), rounded up
    spec_recommended: int | None  # sum(hpa_max x pool) + buffer, x (1 + headroom)
    recommended_maxclients: int
    per_pod_pool_fit: int | None  # largest uniform pool per pod that keeps HPA max under 80%
    suggested_timeout: int
    suggested_tcp_keepalive: int
    headroom: float
    observed: pl.DataFrame  # per group: peak, pods, peak per pod, busy peak
    apps: pl.DataFrame  # per spec app (after what-if): replicas, hpa_max, pool, planned, worst case
    warnings: tuple[str, ...]
    settings: tuple[str, ...]  # commands to apply


def nice_ceil(value: float, minimum: int = 100) -> int:
    """Round up to two significant digits (1234 -> 1300), at least `minimum`."""
    if value <= minimum:
        return minimum
    step = 10 ** max(math.floor(math.log10(value)) - 1, 0)
    return int(math.ceil(value / step) * step)


def plan(
    ds: DatasetLike,
    spec: DeploymentSpec | Path | str | None = None,
    *,
    instance: str | None = None,
    headroom: float | None = None,
    what_if: Mapping[str, int] | None = None,
) -> CapacityPlan:
    """Capacity plan for one instance (default: the busiest). `what_if={"api": 12}` scales apps."""
    if what_if and spec is None:
        raise ConfigError(
            "--what-if scales the apps of a deployment spec: give --spec deployment.yaml too"
        )
    if headroom is not None:
        check_headroom(headroom, Where.option("--headroom"))
    for app, replicas in (what_if or {}).items():
        check_replicas(replicas, Where.option(f"--what-if {app}=", "replicas"))
    tables = as_tables(ds)
    if isinstance(spec, str | Path):
        spec = load_spec(spec)
    tl = timeline(tables, instance)
    ok = require_captures(tl, "plan")
    inst = instance or str(_peak_first(ok)["instance"][0])
    ok = ok.filter(pl.col("instance") == inst)
    room = (
        headroom
        if headroom is not None
        else (spec.headroom if spec and spec.headroom is not None else 0.25)
    )
    peak = _peak_first(ok).row(0, named=True)
    current = (
        int(ok["maxclients"].drop_nulls().tail(1).item())
        if ok["maxclients"].drop_nulls().len()
        else 0
    )
    counts = group_counts(tables, ok)
    observed = _observed(counts)
    apps, spec_total = _apps(spec, observed, what_if) if spec else (pl.DataFrame(), None)
    spec_rec = nice_ceil(spec_total * (1 + room)) if spec_total is not None else None
    obs_rec = nice_ceil(float(peak["used"] or 0) * (1 + room))
    recommended = max(obs_rec, spec_rec or 0)
    oversized = oversized_groups(counts, current, set())["group"].to_list()
    timeout = suggest_timeout(reuse_gaps(lifecycles(tables, inst), oversized))
    keepalive = (
        int(ok["tcp_keepalive"].drop_nulls().tail(1).item() or 0)
        if ok["tcp_keepalive"].drop_nulls().len()
        else 0
    )
    keepalive = keepalive if keepalive > 0 else 300
    growing = _still_growing(tl, inst)
    if growing is not None:  # a peak taken mid-leak is not a capacity: never size down from it
        recommended = max(recommended, current)
    # pools are fitted to the limit the plan says to apply, not the one in force now
    fit = _pool_fit(spec, observed, recommended, what_if) if spec else None
    warnings = _warnings(ok, current, recommended, spec_total, fit)
    if spec:
        warnings = (*warnings, *_spec_warnings(spec, apps, observed))
        if fit is not None:
            tight = apps.filter(pl.col("observed_per_pod") > fit)
            warnings = (*warnings, *(
                f"{r['app']} already held {r['observed_per_pod']} connections per pod, more than a "
                f"pool of {fit}: raise maxclients (or add servers) rather than shrink its pool"
                for r in tight.iter_rows(named=True)
            ))  # fmt: skip
    if recommended * 2 < current:
        span = ok.select((pl.col("ts").max() - pl.col("ts").min()).dt.total_seconds()).item()
        hours = float(span or 0) / 3600
        warnings = (*warnings, (
            f"this lowers maxclients from {current} to {recommended}, from {ok.height} captures over "
            f"{hours:.1f} h: above it the server refuses connections. That makes a leak fail fast, "
            "but only lower it if this window held your real peak (deploys, batch jobs, failovers)."
        ))  # fmt: skip
    if growing is not None:
        warnings = (growing, *warnings)
    settings = (
        f"CONFIG SET maxclients {recommended}",
        f"CONFIG SET timeout {timeout}",
        f"CONFIG SET tcp-keepalive {keepalive}",
        "CONFIG REWRITE",
    )
    return CapacityPlan(
        instance=inst, current_maxclients=current, peak_used=int(peak["used"] or 0), peak_at=peak["ts"],
        observed_recommended=obs_rec, spec_recommended=spec_rec, recommended_maxclients=recommended,
        per_pod_pool_fit=fit, suggested_timeout=timeout, suggested_tcp_keepalive=keepalive,
        headroom=room, observed=observed, apps=apps, warnings=warnings, settings=settings,
    )  # fmt: skip


def _still_growing(tl: pl.DataFrame, instance: str) -> str | None:
    """Why the observed peak must not size maxclients, when connections are still growing."""
    from clientscope.analysis.forecast import forecast_from
    from clientscope.errors import AnalysisError

    try:
        f = forecast_from(tl, instance)
    except AnalysisError:
        return None
    if f.verdict not in ("will_exhaust", "growing", "exhausted"):
        return None
    when = f" ({f.note})" if f.note else ""
    return (
        f"connections on {instance} are still growing, {f.slope_per_hour:+.0f}/h{when}: a peak taken "
        "during growth (a leak?) is not a capacity. maxclients is not sized below the current limit; "
        "find the growth first (clientscope diagnose / leaks)."
    )


def _observed(counts: pl.DataFrame) -> pl.DataFrame:
    return (
        counts.group_by("group", "role")
        .agg(
            peak=pl.col("n").max(),
            mean=pl.col("n").mean(),
            pods=pl.col("pods").max(),
            busy_peak=pl.col("busy").max(),
            idle_over_300_peak=pl.col("idle_over_300").max(),
        )
        .with_columns(peak_per_pod=(pl.col("peak") / pl.col("pods")).ceil().cast(pl.Int64))
        .sort(["peak", "group", "role"], descending=[True, False, False])
    )


def _peak_first(ok: pl.DataFrame) -> pl.DataFrame:
    """Captures by `used`, highest first; ties by time then instance, so the peak is the same
    capture every run."""
    return ok.sort(["used", "ts", "instance"], descending=[True, False, False], nulls_last=True)


def _apps(spec: DeploymentSpec, observed: pl.DataFrame,
          what_if: Mapping[str, int] | None) -> tuple[pl.DataFrame, float]:  # fmt: skip
    what_if = dict(what_if or {})
    unknown = sorted(set(what_if) - {a.name for a in spec.apps})
    if unknown:
        raise ConfigError(
            f"what-if names apps not in the spec: {unknown}; the spec has {[a.name for a in spec.apps]}"
        )
    rows = []
    for app in spec.apps:
        replicas = what_if.get(app.name, app.replicas)
        hpa_max = max(app.hpa_max, replicas)
        seen = observed.filter(pl.col("group") == app.match)
        rows.append({
            "app": app.name, "match": app.match, "replicas": replicas, "hpa_max": hpa_max,
            "pool_size": app.pool_size, "planned": replicas * app.pool_size,
            "worst_case": hpa_max * app.pool_size,
            "observed_peak": int(seen["peak"].sum()) if seen.height else None,
            "observed_per_pod": seen.select(pl.col("peak_per_pod").max()).item() if seen.height else None,
            "observed_busy_peak": int(seen["busy_peak"].sum()) if seen.height else None,
        })  # fmt: skip
    apps = pl.DataFrame(rows)
    unmatched = observed.filter(~pl.col("group").is_in([a.match for a in spec.apps]))
    total = float(apps["worst_case"].sum()) + spec.buffer + float(unmatched["peak"].sum())
    return apps, total


def _pool_fit(spec: DeploymentSpec, observed: pl.DataFrame, maxclients: int,
              what_if: Mapping[str, int] | None) -> int | None:  # fmt: skip
    pods = sum(max(a.hpa_max, (what_if or {}).get(a.name, a.replicas)) for a in spec.apps)
    others = float(
        observed.filter(~pl.col("group").is_in([a.match for a in spec.apps]))["peak"].sum()
    )
    if pods == 0 or maxclients <= 0:
        return None
    return max(int((maxclients * ALERT_SHARE - spec.buffer - others) // pods), 0)


def _warnings(ok: pl.DataFrame, current: int, recommended: int, spec_total: float | None,
              fit: int | None) -> tuple[str, ...]:  # fmt: skip
    out = []
    if current and _looks_fd_limited(current):
        out.append(
            f"maxclients {current} looks lowered to the file-descriptor limit ({current + FD_RESERVED} - "
            f"{FD_RESERVED}): the server caps maxclients at ulimit -n minus {FD_RESERVED}. "
            "Raise LimitNOFILE / ulimit -n before raising maxclients."
        )
    sources = set(ok["maxclients_source"].drop_nulls().to_list())
    if "config" not in sources and current:
        out.append(
            f"maxclients {current} was read from {', '.join(sorted(sources)) or 'nowhere'}, not CONFIG GET."
        )
    if recommended > current:
        out.append(
            f"maxclients {recommended} needs a file-descriptor limit of at least "
            f"{recommended + FD_RESERVED} (ulimit -n / LimitNOFILE); otherwise the server silently "
            "lowers it at start (compare CONFIG GET maxclients after a restart)."
        )
    if spec_total is not None and current and spec_total > current * ALERT_SHARE:
        out.append(
            f"at HPA max the apps can open {int(spec_total)} connections, over {ALERT_SHARE:.0%} of "
            f"maxclients {current}"
            + (f"; a pool of {fit} per pod fits the recommended maxclients {recommended}"
               if fit is not None else "")
        )
    return tuple(out)


def _spec_warnings(spec: DeploymentSpec, apps: pl.DataFrame, observed: pl.DataFrame) -> list[str]:
    """Where the deployment spec and what the server saw disagree."""
    out = []
    seen = set(observed["group"].to_list())
    for app in spec.apps:
        if app.match not in seen:
            out.append(f"spec app {app.name}: match {app.match!r} is no client group seen here "
                       f"(a typo? groups: {', '.join(sorted(map(str, seen))[:8])})")  # fmt: skip
    for row in apps.iter_rows(named=True):
        if row["observed_peak"] is not None and row["observed_peak"] > row["worst_case"]:
            out.append(f"{row['app']}: {row['observed_peak']} connections seen, more than the spec's "
                       f"worst case {row['worst_case']} (pool_size x hpa_max): the spec is wrong, "
                       "or connections leak")  # fmt: skip
    return out


def _looks_fd_limited(maxclients: int) -> bool:
    fds = maxclients + FD_RESERVED
    return fds in (256, 1024, 4096, 8192, 16384, 32768, 65536) or (
        fds & (fds - 1) == 0 and fds >= 256
    )
