"""`top` (who holds the connections) and `idle` (how idle they are, what a timeout would close)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from clientscope.analysis._clients import reused
from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    Tables,
    as_tables,
    group_key,
    pick_captures,
    require_captures,
    role,
)
from clientscope.analysis.timeline import timeline
from clientscope.errors import ConfigError
from clientscope.schema import UNNAMED
from clientscope.window import parse_time

if TYPE_CHECKING:
    from clientscope.analysis.model import Model

# `by` names users type -> expression over the clients table
DIMENSIONS: dict[str, pl.Expr] = {
    "group": group_key(),
    "ip": pl.coalesce(pl.col("ip"), pl.col("addr")),
    "addr": pl.col("addr"),
    "name": pl.when(pl.col("name") != "").then(pl.col("name")).otherwise(pl.lit(UNNAMED)),
    "lib": pl.concat_str(
        [pl.col("lib_name").fill_null("(no lib-name)"), pl.col("lib_ver").fill_null("")],
        separator=" ",
    ).str.strip_chars(),
    "lib_name": pl.col("lib_name").fill_null("(no lib-name)"),
    "lib_ver": pl.col("lib_ver").fill_null("(no lib-ver)"),
    "user": pl.col("user").fill_null("default"),
    "cmd": pl.col("cmd").fill_null("(none)"),
    "db": pl.col("db"),
    "flags": pl.col("flags"),
    "flag": pl.col("flags").fill_null("N").str.split(""),  # one row per flag letter
    "role": role(),
    "laddr": pl.col("laddr"),
}
IDLE_BINS = (1, 10, 60, 300, 600, 3600, 86400)  # right edges of log-spaced bins; last bin open
SUGGESTED_TIMEOUTS = (300, 600, 900, 1800, 3600, 7200, 21600, 86400)


def idle_quantile(q: float) -> pl.Expr:
    """A quantile of `idle` (linear between ranks): one definition for `top` and `idle`."""
    return pl.col("idle").quantile(q, interpolation="linear")


def _dimensions(by: str | Sequence[str]) -> list[str]:
    names = [by] if isinstance(by, str) else list(by)
    names = [n.strip().replace("-", "_") for part in names for n in part.split(",") if n.strip()]
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown or not names:
        raise ConfigError(
            f"cannot group by {unknown or names}; choose from: {', '.join(DIMENSIONS)} "
            "(combine with commas, e.g. --by ip,name)"
        )
    return names


def top(
    ds: DatasetLike,
    by: str | Sequence[str] = "ip",
    *,
    at: datetime | str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    instance: str | None = None,
    limit: int = 20,
) -> pl.DataFrame:
    """Clients grouped by `by` (ip, name, lib, user, cmd, db, flags, role, group, or a mix).

    At one capture (latest, or the last at or before `at`): clients, share, share of
    maxclients, idle stats. With `since`/`until`: over every capture in the window,
    the mean and peak count per capture and when the peak was.
    """
    tables = as_tables(ds)
    return _top(tables, timeline(tables, instance), by, at, since, until, limit)


def top_from(
    model: Model,
    by: str | Sequence[str] = "ip",
    *,
    at: datetime | str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    limit: int = 20,
) -> pl.DataFrame:
    """`top` on a model already built (its timeline is not built again)."""
    return _top(model.tables, model.timeline, by, at, since, until, limit)


def _top(tables: Tables, tl: pl.DataFrame, by: str | Sequence[str], at: datetime | str | None,
         since: datetime | str | None, until: datetime | str | None, limit: int) -> pl.DataFrame:  # fmt: skip
    dims = _dimensions(by)
    if since is None and until is None:
        caps = pick_captures(tl, at)
    else:
        caps = require_captures(_window(tl, since, until), "top over a window")
    rows = _rows(tables, caps, dims)
    per_capture = rows.group_by("instance", "capture_id", *dims).agg(
        clients=pl.len(),
        idle_p50=idle_quantile(0.5),
        idle_max=pl.col("idle").max(),
        idle_over_300=(pl.col("idle") > 300).sum(),
        idle_over_600=(pl.col("idle") > 600).sum(),
        blocked=(pl.col("role") == "blocked").sum(),
    )
    per_capture = per_capture.join(
        caps.select("capture_id", "ts", "maxclients", "used"), on="capture_id"
    )
    if caps.select(pl.col("capture_id").n_unique()).item() == caps["instance"].n_unique():
        out = per_capture.with_columns(
            share=pl.col("clients") / pl.col("clients").sum().over("instance"),
            share_of_maxclients=pl.col("clients") / pl.col("maxclients"),
        ).drop("capture_id", "used")
    else:
        out = per_capture.group_by("instance", *dims).agg(
            mean_clients=pl.col("clients").mean(),
            clients=pl.col("clients").max(),
            # the first capture at the peak (sort_by(...).last() picked any of several ties)
            peak_at=pl.col("ts").filter(pl.col("clients") == pl.col("clients").max()).min(),
            captures_seen=pl.len(),
            idle_max=pl.col("idle_max").max(),
            share_of_maxclients=(pl.col("clients") / pl.col("maxclients")).max(),
        )
    return (
        out.sort(["instance", "clients", *dims], descending=[False, True, *[False] * len(dims)])
        .group_by("instance", maintain_order=True)
        .head(limit)
    )


def _window(
    tl: pl.DataFrame, since: datetime | str | None, until: datetime | str | None
) -> pl.DataFrame:
    end = tl.select(pl.col("ts").max()).item()
    if since is not None:
        tl = tl.filter(pl.col("ts") >= parse_time(since, "--since", end))
    if until is not None:
        tl = tl.filter(pl.col("ts") <= parse_time(until, "--until", end))
    return tl


def _rows(tables: Tables, caps: pl.DataFrame, dims: list[str]) -> pl.DataFrame:
    rows = (
        tables.clients.filter(pl.col("capture_id").is_in(caps["capture_id"].to_list()))
        .select(
            "instance",
            "capture_id",
            "idle",
            "age",
            role(),
            *[DIMENSIONS[d].alias(d) for d in dims if d != "role"],
        )
        .collect(engine="streaming")
    )
    return rows.explode("flag") if "flag" in dims else rows


@dataclass(frozen=True)
class IdleReport(ResultMixin):
    """Idle-time distribution per group at one capture, and what a server `timeout` would close."""

    groups: pl.DataFrame  # per group: quantiles, shares over 300 s / 600 s, never used
    histogram: pl.DataFrame  # per group and log-spaced idle bin: clients
    timeouts: (
        pl.DataFrame
    )  # timeout -> clients it would close now, connections it would have closed
    excluded: pl.DataFrame  # replicas, pub/sub, blocked, monitor, collector: shown, never judged
    suggested_timeout: int
    longest_reuse_gap_s: float | None  # longest idle time after which a connection was used again
    at: datetime | None


def idle(
    ds: DatasetLike,
    by: str | Sequence[str] = "group",
    *,
    at: datetime | str | None = None,
    instance: str | None = None,
    timeouts: Sequence[int] = (300, 600),
) -> IdleReport:
    """Idle distribution per group (default: name, or `(unnamed) lib@ip`) at the latest capture
    (or `at`)."""
    from clientscope.analysis.model import build_model

    return idle_from(build_model(as_tables(ds), instance=instance), by, at=at, timeouts=timeouts)


def idle_from(
    model: Model,
    by: str | Sequence[str] = "group",
    *,
    at: datetime | str | None = None,
    timeouts: Sequence[int] = (300, 600),
) -> IdleReport:
    """`idle` on a model already built (its timeline and lifecycles are not built again)."""
    life = pl.concat([s.lifecycles for s in model.servers], how="diagonal_relaxed")
    # each server's gaps as its plan reads them; the timeout is the largest a server's plan
    # suggests (safe on each of them: one server's long gaps are not lost among another's short)
    gaps = [s.reuse_gaps() for s in model.servers]
    suggested = max((suggest_timeout(g) for g in gaps), default=suggest_timeout(np.zeros(0)))
    longest = max((float(g.max()) for g in gaps if g.size), default=None)
    return _idle(model.tables, model.timeline, life, suggested, longest, by, at, timeouts)


def _idle(tables: Tables, tl: pl.DataFrame, lives: pl.DataFrame, suggested: int, longest: float | None,
          by: str | Sequence[str], at: datetime | str | None, timeouts: Sequence[int]) -> IdleReport:  # fmt: skip
    dims = _dimensions(by)
    caps = pick_captures(tl, at)
    rows = _rows(tables, caps, dims)
    normal = rows.filter(pl.col("role") == "normal")
    life = lives.filter(pl.col("role") == "normal")
    candidates = sorted({*timeouts, suggested})
    return IdleReport(
        groups=_idle_groups(normal, dims, timeouts),
        histogram=_histogram(normal, dims),
        timeouts=_timeout_effect(normal, life, candidates),
        excluded=rows.filter(pl.col("role") != "normal")
        .group_by("instance", "role")
        .agg(clients=pl.len(), idle_p50=idle_quantile(0.5), idle_max=pl.col("idle").max())
        .sort("instance", "role"),
        suggested_timeout=suggested,
        longest_reuse_gap_s=longest,
        at=caps.select(pl.col("ts").max()).item(),
    )


def timeout_what_if(rows: pl.DataFrame, timeout: int) -> tuple[int, int]:
    """Of the clients of one capture (with `role` and `idle`): how many a server `timeout` of
    that many seconds would close, and of how many it judges. Only normal clients: the server's
    timeout never closes blocked, pub/sub, replica or master links, MONITOR, and the collector is
    not the application's. The one what-if of `idle`, the report and its idle chart."""
    judged = rows.filter(pl.col("role") == "normal")["idle"].drop_nulls()
    return int((judged > timeout).sum()), judged.len()


def suggest_timeout(reuse_gaps: np.ndarray) -> int:
    """The smallest usual `timeout` above 1.5x the longest gap after which clients still reused
    a connection (at least 300 s), so it closes forgotten connections and no live one."""
    need = max(300.0, 1.5 * float(np.quantile(reuse_gaps, 0.999))) if reuse_gaps.size else 300.0
    return next((t for t in SUGGESTED_TIMEOUTS if t >= need), SUGGESTED_TIMEOUTS[-1])


def _idle_groups(
    rows: pl.DataFrame, dims: list[str], timeouts: Sequence[int] = (300, 600)
) -> pl.DataFrame:
    """Idle quantiles per group, and how many sat idle longer than each of `timeouts`."""
    never_used = (pl.col("age") >= 60) & (pl.col("idle") >= pl.col("age") - 1)
    marks = sorted({int(t) for t in timeouts}) or [300]
    return (
        rows.group_by("instance", *dims)
        .agg(
            pl.len().alias("clients"),
            idle_quantile(0.5).alias("idle_p50"),
            idle_quantile(0.9).alias("idle_p90"),
            idle_quantile(0.99).alias("idle_p99"),
            pl.col("idle").max().alias("idle_max"),
            *((pl.col("idle") > t).sum().alias(f"over_{t}") for t in marks),
            never_used.sum().alias("never_used"),
        )
        .with_columns((pl.col(f"over_{t}") / pl.col("clients")).alias(f"share_over_{t}") for t in marks)
        .sort(
            ["instance", f"over_{marks[0]}", "clients", *dims],
            descending=[False, True, True, *[False] * len(dims)],
        )
    )


def _bin_label() -> pl.Expr:
    """Log-spaced idle bins: 0-1s, 1-10s, ... , >=86400s (left-closed)."""
    edges = (0, *IDLE_BINS)
    labels = [
        pl.when(pl.col("idle") < hi).then(pl.lit(f"{lo}-{hi}s"))
        for lo, hi in itertools.pairwise(edges)
    ]
    return pl.coalesce(*labels, pl.lit(f">={IDLE_BINS[-1]}s"))


def _bin_order() -> pl.Expr:
    return pl.col("bin").str.extract(r"(\d+)").cast(pl.Int64)


def _histogram(rows: pl.DataFrame, dims: list[str]) -> pl.DataFrame:
    return (
        rows.with_columns(bin=_bin_label())
        .group_by("instance", *dims, "bin")
        .agg(clients=pl.len())
        .sort([pl.col("instance"), *[pl.col(d) for d in dims], _bin_order()])
    )


def _timeout_effect(rows: pl.DataFrame, life: pl.DataFrame, candidates: list[int]) -> pl.DataFrame:
    """Per instance (the setting is per server) and candidate timeout, what it would close."""
    parts = []
    for inst in sorted(rows["instance"].unique().to_list()):
        mine = rows.filter(pl.col("instance") == inst)
        lived = life.filter(pl.col("instance") == inst) if "instance" in life.columns else life
        total = max(mine.height, 1)
        reused_ = lived.select(reused()).to_series()
        parts.append(
            pl.DataFrame(
                {
                    "instance": [inst] * len(candidates),
                    "timeout": candidates,
                    "would_close_now": [timeout_what_if(mine, t)[0] for t in candidates],
                    "share_now": [timeout_what_if(mine, t)[0] / total for t in candidates],
                    "connections_closed_over_window": [
                        int((lived["max_idle"] > t).sum()) for t in candidates
                    ],
                    "live_connections_hit": [
                        int(((lived["max_idle"] > t) & reused_).sum()) for t in candidates
                    ],
                },
                schema_overrides={"instance": rows.schema["instance"]},
            )
        )
    if parts:
        return pl.concat(parts)
    counts = ("would_close_now", "connections_closed_over_window", "live_connections_hit")
    schema = {"instance": pl.String(), "timeout": pl.Int64(), "share_now": pl.Float64()}
    return pl.DataFrame(schema={**schema, **dict.fromkeys(counts, pl.Int64())})
