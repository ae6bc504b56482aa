"""What the report takes from `clientscope.analysis`: findings, alert firings, the plan.

The analyses decide; this module only turns their results into what the report
shows. An analysis that cannot run on this data (AnalysisError) becomes a note in
the report's method section instead of stopping the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from clientscope.errors import AnalysisError, ConfigError, DatasetError
from clientscope.reporting.facts import Event, Summary
from clientscope.reporting.render import FindingView, Setting
from clientscope.vocabulary import Severity

if TYPE_CHECKING:
    from clientscope.analysis.diagnose import Finding
    from clientscope.analysis.model import Model, ServerModel

__all__ = ["alert_events", "capacity", "cause", "exhaustion", "finding_events", "findings"]



def findings(model: Model | None, notes: list[str]) -> list[FindingView]:
    """The diagnosis of the model (causes before symptoms); why not, in `notes`, when it cannot run."""
    from clientscope.analysis.diagnose import diagnose_from

    if model is None:
        return []
    try:
        diagnosis = diagnose_from(model)
    except (AnalysisError, ConfigError) as exc:
        notes.append(f"diagnose could not run on this window: {exc}")
        return []
    views = [finding_view(f) for f in diagnosis.findings]
    # most severe first; within a severity, the causes before the symptoms (exhaustion, saturation)
    views.sort(key=lambda v: (Severity.rank_of(v.severity), v.kind in SYMPTOMS))
    return views


def finding_view(f: Finding) -> FindingView:
    """A `clientscope.analysis.Finding` as the report shows it."""
    return FindingView(
        severity=str(f.severity), title=f.title, summary=f.summary, kind=f.kind, group=f.group,
        first_seen=f.first_seen, instance=f.instance, confidence=f.confidence,
        evidence=tuple((str(k), show(v)) for k, v in f.evidence.items()),
        remediation=f.remediation,
    )


def show(value: Any) -> str:
    """An evidence value as short readable text."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={show(v)}" for k, v in list(value.items())[:12])
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = [show(v) for v in list(value)[:12]]
        return ", ".join(items) + (" …" if len(value) > 12 else "")
    return str(value)


def finding_events(found: list[FindingView], instance: str | None) -> list[Event]:
    """A finding's first sign, on the timeline."""
    return [
        Event(f.first_seen, "finding", f.instance or instance or "", f"first sign of: {f.title}")
        for f in found
        if isinstance(f.first_seen, datetime)
    ]


SYMPTOMS = ("exhaustion", "saturation")
"""Finding kinds that say *that* the server ran out, not *why*."""


def cause(found: list[FindingView]) -> str:
    """The first finding that explains the exhaustion (else the first finding)."""
    causes = [f for f in found if f.kind not in SYMPTOMS and f.severity != "info"]
    chosen = causes or found
    return chosen[0].title if chosen else "no cause found"


def alert_events(model: Model | None, notes: list[str]) -> list[Event]:
    """The alert rules replayed over the captures (`clientscope alerts`' replay): when each fired
    and resolved, what is still pending or firing at the end, and how much warning each rule and
    the leak-aware forecast rule gave before each exhaustion."""
    from clientscope.analysis.alerts import replay_from

    if model is None:
        return []
    try:
        replay = replay_from(model)
    except (AnalysisError, ConfigError, DatasetError) as exc:
        notes.append(f"alert replay could not run on this window: {exc}")
        return []
    events = []
    for row in replay.firings.iter_rows(named=True):
        inst, rule = str(row["instance"] or ""), f"{row['rule']} ({row['severity']})"
        peak = f", peak {show(row['peak'])}" if row.get("peak") is not None else ""
        events.append(
            Event(row["fired_at"], "alert", inst, f"alert {rule} fired: {row['expr']}{peak}")
        )
        if row["resolved_at"] is not None:
            events.append(Event(row["resolved_at"], "alert", inst, f"alert {rule} resolved"))
    for row in replay.states.filter(pl.col("state") == "pending").iter_rows(named=True):
        events.append(Event(replay.data_end, "alert", str(row["instance"] or ""),
                            f"alert {row['rule']} at the end of the data: {row['detail']}"))  # fmt: skip
    by_exhaustion: dict[tuple[str, object], list[str]] = {}
    for row in replay.warnings.iter_rows(named=True):
        by_exhaustion.setdefault((str(row["instance"] or ""), row["impact_at"]), []).append(
            f"{row['rule']}: {row['warning']}"
        )
    for (inst, at), said in by_exhaustion.items():
        if isinstance(at, datetime):
            events.append(Event(at, "alert", inst, "warning before this exhaustion — " + "; ".join(said)))
    return events


def exhaustion(server: ServerModel | None, summary: Summary, notes: list[str]) -> Summary:
    """The card's time to exhaustion: the server's forecast, as `clientscope forecast` gives it."""
    f = server.forecast if server is not None else None
    if server is None or f is None:
        if server is not None:
            notes.append(f"forecast could not run on this window: {server.forecast_error}")
        return summary
    eta = f.eta_maxclients if f.verdict == "will_exhaust" else None
    return replace(
        summary, verdict=f.verdict, growth_per_hour=f.slope_per_hour, exhaustion_at=eta,
        time_to_exhaustion=f.time_to_maxclients,
        exhaustion_low=f.eta_maxclients_low if eta else None,
        exhaustion_high=f.eta_maxclients_high if eta else None,
        limit_reached_at=f.exhausted_at or summary.limit_reached_at,
        limit_from_start=f.exhausted_at is not None and f.exhausted_from_start,
        too_few_to_tell=f.too_few_to_tell,
    )  # fmt: skip


def capacity(
    model: Model | None, instance: str | None, notes: list[str]
) -> tuple[list[Setting], pl.DataFrame]:
    """Concrete settings from `plan` on the report's model (maxclients, timeout, tcp-keepalive,
    pool per pod): the values and reasons `clientscope plan` prints, and the per-group peaks."""
    from clientscope.analysis.capacity import plan_from, why_maxclients

    if model is None:
        return [], pl.DataFrame()
    try:
        p = plan_from(model, instance=instance)
    except (AnalysisError, ConfigError) as exc:
        notes.append(f"plan could not run on this window: {exc}")
        return [], pl.DataFrame()
    notes.extend(f"plan: {w}" for w in p.warnings)
    current = _current_config(model.tables, p.instance)
    rows = [
        Setting("maxclients", str(p.recommended_maxclients), why_maxclients(p),
                str(p.current_maxclients or "unknown")),
        Setting("timeout", str(p.suggested_timeout),
                "closes connections idle longer than any healthy pool left them, leaked ones included",
                current.get("timeout", "")),
        Setting("tcp-keepalive", str(p.suggested_tcp_keepalive),
                "detects dead peers so their connections are freed", current.get("tcp_keepalive", "")),
    ]  # fmt: skip
    if p.per_pod_pool_fit is not None:
        rows.append(Setting("pool size per pod (max_connections)", str(p.per_pod_pool_fit),
                            "largest uniform pool that keeps every app at its HPA maximum under 80 % of maxclients"))  # fmt: skip
    return rows, p.observed


def _current_config(ds: Any, instance: str) -> dict[str, str]:
    last = (
        ds.captures.filter(pl.col("instance") == instance)
        .select(pl.col("timeout", "tcp_keepalive").drop_nulls().last())
        .collect()
    )
    return (
        {k: ("" if v is None else str(v)) for k, v in last.row(0, named=True).items()}
        if last.height
        else {}
    )
