"""The model of each server, built once per command or report, that every analysis reads.

Per instance, from one pass over its captures:

    timeline     its capture attempts (`analysis.timeline.timeline`)
    counts       connections per capture per group and role (`group_counts`)
    lifecycles   one row per connection `(run_id, id)`: its group, role, longest idle and idle
                 at the end (`_clients.KEPT`; born / last seen are judged, then dropped)
    groups       each group's trend and verdict (leak, growth, shrinking, stable, excluded:*)
                 over the judged window (`LeakReport`: after warm-up, before the limit)
    forecast     time to maxclients from the decomposition (steady part + drivers)

    model = build_model(ds)
    model.servers           most urgent first (Forecast.urgency)
    model.server()          the busiest one (timeline.busiest), or model.server("cache-a")

`leaks_from`, `forecast` and `diagnose_from` read it, and the report and the CLI build it
once, so a figure shown in two places is the same number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from clientscope.analysis._clients import (
    group_counts,
    kept,
    lifecycles,
    oversized_groups,
    reuse_gaps,
)
from clientscope.analysis._common import (
    DatasetLike,
    Tables,
    as_tables,
    last_known,
    no_data,
    with_clients,
)
from clientscope.analysis.forecast import Forecast, GroupCounts, forecast_from, window_seconds
from clientscope.analysis.leaks import MIN_CAPTURES, LeakReport, empty_report, judge_groups
from clientscope.analysis.timeline import busiest, check_instance, timeline
from clientscope.errors import AnalysisError

__all__ = ["Model", "ServerModel", "build_model"]


@dataclass(frozen=True)
class ServerModel:
    """One server's model: see the module docstring."""

    instance: str
    timeline: pl.DataFrame
    counts: pl.DataFrame
    lifecycles: pl.DataFrame
    groups: LeakReport
    forecast: Forecast | None
    forecast_error: str | None  # why there is no forecast (too few captures, ...)

    def require_forecast(self) -> Forecast:
        """The forecast, or the AnalysisError that says why there is none."""
        if self.forecast is None:
            raise AnalysisError(self.forecast_error or f"no forecast for {self.instance}")
        return self.forecast

    @property
    def leaking(self) -> set[str]:
        return set() if self.groups.groups.is_empty() else set(self.groups.leaking["group"].to_list())

    def reuse_gaps(self) -> np.ndarray:
        """The longest idle stretch after which each normal connection was used again, leaving
        out pools oversized at the limit in force (their idle connections should close anyway):
        what the suggested `timeout` is sized from, the one answer of plan, diagnose and idle."""
        current = last_known(self.timeline, "maxclients")
        oversized = oversized_groups(self.counts, current, set())["group"].to_list()
        return reuse_gaps(self.lifecycles, [str(g) for g in oversized])


@dataclass(frozen=True)
class Model:
    """Every server of a dataset (or of one instance), most urgent first."""

    tables: Tables
    timeline: pl.DataFrame  # every capture attempt of the servers modelled
    servers: tuple[ServerModel, ...]

    @property
    def instances(self) -> tuple[str, ...]:
        return tuple(sorted(s.instance for s in self.servers))

    @property
    def fleet(self) -> bool:
        return len(self.servers) > 1

    def server(self, instance: str | None = None) -> ServerModel:
        """`instance`'s model; without one, the busiest server's."""
        name = instance if instance is not None else busiest(self.timeline)
        for s in self.servers:
            if s.instance == name:
                return s
        raise AnalysisError(f"no instance {name!r} in this model; it has {', '.join(self.instances)}")


def build_model(
    ds: DatasetLike,
    *,
    instance: str | None = None,
    window: str | float | None = None,
    threshold: float = 0.8,
    min_rate_per_hour: float = 10.0,
    alpha: float = 0.01,
    built: pl.DataFrame | None = None,
) -> Model:
    """The model of every server of `ds` (or of `instance`); `window` limits the forecast's fit
    to the last WINDOW of each server (e.g. "1h"); `built` is `timeline(ds, instance)` when the
    caller has it already."""
    tables = as_tables(ds)
    if instance is not None:
        check_instance(tables, instance)
    tl = timeline(tables, instance) if built is None else built
    if not tl["instance"].is_sorted():  # a server's rows must be one run of them
        tl = tl.sort("instance", maintain_order=True)
    if tl.is_empty():
        raise no_data("this analysis")
    if window is not None:
        window_seconds(window)  # a typo is an error before any work
    servers = [
        _server(tables, part, name, window, threshold, min_rate_per_hour, alpha)
        for name, part in _per_instance(tl)
    ]
    servers.sort(key=_urgency)
    return Model(tables=tables, timeline=tl, servers=tuple(servers))


def _per_instance(tl: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """Each instance's rows of the timeline (sorted by instance) as slices of it: a server's
    timeline is a view of the fleet's, not a copy."""
    runs = (
        tl.with_row_index("_row")
        .group_by("instance", maintain_order=True)
        .agg(start=pl.col("_row").min(), rows=pl.len())
    )
    return [(str(name), tl.slice(start, rows)) for name, start, rows in runs.iter_rows()]


def _urgency(s: ServerModel) -> tuple[int, float, str]:
    rank, value = s.forecast.urgency() if s.forecast is not None else (3, 0.0)
    return (rank, value, s.instance)


def _server(tables: Tables, tl: pl.DataFrame, name: str, window: str | float | None,
            threshold: float, rate: float, alpha: float) -> ServerModel:  # fmt: skip
    listed = with_clients(tl)
    counts = group_counts(tables, listed)
    life = lifecycles(tables, name, caps=listed)
    if listed.height >= MIN_CAPTURES:
        groups = judge_groups(tables, listed, name, rate, alpha, counts=counts, life=life)
    else:
        groups = empty_report(listed.height, rate, alpha)
    try:
        found: Forecast | None = forecast_from(
            tl, name, window, threshold, groups=GroupCounts(counts, groups.groups)
        )
        error = None
    except AnalysisError as exc:
        found, error = None, str(exc)
    return ServerModel(name, tl, counts, kept(life), groups, found, error)
