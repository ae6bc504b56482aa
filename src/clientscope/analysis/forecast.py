"""`forecast`: when will connections reach maxclients (and the alert threshold)?

A least-squares line through the server's *used* connections (clients + replicas +
cluster links) over the window, with a 95% prediction interval for the crossing
time, next to a Theil-Sen line and to what Prometheus `predict_linear` over the
same window would say (it regresses `connected_clients` only, against
maxclients, so it reads late when replicas hold slots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    as_tables,
    human_duration,
    parse_duration,
    require_captures,
)
from clientscope.analysis.timeline import timeline
from clientscope.analysis.trend import linear_fit, theil_sen_mann_kendall
from clientscope.errors import AnalysisError

Z95 = 1.96
MIN_CAPTURES = 3  # a line through fewer points has no spread to judge it by
TAIL_MIN_CAPTURES = 8  # captures in the recent part that must still be rising for a forecast
TAIL_SHARE = 0.25  # the recent slope must keep this share of the whole-window slope


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
    slope_per_hour: float  # OLS, used connections / hour
    r2: float
    theil_sen_per_hour: float
    eta_maxclients: datetime | None  # OLS line reaches maxclients
    eta_maxclients_low: datetime | None  # 95% prediction interval of that time
    eta_maxclients_high: datetime | None
    eta_threshold: datetime | None
    eta_theil_sen: datetime | None
    prometheus_eta_maxclients: datetime | None  # predict_linear(connected_clients[window]) crossing
    prometheus_predicted_1h: float  # predict_linear(redis_connected_clients[window], 3600)
    exhausted_at: (
        datetime | None
    )  # first capture at maxclients, rejected connection or max_clients error
    verdict: str  # exhausted | will_exhaust | growing | plateaued | stable | falling
    note: str = ""  # plain words on what the verdict means (why there is no time to maxclients)


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
    return forecast_from(timeline(as_tables(ds), instance), instance, window, threshold)


def forecast_from(
    tl: pl.DataFrame,
    instance: str | None = None,
    window: str | float | None = None,
    threshold: float = 0.8,
) -> Forecast:
    """`forecast` on a timeline already built (`_common.timeline`), for analyses that have one."""
    inst = instance or _busiest(tl)
    tl = tl.filter(pl.col("instance") == inst)
    ok = require_captures(tl, "forecast", minimum=MIN_CAPTURES).filter(pl.col("used").is_not_null())
    require_captures(ok, "forecast (captures that count connections)", minimum=MIN_CAPTURES)
    exhausted = _exhausted_at(tl)
    last = ok.row(-1, named=True)
    now = last["ts"]
    ok = ok.filter(pl.col("run_id") == last["run_id"]) if last["run_id"] else ok
    _enough_since_restart(tl, ok, last)
    if window is not None:
        span = parse_duration(window, "window")
        ok = ok.filter(pl.col("ts") >= now - timedelta(seconds=span))
        if ok.height < MIN_CAPTURES:
            raise AnalysisError(
                f"cannot forecast: only {ok.height} capture(s) with a connection count in the last "
                f"{window}; the trend needs {MIN_CAPTURES}. Widen --window."
            )
    return _project(inst, ok, now, int(last["maxclients"] or 0), threshold, exhausted)


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


def _busiest(tl: pl.DataFrame) -> str:
    ranked = (
        tl.group_by("instance")
        .agg(pl.col("utilization").max())
        .sort(["utilization", "instance"], descending=[True, False], nulls_last=True)
    )
    if ranked.is_empty():
        require_captures(tl, "forecast")
    return str(ranked["instance"][0])


def _exhausted_at(tl: pl.DataFrame) -> datetime | None:
    hit = tl.filter(
        (pl.col("used") >= pl.col("maxclients"))
        | (pl.col("error_kind") == "max_clients")
        | (pl.col("rejected_connections").diff().over("run_id") > 0)
    )
    return hit.select(pl.col("ts").min()).item() if not hit.is_empty() else None


def _project(inst: str, ok: pl.DataFrame, now: datetime, maxclients: int, threshold: float,
             exhausted: datetime | None) -> Forecast:  # fmt: skip
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
        verdict = "plateaued"
    return Forecast(
        instance=inst, now=now, window_s=float(-t[0]), samples=t.size, used_now=float(used[-1]),
        maxclients=maxclients, threshold=threshold, slope_per_hour=b * 3600, r2=max(r2, 0.0),
        theil_sen_per_hour=float(theil[0]) * 3600, eta_maxclients=eta,
        eta_maxclients_low=low, eta_maxclients_high=high,
        eta_threshold=_crossing(a, b, threshold * maxclients, now),
        eta_theil_sen=_crossing(float(np.median(used - theil[0] * t)), float(theil[0]), maxclients, now),
        prometheus_eta_maxclients=_crossing(pa, pb, maxclients, now),
        prometheus_predicted_1h=pa + pb * 3600, exhausted_at=exhausted, verdict=verdict,
        note=_note(verdict, eta, exhausted, now),
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
             p: float) -> str:  # fmt: skip
    """Growing or falling only when the OLS line, the Theil-Sen slope (the median pairwise
    slope, which a few outliers such as the reconnect burst after a restart cannot move) and
    Mann-Kendall agree."""
    if exhausted is not None:
        return "exhausted"
    if p < 0.01 and slope > 0 and theil > 0:
        return "will_exhaust" if eta is not None else "growing"
    if p < 0.01 and slope < 0 and theil < 0:
        return "falling"
    return "stable"


def _note(verdict: str, eta: datetime | None, exhausted: datetime | None, now: datetime) -> str:
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
    return "not growing (no significant trend): no time to maxclients"
