"""What the report takes from `clientscope.analysis`: findings, alert firings, the plan.

The analyses decide; this module only turns their results into what the report
shows. An analysis that cannot run on this data (AnalysisError) becomes a note in
the report's method section instead of stopping the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import polars as pl

from clientscope.errors import AnalysisError, ConfigError
from clientscope.reporting.facts import Event, Summary
from clientscope.reporting.render import FindingView, Setting

__all__ = ["alert_events", "finding_events", "findings", "settings"]

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def findings(ds: Any) -> tuple[list[FindingView], list[str]]:
    """The diagnosis, most severe first, and notes on anything that could not run."""
    from clientscope.analysis import diagnose

    try:
        diagnosis = diagnose(ds)
    except (AnalysisError, ConfigError) as exc:
        return [], [f"diagnose could not run on this window: {exc}"]
    views = [finding_view(f) for f in diagnosis.findings]
    views.sort(key=lambda v: (SEVERITY_ORDER.get(v.severity, 9), -(v.confidence or 0.0)))
    return views, []


def finding_view(f: Any) -> FindingView:
    """A `clientscope.analysis.Finding` as the report shows it."""
    evidence: Mapping[str, Any] = getattr(f, "evidence", {}) or {}
    return FindingView(
        severity=str(f.severity), title=str(f.title), summary=str(f.summary), kind=str(getattr(f, "kind", "")),
        group=getattr(f, "group", None), first_seen=getattr(f, "first_seen", None),
        confidence=getattr(f, "confidence", None),
        evidence=tuple((str(k), show(v)) for k, v in evidence.items()),
        remediation=tuple(str(r) for r in getattr(f, "remediation", ()) or ()),
    )  # fmt: skip


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
        Event(f.first_seen, "finding", instance or "", f"first sign of: {f.title}")
        for f in found
        if isinstance(f.first_seen, datetime)
    ]


def alert_events(ds: Any, notes: list[str]) -> list[Event]:
    """Alert rules replayed over the captures: when each fired and resolved."""
    from clientscope.analysis import alerts

    try:
        fired = alerts(ds)
    except (AnalysisError, ConfigError) as exc:
        notes.append(f"alert replay could not run on this window: {exc}")
        return []
    frame = fired if isinstance(fired, pl.DataFrame) else getattr(fired, "firings", None)
    if not isinstance(frame, pl.DataFrame) or frame.is_empty():
        return []
    events = []
    for row in frame.iter_rows(named=True):
        peak = f" (peak {show(row['peak'])})" if row.get("peak") is not None else ""
        events.append(
            Event(
                row["fired_at"],
                "alert",
                str(row.get("instance") or ""),
                f"alert {row['rule']} fired{peak}",
            )
        )
        if row.get("resolved_at") is not None:
            events.append(
                Event(
                    row["resolved_at"],
                    "alert",
                    str(row.get("instance") or ""),
                    f"alert {row['rule']} resolved",
                )
            )
    return events


def settings(ds: Any, series: pl.DataFrame, summary: Summary, notes: list[str]) -> list[Setting]:
    """Concrete settings: from `plan` (maxclients, pool sizes, timeout, keepalive)."""
    from clientscope.analysis import plan

    try:
        result = plan(ds)
    except (AnalysisError, ConfigError) as exc:
        notes.append(f"plan could not run on this window: {exc}")
        return []
    return plan_settings(result)


def plan_settings(result: Any) -> list[Setting]:
    """Settings from a plan result's `to_dict()`: every key with a `recommended` value."""
    data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    rows = data.get("settings") or data.get("recommendations") or []
    out = []
    for row in rows:
        if isinstance(row, Mapping) and "name" in row:
            out.append(Setting(name=str(row["name"]), value=show(row.get("recommended", row.get("value", ""))),
                               why=str(row.get("why", row.get("reason", ""))), current=show(row.get("current", ""))))  # fmt: skip
    return out
