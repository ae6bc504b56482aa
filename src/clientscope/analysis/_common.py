"""What every analysis shares: opening a dataset, group keys, client roles, the capture timeline.

Ground rules (issue 4) live here so each analysis follows them the same way:

* saturation uses the server's real denominator: normal clients + replicas + cluster
  bus links against the *effective* maxclients (`used` / `maxclients` in the timeline);
* a connection is `(run_id, id)`: ids restart with the server;
* replicas, masters, MONITOR, pub/sub, blocked clients and the collector's own
  connection get a `role` other than "normal" and stay out of leak / idle verdicts;
* an unnamed client is grouped by library + source IP (`(unnamed) lib@ip`).
"""

from __future__ import annotations

import html
import math
from dataclasses import fields, is_dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from clientscope.errors import AnalysisError, DatasetError
from clientscope.schema import COLLECTOR_CLIENT_NAME, UNNAMED
from clientscope.vocabulary import Role

# commands that always block the client until data, a timeout or a replica ack arrives
BLOCKING_COMMANDS = (
    "blpop", "brpop", "brpoplpush", "blmove", "blmpop", "bzpopmin", "bzpopmax", "bzmpop",
    "wait", "waitaof",
)  # fmt: skip
# XREAD / XREADGROUP block only with BLOCK: the server's `b` flag says when they do
PUBSUB_COMMANDS = ("subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe")
ROLES = tuple(Role)


class Tables(Protocol):
    """Anything with the parsed tables as LazyFrames (a `Dataset`, or frames in a test)."""

    @property
    def captures(self) -> pl.LazyFrame: ...

    @property
    def clients(self) -> pl.LazyFrame: ...

    @property
    def info(self) -> pl.LazyFrame: ...


DatasetLike = Tables | str | Path


def as_tables(ds: DatasetLike) -> Tables:
    """A `Dataset` from a path, or the object itself."""
    if isinstance(ds, str | Path):
        from clientscope.dataset import open_dataset

        return open_dataset(ds)
    return ds


# ------------------------------------------------------------------ per-client expressions
def group_key(source: pl.Expr | None = None) -> pl.Expr:
    """`name` when the client set one, else `(unnamed) lib@ip` (or `(unnamed) ip`) so unnamed
    clients stay attributable (`schema.unnamed_group`).

    `source` defaults to ip, else addr (unix sockets and odd formats).
    """
    named = pl.col("name").is_not_null() & (pl.col("name") != "")
    if source is None:
        source = pl.coalesce(pl.col("ip"), pl.col("addr"), pl.lit("?"))
    lib = pl.col("lib_name")
    unnamed = pl.concat_str(  # schema.unnamed_group, as an expression
        [pl.lit(UNNAMED + " "), pl.when(lib.is_not_null() & (lib != "")).then(lib + "@").otherwise(pl.lit("")),
         source]
    )  # fmt: skip
    return pl.when(named).then(pl.col("name")).otherwise(unnamed).alias("group")


def blocking_command() -> pl.Expr:
    return pl.col("cmd").is_in(BLOCKING_COMMANDS)


def role(*, subscription_counts: bool = True) -> pl.Expr:
    """Why a client may legitimately sit idle or stay connected (normal when no reason).

    `subscription_counts=False` decides pub/sub from the `P` flag alone, for rows that were
    aggregated with the flag booleans as keys but without sub/psub/ssub."""
    pubsub = pl.col("is_pubsub").fill_null(False)
    if subscription_counts:
        subs = pl.sum_horizontal(pl.col("sub").fill_null(0), pl.col("psub").fill_null(0),
                                 pl.col("ssub").fill_null(0))  # fmt: skip
        pubsub = pubsub | (subs > 0)
    return (
        pl.when(pl.col("name") == COLLECTOR_CLIENT_NAME)
        .then(pl.lit("collector"))
        .when(pl.col("is_replica").fill_null(False))
        .then(pl.lit("replica"))
        .when(pl.col("is_master").fill_null(False))
        .then(pl.lit("master"))
        .when(pl.col("is_monitor").fill_null(False))
        .then(pl.lit("monitor"))
        .when(pubsub)
        .then(pl.lit("pubsub"))
        .when(pl.col("is_blocked").fill_null(False) | blocking_command())
        .then(pl.lit("blocked"))
        .otherwise(pl.lit("normal"))
        .alias("role")
    )


def snapshot_clients(ds: Tables, capture_ids: list[str]) -> pl.LazyFrame:
    """The client rows of some captures, with `group` and `role`."""
    return ds.clients.filter(pl.col("capture_id").is_in(capture_ids)).with_columns(
        group_key(), role()
    )


def require_captures(tl: pl.DataFrame, what: str, minimum: int = 1) -> pl.DataFrame:
    ok = tl.filter(pl.col("ok"))
    if ok.height < minimum:
        raise AnalysisError(
            f"{what} needs at least {minimum} successful capture(s); the dataset has {ok.height} "
            f"(of {tl.height} attempts). Collect more with `clientscope collect --count N`."
        )
    return ok


def last_known(tl: pl.DataFrame, column: str) -> int:
    """The last value a server's successful captures read of a setting (0 when none did): the
    limit in force, as plan and the model read it."""
    known = tl.filter(pl.col("ok"))[column].drop_nulls()
    return int(known.tail(1).item() or 0) if known.len() else 0


def with_clients(tl: pl.DataFrame) -> pl.DataFrame:
    """Successful captures that listed clients (an imported INFO-only dump lists none)."""
    return tl.filter(pl.col("has_clients"))


def pick_captures(tl: pl.DataFrame, at: datetime | str | None) -> pl.DataFrame:
    """Per instance, the last successful capture with client rows at or before `at`
    (default: the latest)."""
    ok = require_captures(tl, "this analysis")
    if ok.select(pl.col("has_clients").any()).item():
        ok = with_clients(ok)
    if at is not None:
        from clientscope.window import parse_time

        when = parse_time(at, "--at", ok.select(pl.col("ts").max()).item())
        before = ok.filter(pl.col("ts") <= when)
        if before.is_empty():
            first = ok.select(pl.col("ts").min()).item()
            raise AnalysisError(f"no successful capture at or before {when}; the first is {first}")
        ok = before
    return ok.group_by("instance").agg(pl.all().sort_by("ts").last()).sort("instance")



# ------------------------------------------------------------------ result helpers
def jsonable(value: Any) -> Any:
    """Frames, dataclasses, datetimes and floats as plain JSON values."""
    if isinstance(value, pl.DataFrame):
        return [jsonable(r) for r in value.to_dicts()]
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class ResultMixin:
    """`to_dict()` for --json and `_repr_html_()` for notebooks, for frozen result dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        out = jsonable(self)
        assert isinstance(out, dict)
        return out

    def _repr_html_(self) -> str:
        assert is_dataclass(self)
        parts = [f"<div><strong>{html.escape(type(self).__name__)}</strong><table>"]
        frames = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, pl.DataFrame):
                frames.append((f.name, value))
            elif (
                isinstance(value, dict)
                and value
                and all(isinstance(v, pl.DataFrame) for v in value.values())
            ):
                frames += [(f"{f.name}: {k}", v) for k, v in value.items()]
            else:
                parts.append(
                    f"<tr><th style='text-align:left'>{html.escape(f.name)}</th>"
                    f"<td>{html.escape(str(jsonable(value)))}</td></tr>"
                )
        parts.append("</table>")
        for name, frame in frames:
            parts.append(f"<p><em>{html.escape(name)}</em></p>{frame.head(50)._repr_html_()}")
        parts.append("</div>")
        return "".join(parts)


def no_data(what: str) -> DatasetError:
    return DatasetError(
        f"{what}: the dataset has no captures. Fill it with `clientscope collect`, "
        "`clientscope import` or `clientscope simulate`."
    )


def signed(value: float, digits: int = 1) -> str:
    """`+1.5`, `-0.3`, and `0` rather than `-0.0`: a rate as people read it."""
    return ("0" if digits == 0 else f"{0:.{digits}f}") if round(value, digits) == 0 else f"{value:+.{digits}f}"


def human_duration(delta: timedelta | float | None) -> str:
    """`1 d 2 h 5 min`, `3 min 20 s`, `17 s`: a span as people read it."""
    if delta is None:
        return "—"
    seconds = round(delta.total_seconds() if isinstance(delta, timedelta) else delta)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days} d" if days else "",
        f"{hours} h" if hours else "",
        f"{minutes} min" if minutes else "",
    ]
    text = " ".join(p for p in parts if p)
    return text if text and days + hours else (text + f" {secs} s").strip()
