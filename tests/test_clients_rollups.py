"""The two streaming passes over `clients` (`analysis._clients`): per-capture group counts and
per-connection lifecycles give what the plain in-memory definitions give."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from clientscope.analysis._clients import group_counts, lifecycles, time_slices
from clientscope.analysis._common import group_key, role
from clientscope.analysis.timeline import timeline
from clientscope.simulation import simulate_tables


@dataclass(frozen=True)
class MemoryTables:
    captures: pl.LazyFrame
    clients: pl.LazyFrame
    info: pl.LazyFrame


def tables(clients: pl.DataFrame | None = None) -> MemoryTables:
    """A small `blocking` scenario (BLPOP consumers beside normal pools); `clients` replaces its
    client rows."""
    _, batches = simulate_tables("blocking", seed=3, captures=12, clients=40, interval=15)
    caps, rows, info = (pl.concat([b[n] for b in batches]) for n in ("captures", "clients", "info"))
    return MemoryTables(caps.lazy(), (rows if clients is None else clients).lazy(), info.lazy())


def first_command_changed(rows: pl.DataFrame, first: str, later: str) -> pl.DataFrame:
    """Rows where one normal connection's command is `first` at its first sighting and `later`
    after it."""
    conn = rows.filter(pl.col("name") == "api-pool").sort("ts").row(0, named=True)
    mine = (pl.col("run_id") == conn["run_id"]) & (pl.col("id") == conn["id"])
    at_first = pl.col("ts") == pl.col("ts").filter(mine).min()
    return rows.with_columns(
        cmd=pl.when(mine & at_first).then(pl.lit(first)).when(mine).then(pl.lit(later))
        .otherwise(pl.col("cmd"))
    )  # fmt: skip


def role_of_first(life: pl.DataFrame, rows: pl.DataFrame) -> str:
    conn = rows.filter(pl.col("name") == "api-pool").sort("ts").row(0, named=True)
    return str(life.filter((pl.col("run_id") == conn["run_id"]) & (pl.col("id") == conn["id"]))["role"].item())


@pytest.mark.parametrize("slice_rows", [10**9, 40])
def test_lifecycle_role_comes_from_the_command_at_the_first_sighting(slice_rows: int) -> None:
    rows = tables().clients.collect()
    blocked_first = first_command_changed(rows, "blpop", "get")
    life = lifecycles(tables(blocked_first), slice_rows=slice_rows)
    assert role_of_first(life, blocked_first) == "blocked"
    blocked_later = first_command_changed(rows, "get", "blpop")
    life = lifecycles(tables(blocked_later), slice_rows=slice_rows)
    assert role_of_first(life, blocked_later) == "normal"


def test_time_slices_put_every_row_in_one_slice_of_about_the_rows_asked() -> None:
    ds = tables()
    caps = timeline(ds)
    rows = ds.clients.collect()
    per_capture = int(caps["n_clients"].max())  # type: ignore[arg-type]
    cuts = time_slices(caps, 3 * per_capture)
    sizes = [rows.filter(cut).height for cut in cuts]
    assert sum(sizes) == rows.height  # none lost, none twice
    # a slice starts where the rows before it pass a multiple of the size asked, so it holds
    # at most that size plus one capture
    assert all(0 < size <= 4 * per_capture for size in sizes), sizes
    assert len(cuts) >= rows.height // (4 * per_capture)
    assert len(time_slices(caps, 10**9)) == 1


# a pass over all the rows at once, and passes over slices of 40 rows (one capture each) or
# 100 rows (several): the slices' results combine to the same table
SLICES = pytest.mark.parametrize("slice_rows", [10**9, 100, 40])


@SLICES
def test_lifecycles_match_the_in_memory_definition(slice_rows: int) -> None:
    ds = tables()
    rows = ds.clients.collect()
    expected = (
        rows.sort("ts")
        .group_by("instance", "run_id", "id", maintain_order=True)
        .agg(
            first_seen=pl.col("ts").first(), last_seen=pl.col("ts").last(),
            sightings=pl.len(), created_at=pl.col("created_at").min(),
            last_active=pl.col("last_active").max(), max_idle=pl.col("idle").max(),
            name=pl.col("name").drop_nulls().first(), lib_name=pl.col("lib_name").first(),
            ip=pl.col("ip").first(),
            cmd=pl.col("cmd").first(),
            **{f: pl.col(f).any() for f in ("is_replica", "is_master", "is_monitor", "is_pubsub", "is_blocked")},
        )
        .with_columns(group_key(pl.col("ip").fill_null("?")), role(subscription_counts=False))
        .select("instance", "run_id", "id", "first_seen", "last_seen", "sightings", "created_at",
                "last_active", "max_idle", "group", "role")
        .sort("instance", "run_id", "id")
    )  # fmt: skip
    assert expected["role"].n_unique() >= 3  # normal, blocked and the collector at least
    assert_frame_equal(lifecycles(ds, slice_rows=slice_rows).select(expected.columns), expected)


@SLICES
def test_group_counts_match_the_in_memory_definition(slice_rows: int) -> None:
    ds = tables()
    rows = ds.clients.collect()
    caps = timeline(ds).select("instance", "ts", "capture_id", "n_clients")
    expected = (
        rows.with_columns(group_key(pl.col("ip").fill_null("?")), role(subscription_counts=False))
        .group_by("instance", "capture_id", "group", "role")
        .agg(
            n=pl.len(), busy=(pl.col("idle") <= 10).sum(), idle_max=pl.col("idle").max(),
            pods=pl.col("ip").n_unique(),
        )
        .sort("instance", "capture_id", "group", "role")
    )  # fmt: skip
    assert (expected["role"] == "blocked").any() and (expected["role"] == "normal").any()
    assert_frame_equal(group_counts(ds, caps, slice_rows).select(expected.columns), expected)
