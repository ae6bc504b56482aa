"""The two passes over the `clients` table that most analyses share.

`group_counts`: per capture, per group and role, how many clients and how idle.
`lifecycles`: per connection `(instance, run_id, id)`, when it was first and last
seen, when it was created and last active. Both aggregate on the raw columns
first and derive `group` / `role` on the (much smaller) result, so 10 million
client rows take a couple of seconds.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from clientscope.analysis._common import Tables, blocking_command, group_key, role

_FLAGS = ("is_replica", "is_master", "is_monitor", "is_pubsub", "is_blocked")
_SAME_EVERY_SIGHTING = ("name", "lib_name", "ip", "addr")


def _role_after() -> pl.Expr:
    """Role from columns kept as aggregation keys (name, cmd, flag booleans): computed on the
    aggregated rows, not per client row, which keeps the 10M-row passes cheap."""
    return role(subscription_counts=False)


def _blocking_cmd() -> pl.Expr:
    """`cmd` when it is a blocking command, else null: all the role needs of it, and a key
    with a handful of values instead of every command a pool runs."""
    return pl.when(blocking_command()).then(pl.col("cmd")).alias("cmd")


def _source() -> pl.Expr:
    # `addr` only matters when `ip` is missing (odd formats)
    return pl.when(pl.col("ip").is_null()).then(pl.col("addr")).otherwise(pl.col("ip")).alias("ip")


def group_counts(ds: Tables, caps: pl.DataFrame) -> pl.DataFrame:
    """Per (instance, capture_id, group, role) of the captures `caps` (instance, ts, capture_id):
    clients, idle over 300 / 600 s, busy (idle <= 10 s), max idle, max omem, source pods."""
    frames = []
    for inst, part in (
        caps.select("instance", "ts", "capture_id").partition_by("instance", as_dict=True).items()
    ):
        frames.append(_group_counts_one(ds, str(inst[0]), part))
    if not frames:
        return _empty_counts()
    return pl.concat(frames)


def _group_counts_one(ds: Tables, instance: str, caps: pl.DataFrame) -> pl.DataFrame:
    keys = ("ts", "name", "lib_name", "ip", "cmd", *_FLAGS)
    clients = ds.clients.filter(pl.col("instance") == instance)
    lo, hi = caps.select(lo=pl.col("ts").min(), hi=pl.col("ts").max()).row(0)
    clients = clients.filter(pl.col("ts").is_between(lo, hi))
    if caps.height < 50:
        clients = clients.filter(pl.col("ts").is_in(caps["ts"].implode()))
    raw = (
        clients.select(*keys[:3], _source(), _blocking_cmd(), *_FLAGS, "idle", "omem")
        .group_by(keys)
        .agg(
            n=pl.len(),
            idle_over_300=(pl.col("idle") > 300).sum(),
            idle_over_600=(pl.col("idle") > 600).sum(),
            busy=(pl.col("idle") <= 10).sum(),
            idle_max=pl.col("idle").max(),
            omem_max=pl.col("omem").max(),
        )
        .collect(engine="streaming")
    )
    return (
        raw.join(caps, on="ts")
        .with_columns(
            group_key(pl.col("ip").fill_null("?")), _role_after(), instance=pl.lit(instance)
        )
        .group_by("instance", "capture_id", "group", "role")
        .agg(
            pl.col("n", "idle_over_300", "idle_over_600", "busy").sum(),
            pl.col("idle_max", "omem_max").max(),
            pods=pl.col("ip").n_unique(),
            lib_name=pl.col("lib_name").min(),  # not first(): group_by order varies per run
        )
        .sort("instance", "capture_id", "group", "role")
    )


def _empty_counts() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "instance": pl.String, "capture_id": pl.String, "group": pl.String, "role": pl.String,
            "n": pl.UInt32, "idle_over_300": pl.UInt32, "idle_over_600": pl.UInt32,
            "busy": pl.UInt32, "idle_max": pl.Int64, "omem_max": pl.Int64, "pods": pl.UInt32,
            "lib_name": pl.String,
        }
    )  # fmt: skip


def lifecycles(ds: Tables, instance: str | None = None) -> pl.DataFrame:
    """One row per connection `(instance, run_id, id)` seen in any capture.

    first_seen / last_seen: capture times; created_at = ts - age; last_active = the
    latest ts - idle; idle_at_last / age_at_last: at its last sighting.
    """
    clients = ds.clients
    if instance is not None:
        clients = clients.filter(pl.col("instance") == instance)
    per_conn = (
        clients.filter(pl.col("id").is_not_null())
        .group_by("instance", "run_id", "id")
        .agg(
            first_seen=pl.col("ts").min(),
            last_seen=pl.col("ts").max(),
            sightings=pl.len(),
            created_at=pl.col("created_at").min(),
            last_active=pl.col("last_active").max(),
            max_idle=pl.col("idle").max(),
            # deterministic and streamable (plain first() depends on the order rows reach the
            # group): name / lib / address are the same on every sighting, min() skips a null
            # before SETNAME; the command is the one at the first sighting (min_by streams; a
            # time-prefixed string min did too, at twice the time of the whole pass)
            **{col: pl.col(col).min() for col in _SAME_EVERY_SIGHTING},
            cmd=_blocking_cmd().min_by("ts"),
            **{flag: pl.col(flag).any() for flag in _FLAGS},
        )
        .collect(engine="streaming")
        .with_columns(_source())
    )
    return (
        per_conn.sort("instance", "run_id", "id")
        .with_columns(
            group_key(pl.col("ip").fill_null("?")),
            _role_after(),
            idle_at_last=(pl.col("last_seen") - pl.col("last_active")).dt.total_seconds(),
            age_at_last=(pl.col("last_seen") - pl.col("created_at")).dt.total_seconds(),
        )
        .drop("cmd", "addr", *_FLAGS)
    )


REUSE_MARGIN_S = 5


def reused() -> pl.Expr:
    """On a lifecycle row: the connection was used again after its longest idle stretch
    (so `max_idle` is a gap a live client really had; a few seconds of rounding ignored)."""
    return pl.col("idle_at_last") + REUSE_MARGIN_S < pl.col("max_idle")


def oversized_groups(counts: pl.DataFrame, maxclients: int, leaking: set[str]) -> pl.DataFrame:
    """Normal groups holding >= 25% of maxclients while mostly (>= 50%) idle over 5 minutes
    (leaking groups left out): pools sized far above what their clients use."""
    if not maxclients or counts.is_empty():
        return pl.DataFrame(schema={"instance": pl.String, "group": pl.String})
    return (
        counts.filter(pl.col("role") == "normal")
        .group_by("instance", "group")
        .agg(
            peak=pl.col("n").max(),
            pods=pl.col("pods").max(),
            idle_share=pl.col("idle_over_300").sum() / pl.col("n").sum(),
            busy_peak=pl.col("busy").max(),
        )
        .filter(
            (pl.col("peak") >= 0.25 * maxclients)
            & (pl.col("idle_share") >= 0.5)
            & ~pl.col("group").is_in(sorted(leaking))
        )
        .sort("instance", "group")
    )


def reuse_gaps(life: pl.DataFrame, skip_groups: list[str]) -> np.ndarray:
    """Longest idle stretch after which each normal connection was used again, leaving out
    groups whose idle connections should be closed anyway (oversized pools)."""
    gaps = life.filter(
        (pl.col("role") == "normal") & reused() & ~pl.col("group").is_in(skip_groups)
    )["max_idle"]
    return np.asarray(gaps.to_numpy(), dtype=float)
