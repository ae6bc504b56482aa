"""`plan`: how large maxclients, per-pod pools and timeout must be.

From the needs of the healthy groups (their peak + headroom) and, when given, from a
deployment spec (apps x replicas / HPA max x pool size + buffer), with what-if
scaling. A plan never makes things worse:

    leaks          the leaking groups are left out of the peak (a leak is not a need) and
                   shown as "fix first — until fixed, maxclients N buys T", T on the
                   forecast's course (`time_to_limit`: its steady part + the groups that
                   keep growing, at their rates; the same line as its time to maxclients)
    horizon        never a limit that course reaches within the horizon (24 h; --horizon),
                   and never lower than the limit in force while connections grow
    short window   under a day, under MIN_PEAK_CAPTURES captures, healthy groups still
                   growing, or a count capped at maxclients: said, as a warning

The spec is YAML (see fixtures/specs/deployment.yaml):

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
MAX_BUFFER, app names once each, --horizon a duration up to 365 d. An error names the
file, app, line and value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    as_tables,
    human_duration,
    last_known,
    require_captures,
    signed,
    with_clients,
)
from clientscope.analysis.forecast import Forecast
from clientscope.analysis.groups import suggest_timeout
from clientscope.config import (
    Where,
    check_keys,
    duration,
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

if TYPE_CHECKING:
    from clientscope.analysis.model import Model, ServerModel

FD_RESERVED = 32  # Redis keeps this many descriptors for itself (CONFIG_MIN_RESERVED_FDS)
ALERT_SHARE = 0.8  # pools should fit under the classic 80% alert


MAX_PODS = 100_000  # replicas / hpa_max of one app: more than any cluster runs
MAX_POOL = 100_000  # connections per pod
MAX_BUFFER = 1_000_000  # connections on top of the apps'
SPEC_FIELDS = {"apps", "buffer", "headroom"}
DEFAULT_HORIZON = "24h"  # a plan is not reached on the forecast's course within this
MAX_HORIZON_S = 365 * 86400.0
MIN_PEAK_SPAN = timedelta(days=1)  # a window shorter than a day may miss the daily peak
MIN_PEAK_CAPTURES = 24  # hourly over a day
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
    check_keys(item, APP_FIELDS, path, label, required=("replicas", "pool_size"))

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
class Runway:
    """How long a maxclients lasts on the forecast's course (`time_to_limit`)."""

    maxclients: int
    lasts: timedelta | None  # from the last capture; 0: already reached; None: nothing grows
    label: str  # "now" (the limit in force), "recommended", or both


@dataclass(frozen=True)
class CapacityPlan(ResultMixin):
    """Recommended settings with the numbers behind them."""

    instance: str
    current_maxclients: int
    peak_used: int  # the whole count's peak, leaks included (context, not a need)
    peak_at: Any
    healthy_peak: int  # the count without the leaking groups, at its peak: what sizing reads
    healthy_peak_at: Any
    left_out: tuple[str, ...]  # leaking groups, not in healthy_peak: fix first
    observed_recommended: int  # healthy_peak x (1 + headroom), rounded up
    spec_recommended: int | None  # sum(hpa_max x pool) + buffer, x (1 + headroom)
    recommended_maxclients: int
    per_pod_pool_fit: int | None  # largest uniform pool per pod that keeps HPA max under 80%
    suggested_timeout: int  # the one `timeout` advised (plan, diagnose, the report)
    longest_reuse_gap_s: float | None  # the longest idle stretch a connection was reused after
    suggested_tcp_keepalive: int
    headroom: float
    horizon: timedelta  # the plan must not be reached on the forecast's course within it
    at_horizon: float | None  # where that course puts the count at the horizon (None: flat)
    horizon_floor: int | None  # the least limit that course does not reach within the horizon
    runways: tuple[Runway, ...]  # how long each limit lasts while the growth runs
    fix_first: str | None  # the leaks, and what a limit buys until they are fixed
    short_window: str | None  # why this window may not hold the real peak
    observed: pl.DataFrame  # per group: verdict, peak, pods, peak per pod, busy peak
    apps: pl.DataFrame  # per spec app (after what-if): replicas, hpa_max, pool, planned, worst case
    warnings: tuple[str, ...]
    settings: tuple[str, ...]  # commands to apply


LEAST_MAXCLIENTS = 100  # the least maxclients a plan sizes from a peak (a handful of clients)


def headroom_words(p: CapacityPlan, noun: str = "") -> str:
    """`+ 25%`, or `+ 25%, at least 100` when the floor set the number: how the CLI and
    `why_maxclients` say the healthy need was sized (it read `peak 6; + 25%: 100`)."""
    least = p.healthy_peak * (1 + p.headroom) < LEAST_MAXCLIENTS
    return f"+ {p.headroom:.0%}{' ' + noun if noun else ''}" + (
        f", at least {LEAST_MAXCLIENTS}" if least else ""
    )


def nice_ceil(value: float, minimum: int = LEAST_MAXCLIENTS) -> int:
    """Round up to two significant digits (1234 -> 1300), at least `minimum`."""
    if value <= minimum:
        return minimum
    step = 10 ** max(math.floor(math.log10(value)) - 1, 0)
    return int(math.ceil(value / step) * step)


# ------------------------------------------------------------------ plan
def check_horizon(value: object, where: Where) -> float:
    """How far ahead a plan must hold, from --horizon: 24h, 2d, 3600 (seconds), at most 365d."""
    return duration(value, where, MAX_HORIZON_S)


def plan(
    ds: DatasetLike,
    spec: DeploymentSpec | Path | str | None = None,
    *,
    instance: str | None = None,
    headroom: float | None = None,
    what_if: Mapping[str, int] | None = None,
    horizon: str | float = DEFAULT_HORIZON,
) -> CapacityPlan:
    """Capacity plan for one instance (default: the busiest). `what_if={"api": 12}` scales apps;
    the plan is not reached on the forecast's course within `horizon` (e.g. "24h", "2d")."""
    from clientscope.analysis.model import build_model

    spec = plan_options(spec, headroom, what_if, horizon)[0]  # before the dataset is read
    model = build_model(as_tables(ds), instance=instance)
    return plan_from(model, spec, instance=instance, headroom=headroom, what_if=what_if,
                     horizon=horizon)  # fmt: skip


def plan_from(
    model: Model,
    spec: DeploymentSpec | Path | str | None = None,
    *,
    instance: str | None = None,
    headroom: float | None = None,
    what_if: Mapping[str, int] | None = None,
    horizon: str | float = DEFAULT_HORIZON,
) -> CapacityPlan:
    """`plan` on a model already built (`analysis.model.build_model`).

    maxclients = the healthy groups' peak (leaks left out) + headroom, or the spec's need, and
    never a limit the forecast's course reaches within `horizon`, nor one under the limit in
    force while the count grows: either would make things worse."""
    spec, ahead = plan_options(spec, headroom, what_if, horizon)
    server = model.server(instance)
    ok = require_captures(server.timeline, "plan")
    room = headroom if headroom is not None else (
        spec.headroom if spec and spec.headroom is not None else 0.25
    )  # fmt: skip
    current = last_known(ok, "maxclients")
    leaking = _leaking(server)
    peak = _peak_first(ok).row(0, named=True)
    healthy, healthy_at = _healthy_peak(ok, server.counts, leaking)
    observed = _observed(server.counts, server.groups.groups)
    needs = observed.filter(~pl.col("group").is_in(list(leaking)))
    apps, spec_total = _apps(spec, observed, needs, what_if) if spec else (pl.DataFrame(), None)
    spec_rec = nice_ceil(spec_total * (1 + room)) if spec_total is not None else None
    obs_rec = nice_ceil(healthy * (1 + room))
    f = server.forecast
    rising = f is not None and f.course[1] > 0
    at_horizon, floor = _horizon_floor(f, ahead)
    hold = current if f is None or rising or f.verdict == "exhausted" else 0  # never lower then
    recommended = max(obs_rec, spec_rec or 0, floor or 0, hold)
    runways = _runways(f, current, recommended) if rising and f is not None else ()
    # pools fit the limit the plan applies, but never the room it keeps for a leak's course:
    # that room is for the leak until it is fixed, and bigger pools would only fill it sooner
    fit_limit = max(obs_rec, spec_rec or 0, hold) if leaking else recommended
    fit = _pool_fit(spec, needs, fit_limit, what_if) if spec else None
    short = _short_window(ok, f, obs_rec)
    warnings = _warnings(ok, current, recommended, spec_total, fit, fit_limit)
    if spec:
        warnings = (*warnings, *_spec_warnings(spec, apps, observed), *_tight(apps, fit, fit_limit, leaking))
    if recommended * 2 < current:
        warnings = (*warnings, _lowering(ok, current, recommended))
    sized = max(obs_rec, spec_rec or 0)
    ahead_said = _beyond_needs(f, ahead, at_horizon, floor, sized, recommended, leaking,
                               spec_sized=spec_rec is not None)  # fmt: skip
    fix = _fix_first(server, f, leaking, runways, obs_rec, healthy, room)
    if f is None:
        warnings = (f"no forecast ({server.forecast_error}): without a course to check a limit "
                    "against, maxclients is not lowered", *warnings)  # fmt: skip
    warnings = tuple(w for w in (fix, ahead_said, short) if w) + warnings
    gaps = server.reuse_gaps()
    timeout = suggest_timeout(gaps)
    keepalive = last_known(ok, "tcp_keepalive") or 300
    return CapacityPlan(
        instance=server.instance, current_maxclients=current, peak_used=int(peak["used"] or 0),
        peak_at=peak["ts"], healthy_peak=healthy, healthy_peak_at=healthy_at, left_out=leaking,
        observed_recommended=obs_rec, spec_recommended=spec_rec, recommended_maxclients=recommended,
        per_pod_pool_fit=fit, suggested_timeout=timeout, suggested_tcp_keepalive=keepalive,
        longest_reuse_gap_s=float(gaps.max()) if gaps.size else None,
        headroom=room, horizon=ahead, at_horizon=at_horizon, horizon_floor=floor, runways=runways,
        fix_first=fix, short_window=short, observed=observed, apps=apps, warnings=warnings,
        settings=(f"CONFIG SET maxclients {recommended}", f"CONFIG SET timeout {timeout}",
                  f"CONFIG SET tcp-keepalive {keepalive}", "CONFIG REWRITE"),
    )  # fmt: skip


def why_maxclients(p: CapacityPlan) -> str:
    """One sentence on where the recommended maxclients comes from (the CLI and the report)."""
    left = f" (leaving out {', '.join(p.left_out)}: fix first)" if p.left_out else ""
    said = [f"the healthy groups' peak {p.healthy_peak}{left} {headroom_words(p, 'headroom')}: "
            f"{p.observed_recommended}"]  # fmt: skip
    if p.spec_recommended:
        said.append(f"the deployment spec needs {p.spec_recommended}")
    if p.horizon_floor is not None and p.at_horizon is not None:
        said.append(f"connections reach {p.at_horizon:.0f} within {horizon_text(p.horizon)} on the "
                    f"forecast's course, so nothing under {p.horizon_floor}")  # fmt: skip
    if p.recommended_maxclients == p.current_maxclients and p.recommended_maxclients > max(
        p.observed_recommended, p.spec_recommended or 0, p.horizon_floor or 0
    ):
        said.append("kept: lowering it while connections grow brings the exhaustion closer")
    return "; ".join(said)


def _horizon_floor(f: Forecast | None, ahead: timedelta) -> tuple[float | None, int | None]:
    """Where the forecast's course puts the count at the horizon, and the least (rounded) limit
    it does not reach by then; (None, None) when nothing grows."""
    if f is None or f.course[1] <= 0:
        return None, None
    at_horizon = f.level_at(ahead)
    return at_horizon, nice_ceil(math.floor(at_horizon) + 1, minimum=1)


def plan_options(spec: DeploymentSpec | Path | str | None, headroom: float | None = None,
                 what_if: Mapping[str, int] | None = None,
                 horizon: str | float = DEFAULT_HORIZON) -> tuple[DeploymentSpec | None, timedelta]:  # fmt: skip
    """`plan`'s options checked as a spec file's fields are (`clientscope.config`), before any
    data is read: the spec (read, when a path) and the horizon."""
    if what_if and spec is None:
        raise ConfigError(
            "--what-if scales the apps of a deployment spec: give --spec deployment.yaml too"
        )
    if headroom is not None:
        check_headroom(headroom, Where.option("--headroom"))
    for app, replicas in (what_if or {}).items():
        check_replicas(replicas, Where.option(f"--what-if {app}=", "replicas"))
    ahead = timedelta(seconds=check_horizon(horizon, Where.option("--horizon")))
    return (load_spec(spec) if isinstance(spec, str | Path) else spec), ahead


def _leaking(server: ServerModel) -> tuple[str, ...]:
    """The groups that leak (the model's verdicts, and the forecast's drivers judged leaks),
    fastest first."""
    drivers = server.forecast.drivers if server.forecast is not None else ()
    names = server.leaking | {d.group for d in drivers if d.verdict == "leak"}
    rates = _rates(server)
    return tuple(sorted(names, key=lambda g: (-rates.get(g, 0.0), g)))


def _rates(server: ServerModel) -> dict[str, float]:
    """Each normal group's Theil-Sen rate per hour (the rate a driver carries)."""
    judged = server.groups.groups
    if judged.is_empty():
        return {}
    normal = judged.filter(pl.col("role") == "normal")
    return {
        str(g): float(r or 0.0)
        for g, r in normal.select("group", "slope_theil_sen_per_h").iter_rows()
    }


def _healthy_peak(
    ok: pl.DataFrame, counts: pl.DataFrame, leaking: tuple[str, ...]
) -> tuple[int, Any]:
    """The count without the leaking groups' connections, at its peak, and when. With leaks, only
    the captures that listed clients say how many of the count were theirs."""
    if leaking:
        held = (
            counts.filter(pl.col("group").is_in(list(leaking)) & (pl.col("role") == "normal"))
            .group_by("capture_id")
            .agg(pl.col("n").sum().alias("leaked"))
        )
        ok = (
            with_clients(ok)
            .join(held, on="capture_id", how="left")
            .with_columns(used=pl.col("used") - pl.col("leaked").fill_null(0))
        )
    if ok.is_empty():
        return 0, None
    row = _peak_first(ok).row(0, named=True)
    return int(row["used"] or 0), row["ts"]


def _runways(f: Forecast, current: int, recommended: int) -> tuple[Runway, ...]:
    """How long the limit in force and the recommended one last while the growth runs."""
    labels: dict[int, list[str]] = {}
    for limit, label in ((current, "now"), (recommended, "recommended")):
        labels.setdefault(limit, []).append(label)
    return tuple(
        Runway(limit, f.time_to(limit), ", ".join(said))
        for limit, said in sorted(labels.items())
        if limit > 0
    )


def _lasts(r: Runway) -> str:
    if r.lasts is None:
        return "holds"
    if r.lasts <= timedelta(0):
        return "is already reached"
    return f"buys {human_duration(r.lasts)}"


def _fix_first(server: ServerModel, f: Forecast | None, leaking: tuple[str, ...],
               runways: tuple[Runway, ...], healthy_rec: int, healthy: int,
               room: float) -> str | None:  # fmt: skip
    """The leaks, left out of the peak, and how long each limit lasts until they are fixed."""
    if not leaking:
        return None
    rates = _rates(server)
    named = ", ".join(f"{g} {signed(rates.get(g, 0.0), 0)}/h" for g in leaking)
    held = sum(d.connections_now for d in (f.drivers if f else ()) if d.group in leaking)
    now = f" holding {held} now" if held else ""
    bought = "; ".join(f"maxclients {r.maxclients} ({r.label}) {_lasts(r)}" for r in runways)
    until = f"until fixed, {bought}; no limit holds while they run" if bought else (
        "until fixed, no limit holds while they run")  # fmt: skip
    return (
        f"fix first — {named} leak ({len(leaking)} group(s){now}, left out of the peak): {until}. "
        f"Once fixed, the healthy groups need {healthy_rec} (peak {healthy} + {room:.0%}). "
        "The times assume the leak runs on: the server `timeout` this plan sets closes leaked "
        "connections once they sit idle that long, which slows it but fixes nothing."
    )


def _beyond_needs(f: Forecast | None, ahead: timedelta, at_horizon: float | None,
                  floor: int | None, sized: int, recommended: int,
                  leaking: tuple[str, ...], spec_sized: bool = False) -> str | None:  # fmt: skip
    """Why the plan is above what the healthy groups (or the spec) need: the course passes that
    within the horizon."""
    if f is None or at_horizon is None or floor is None or floor <= sized:
        return None
    start, per_hour = f.course
    span = horizon_text(ahead)
    kept = (
        " (the limit in force: lowering it while connections grow brings the exhaustion closer)"
        if recommended > floor
        else ""
    )
    why = (
        "fix the leak first: no limit holds while it runs"
        if leaking
        else "the growing groups have not shown their peak yet"
    )
    needs = (f"what the healthy groups and the spec need (up to {sized})" if spec_sized else
             f"what the healthy groups need ({sized})")  # fmt: skip
    return (
        f"{needs} is under where connections will be in {span}: {at_horizon:.0f} "
        f"({start:.0f} now, {signed(per_hour, 0)}/h). Any limit under {floor} is reached within "
        f"{span}, so this plan recommends {recommended}{kept}; {why}."
    )


def horizon_text(ahead: timedelta) -> str:
    """A horizon as it was likely given: `24 h`, `36 h`, else `5 d 2 h`."""
    hours = ahead.total_seconds() / 3600
    return f"{hours:g} h" if hours.is_integer() and 0 < hours <= 72 else human_duration(ahead)


def _short_window(ok: pl.DataFrame, f: Forecast | None, sized: int) -> str | None:
    """Why this window may not hold the real peak: under a day, few captures, healthy groups
    still growing, or a count capped by the limit."""
    span = ok.select(pl.col("ts").max() - pl.col("ts").min()).item() or timedelta(0)
    counted = ok.filter(pl.col("used").is_not_null()).height
    reasons = []
    if span < MIN_PEAK_SPAN:
        reasons.append(f"the captures span {human_duration(span)}, less than a day")
    if counted < MIN_PEAK_CAPTURES:
        reasons.append(
            f"only {counted} capture(s) count connections (a peak needs {MIN_PEAK_CAPTURES})"
        )
    growing = [d for d in (f.drivers if f else ()) if d.verdict == "growth"]
    if growing:
        named = ", ".join(f"{d.group} {signed(d.rate_per_hour, 0)}/h" for d in growing)
        reasons.append(f"healthy group(s) still growing at the end ({named})")
    if f is not None and f.exhausted_at is not None:
        reasons.append(
            f"the count was capped at maxclients from {f.exhausted_at:%Y-%m-%d %H:%M} UTC"
        )
    if not reasons:
        return None
    return (
        f"the window is too short to have seen a real peak: {'; '.join(reasons)}. Treat {sized} "
        "as a floor, and plan again over a window that holds your busiest day (deploys, batch "
        "jobs, failovers)."
    )


def _lowering(ok: pl.DataFrame, current: int, recommended: int) -> str:
    span = ok.select((pl.col("ts").max() - pl.col("ts").min()).dt.total_seconds()).item()
    hours = float(span or 0) / 3600
    return (
        f"this lowers maxclients from {current} to {recommended}, from {ok.height} captures over "
        f"{hours:.1f} h: above it the server refuses connections. That makes a leak fail fast, "
        "but only lower it if this window held your real peak (deploys, batch jobs, failovers)."
    )


def _tight(apps: pl.DataFrame, fit: int | None, fit_limit: int, leaking: tuple[str, ...]) -> list[str]:
    """Apps whose pods already held more than the fitted pool. A leaking app is left out: what
    it held is the leak, to fix, never a reason to raise the limit."""
    if fit is None or apps.is_empty():
        return []
    return [
        f"{r['app']} already held {r['observed_per_pod']} connections per pod, more than a pool "
        f"of {fit} (what fits maxclients {fit_limit}): give it room above {fit_limit} (or add "
        "servers) rather than shrink its pool"
        for r in apps.filter((pl.col("observed_per_pod") > fit) & ~pl.col("match").is_in(list(leaking)))
        .iter_rows(named=True)
    ]  # fmt: skip


def _observed(counts: pl.DataFrame, verdicts: pl.DataFrame) -> pl.DataFrame:
    """Per group and role: its verdict (leak, growth, stable, ...) and its peaks."""
    judged = (
        verdicts.select("group", "role", "verdict")
        if {"group", "role", "verdict"} <= set(verdicts.columns)
        else pl.DataFrame(schema={"group": pl.String, "role": pl.String, "verdict": pl.String})
    )
    peaks = (
        counts.group_by("group", "role")
        .agg(
            peak=pl.col("n").max(),
            mean=pl.col("n").mean(),
            pods=pl.col("pods").max(),
            busy_peak=pl.col("busy").max(),
            idle_over_300_peak=pl.col("idle_over_300").max(),
        )
        .with_columns(peak_per_pod=(pl.col("peak") / pl.col("pods")).ceil().cast(pl.Int64))
    )
    return (
        peaks.join(judged.with_columns(pl.col("group", "role", "verdict").cast(pl.String)),
                   on=["group", "role"], how="left")
        .select("group", "role", "verdict", *(c for c in peaks.columns if c not in ("group", "role")))
        .sort(["peak", "group", "role"], descending=[True, False, False])
    )  # fmt: skip


def _peak_first(ok: pl.DataFrame) -> pl.DataFrame:
    """Captures by `used`, highest first; ties by time then instance, so the peak is the same
    capture every run."""
    return ok.sort(["used", "ts", "instance"], descending=[True, False, False], nulls_last=True)


def _apps(spec: DeploymentSpec, observed: pl.DataFrame, needs: pl.DataFrame,
          what_if: Mapping[str, int] | None) -> tuple[pl.DataFrame, float]:  # fmt: skip
    """Per app its pools at what-if scale; the total adds the buffer and the peaks of the groups
    no app matches (`needs`: the observed groups without the leaking ones)."""
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
    unmatched = needs.filter(~pl.col("group").is_in([a.match for a in spec.apps]))
    total = float(apps["worst_case"].sum()) + spec.buffer + float(unmatched["peak"].sum())
    return apps, total


def _pool_fit(spec: DeploymentSpec, needs: pl.DataFrame, maxclients: int,
              what_if: Mapping[str, int] | None) -> int | None:  # fmt: skip
    pods = sum(max(a.hpa_max, (what_if or {}).get(a.name, a.replicas)) for a in spec.apps)
    others = float(needs.filter(~pl.col("group").is_in([a.match for a in spec.apps]))["peak"].sum())
    if pods == 0 or maxclients <= 0:
        return None
    return max(int((maxclients * ALERT_SHARE - spec.buffer - others) // pods), 0)


def _warnings(ok: pl.DataFrame, current: int, recommended: int, spec_total: float | None,
              fit: int | None, fit_limit: int) -> tuple[str, ...]:  # fmt: skip
    out = []
    if current and looks_fd_limited(current):
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
            + (
                (f"; a pool of {fit} per pod fits the recommended maxclients {recommended}"
                 if fit_limit == recommended else
                 f"; a pool of {fit} per pod fits maxclients {fit_limit}, what the needs call for (the "
                 f"rest of the recommended {recommended} is room for the leak until it is fixed, not "
                 "for pools)")
                if fit is not None
                else ""
            )
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


def looks_fd_limited(maxclients: int) -> bool:
    """maxclients + the server's reserved descriptors is a usual `ulimit -n`: the server lowered
    maxclients to fit the file-descriptor limit."""
    fds = maxclients + FD_RESERVED
    return fds in (256, 1024, 4096, 8192, 16384, 32768, 65536) or (
        fds & (fds - 1) == 0 and fds >= 256
    )
