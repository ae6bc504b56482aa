"""The two passes over the `clients` table that most analyses share.

`group_counts`: per capture, per group and role, how many clients and how idle.
`lifecycles`: per connection `(instance, run_id, id)`, when it was first and last
seen, when it was created and last active. Both aggregate on the raw columns
first and derive `group` / `role` on the (much smaller) result, so 10 million
client rows take a couple of seconds.
"""

from __future__ import annotations

import polars as pl

from clientscope.analysis._common import Tables, blocking_command, group_key
from clientscope.schema import COLLECTOR_CLIENT_NAME

_ROLE_CODE = {0: "normal", 1: "collector", 2: "replica", 3: "master", 4: "monitor", 5: "pubsub",
              6: "blocked"}  # fmt: skip


def _role_code() -> pl.Expr:
    subs = pl.col("sub").fill_null(0) + pl.col("psub").fill_null(0) + pl.col("ssub").fill_null(0)
    return (
        pl.when(pl.col("name") == COLLECTOR_CLIENT_NAME)
        .then(1)
        .when(pl.col("is_replica").fill_null(False))
        .then(2)
        .when(pl.col("is_master").fill_null(False))
        .then(3)
        .when(pl.col("is_monitor").fill_null(False))
        .then(4)
        .when(pl.col("is_pubsub").fill_null(False) | (subs > 0))
        .then(5)
        .when(pl.col("is_blocked").fill_null(False) | blocking_command())
        .then(6)
        .otherwise(0)
        .cast(pl.Int8)
        .alias("role_code")
    )


def _decode(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(
        group_key(),
        pl.col("role_code").replace_strict(_ROLE_CODE, return_dtype=pl.String).alias("role"),
    ).drop("role_code")


_KEYS = ("name", "lib_name", "ip", "addr_if_no_ip")


def _source_columns() -> list[pl.Expr]:
    # `addr` only matters when `ip` is missing (odd formats); keep the key small otherwise
    return [
        pl.col("name"),
        pl.col("lib_name"),
        pl.col("ip"),
        pl.when(pl.col("ip").is_null()).then(pl.col("addr")).alias("addr_if_no_ip"),
    ]


def group_counts(ds: Tables, capture_ids: list[str] | None = None) -> pl.DataFrame:
    """Per (instance, capture_id, group, role): clients, idle counts, buffers, young connections."""
    clients = ds.clients
    if capture_ids is not None:
        clients = clients.filter(pl.col("capture_id").is_in(capture_ids))
    per_source = (
        clients.select(
            "instance",
            "capture_id",
            *_source_columns(),
            _role_code(),
            "idle",
            "age",
            "omem",
            "tot_mem",
            "is_blocked",
        )
        .group_by("instance", "capture_id", *_KEYS, "role_code")
        .agg(
            n=pl.len(),
            idle_over_300=(pl.col("idle") > 300).sum(),
            idle_over_600=(pl.col("idle") > 600).sum(),
            busy=(pl.col("idle") <= 10).sum(),
            young=(pl.col("age") <= 2).sum(),
            idle_max=pl.col("idle").max(),
            idle_sum=pl.col("idle").sum(),
            omem_max=pl.col("omem").max(),
            omem_sum=pl.col("omem").sum(),
            tot_mem_sum=pl.col("tot_mem").sum(),
            flagged_blocked=pl.col("is_blocked").fill_null(False).sum(),
        )
        .rename({"addr_if_no_ip": "addr"})
    )
    return (
        _decode(per_source)
        .group_by("instance", "capture_id", "group", "role")
        .agg(
            pl.col(
                "n",
                "idle_over_300",
                "idle_over_600",
                "busy",
                "young",
                "idle_sum",
                "omem_sum",
                "tot_mem_sum",
                "flagged_blocked",
            ).sum(),
            pl.col("idle_max", "omem_max").max(),
            pods=pl.col("ip").n_unique(),
            lib_name=pl.col("lib_name").drop_nulls().first(),
        )
        .collect(engine="streaming")
    )


def lifecycles(ds: Tables, instance: str | None = None) -> pl.DataFrame:
    """One row per connection `(instance, run_id, id)` seen in any capture.

    first_seen / last_seen: capture times; created_at = ts - age; last_active = the
    latest ts - idle; idle_at_last / age_at_last: at its last sighting.
    """
    clients = ds.clients
    if instance is not None:
        clients = clients.filter(pl.col("instance") == instance)
    per_conn = (
        clients.select(
            "instance",
            "run_id",
            "id",
            "ts",
            "created_at",
            "last_active",
            "idle",
            *_source_columns(),
            _role_code(),
        )
        .filter(pl.col("id").is_not_null())
        .group_by("instance", "run_id", "id")
        .agg(
            first_seen=pl.col("ts").min(),
            last_seen=pl.col("ts").max(),
            sightings=pl.len(),
            created_at=pl.col("created_at").min(),
            last_active=pl.col("last_active").max(),
            max_idle=pl.col("idle").max(),
            name=pl.col("name").first(),
            lib_name=pl.col("lib_name").first(),
            ip=pl.col("ip").first(),
            addr=pl.col("addr_if_no_ip").first(),
            role_code=pl.col("role_code").max(),
        )
    )
    return (
        _decode(per_conn)
        .with_columns(
            idle_at_last=(pl.col("last_seen") - pl.col("last_active")).dt.total_seconds(),
            age_at_last=(pl.col("last_seen") - pl.col("created_at")).dt.total_seconds(),
        )
        .collect(engine="streaming")
    )


REUSE_MARGIN_S = 5


def reused() -> pl.Expr:
    """On a lifecycle row: the connection was used again after its longest idle stretch
    (so `max_idle` is a gap a live client really had; a few seconds of rounding ignored)."""
    return pl.col("idle_at_last") + REUSE_MARGIN_S < pl.col("max_idle")
