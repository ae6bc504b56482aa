"""`summary`: the runbook's first look at one capture per instance (latest, or at a chosen time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import polars as pl

from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    Tables,
    as_tables,
    no_data,
    pick_captures,
    snapshot_clients,
)
from clientscope.analysis.groups import DIMENSIONS
from clientscope.analysis.timeline import timeline

if TYPE_CHECKING:
    from clientscope.analysis.model import Model

TOP_DIMENSIONS = {dim: DIMENSIONS[dim] for dim in ("ip", "name", "lib", "user", "cmd")}


@dataclass(frozen=True)
class Summary(ResultMixin):
    """Clients vs maxclients, top sources and idle / blocked counts at one capture per instance."""

    snapshot: pl.DataFrame  # one row per instance
    tops: dict[
        str, pl.DataFrame
    ]  # dimension -> instance, value, clients, share, share_of_maxclients
    timeline: pl.DataFrame  # one row per capture attempt: used vs maxclients
    captures: int
    failed_captures: int
    first: datetime | None
    last: datetime | None


def summary(
    ds: DatasetLike,
    *,
    at: datetime | str | None = None,
    instance: str | None = None,
    limit: int = 10,
) -> Summary:
    """The first look: per instance, at the latest capture (or the last one at or before `at`)."""
    tables = as_tables(ds)
    return _summary(tables, timeline(tables, instance), at, limit)


def summary_from(model: Model, *, at: datetime | str | None = None, limit: int = 10) -> Summary:
    """`summary` on a model already built (its timeline is not built again)."""
    return _summary(model.tables, model.timeline, at, limit)


def _summary(tables: Tables, tl: pl.DataFrame, at: datetime | str | None, limit: int) -> Summary:
    if tl.is_empty():
        raise no_data("summary")
    picked = pick_captures(tl, at)
    rows = (
        snapshot_clients(tables, picked["capture_id"].to_list())
        .select(
            "instance",
            "idle",
            "role",
            "is_blocked",
            *[e.alias(k) for k, e in TOP_DIMENSIONS.items()],
        )
        .collect()
    )
    per = rows.group_by("instance").agg(
        clients_listed=pl.len(),
        idle_over_300=(pl.col("idle") > 300).sum(),
        idle_over_600=(pl.col("idle") > 600).sum(),
        idle_over_300_normal=((pl.col("idle") > 300) & (pl.col("role") == "normal")).sum(),
        idle_over_600_normal=((pl.col("idle") > 600) & (pl.col("role") == "normal")).sum(),
        blocked_listed=(pl.col("role") == "blocked").sum(),
        pubsub_listed=(pl.col("role") == "pubsub").sum(),
    )
    snapshot = picked.select(
        "instance", "capture_id", "ts", "run_id", "connected_clients", "connected_slaves",
        "cluster_connections", "used", "maxclients", "maxclients_source", "utilization",
        "connected_ratio", "blocked_clients", "pubsub_clients", "rejected_connections",
        "timeout", "tcp_keepalive", "loading",
    ).join(per, on="instance", how="left")  # fmt: skip
    maxclients = picked.select("instance", "maxclients")
    tops = {dim: _top(rows, dim, maxclients, limit) for dim in TOP_DIMENSIONS}
    return Summary(
        snapshot=snapshot,
        tops=tops,
        timeline=tl.select(
            "instance",
            "ts",
            "ok",
            "error_kind",
            "connected_clients",
            "used",
            "maxclients",
            "utilization",
            "blocked_clients",
            "rejected_connections",
        ),
        captures=tl.height,
        failed_captures=int((~tl["ok"]).sum()),
        first=tl.select(pl.col("ts").min()).item(),
        last=tl.select(pl.col("ts").max()).item(),
    )


def _top(rows: pl.DataFrame, dim: str, maxclients: pl.DataFrame, limit: int) -> pl.DataFrame:
    return (
        rows.group_by("instance", dim)
        .agg(clients=pl.len(), idle_over_300=(pl.col("idle") > 300).sum())
        .join(maxclients, on="instance", how="left")
        .with_columns(
            share=pl.col("clients") / pl.col("clients").sum().over("instance"),
            share_of_maxclients=pl.col("clients") / pl.col("maxclients"),
        )
        .sort(["instance", "clients", dim], descending=[False, True, False])
        .group_by("instance", maintain_order=True)
        .head(limit)
        .rename({dim: "value"})
        .drop("maxclients")
    )
