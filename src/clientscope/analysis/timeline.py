"""The capture timeline: one row per capture attempt, the one every command, chart, export and
the report read, with the one definition of each server-level concept built on it:

    timeline(ds)       the rows (column names documented on the function)
    limit_reached()    the server was at its limit at a capture
    busiest(tl)        the instance that came closest to its limit
    instances(ds)      the instances, sorted
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from clientscope.analysis._common import Tables
from clientscope.errors import ConfigError

__all__ = [
    "busiest",
    "check_instance",
    "first_at_limit",
    "instances",
    "limit_reached",
    "refused",
    "timeline",
]


def instances(ds: Tables) -> list[str]:
    """The dataset's instances, sorted."""
    names = ds.captures.select(pl.col("instance").unique().sort()).collect()["instance"]
    return [str(n) for n in names.to_list()]


def check_instance(ds: Tables, instance: str) -> None:
    names = instances(ds)
    if names and instance not in names:
        from clientscope.window import DatasetView, window_words

        if isinstance(ds, DatasetView) and instance in instances(ds.whole):  # there, not in the window
            raise ConfigError(
                f"instance {instance!r} has no capture in the window {window_words(ds.start, ds.end)}, which holds "
                f"{', '.join(map(str, names))}; widen the window to see it"
            )
        raise ConfigError(
            f"no instance {instance!r} in this dataset; it has {', '.join(map(str, names))}"
        )


def timeline(ds: Tables, instance: str | None = None) -> pl.DataFrame:
    """One row per capture attempt with the server-level numbers, sorted by instance and time:
    the one timeline every command, chart and the report read.

    `used` = connected_clients + connected_slaves + cluster_connections (what the
    server compares with maxclients; the number of listed clients when there was no
    INFO); `utilization` = used / maxclients (effective, carried over captures that
    lack it); `connected_ratio` is the naive connected_clients / maxclients that
    dashboards show; `has_clients` marks captures that listed clients; `restart` a new
    run_id; `new_conns_per_s` the accept rate since the capture before (same run);
    `new_rejections` the connections refused since then; `rejected_error` our own
    capture was refused (max_clients); `loading` the server was reading its dataset
    (INFO loading:1, or a -LOADING reply); `at_limit` see `limit_reached()`.
    """
    caps = ds.captures
    info = ds.info.select(
        "capture_id", "connected_clients", "connected_slaves", "cluster_connections",
        "blocked_clients", "pubsub_clients", "total_connections_received", "rejected_connections",
        "evicted_clients", "uptime_in_seconds", pl.col("maxclients").alias("info_maxclients"),
        pl.col("run_id").alias("info_run_id"), "client_recent_max_output_buffer",
        (pl.col("loading") == 1).alias("loading"),
    )  # fmt: skip
    if instance is not None:
        check_instance(ds, instance)
        caps = caps.filter(pl.col("instance") == instance)
    frame = (
        caps.select(
            "capture_id",
            "instance",
            "ts",
            "ok",
            "error_kind",
            "run_id",
            "n_clients",
            "maxclients",
            "maxclients_source",
            "timeout",
            "tcp_keepalive",
        )
        .join(info, on="capture_id", how="left")
        .with_columns(
            run_id=pl.coalesce("run_id", "info_run_id"),
            maxclients=pl.coalesce("maxclients", "info_maxclients"),
            maxclients_source=pl.when(
                pl.col("maxclients").is_null() & pl.col("info_maxclients").is_not_null()
            )
            .then(pl.lit("info"))
            .otherwise(pl.col("maxclients_source")),
        )
        .sort("instance", "ts")
        .with_columns(
            pl.col("maxclients", "maxclients_source", "timeout", "tcp_keepalive")
            .forward_fill()
            .backward_fill()
            .over("instance"),
            has_clients=pl.col("ok") & (pl.col("n_clients").fill_null(0) > 0),
        )
        .with_columns(
            used=pl.when(pl.col("connected_clients").is_not_null())
            .then(
                pl.col("connected_clients")
                + pl.col("connected_slaves").fill_null(0)
                + pl.col("cluster_connections").fill_null(0)
            )
            .otherwise(pl.when(pl.col("ok")).then(pl.col("n_clients"))),
        )
        .with_columns(
            utilization=pl.col("used") / pl.col("maxclients"),
            connected_ratio=pl.col("connected_clients") / pl.col("maxclients"),
            rejected_error=(pl.col("error_kind") == "max_clients").fill_null(False),
            loading=(pl.col("loading") | (pl.col("error_kind") == "loading")).fill_null(False),
        )
        .drop("info_run_id", "info_maxclients")
        .collect()
    )
    return _with_rates(frame).with_columns(at_limit=limit_reached())


def _with_rates(frame: pl.DataFrame) -> pl.DataFrame:
    """Add restart (run_id changed), new connections per second and new rejections, from the
    captures that carried the counters (a failed capture is a gap, not a zero)."""
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


def limit_reached() -> pl.Expr:
    """On a timeline row: the server was at its limit — used >= maxclients, new rejected
    connections, or our own capture refused with max_clients. The one definition of "limit
    reached" (forecast, leaks, diagnose, the report's card, timeline and charts)."""
    return ((pl.col("used") >= pl.col("maxclients")).fill_null(False) | refused()).alias("at_limit")


def first_at_limit(tl: pl.DataFrame) -> tuple[datetime | None, bool]:
    """When a server's timeline `tl` first reached its limit (`limit_reached`), and whether it was
    already there at the first capture `tl` holds: then it may have been earlier, before the
    window (the one answer of diagnose's "from ... the server was full" and forecast's note)."""
    hit = tl.filter(pl.col("at_limit"))
    if hit.is_empty():
        return None, False
    first = hit.select(pl.col("ts").min()).item()
    return first, first == tl.select(pl.col("ts").min()).item()


def refused() -> pl.Expr:
    """On a timeline row: connections were refused — new rejected connections, or our own
    capture refused with max_clients (the one definition; the report's rejection runs too)."""
    return (pl.col("new_rejections").fill_null(0) > 0) | pl.col("rejected_error")


def busiest(tl: pl.DataFrame) -> str | None:
    """The instance that came closest to its limit (then the most connections, then by name):
    the one definition of "busiest" (forecast, plan, summary and the report centre on it)."""
    if tl.is_empty():
        return None
    ranked = (
        tl.group_by("instance")
        .agg(pl.col("utilization").max().alias("u"), pl.col("used").max().alias("c"))
        .sort(["u", "c", "instance"], descending=[True, True, False], nulls_last=True)
    )
    return str(ranked.item(0, "instance"))
