"""`forecast`: when will connections reach maxclients (and the alert threshold)?

From the decomposition of the server's count into its client groups (the model in
`analysis.model`): the *steady part* — every group that does not keep growing, at its
peak in the current server run, so a cycle counts at its peak and a warm-up or a
scale-out that settled is not extrapolated — plus the groups that keep growing (leaks,
and growth still rising in its last third) at their own Theil-Sen rates. Time to
maxclients is when that sum reaches the effective limit; the 95 % interval comes from
the drivers' rate uncertainty. The forecast names the groups that drive it.

Beside it, as the naive comparison, what Prometheus `predict_linear` over the same
window would say (a least-squares line through `connected_clients` only), and the
least-squares / Theil-Sen line through the whole count. A capture set without client
rows (INFO-only imports) has no groups: the whole-count line is the forecast then
(`method = "total"`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    as_tables,
    human_duration,
    require_captures,
)
from clientscope.analysis.timeline import busiest, first_at_limit
from clientscope.analysis.trend import captures_to_judge, linear_fit, theil_sen_mann_kendall
from clientscope.config import Where, duration
from clientscope.errors import AnalysisError
from clientscope.vocabulary import ForecastVerdict, GroupVerdict

Z95 = 1.96
MIN_CAPTURES = 3  # a line through fewer points has no spread to judge it by
SIGNIFICANCE = 0.01  # Mann-Kendall p under which the whole count rises (or falls)
TAIL_MIN_CAPTURES = 8  # captures in the recent part that must still be rising for a forecast
TAIL_SHARE = 0.25  # the recent slope must keep this share of the whole-window slope


@dataclass(frozen=True)
class Driver:
    """A group that keeps growing, and so drives the server toward maxclients."""

    group: str
    verdict: GroupVerdict  # leak | growth (in use, still rising in the last third of the window)
    rate_per_hour: float  # Theil-Sen
    rate_se_per_hour: float  # standard error (from the least-squares fit of the same counts)
    connections_now: int
    since: datetime | None = None  # its oldest connection still open: when the growth began


@dataclass(frozen=True)
class Forecast(ResultMixin):
    """Projected exhaustion for one instance."""

    instance: str
    now: datetime
    window_s: float
    samples: int
    used_now: float
    maxclients: int
    threshold: float  # share of maxclients the alert fires at
    slope_per_hour: float  # what drives the count to the limit: the drivers' summed rates
    r2: float  # of the least-squares line through the whole count (descriptive)
    theil_sen_per_hour: float  # Theil-Sen slope of the whole count (descriptive)
    eta_maxclients: datetime | None  # steady part + drivers reach maxclients
    eta_maxclients_low: datetime | None  # 95 % interval of that time (from the drivers' rates)
    eta_maxclients_high: datetime | None
    eta_threshold: datetime | None
    eta_theil_sen: datetime | None  # the whole count's Theil-Sen line reaches maxclients (naive)
    prometheus_eta_maxclients: datetime | None  # predict_linear(connected_clients[window]) crossing
    prometheus_predicted_1h: float  # predict_linear(redis_connected_clients[window], 3600)
    exhausted_at: datetime | None  # first capture at the limit (see timeline.limit_reached)
    exhausted_from_start: bool  # at the limit at the first capture read: maybe reached before it
    too_few_to_tell: bool  # "stable" only because the trend test cannot judge so few captures
    verdict: ForecastVerdict
    note: str = ""  # plain words on what the verdict means (why there is no time to maxclients)
    method: str = "groups"  # groups: steady part + drivers; total: a line through the whole count
    steady_peak: float | None = None  # the count without the drivers, at its peak this run
    drivers: tuple[Driver, ...] = ()
    total_slope_per_hour: float = 0.0  # least-squares slope of the whole count (descriptive)

    @property
    def time_to_maxclients(self) -> timedelta | None:
        """From the last capture to the forecast crossing (None: not growing toward it)."""
        if self.verdict != "will_exhaust" or self.eta_maxclients is None:
            return None
        return max(self.eta_maxclients - self.now, timedelta(0))

    @property
    def threshold_passed(self) -> bool:
        """The count is already at or above the alert threshold (threshold x maxclients)."""
        return bool(self.maxclients) and self.used_now >= self.threshold * self.maxclients

    @property
    def course(self) -> tuple[float, float]:
        """The forecast's line as (level now, connections per hour): the steady part at its peak
        plus the drivers' connections now, rising at the drivers' summed rates — the line whose
        crossing is `eta_maxclients`. Without groups (INFO-only captures) it runs from the last
        count at the whole count's slope, when that grows."""
        if self.method == "groups" and self.steady_peak is not None:
            start = self.steady_peak + sum(d.connections_now for d in self.drivers)
            return start, sum(d.rate_per_hour for d in self.drivers)
        growing = self.verdict in ("will_exhaust", "growing", "exhausted")
        return self.used_now, self.slope_per_hour if growing else 0.0

    def level_at(self, ahead: timedelta) -> float:
        """Where the course puts the count `ahead` of the last capture."""
        start, per_hour = self.course
        return start + max(per_hour, 0.0) * ahead.total_seconds() / 3600

    def time_to(self, level: float) -> timedelta | None:
        """How long until the course reaches `level` (0: already there; None: nothing grows
        toward it). `time_to(maxclients)` is `time_to_maxclients` for a server that will exhaust."""
        start, per_hour = self.course
        crossing = _crossing(start, per_hour / 3600, level, self.now)
        return None if crossing is None else max(crossing - self.now, timedelta(0))

    def urgency(self) -> tuple[int, float]:
        """Sort key, most urgent first: at the limit (earliest first), then by time to it, then
        the fastest growing. The one ranking of servers (forecast, diagnose, the report)."""
        if self.verdict == "exhausted":
            return (0, self.exhausted_at.timestamp() if self.exhausted_at else 0.0)
        if self.verdict == "will_exhaust" and self.eta_maxclients is not None:
            return (1, self.eta_maxclients.timestamp())
        return (2, -self.slope_per_hour)


def forecast(
    ds: DatasetLike,
    *,
    instance: str | None = None,
    window: str | float | None = None,
    threshold: float = 0.8,
) -> Forecast:
    """Time until maxclients and until `threshold` x maxclients, from the last `window` (default
    all captures of the current server run; e.g. "1h", "30m").

    One server: `instance`, else the busiest one. For a fleet, call it per instance (the
    `clientscope forecast` command does, most urgent first)."""
    from clientscope.analysis.model import build_model

    model = build_model(as_tables(ds), instance=instance, window=window, threshold=threshold)
    return model.server(instance).require_forecast()


def forecast_from(
    tl: pl.DataFrame,
    instance: str | None = None,
    window: str | float | None = None,
    threshold: float = 0.8,
    *,
    groups: GroupCounts | None = None,
) -> Forecast:
    """`forecast` on a timeline already built; `groups` (the server's per-capture group counts
    and verdicts, from `analysis.model`) makes it the decomposed forecast."""
    inst = instance or busiest(tl) or ""
    tl = tl.filter(pl.col("instance") == inst)
    ok = require_captures(tl, "forecast", minimum=MIN_CAPTURES).filter(pl.col("used").is_not_null())
    require_captures(ok, "forecast (captures that count connections)", minimum=MIN_CAPTURES)
    exhausted, from_start = first_at_limit(tl)
    last = ok.row(-1, named=True)
    now = last["ts"]
    ok = ok.filter(pl.col("run_id") == last["run_id"]) if last["run_id"] else ok
    _enough_since_restart(tl, ok, last)
    if window is not None:
        span = window_seconds(window)
        ok = ok.filter(pl.col("ts") >= now - timedelta(seconds=span))
        if ok.height < MIN_CAPTURES:
            raise AnalysisError(
                f"cannot forecast: only {ok.height} capture(s) with a connection count in the last "
                f"{window}; the trend needs {MIN_CAPTURES}. Widen --window."
            )
    total = _project(inst, ok, now, int(last["maxclients"] or 0), threshold, exhausted, from_start)
    if groups is None or groups.counts.is_empty():
        return replace(total, method="total")
    return _decomposed(total, ok, groups)


@dataclass(frozen=True)
class GroupCounts:
    """What the decomposition needs of one server: connections per capture per group and role
    (`capture_id, group, role, n`) and each group's verdict and rates (LeakReport.groups)."""

    counts: pl.DataFrame
    verdicts: pl.DataFrame


def _decomposed(total: Forecast, ok: pl.DataFrame, groups: GroupCounts) -> Forecast:
    """Steady part at its peak + the drivers at their own rates (see the module docstring)."""
    listed = ok.filter(pl.col("has_clients")).select("capture_id", "ts", "used")
    if listed.height < MIN_CAPTURES:
        return replace(total, method="total")
    drivers = _drivers(groups, listed)
    names = [d.group for d in drivers]
    driven = (
        groups.counts.filter(pl.col("group").is_in(names) & (pl.col("role") == "normal"))
        .group_by("capture_id")
        .agg(pl.col("n").sum().alias("driven"))
    )
    steady = listed.join(driven, on="capture_id", how="left").select(
        "ts", (pl.col("used") - pl.col("driven").fill_null(0)).alias("steady")
    )
    steady_peak = float(steady["steady"].max() or 0.0)  # type: ignore[arg-type]
    start = steady_peak + sum(d.connections_now for d in drivers)
    rate = sum(d.rate_per_hour for d in drivers)
    spread = Z95 * math.sqrt(sum(d.rate_se_per_hour**2 for d in drivers))
    limit, now = total.maxclients, total.now

    def reach(level: float, per_hour: float) -> datetime | None:
        if not limit or per_hour <= 0:
            return None
        return _crossing(start, per_hour / 3600, level, now)

    eta = reach(limit, rate)
    verdict = _decomposed_verdict(total, drivers, eta)
    return replace(
        total, method="groups", steady_peak=steady_peak, drivers=tuple(drivers), slope_per_hour=rate,
        eta_maxclients=eta, eta_maxclients_low=reach(limit, rate + spread) if eta else None,
        eta_maxclients_high=reach(limit, rate - spread) if eta else None,
        eta_threshold=reach(total.threshold * limit, rate), verdict=verdict,
        note=_decomposed_note(verdict, total, drivers, steady_peak, eta),
    )  # fmt: skip


def _drivers(groups: GroupCounts, listed: pl.DataFrame) -> list[Driver]:
    """Leaks, and growth whose count still rises in the last third of the window."""
    v = groups.verdicts
    if v.is_empty():
        return []
    rising = v.filter(pl.col("verdict").is_in(["leak", "growth"]) & (pl.col("role") == "normal"))
    last_capture = listed["capture_id"][-1]
    out = []
    for row in rising.iter_rows(named=True):
        series = (
            groups.counts.filter((pl.col("group") == row["group"]) & (pl.col("role") == "normal"))
            .join(listed, on="capture_id", how="right")
            .sort("ts")
        )
        n = series["n"].fill_null(0).cast(pl.Float64).to_numpy()
        t = (series["ts"] - series["ts"][0]).dt.total_seconds(fractional=True).to_numpy()
        per_hour = float(row["slope_theil_sen_per_h"])
        if row["verdict"] == "growth" and (_cycles(n) or not _tail_grows(t, n, per_hour / 3600)):
            continue  # a cycle, or a warm-up or scale-out that settled: not extrapolated
        now = series.filter(pl.col("capture_id") == last_capture)["n"].fill_null(0)
        out.append(Driver(
            group=str(row["group"]), verdict=GroupVerdict(row["verdict"]), rate_per_hour=per_hour,
            rate_se_per_hour=_rate_se(per_hour, float(row["r2"] or 0.0), n.size),
            connections_now=int(now[0]) if now.len() else 0, since=row.get("first_survivor_born"),
        ))  # fmt: skip
    return sorted(out, key=lambda d: -d.rate_per_hour)


CYCLE_DRAWDOWN = 0.5  # a group that fell this share of its range from a high point cycles


def _cycles(n: np.ndarray) -> bool:
    """Did the count fall back by at least CYCLE_DRAWDOWN of its range after a high point? A
    load cycle does; a leak never does (its connections do not close), nor does growth in use
    that only wobbles. A cycle counts at its peak, in the steady part."""
    if n.size < 3:
        return False
    span = float(n.max() - n.min())
    drawdown = float((np.maximum.accumulate(n) - n).max())
    return span >= 3 and drawdown >= CYCLE_DRAWDOWN * span


def _rate_se(rate: float, r2: float, n: int) -> float:
    """Standard error of a slope from its fit's R² and sample size (t = sqrt(R²(n-2)/(1-R²)))."""
    if n <= 2 or r2 <= 0:
        return abs(rate)
    if r2 >= 1:
        return 0.0
    return abs(rate) * math.sqrt((1 - r2) / (r2 * (n - 2)))


def _decomposed_verdict(total: Forecast, drivers: list[Driver], eta: datetime | None) -> ForecastVerdict:
    if total.exhausted_at is not None:
        return ForecastVerdict.EXHAUSTED
    if drivers and sum(d.rate_per_hour for d in drivers) > 0:
        return ForecastVerdict.WILL_EXHAUST if eta is not None else ForecastVerdict.GROWING
    if total.verdict in ("will_exhaust", "growing", "plateaued"):
        return ForecastVerdict.PLATEAUED  # the count grew, but no group keeps growing
    return total.verdict


def _decomposed_note(verdict: str, total: Forecast, drivers: list[Driver], steady: float,
                     eta: datetime | None) -> str:  # fmt: skip
    named = ", ".join(f"{d.group} {d.rate_per_hour:+.0f}/h" for d in drivers[:4])
    named += f" and {len(drivers) - 4} more" if len(drivers) > 4 else ""
    if verdict == "exhausted":
        return _note(verdict, eta, total.exhausted_at, total.now, total.samples,
                     total.exhausted_from_start)
    if verdict == "will_exhaust" and eta is not None:
        return (
            f"{named} on top of a steady {steady:.0f}: maxclients {total.maxclients} is reached in "
            f"{human_duration(eta - total.now)}"
        )
    if verdict == "growing":
        return f"{named} grow, but maxclients is unknown: no time to it"
    if verdict == "plateaued":
        return (
            "the count grew earlier in the window, but no client group keeps growing (a pool "
            "warming up, a scale-out that settled, a cycle): no time to maxclients"
        )
    return _note(verdict, eta, total.exhausted_at, total.now, total.samples,
                     total.exhausted_from_start)


MAX_WINDOW_S = 366 * 86400.0


def window_seconds(window: str | float) -> float:
    """The `--window` of a forecast in seconds (checked: a duration up to a year)."""
    return duration(window, Where.option("--window"), high=MAX_WINDOW_S)


def _enough_since_restart(tl: pl.DataFrame, ok: pl.DataFrame, last: dict[str, Any]) -> None:
    """Say plainly why there is nothing to fit when the current server run has too few captures
    (the fit never spans a restart: connection counts start over)."""
    if ok.height >= MIN_CAPTURES:
        return
    if tl["run_id"].drop_nulls().n_unique() > 1:
        since = ok.select(pl.col("ts").min()).item()
        raise AnalysisError(
            f"cannot forecast yet: too few captures since the restart. The server restarted "
            f"(run_id {str(last['run_id'])[:12]}...) and only {ok.height} capture(s) from "
            f"{since:%Y-%m-%d %H:%M:%S} UTC on count connections; the trend needs {MIN_CAPTURES}. "
            "Counts start over at a restart, so earlier captures do not count. Collect a few more "
            "with `clientscope collect --count N`."
        )
    require_captures(ok, "forecast", minimum=MIN_CAPTURES)


def _project(inst: str, ok: pl.DataFrame, now: datetime, maxclients: int, threshold: float,
             exhausted: datetime | None, from_start: bool = False) -> Forecast:  # fmt: skip
    t = (ok["ts"] - now).dt.total_seconds(fractional=True).to_numpy()
    used = ok["used"].cast(pl.Float64).to_numpy()
    a, b, se_b, sigma = linear_fit(t, used)
    ss_tot = float(((used - used.mean()) ** 2).sum())
    r2 = 1 - (sigma**2 * max(t.size - 2, 1)) / ss_tot if ss_tot > 0 else 0.0
    theil, _, _, p = theil_sen_mann_kendall(used[None, :], t, np.zeros(t.size))
    # predict_linear sees only the samples Prometheus has: a capture without INFO is a gap (NaN,
    # which linear_fit leaves out), not a value carried over from the capture before
    conn = ok["connected_clients"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    pa, pb, _, _ = linear_fit(t, conn)
    eta = _crossing(a, b, maxclients, now)
    low, high = _interval(a, b, se_b, sigma, t, maxclients, now)
    verdict = _verdict(exhausted, eta, b, float(theil[0]), float(p[0]))
    if verdict in ("will_exhaust", "growing") and not _tail_grows(t, used, float(theil[0])):
        verdict = ForecastVerdict.PLATEAUED
    return Forecast(
        instance=inst, now=now, window_s=float(-t[0]), samples=t.size, used_now=float(used[-1]),
        maxclients=maxclients, threshold=threshold, slope_per_hour=b * 3600, r2=max(r2, 0.0),
        total_slope_per_hour=b * 3600,
        theil_sen_per_hour=float(theil[0]) * 3600, eta_maxclients=eta,
        eta_maxclients_low=low, eta_maxclients_high=high,
        eta_threshold=_crossing(a, b, threshold * maxclients, now),
        eta_theil_sen=_crossing(float(np.median(used - theil[0] * t)), float(theil[0]), maxclients, now),
        prometheus_eta_maxclients=_crossing(pa, pb, maxclients, now),
        prometheus_predicted_1h=pa + pb * 3600, exhausted_at=exhausted, verdict=verdict,
        exhausted_from_start=from_start, too_few_to_tell=_too_few(verdict, t.size),
        note=_note(verdict, eta, exhausted, now, t.size, from_start),
    )  # fmt: skip


def _crossing(a: float, b: float, level: float, now: datetime) -> datetime | None:
    """When a + b*t reaches `level` (t seconds from now); now if already there; None if never."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(level)):
        return None
    if a >= level:
        return now
    if b <= 0 or level <= 0:
        return None
    seconds = (level - a) / b
    return now + timedelta(seconds=min(seconds, 3650 * 86400.0))


def _interval(a: float, b: float, se_b: float, sigma: float, t: np.ndarray, level: float,
              now: datetime) -> tuple[datetime | None, datetime | None]:  # fmt: skip
    """Earliest / latest time the 95% prediction band of the line reaches `level`."""
    finite = all(math.isfinite(v) for v in (a, b, se_b, sigma, level))
    if not finite or b <= 0 or level <= 0:
        return None, None
    horizon = np.linspace(0, max((level - a) / b * 3, 3600.0), 4000)
    n, tm = t.size, float(t.mean())
    sxx = float(((t - tm) ** 2).sum()) or 1.0
    half = Z95 * sigma * np.sqrt(1 + 1 / n + (horizon - tm) ** 2 / sxx)
    mid = a + b * horizon
    upper, lower = np.flatnonzero(mid + half >= level), np.flatnonzero(mid - half >= level)
    early = now + timedelta(seconds=float(horizon[upper[0]])) if upper.size else None
    late = now + timedelta(seconds=float(horizon[lower[0]])) if lower.size else None
    return early, late


def _tail_grows(t: np.ndarray, used: np.ndarray, slope: float) -> bool:
    """Is the count still moving in the last third of the window? It is not when that part has
    no significant trend and a slope under TAIL_SHARE of the whole window's. A pool that warmed up, or a scale-out that settled, grew earlier and is
    flat now: projecting that old slope forward would announce an exhaustion that is not coming.
    A slow leak under churn noise moves in the tail too, so it stays a forecast."""
    n = max(t.size // 3, TAIL_MIN_CAPTURES)
    if t.size < 2 * n:
        return True  # too short to split: keep the whole-window verdict
    theil, _, _, p = theil_sen_mann_kendall(used[None, -n:], t[-n:], np.zeros(n))
    flat = p[0] > 0.05 and theil[0] < TAIL_SHARE * slope  # no trend either way, and slow
    return not flat


def _verdict(exhausted: datetime | None, eta: datetime | None, slope: float, theil: float,
             p: float) -> ForecastVerdict:  # fmt: skip
    """Growing or falling only when the OLS line, the Theil-Sen slope (the median pairwise
    slope, which a few outliers such as the reconnect burst after a restart cannot move) and
    Mann-Kendall agree."""
    if exhausted is not None:
        return ForecastVerdict.EXHAUSTED
    if p < SIGNIFICANCE and slope > 0 and theil > 0:
        return ForecastVerdict.WILL_EXHAUST if eta is not None else ForecastVerdict.GROWING
    if p < SIGNIFICANCE and slope < 0 and theil < 0:
        return ForecastVerdict.FALLING
    return ForecastVerdict.STABLE


def _too_few(verdict: str, samples: int) -> bool:
    """"stable" only because the trend test cannot judge so few captures (`captures_to_judge`)."""
    return verdict == "stable" and samples < captures_to_judge(SIGNIFICANCE, MIN_CAPTURES)


def _note(verdict: str, eta: datetime | None, exhausted: datetime | None, now: datetime,
          samples: int, from_start: bool = False) -> str:  # fmt: skip
    if verdict == "exhausted" and from_start:
        return (f"maxclients was already reached at the first capture read, {exhausted:%Y-%m-%d %H:%M:%S} "
                "UTC (maybe earlier: widen --since to see when)")  # fmt: skip
    if verdict == "exhausted":
        return f"maxclients was already reached at {exhausted:%Y-%m-%d %H:%M:%S} UTC"
    if verdict == "will_exhaust" and eta is not None:
        return f"at this rate maxclients is reached in {human_duration(eta - now)}"
    if verdict == "growing":
        return "growing, but the trend line never reaches maxclients"
    if verdict == "plateaued":
        return (
            "grew earlier in the window but is flat in its last third (a pool warming up or a "
            "scale-out settling): no time to maxclients"
        )
    if verdict == "falling":
        return "not growing (falling): no time to maxclients"
    if _too_few(verdict, samples):  # the test could not have found a trend: not "not growing"
        return (f"too few captures to tell a trend ({samples}; a trend at p < {SIGNIFICANCE:g} needs "
                f"{captures_to_judge(SIGNIFICANCE, MIN_CAPTURES)}): no time to maxclients yet. "
                "Collect longer.")  # fmt: skip
    return "not growing (no significant trend): no time to maxclients"
