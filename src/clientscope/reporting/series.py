"""The low-cardinality series that charts, the report and `export` are drawn from.

Everything here is Polars: whole columns, lazy scans, aggregation before anything
reaches matplotlib or a file. A 10-million-row `clients` table becomes a few
thousand points (one per capture, or per time bucket) before it is plotted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from clientscope.analysis._common import Tables  # one protocol for the parsed tables
from clientscope.schema import TS

__all__ = [
    "GROUP_COLUMNS",
    "REJECTED",
    "Tables",
    "bucket_every",
    "capture_series",
    "episodes",
    "group_series",
    "idle_series",
    "peak_capture",
    "primary_instance",
    "snapshot",
]

GROUP_COLUMNS = {"name": "name", "lib": "lib_name", "ip": "ip", "user": "user", "cmd": "cmd"}
"""Grouping dimension -> `clients` column."""

NO_VALUE = "(none)"
OTHER = "(other)"


def capture_series(ds: Tables) -> pl.DataFrame:
    """One row per capture attempt, with the server-wide numbers and their rates.

    Columns: instance, ts, capture_id, ok, error_kind, connected, maxclients, blocked,
    utilization, run_id, restart, new_conns_per_s, new_rejections, timeout, rejected_error,
    loading (INFO loading:1 — the server is reading its dataset and answers most commands
    with -LOADING).
    `connected` is what the server counts against maxclients: INFO connected_clients +
    connected_slaves + cluster_connections (else the CLIENT LIST line count);
    `maxclients` the effective limit the capture recorded (CONFIG, else INFO), carried
    over failed captures from the nearest one that knew it.
    """
    caps = ds.captures.select(
        "capture_id", "instance", "ts", "ok", "error_kind", "n_clients",
        pl.col("run_id").alias("cap_run_id"), pl.col("maxclients").alias("cap_maxclients"), "timeout",
    )  # fmt: skip
    info = ds.info.select(
        "capture_id", "connected_clients", "connected_slaves", "cluster_connections",
        "blocked_clients", "total_connections_received",
        "rejected_connections", pl.col("maxclients").alias("info_maxclients"),
        pl.col("run_id").alias("info_run_id"), "loading",
    )  # fmt: skip
    frame = (
        caps.join(info, on="capture_id", how="left")
        .with_columns(
            pl.when(pl.col("connected_clients").is_not_null())
            .then(
                pl.sum_horizontal(
                    "connected_clients",
                    pl.col("connected_slaves").fill_null(0),
                    pl.col("cluster_connections").fill_null(0),
                )
            )
            .otherwise(pl.when(pl.col("ok")).then(pl.col("n_clients")))
            .alias("connected"),
            pl.coalesce("cap_maxclients", "info_maxclients").alias("maxclients_seen"),
            pl.coalesce("cap_run_id", "info_run_id").alias("run_id"),
            pl.col("blocked_clients").alias("blocked"),
        )
        .sort("instance", "ts")
        .with_columns(  # a failed capture keeps the limit in force around it
            pl.col("maxclients_seen")
            .forward_fill()
            .backward_fill()
            .over("instance")
            .alias("maxclients")
        )
        .collect()
    )
    return _with_rates(frame).select(
        "instance", "ts", "capture_id", "ok", "error_kind", "connected", "maxclients", "blocked",
        (pl.col("connected") / pl.col("maxclients")).alias("utilization"),
        "run_id", "restart", "new_conns_per_s", "new_rejections", "timeout",
        (pl.col("error_kind") == "max_clients").fill_null(False).alias("rejected_error"),
        ((pl.col("loading") == 1) | (pl.col("error_kind") == "loading")).fill_null(False).alias("loading"),
    )  # fmt: skip


def _with_rates(frame: pl.DataFrame) -> pl.DataFrame:
    """Add restart (run_id changed), new connections per second and new rejections."""
    counted = frame.filter(pl.col("total_connections_received").is_not_null())
    prev_run = pl.col("run_id").shift().over("instance")
    restart = (prev_run.is_not_null() & (pl.col("run_id") != prev_run)).fill_null(False)
    d_tcr = pl.col("total_connections_received").diff().over("instance")
    d_rej = pl.col("rejected_connections").diff().over("instance")
    dt = pl.col("ts").diff().over("instance").dt.total_microseconds() / 1e6
    rates = counted.with_columns(restart.alias("restart")).select(
        "capture_id",
        "restart",
        pl.when(~pl.col("restart") & (d_tcr >= 0) & (dt > 0)).then(d_tcr / dt).alias("new_conns_per_s"),
        pl.when(pl.col("restart")).then(pl.col("rejected_connections"))
        .when(d_rej >= 0).then(d_rej).alias("new_rejections"),
    )  # fmt: skip
    return frame.join(rates, on="capture_id", how="left").with_columns(
        pl.col("restart").fill_null(False)
    )


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


REJECTED = (pl.col("new_rejections").fill_null(0) > 0) | pl.col("rejected_error")
"""A capture that saw new rejected connections, or was itself refused (max_clients)."""


def primary_instance(series: pl.DataFrame) -> str | None:
    """The instance that came closest to its limit (the one the report centres on)."""
    if series.is_empty():
        return None
    ranked = (
        series.group_by("instance")
        .agg(pl.col("utilization").max().alias("u"), pl.col("connected").max().alias("c"))
        .sort(["u", "c", "instance"], descending=[True, True, False], nulls_last=True)
    )
    return str(ranked.item(0, "instance"))


def peak_capture(series: pl.DataFrame, instance: str | None) -> dict[str, object] | None:
    """The capture with the most connected clients (first one on ties) of an instance."""
    rows = series.filter(pl.col("connected").is_not_null())
    if instance is not None:
        rows = rows.filter(pl.col("instance") == instance)
    if rows.is_empty():
        return None
    return rows.sort(["connected", "ts"], descending=[True, False]).row(0, named=True)


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
        clients.group_by("ts", pl.col(column).fill_null(NO_VALUE).cast(pl.String).alias("group"))
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


def idle_series(
    ds: Tables, *, instance: str | None = None, thresholds: tuple[int, ...] = (300, 600)
) -> pl.DataFrame:
    """Per capture: how many clients were idle longer than each threshold (idle_gt_<s>)."""
    clients = ds.clients
    if instance is not None:
        clients = clients.filter(pl.col("instance") == instance)
    return (
        clients.group_by("instance", "ts")
        .agg([(pl.col("idle") > t).sum().cast(pl.Int64).alias(f"idle_gt_{t}") for t in thresholds])
        .sort("instance", "ts")
        .collect(engine="streaming")
    )
