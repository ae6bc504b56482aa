"""The low-cardinality series that charts, the report and `export` are drawn from.

Everything here is Polars: whole columns, lazy scans, aggregation before anything
reaches matplotlib or a file. A 10-million-row `clients` table becomes a few
thousand points (one per capture, or per time bucket) before it is plotted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from clientscope.analysis._common import Tables  # one protocol for the parsed tables
from clientscope.analysis.timeline import refused
from clientscope.schema import TS, UNNAMED

__all__ = [
    "GROUP_COLUMNS",
    "REJECTED",
    "Tables",
    "bucket_every",
    "episodes",
    "group_series",
    "peak_capture",
    "snapshot",
]

GROUP_COLUMNS = {"name": "name", "lib": "lib_name", "ip": "ip", "user": "user", "cmd": "cmd"}
"""Grouping dimension -> `clients` column."""

NO_VALUE = "(none)"
OTHER = "(other)"


def episodes(
    frame: pl.DataFrame, condition: pl.Expr, *, merge_within: timedelta | None = None
) -> pl.DataFrame:
    """Runs of consecutive captures (per instance) where `condition` holds.

    Columns: instance, start (previous capture's ts, when the run began after one),
    first (first capture in the run), last, captures. Runs less than `merge_within`
    apart are joined into one.
    """
    if frame.is_empty():
        return pl.DataFrame(
            schema={
                "instance": pl.String(),
                "start": TS,
                "first": TS,
                "last": TS,
                "captures": pl.UInt32(),
            }
        )
    flagged = frame.sort("instance", "ts").with_columns(
        condition.fill_null(False).alias("_on"),
        pl.col("ts").shift().over("instance").alias("_prev"),
    )
    run = (pl.col("_on") != pl.col("_on").shift()).fill_null(True).cum_sum().over("instance")
    return (
        flagged.with_columns(run.alias("_run"))
        .filter("_on")
        .group_by("instance", "_run", maintain_order=True)
        .agg(
            pl.coalesce(pl.col("_prev").first(), pl.col("ts").first()).alias("start"),
            pl.col("ts").first().alias("first"),
            pl.col("ts").last().alias("last"),
            pl.len().alias("captures"),
        )
        .drop("_run")
        .pipe(_merge_runs, merge_within)
    )


def _merge_runs(runs: pl.DataFrame, within: timedelta | None) -> pl.DataFrame:
    if within is None or runs.height < 2:
        return runs
    new = ((pl.col("first") - pl.col("last").shift().over("instance")) > within).fill_null(True)
    return (
        runs.with_columns(new.cum_sum().over("instance").alias("_group"))
        .group_by("instance", "_group", maintain_order=True)
        .agg(
            pl.col("start").first(),
            pl.col("first").first(),
            pl.col("last").last(),
            pl.col("captures").sum(),
        )
        .drop("_group")
    )


REJECTED = refused()
"""A capture that saw new rejected connections, or was itself refused (max_clients)."""


def peak_capture(series: pl.DataFrame, instance: str | None) -> dict[str, object] | None:
    """The capture with the most connected clients (first one on ties) of an instance."""
    rows = series.filter(pl.col("used").is_not_null())
    if instance is not None:
        rows = rows.filter(pl.col("instance") == instance)
    if rows.is_empty():
        return None
    return rows.sort(["used", "ts"], descending=[True, False]).row(0, named=True)


def bucket_every(start: datetime, end: datetime, points: int) -> timedelta | None:
    """A round bucket width that keeps a time range under `points` buckets (None: no need)."""
    span = (end - start).total_seconds()
    if points <= 0 or span <= 0:
        return None
    for seconds in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400):
        if span / seconds <= points:
            return timedelta(seconds=seconds)
    return timedelta(days=max(1, int(span / 86400 / points) + 1))


def group_series(
    ds: Tables, by: str = "name", *, instance: str | None = None, top: int = 6, points: int = 600
) -> pl.DataFrame:
    """Clients per group per capture (long form: ts, group, clients), top groups + "(other)".

    Top groups are those with the highest peak count. When there are more than
    `points` captures, values are averaged into time buckets.
    """
    column = _group_column(by)
    clients = ds.clients
    if instance is not None:
        clients = clients.filter(pl.col("instance") == instance)
    counts = (
        clients.group_by("ts", pl.col(column).fill_null(UNNAMED if by == "name" else NO_VALUE)
                         .cast(pl.String).alias("group"))
        .agg(pl.len().cast(pl.Int64).alias("clients"))
        .collect(engine="streaming")
    )
    if counts.is_empty():
        return pl.DataFrame(schema={"ts": TS, "group": pl.String(), "clients": pl.Float64()})
    ranked = counts.group_by("group").agg(pl.col("clients").max().alias("peak"))
    keep = ranked.sort(["peak", "group"], descending=[True, False]).head(top)["group"]
    lumped = (
        counts.with_columns(
            pl.when(pl.col("group").is_in(keep.implode()))
            .then("group")
            .otherwise(pl.lit(OTHER))
            .alias("group")
        )
        .group_by("ts", "group")
        .agg(pl.col("clients").sum())
    )
    filled = _fill_missing_groups(lumped)
    return _bucketed(filled, points)


def _group_column(by: str) -> str:
    if by not in GROUP_COLUMNS:
        from clientscope.errors import ConfigError

        raise ConfigError(
            f"cannot group clients by {by!r}; choose one of: {', '.join(GROUP_COLUMNS)}"
        )
    return GROUP_COLUMNS[by]


def _fill_missing_groups(frame: pl.DataFrame) -> pl.DataFrame:
    """Every (ts, group) pair present, 0 where a group had no client in a capture."""
    grid = frame.select("ts").unique().join(frame.select("group").unique(), how="cross")
    return (
        grid.join(frame, on=["ts", "group"], how="left")
        .with_columns(pl.col("clients").fill_null(0).cast(pl.Float64))
        .sort("ts", "group")
    )


def _bucketed(frame: pl.DataFrame, points: int) -> pl.DataFrame:
    n_ts = frame["ts"].n_unique()
    if n_ts <= points:
        return frame
    every = bucket_every(frame["ts"].min(), frame["ts"].max(), points)  # type: ignore[arg-type]
    if every is None:
        return frame
    return (
        frame.with_columns(pl.col("ts").dt.truncate(every))
        .group_by("ts", "group")
        .agg(pl.col("clients").mean())
        .sort("ts", "group")
    )


def snapshot(ds: Tables, capture_id: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """The client rows of one capture (selected columns only)."""
    return ds.clients.filter(pl.col("capture_id") == capture_id).select(columns).collect()
