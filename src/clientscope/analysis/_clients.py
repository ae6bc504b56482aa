"""The two passes over the `clients` table that most analyses share.

`group_counts`: per capture, per group and role, how many clients and how idle.
`lifecycles`: per connection `(instance, run_id, id)`, when it was first and last
seen, when it was created and last active. Both aggregate on the raw columns
first and derive `group` / `role` on the (much smaller) result, so 10 million
client rows take a couple of seconds.

Both read the clients in time slices of about SLICE_ROWS rows (`time_slices`): the
streaming engine's group-by holds partial states that grow with the rows a pass reads
(one server's week, 20M rows: 1.0 GiB peak in one pass), so a pass per slice holds one
slice's, and the slices' results are combined (counts are per capture already).
"""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl

from clientscope.analysis._common import Tables, blocking_command, group_key, role

_FLAGS = ("is_replica", "is_master", "is_monitor", "is_pubsub", "is_blocked")
_SAME_EVERY_SIGHTING = ("name", "lib_name", "ip", "addr")
# client rows per streaming pass. Measured on one server's week (20M rows, 2,000 clients every
# 60 s, 85k connections): `lifecycles` in one pass peaks at 1,085 MiB and 5.0 CPU-s; in slices
# of 4M / 2M / 1M rows at 760 / 595 / 431 MiB and 5.5 / 5.6 / 5.8 CPU-s
SLICE_ROWS = 1_000_000
_COUNT_KEYS = ("instance", "capture_id", "group", "role")


def time_slices(caps: pl.DataFrame, rows: int = SLICE_ROWS) -> list[pl.Expr]:
    """Filters on `ts` that cut the captures `caps` (ts, and n_clients when known) into
    consecutive slices of about `rows` client rows. The first slice is open below and the last
    open above, so every client row falls in exactly one slice whatever `caps` holds."""
    if caps.is_empty():
        return [pl.lit(True)]
    n = pl.col("n_clients").fill_null(0) if "n_clients" in caps.columns else pl.lit(1)
    per = caps.group_by("ts").agg(n=n.sum().cast(pl.Int64)).sort("ts")
    before = per["n"].cum_sum() - per["n"]  # rows before each capture's
    starts = per.filter((before // max(rows, 1)).diff().fill_null(0) > 0)["ts"].to_list()
    if not starts:
        return [pl.lit(True)]
    ts = pl.col("ts")
    cuts = [ts < starts[0]]
    cuts += [ts.is_between(lo, hi, closed="left") for lo, hi in itertools.pairwise(starts)]
    return [*cuts, ts >= starts[-1]]


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


def group_counts(ds: Tables, caps: pl.DataFrame, slice_rows: int = SLICE_ROWS) -> pl.DataFrame:
    """Per (instance, capture_id, group, role) of the captures `caps` (instance, ts, capture_id,
    and n_clients for the slices): clients, idle over 300 / 600 s, busy (idle <= 10 s), max
    idle, max omem, source pods."""
    frames = []
    for inst, part in caps.partition_by("instance", as_dict=True).items():
        slices = [part.filter(cut) for cut in time_slices(part, slice_rows)]
        counted = [_group_counts_one(ds, str(inst[0]), s) for s in slices if not s.is_empty()]
        frames.append(pl.concat(counted).sort(_COUNT_KEYS) if len(counted) > 1 else counted[0])
    if not frames:
        return _empty_counts()
    return pl.concat(frames)


def _group_counts_one(ds: Tables, instance: str, caps: pl.DataFrame) -> pl.DataFrame:
    keys = ("ts", "name", "lib_name", "ip", "cmd", *_FLAGS)
    caps = caps.select("ts", "capture_id")
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
        .group_by(_COUNT_KEYS)
        .agg(
            pl.col("n", "idle_over_300", "idle_over_600", "busy").sum(),
            pl.col("idle_max", "omem_max").max(),
            pods=pl.col("ip").n_unique(),
            lib_name=pl.col("lib_name").min(),  # not first(): group_by order varies per run
        )
        .sort(_COUNT_KEYS)
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


_CONNECTION = ("instance", "run_id", "id")
# per connection: (over one slice's rows, over the slices' results; slices never share a
# capture time). Deterministic and streamable (plain first() depends on the order rows reach
# the group): name / lib / address are the same on every sighting, min() skips a null before
# SETNAME; the command is the one at the first sighting (min_by streams; a time-prefixed
# string min did too, at twice the time of the whole pass)
_ROLLUP: dict[str, tuple[pl.Expr, pl.Expr]] = {
    "first_seen": (pl.col("ts").min(), pl.col("first_seen").min()),
    "last_seen": (pl.col("ts").max(), pl.col("last_seen").max()),
    "sightings": (pl.len(), pl.col("sightings").sum().cast(pl.UInt32)),
    "created_at": (pl.col("created_at").min(), pl.col("created_at").min()),
    "last_active": (pl.col("last_active").max(), pl.col("last_active").max()),
    "max_idle": (pl.col("idle").max(), pl.col("max_idle").max()),
    **{col: (pl.col(col).min(), pl.col(col).min()) for col in _SAME_EVERY_SIGHTING},
    "cmd": (_blocking_cmd().min_by("ts"), pl.col("cmd").min_by("first_seen")),
    **{flag: (pl.col(flag).any(), pl.col(flag).any()) for flag in _FLAGS},
}


def lifecycles(
    ds: Tables,
    instance: str | None = None,
    caps: pl.DataFrame | None = None,
    slice_rows: int = SLICE_ROWS,
) -> pl.DataFrame:
    """One row per connection `(instance, run_id, id)` seen in any capture.

    first_seen / last_seen: capture times; created_at = ts - age; last_active = the
    latest ts - idle; idle_at_last / age_at_last: at its last sighting. `caps` (ts,
    n_clients) sizes the time slices; without it they come from the captures table.
    """
    clients = ds.clients.filter(pl.col("id").is_not_null())
    if caps is None:
        listed = ds.captures
        if instance is not None:
            listed = listed.filter(pl.col("instance") == instance)
        caps = listed.select("ts", "n_clients").collect()
    if instance is not None:
        clients = clients.filter(pl.col("instance") == instance)
    # the slices' results wait and are combined in one go once they hold as many rows as the
    # combined table (or a slice): a combine per slice cost 1 CPU-s of 6 on a server's week
    done: pl.DataFrame | None = None
    waiting: list[pl.DataFrame] = []
    for cut in time_slices(caps, slice_rows):
        part = clients.filter(cut).group_by(_CONNECTION).agg(
            **{name: one for name, (one, _) in _ROLLUP.items()}
        )
        waiting.append(part.collect(engine="streaming"))
        if sum(w.height for w in waiting) >= max(slice_rows, 0 if done is None else done.height):
            done, waiting = _combined(done, waiting), []
    return (
        _combined(done, waiting)
        .with_columns(_source())
        .sort(_CONNECTION)
        .with_columns(
            group_key(pl.col("ip").fill_null("?")),
            _role_after(),
            idle_at_last=(pl.col("last_seen") - pl.col("last_active")).dt.total_seconds(),
            age_at_last=(pl.col("last_seen") - pl.col("created_at")).dt.total_seconds(),
        )
        .drop("cmd", "addr", *_FLAGS)
    )


def _combined(done: pl.DataFrame | None, waiting: list[pl.DataFrame]) -> pl.DataFrame:
    """The per-connection rows of every slice read so far, one per connection."""
    parts = waiting if done is None else [done, *waiting]
    if len(parts) == 1:
        return parts[0]
    return pl.concat(parts).group_by(_CONNECTION).agg(
        **{name: across for name, (_, across) in _ROLLUP.items()}
    )


# what a model keeps of each connection once its groups are judged: `reuse_gaps`, `idle` and
# the report read no more, and a fleet-week has millions of connections
KEPT = ("instance", "group", "role", "max_idle", "idle_at_last")


def kept(life: pl.DataFrame) -> pl.DataFrame:
    """`life` reduced to the columns KEPT, its names as categoricals (about 30 bytes a
    connection instead of 150)."""
    return life.select(KEPT).with_columns(pl.col("instance", "group", "role").cast(pl.Categorical))


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
