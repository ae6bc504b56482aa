"""The numbers a postmortem states: summary card, incident timeline, data coverage.

All computed from the capture timeline (`analysis.timeline.timeline`), so the text
and the charts always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from clientscope.analysis.forecast import Forecast
from clientscope.analysis.timeline import busiest
from clientscope.reporting import series as S

__all__ = ["Coverage", "Event", "Summary", "coverage", "summary_card", "timeline"]

MERGE_WITHIN = timedelta(minutes=5)
"""Rejection or failure stretches closer than this are told as one."""


@dataclass(frozen=True)
class Summary:
    """The card at the top of the report."""

    instance: str | None
    instances: int
    peak_clients: int | None
    maxclients: int | None
    peak_at: datetime | None
    utilization: float | None
    first_rejection_at: datetime | None
    rejected_connections: int
    refused_captures: int
    limit_reached_at: datetime | None
    growth_per_hour: float | None
    exhaustion_at: datetime | None  # forecast, only when still growing and not yet full
    last_capture_at: datetime | None
    cause: str = "no cause found"
    verdict: str = ""  # from `forecast`: exhausted | will_exhaust | growing | plateaued | stable | falling
    exhaustion_low: datetime | None = None  # 95 % interval of exhaustion_at
    exhaustion_high: datetime | None = None
    time_to_exhaustion: timedelta | None = None  # Forecast.time_to_maxclients, as forecast says
    limit_from_start: bool = False  # Forecast.exhausted_from_start: full at the first capture read
    too_few_to_tell: bool = False  # Forecast.too_few_to_tell


@dataclass(frozen=True)
class Event:
    """One line of the incident timeline."""

    at: datetime
    kind: (
        str  # data | growth | threshold | limit | rejection | restart | loading | alert | collector | finding
    )
    instance: str
    text: str


@dataclass(frozen=True)
class Coverage:
    """What the data covers and where it is thin."""

    captures: int
    ok: int
    failed: int
    errors: tuple[tuple[str, int, str], ...]  # (error kind, count, a sample message)
    instances: tuple[str, ...]
    first: datetime | None
    last: datetime | None
    median_interval_s: float | None
    gaps: tuple[tuple[str, datetime, datetime], ...]  # (instance, from, to) longer than 3 intervals
    client_rows: int
    rejected_lines: int
    sources: tuple[tuple[str, int], ...]
    ts_sources: tuple[tuple[str, int], ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def summary_card(series: pl.DataFrame, instance: str | None = None) -> Summary:
    """Peak, first rejection and limit reached of the primary instance (the forecast's fields are
    filled from `clientscope forecast`'s result by `reporting.analyses.exhaustion`)."""
    inst = instance or busiest(series)
    frame = series.filter(pl.col("instance") == inst) if inst else series
    peak = S.peak_capture(frame, inst)
    rejected = frame.filter(S.REJECTED)
    full = frame.filter(pl.col("at_limit"))
    return Summary(
        instance=inst,
        instances=series["instance"].n_unique(),
        peak_clients=_int(peak, "used"),
        maxclients=_int(peak, "maxclients"),
        peak_at=peak["ts"] if peak else None,  # type: ignore[arg-type]
        utilization=_float(peak["utilization"]) if peak else None,
        first_rejection_at=rejected["ts"][0] if rejected.height else None,
        rejected_connections=int(frame["new_rejections"].fill_null(0).sum()),
        refused_captures=int(frame["rejected_error"].sum()),
        limit_reached_at=full["ts"][0] if full.height else None,
        growth_per_hour=None,
        exhaustion_at=None,
        last_capture_at=frame["ts"].max() if frame.height else None,  # type: ignore[arg-type]
    )


def _int(row: dict[str, object] | None, key: str) -> int | None:
    value = row.get(key) if row else None
    return int(value) if isinstance(value, int | float) else None


def timeline(
    series: pl.DataFrame,
    forecast: Forecast | None = None,
    *,
    threshold: float = 0.8,
) -> list[Event]:
    """Threshold crossings, the limit, rejections, restarts and collector errors, in time order,
    and where each group that drives `forecast` began to grow (its oldest connection still open).
    """
    events: list[Event] = []
    for inst, frame in series.partition_by("instance", as_dict=True, maintain_order=True).items():
        name = str(inst[0])
        events += _first_last(frame, name)
        events += _runs(frame, name, pl.col("utilization") >= threshold, "threshold",
                        f"connected clients above {threshold:.0%} of maxclients",
                        f"back under {threshold:.0%} of maxclients")  # fmt: skip
        events += _runs(frame, name, pl.col("at_limit"), "limit",
                        "the server reached its limit (maxclients full or connections refused)", "below maxclients again")  # fmt: skip
        events += _rejections(frame, name)
        events += [Event(t, "restart", name, "server restarted (new run_id); every connection was dropped")
                   for t in frame.filter(pl.col("restart"))["ts"]]  # fmt: skip
        events += _runs(frame, name, pl.col("loading"), "loading",
                        "server loading its dataset from disk: most commands answer -LOADING",
                        "dataset loaded: the server serves commands again", seen_only=False)  # fmt: skip
        events += _collector_errors(frame, name)
    for d in forecast.drivers if forecast is not None else ():
        if d.since is not None:
            events.append(Event(d.since, "growth", forecast.instance if forecast else "",
                                f"{d.group} begins to grow ({d.verdict}): {d.rate_per_hour:+.1f} "
                                "connections/h, its oldest connection still open"))  # fmt: skip
    return sorted(events, key=lambda e: (e.at, e.instance, e.kind))


def _first_last(frame: pl.DataFrame, inst: str) -> list[Event]:
    first, last = frame.row(0, named=True), frame.row(-1, named=True)
    return [
        Event(first["ts"], "data", inst, f"first capture: {_clients(first)}"),
        Event(last["ts"], "data", inst, f"last capture: {_clients(last)}"),
    ]


def _clients(row: dict[str, object]) -> str:
    if row["used"] is None:
        return f"failed ({row['error_kind']})"
    if row["maxclients"] is None:
        return f"{row['used']} clients (maxclients unknown)"
    return f"{row['used']} of {row['maxclients']} clients"


def _runs(
    frame: pl.DataFrame, inst: str, cond: pl.Expr, kind: str, begin: str, end: str,
    *, seen_only: bool = True,
) -> list[Event]:
    """An event where each run of `cond` begins, and one at the next capture after it ends
    (`seen_only`: counting only captures that saw the client count)."""
    events = []
    last_ts = frame["ts"].max()
    seen = pl.col("used").is_not_null() if seen_only else pl.lit(True)
    for row in S.episodes(frame.filter(seen), cond, merge_within=MERGE_WITHIN).iter_rows(named=True):
        events.append(Event(row["first"], kind, inst, begin))
        after = frame.filter((pl.col("ts") > row["last"]) & seen)
        if row["last"] != last_ts and after.height:
            events.append(Event(after["ts"][0], kind, inst, end))
    return events


def _rejections(frame: pl.DataFrame, inst: str) -> list[Event]:
    events = []
    for row in S.episodes(frame, S.REJECTED, merge_within=MERGE_WITHIN).iter_rows(named=True):
        part = frame.filter(pl.col("ts").is_between(row["first"], row["last"]))
        n = int(part["new_rejections"].fill_null(0).sum())
        refused = int(part["rejected_error"].sum())
        span = f"until {row['last']:%H:%M:%S}" if row["last"] != row["first"] else "in one capture"
        detail = f"connections refused {span}: {n} rejected (INFO rejected_connections)"
        if refused:
            detail += f", {refused} of our captures refused with 'max number of clients reached'"
        events.append(Event(row["first"], "rejection", inst, detail))
    return events


def _collector_errors(frame: pl.DataFrame, inst: str) -> list[Event]:
    failed = pl.col("ok").not_() & (pl.col("error_kind") != "max_clients").fill_null(True)
    events = []
    for row in S.episodes(frame, failed, merge_within=MERGE_WITHIN).iter_rows(named=True):
        kinds = frame.filter(pl.col("ts").is_between(row["first"], row["last"]) & ~pl.col("ok"))[
            "error_kind"
        ]
        kind_text = ", ".join(sorted({str(k) for k in kinds.to_list()}))
        events.append(Event(row["first"], "collector", inst,
                            f"{row['captures']} captures failed ({kind_text}) until {row['last']:%H:%M:%S}"))  # fmt: skip
    return events


def coverage(ds: S.Tables, series: pl.DataFrame, rejected_lines: int = 0) -> Coverage:
    """Captures, failures by kind, gaps in the series, rows, sources."""
    caps = ds.captures.select(
        "instance", "ts", "ok", "error_kind", "error_message", "source", "ts_source"
    ).collect()
    errors = (
        caps.filter(~pl.col("ok"))
        .group_by(pl.col("error_kind").fill_null("other"))
        .agg(pl.len(), pl.col("error_message").drop_nulls().first())
        .sort(["len", "error_kind"], descending=[True, False])
    )
    intervals = caps.sort("instance", "ts").select(
        "instance", pl.col("ts").shift().over("instance").alias("prev"), "ts",
        (pl.col("ts").diff().over("instance").dt.total_microseconds() / 1e6).alias("dt"),
    ).drop_nulls("dt")  # fmt: skip
    median = _float(intervals["dt"].median()) if intervals.height else None
    gaps = intervals.filter(pl.col("dt") > 3 * median) if median else intervals.clear()
    client_rows = ds.clients.select(pl.len()).collect().item()
    notes = []
    if series["maxclients"].is_null().all():
        notes.append(
            "maxclients is unknown (no CONFIG GET or INFO maxclients in these captures): utilization "
            "and exhaustion cannot be computed. Import a `config get maxclients` dump too, or collect "
            "with --maxclients."
        )
    return Coverage(
        captures=caps.height, ok=int(caps["ok"].sum()), failed=int((~caps["ok"]).sum()),
        errors=tuple((str(k), int(n), str(m or "")) for k, n, m in errors.iter_rows()),
        instances=tuple(sorted(caps["instance"].unique().to_list())),
        first=caps["ts"].min(), last=caps["ts"].max(),  # type: ignore[arg-type]
        median_interval_s=median,
        gaps=tuple((str(i), p, t) for i, p, t in gaps.select("instance", "prev", "ts").iter_rows()),
        client_rows=int(client_rows), rejected_lines=rejected_lines,
        sources=_counts(caps, "source"), ts_sources=_counts(caps, "ts_source"), notes=tuple(notes),
    )  # fmt: skip


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _counts(frame: pl.DataFrame, column: str) -> tuple[tuple[str, int], ...]:
    counted = (
        frame.group_by(pl.col(column).fill_null("unknown"))
        .len()
        .sort(["len", column], descending=[True, False])
    )
    return tuple((str(k), int(n)) for k, n in counted.iter_rows())
