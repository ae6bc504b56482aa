"""Connection leaks: groups whose connection count grows and whose new connections never close.

Per group (client name, or `lib@ip` for unnamed clients) over the captured window:

* trend of its connection count: OLS (slope, R²) and Theil-Sen slope in
  connections/hour, Mann-Kendall test for a monotonic trend — comparing only
  captures of the same server run, and skipping the first minutes after a
  (re)start, so a restart never looks like growth;
* lifecycles from tracking `(run_id, id)` across captures: births in the window,
  deaths, survivors, and how many survivors went idle right after they were
  created (idle close to age).

A *leak* is significant growth that is mostly made of new connections which
never closed and went idle (idle close to their age): at least half of the
growth (Theil-Sen slope x window) must be such connections (survivors x the
idle share of those old enough to tell). So a leak hidden
in a group that also churns active connections is still found. Growth whose new connections are in use (a pool warming up, a scale-out,
load) is reported as `growth`, not a leak. Replicas, pub/sub, blocked clients,
MONITOR and the collector are never judged; their rows say `excluded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from clientscope.analysis._clients import group_counts, lifecycles
from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    Tables,
    as_tables,
    require_captures,
    with_clients,
)
from clientscope.analysis.timeline import timeline
from clientscope.analysis.trend import captures_to_judge, trends

if TYPE_CHECKING:
    from clientscope.analysis.model import Model

MIN_CAPTURES = 3  # a trend needs at least this many captures
WARMUP_AFTER_START_S = 120.0  # captures this soon after a server (re)start are left out
IDLE_AGE_RATIO = 0.75  # a connection "went idle" when idle >= this share of its age ...
IDLE_MIN_AGE_S = 120.0  # ... and it is at least this old (or a sixth of a shorter window, >= 3 s)


@dataclass(frozen=True)
class LeakReport(ResultMixin):
    """Per-group trend and lifecycle numbers with a verdict; `leaking` holds the leaks."""

    groups: pl.DataFrame  # one row per (instance, group, role), sorted: leaks first
    window_start: datetime | None
    window_end: datetime | None
    captures: int  # judged
    min_rate_per_hour: float
    alpha: float
    left_out: tuple[tuple[str, int], ...] = ()  # (why, how many captures) not judged
    # judged though the server was at its limit (fewer than 3 captures came before it): the
    # limit caps the growth, so a leak's rate reads low, or not at all
    judged_at_limit: int = 0

    @property
    def leaking(self) -> pl.DataFrame:
        return self.groups.filter(pl.col("verdict") == "leak")


def leaks(
    ds: DatasetLike,
    *,
    instance: str | None = None,
    min_rate_per_hour: float = 10.0,
    alpha: float = 0.01,
) -> LeakReport:
    """Find leaking client groups, server by server. See the module docstring for the method."""
    from clientscope.analysis.model import build_model

    tables = as_tables(ds)
    require_captures(with_clients(timeline(tables, instance)), "leak detection", minimum=MIN_CAPTURES)
    model = build_model(tables, instance=instance, min_rate_per_hour=min_rate_per_hour, alpha=alpha)
    return leaks_from(model)


def leaks_from(model: Model) -> LeakReport:
    """The leak report of every server of a model (each judged on its own captures)."""
    return merge_reports([s.groups for s in sorted(model.servers, key=lambda s: s.instance)])


def empty_report(
    captures: int, min_rate: float, alpha: float, left_out: tuple[tuple[str, int], ...] = ()
) -> LeakReport:
    """The report of a server with too few captures to judge: no verdict, not "stable"."""
    need = captures_to_judge(alpha, MIN_CAPTURES)
    why = (f"too few to judge: a trend at alpha {alpha:g} needs {need} captures with clients", captures)
    nothing = pl.DataFrame(schema=dict.fromkeys(("instance", "group", "role", "verdict"), pl.String))
    return LeakReport(nothing, None, None, 0, min_rate, alpha,
                      left_out=(*left_out, why) if captures else left_out)  # fmt: skip


def judge_groups(
    tables: Tables,
    ok: pl.DataFrame,
    instance: str | None,
    min_rate: float,
    alpha: float,
    counts: pl.DataFrame | None = None,
    life: pl.DataFrame | None = None,
) -> LeakReport:
    """Leak report over the successful captures `ok`; `counts` / `life` when already computed.

    Left out, and said so in `left_out`: captures in the first WARMUP_AFTER_START_S after a
    (re)start (reconnects look like growth) and captures from the moment the server first
    reached its limit (there the limit caps the growth, so a trend measures the cap)."""
    settled = ok.filter(
        pl.col("uptime_in_seconds").is_null()
        | (pl.col("uptime_in_seconds") >= WARMUP_AFTER_START_S)
    )
    if settled.height < MIN_CAPTURES:
        settled = ok
    warm = ok.height - settled.height
    before = _before_the_limit(settled, captures_to_judge(alpha, MIN_CAPTURES))
    full = settled.height - before.height
    settled = before
    left_out = tuple((why, n) for why, n in (
        (f"within {WARMUP_AFTER_START_S:.0f} s of a server (re)start", warm),
        ("at or after the server first reached maxclients", full),
    ) if n)  # fmt: skip
    if settled.height < captures_to_judge(alpha, MIN_CAPTURES):
        return empty_report(settled.height, min_rate, alpha, left_out)
    ids = settled["capture_id"]
    if counts is None:
        counts = group_counts(tables, settled)
    else:
        counts = counts.filter(pl.col("capture_id").is_in(ids.implode()))
    if life is None:
        life = lifecycles(tables, instance)
    stats = [_trend_stats(counts, settled, inst) for inst in settled["instance"].unique().sort()]
    trend = pl.concat(stats, how="diagonal_relaxed") if stats else _empty_trend()
    cycle = _lifecycle_stats(life, settled)
    groups = _verdicts(trend.join(cycle, on=["instance", "group", "role"], how="left"),
                       min_rate, alpha)  # fmt: skip
    return LeakReport(
        groups=groups,
        window_start=settled["ts"].min(),  # type: ignore[arg-type]
        window_end=settled["ts"].max(),  # type: ignore[arg-type]
        captures=settled.height,
        min_rate_per_hour=min_rate,
        alpha=alpha,
        left_out=left_out,
        judged_at_limit=int(settled["at_limit"].sum()),
    )


def _empty_trend() -> pl.DataFrame:
    return pl.DataFrame(schema={"instance": pl.String, "group": pl.String, "role": pl.String})


def count_matrix(counts: pl.DataFrame, caps: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """Groups x captures matrix of connection counts (0 where a group had none)."""
    keys = counts.select("group", "role").unique().sort("group", "role")
    keys = keys.with_row_index("row")
    col = caps.select("capture_id").with_row_index("col")
    cells = counts.join(keys, on=["group", "role"]).join(col, on="capture_id")
    y = np.zeros((keys.height, col.height))
    y[cells["row"].to_numpy(), cells["col"].to_numpy()] = cells["n"].to_numpy()
    return keys.drop("row"), y


def _trend_stats(counts: pl.DataFrame, ok: pl.DataFrame, inst: str) -> pl.DataFrame:
    caps = ok.filter(pl.col("instance") == inst).sort("ts")
    mine = counts.filter(pl.col("instance") == inst)
    keys, y = count_matrix(mine, caps)
    if keys.is_empty():
        return _empty_trend()
    t = (caps["ts"] - caps["ts"][0]).dt.total_seconds(fractional=True).to_numpy()
    seg = caps["run_id"].fill_null("").rank("dense").to_numpy()
    tr = trends(y, t, seg)
    last_run = seg == seg[-1]
    extra = mine.group_by("group", "role").agg(
        pods=pl.col("pods").max(),
        lib_name=pl.col("lib_name").min(),
        idle_over_600_last=pl.col("idle_over_600").filter(pl.col("capture_id") == caps["capture_id"][-1]).sum(),
    )
    return keys.with_columns(
        instance=pl.lit(inst),
        window_h=pl.lit(float(t[-1] - t[0]) / 3600),
        first=pl.Series(y[:, 0]),
        last=pl.Series(y[:, -1]),
        peak=pl.Series(y.max(axis=1)),
        mean=pl.Series(y.mean(axis=1)),
        last_run_first=pl.Series(y[:, last_run][:, 0]),
        slope_ols_per_h=pl.Series(tr.ols_slope * 3600),
        r2=pl.Series(tr.ols_r2),
        slope_theil_sen_per_h=pl.Series(tr.theil_sen * 3600),
        mk_z=pl.Series(tr.mk_z),
        mk_p=pl.Series(tr.mk_p),
    ).join(extra, on=["group", "role"], how="left")


def idle_min_age(span_s: float) -> float:
    """How old a connection must be before "went idle" can be told, in a window of `span_s`."""
    return min(IDLE_MIN_AGE_S, max(3.0, span_s / 6))


def went_idle(span_s: float, idle: str = "idle", age: str = "age") -> pl.Expr:
    """A connection that went idle soon after it opened (idle >= IDLE_AGE_RATIO of its age, and
    old enough to tell): the leak signature. One rule for `leaks` and `kill-script`."""
    return (pl.col(idle) >= IDLE_AGE_RATIO * pl.col(age)) & (pl.col(age) >= idle_min_age(span_s))


def _lifecycle_stats(life: pl.DataFrame, ok: pl.DataFrame) -> pl.DataFrame:
    """Births, deaths, survivors and how many survivors went idle, per group."""
    span = ok.select((pl.col("ts").max() - pl.col("ts").min()).dt.total_seconds()).item() or 0
    min_age = idle_min_age(span)
    runs = ok.group_by("instance", "run_id").agg(
        run_first=pl.col("ts").min(), run_last=pl.col("ts").max()
    )
    idle_now = went_idle(span, "idle_at_last", "age_at_last")
    frame = life.join(runs, on=["instance", "run_id"], how="inner").with_columns(
        born=pl.col("created_at") > pl.col("run_first"),
        alive=pl.col("last_seen") >= pl.col("run_last"),
    )
    born = pl.col("born")
    survivor = born & pl.col("alive")
    keys = ["instance", "group", "role"]
    stats = frame.group_by(keys).agg(
        births=born.sum(),
        deaths=(born & ~pl.col("alive")).sum(),
        survivors=survivor.sum(),
        survivors_idle=(survivor & idle_now).sum(),
        survivors_old_enough=(survivor & (pl.col("age_at_last") >= min_age)).sum(),
        median_survivor_age_s=pl.col("age_at_last").filter(survivor).median(),
        first_survivor_born=pl.col("created_at").filter(survivor).min(),
        short_lived=(born & (pl.col("sightings") == 1) & (pl.col("age_at_last") <= 2)).sum(),
        connections=pl.len(),
    )
    top = _top_ips(frame.filter(born), keys)
    return stats.join(top, on=keys, how="left").with_columns(
        pl.col("top_ips").fill_null(pl.lit([], dtype=top.schema["top_ips"]))
    )


def _top_ips(born: pl.DataFrame, keys: list[str], limit: int = 3) -> pl.DataFrame:
    """Per group, the source IPs that opened the most connections; equal counts by IP, so the
    list is the same every run (value_counts orders ties as its hash table happens to)."""
    return (
        born.filter(pl.col("ip").is_not_null())
        .group_by(*keys, "ip")
        .agg(opened=pl.len())
        .sort([*keys, "opened", "ip"], descending=[False, False, False, True, False])
        .group_by(keys, maintain_order=True)
        .agg(top_ips=pl.col("ip").head(limit))
    )


def _verdicts(frame: pl.DataFrame, min_rate: float, alpha: float) -> pl.DataFrame:
    if frame.is_empty():
        return frame.with_columns(
            verdict=pl.lit(None, pl.String), confidence=pl.lit(None, pl.Float64)
        )
    births = pl.col("births").fill_null(0)
    retained = (pl.col("survivors").fill_null(0) / births).fill_nan(0.0)
    idle_new = pl.col("survivors_idle").fill_null(0)
    idle_share = (idle_new / pl.col("survivors_old_enough").fill_null(0)).fill_nan(0.0)
    growth = (pl.col("slope_theil_sen_per_h") * pl.col("window_h")).clip(1.0)
    # how much of the growth is new connections that never closed and went idle (the idle share
    # of survivors old enough to tell, applied to all survivors, over the growth of the count)
    explained = (idle_share * pl.col("survivors").fill_null(0) / growth).clip(0.0, 1.0)
    rising = (
        (pl.col("slope_theil_sen_per_h") >= min_rate)
        & (pl.col("slope_ols_per_h") > 0)
        & (pl.col("mk_p") < alpha)
    )
    leak_like = (idle_new >= 3) & (explained >= 0.5)
    falling = (pl.col("slope_theil_sen_per_h") <= -min_rate) & (pl.col("mk_p") < alpha)
    verdict = (
        pl.when(pl.col("role") != "normal")
        .then(pl.lit("excluded:") + pl.col("role"))
        .when(rising & leak_like)
        .then(pl.lit("leak"))
        .when(rising)
        .then(pl.lit("growth"))
        .when(falling)
        .then(pl.lit("shrinking"))
        .otherwise(pl.lit("stable"))
    )
    strength = (pl.col("mk_z").abs() / 5).clip(0, 1)
    confidence = (
        (0.4 * strength + 0.3 * explained + 0.3 * idle_share) * (0.5 + 0.5 * pl.col("r2"))
    ).clip(0, 1)
    return (
        frame.with_columns(
            retained_share=retained,
            survivors_idle_share=idle_share,
            growth_idle_share=explained,
            verdict=verdict,
        )
        .with_columns(
            confidence=pl.when(pl.col("verdict") == "leak")
            .then(confidence)
            .otherwise(pl.when(pl.col("role") == "normal").then(1 - confidence))
        )
        .pipe(_ranked)
    )


def _ranked(groups: pl.DataFrame) -> pl.DataFrame:
    """Leaks first, then growth, shrinking, stable, excluded; fastest growth first in each."""
    order = pl.col("verdict").replace_strict(
        {"leak": 0, "growth": 1, "shrinking": 2, "stable": 3}, default=4, return_dtype=pl.Int8
    )
    return groups.sort(
        [order, pl.col("slope_theil_sen_per_h"), pl.col("instance"), pl.col("group"), pl.col("role")],
        descending=[False, True, False, False, False],
    )


def _before_the_limit(ok: pl.DataFrame, enough: int) -> pl.DataFrame:
    """Per instance, the captures before it first reached maxclients (when there are `enough`,
    as many as a trend needs to be judged; else all, and the report says they ran at the limit):
    at the limit the server caps the growth, so a trend through it measures the cap, not the
    leak (an incident's rate read ~2.5x too low)."""
    full = pl.col("at_limit")  # timeline.limit_reached: full, or refusing connections
    first = ok.filter(full).group_by("instance").agg(pl.col("ts").min().alias("_full"))
    if first.is_empty():
        return ok
    marked = ok.join(first, on="instance", how="left")
    before = pl.col("_full").is_null() | (pl.col("ts") < pl.col("_full"))
    judged = before.sum().over("instance") >= enough
    return marked.filter(before | ~judged).drop("_full")


def merge_reports(reports: list[LeakReport]) -> LeakReport:
    """One report from per-instance ones (each computed as `leaks(ds, instance=...)` would)."""
    if len(reports) == 1:
        return reports[0]
    groups = [r.groups for r in reports if not r.groups.is_empty()]
    starts = [r.window_start for r in reports if r.window_start is not None]
    ends = [r.window_end for r in reports if r.window_end is not None]
    return LeakReport(
        groups=_ranked(pl.concat(groups, how="diagonal_relaxed")) if groups else reports[0].groups,
        window_start=min(starts, default=None),
        window_end=max(ends, default=None),
        captures=sum(r.captures for r in reports),
        min_rate_per_hour=reports[0].min_rate_per_hour,
        alpha=reports[0].alpha,
        left_out=_summed([why for r in reports for why in r.left_out]),
        judged_at_limit=sum(r.judged_at_limit for r in reports),
    )


def _summed(reasons: list[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    totals: dict[str, int] = {}
    for why, n in reasons:
        totals[why] = totals.get(why, 0) + n
    return tuple(totals.items())
