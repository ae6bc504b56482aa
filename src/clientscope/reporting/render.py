"""Report content -> report.html (self-contained) and report.md (figures beside it)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from string import Template

from clientscope.analysis._common import human_duration as duration
from clientscope.escape import for_html, for_markdown
from clientscope.reporting.facts import Coverage, Event, Summary

__all__ = ["Content", "FigureFile", "FindingView", "Setting", "render_html", "render_markdown"]

PROSE_CHARS = 4000  # the most characters of one text (a summary, a step) shown in report.md


@dataclass(frozen=True)
class FigureFile:
    """One chart written to figures/: its PNG (embedded in the HTML) and SVG."""

    name: str
    title: str
    caption: str
    png: Path
    svg: Path


@dataclass(frozen=True)
class FindingView:
    """A finding as the report shows it (from `clientscope.analysis.Finding`)."""

    severity: str
    title: str
    summary: str
    kind: str = ""
    group: str | None = None
    instance: str | None = None
    first_seen: datetime | None = None
    confidence: float | None = None
    evidence: tuple[tuple[str, str], ...] = ()
    remediation: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setting:
    """A concrete setting the report recommends."""

    name: str
    value: str
    why: str
    current: str = ""


@dataclass(frozen=True)
class Content:
    """Everything a report says; rendered as HTML and as Markdown."""

    title: str
    subtitle: str
    dataset: str
    version: str
    summary: Summary
    events: tuple[Event, ...]
    findings: tuple[FindingView, ...]
    settings: tuple[Setting, ...]
    figures: tuple[FigureFile, ...]
    coverage: Coverage
    pools: tuple[
        tuple[str, ...], ...
    ] = ()  # group, role, peak, pods, peak/pod, busy peak, idle>300 s
    notes: tuple[str, ...] = field(default_factory=tuple)
    servers: tuple[tuple[str, ...], ...] = ()  # one row per instance when there are several


SERVER_HEAD = ("instance", "peak / maxclients", "trend", "time to maxclients", "findings")


# ------------------------------------------------------------------ formatting
def when(ts: datetime | None, *, date: bool = True) -> str:
    if ts is None:
        return "—"
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S")


def card_values(s: Summary) -> list[tuple[str, str, str, str]]:
    """(label, value, note, tone) of the four summary cards."""
    peak_note = f"at {when(s.peak_at)}" + (f" on {s.instance}" if s.instances > 1 else "")
    util = f" ({s.utilization:.0%})" if s.utilization is not None else ""
    limit = f" / {s.maxclients}" if s.maxclients is not None else " (maxclients unknown)"
    peak = f"{s.peak_clients}{limit}{util}" if s.peak_clients is not None else "no data"
    peak_tone = (
        "crit" if (s.utilization or 0) >= 0.95 else "warn" if (s.utilization or 0) >= 0.8 else "ok"
    )
    if s.first_rejection_at:
        rej = (when(s.first_rejection_at), f"{s.rejected_connections} connections rejected; "
               f"{s.refused_captures} captures refused", "crit")  # fmt: skip
    else:
        rej = ("none", "no rejected connections in this window", "ok")
    return [
        ("Peak clients vs maxclients", peak, peak_note, peak_tone),
        ("First rejected connection", *rej),
        (
            "Cause found",
            s.cause,
            "top finding of the diagnosis",
            "crit" if s.cause != "no cause found" else "ok",
        ),
        ("Time to exhaustion", *_exhaustion(s)),
    ]


def _exhaustion(s: Summary) -> tuple[str, str, str]:
    if s.maxclients is None:
        return "unknown", "maxclients is unknown in these captures", "warn"
    if s.limit_reached_at is not None and s.limit_from_start:
        return ("reached", f"the limit was hit by the first capture read, {when(s.limit_reached_at)} "
                "(maybe earlier)", "crit")  # fmt: skip
    if s.limit_reached_at is not None:
        return "reached", f"the limit was hit at {when(s.limit_reached_at)}", "crit"
    rate = f"{s.growth_per_hour:+.1f} clients/h" if s.growth_per_hour is not None else ""
    if s.exhaustion_at is not None:
        spread = ""
        if s.exhaustion_low and s.exhaustion_high:
            same_day = s.exhaustion_low.date() == s.exhaustion_high.date() == s.exhaustion_at.date()
            low, high = (when(t, date=not same_day) for t in (s.exhaustion_low, s.exhaustion_high))
            spread = f" (95 %: {low} – {high})"
        return (
            duration(s.time_to_exhaustion),
            f"≈ {when(s.exhaustion_at)}{spread} at {rate}",
            "warn",
        )
    if s.verdict == "growing":
        return "growing", f"{rate}, but no crossing of maxclients is in sight", "warn"
    if s.too_few_to_tell:
        return "too few captures", "too few captures to tell a trend: collect longer", "warn"
    return "not growing", "no significant upward trend in the current server run", "ok"


POOL_HEAD = (
    "group",
    "role",
    "peak",
    "pods",
    "peak per pod",
    "busy at peak",
    "idle > 300 s at peak",
)
POOL_NOTE = (
    "Connections per group at their peak (from plan). A pool needs about its busy connections "
    "per pod; keep replicas × max_connections of every app under maxclients with headroom."
)


# ------------------------------------------------------------------ HTML
def _e(value: object) -> str:
    return for_html(value)


def _img(fig: FigureFile) -> str:
    data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
    return (
        f'<figure id="fig-{_e(fig.name)}"><img src="data:image/png;base64,{data}" alt="{_e(fig.title)}">'
        f"<figcaption><strong>{_e(fig.title)}.</strong> {_e(fig.caption)}</figcaption></figure>"
    )


def _cards_html(s: Summary) -> str:
    cards = "".join(
        f'<div class="card {tone}"><div class="label">{_e(label)}</div>'
        f'<div class="value{" long" if len(value) > 22 else ""}">{_e(value)}</div>'
        f'<div class="note">{_e(note)}</div></div>'
        for label, value, note, tone in card_values(s)
    )
    return f'<div class="cards">{cards}</div>'


def _timeline_html(events: tuple[Event, ...]) -> str:
    if not events:
        return "<p>No events.</p>"
    multi = len({e.instance for e in events}) > 1
    head = (
        "<tr><th>time (UTC)</th><th>event</th>"
        + ("<th>instance</th>" if multi else "")
        + "<th>what happened</th></tr>"
    )
    rows = "".join(
        f'<tr><td class="time">{_e(when(e.at))}</td><td><span class="ev ev-{_e(e.kind)}">{_e(e.kind)}</span></td>'
        + (f"<td>{_e(e.instance)}</td>" if multi else "")
        + f"<td>{_e(e.text)}</td></tr>"
        for e in events
    )
    return f"<table>{head}{rows}</table>"


def _finding_html(f: FindingView) -> str:
    meta = [f"instance <code>{_e(f.instance)}</code>" if f.instance else "",
            f"kind <code>{_e(f.kind)}</code>" if f.kind else "", f"group <code>{_e(f.group)}</code>" if f.group else "",
            f"first seen {_e(when(f.first_seen))}" if f.first_seen else "",
            f"confidence {f.confidence:.0%}" if f.confidence is not None else ""]  # fmt: skip
    evidence = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in f.evidence)
    fixes = "".join(f"<li>{_step(r)}</li>" for r in f.remediation)
    return (
        f'<div class="finding {_e(f.severity)}"><div class="sev {_e(f.severity)}">{_e(f.severity)}</div>'
        f"<h3>{_e(f.title)}</h3><p>{_e(f.summary)}</p>"
        f'<p class="meta">{" · ".join(m for m in meta if m)}</p>'
        + (f'<dl class="evidence">{evidence}</dl>' if evidence else "")
        + (f'<strong>What to do</strong><ol class="fix">{fixes}</ol>' if fixes else "")
        + "</div>"
    )


def _table_html(head: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _pools_html(pools: tuple[tuple[str, ...], ...]) -> str:
    if not pools:
        return ""
    return f'<h3 style="margin-top:18px">Pools</h3><p>{_e(POOL_NOTE)}</p>{_table_html(POOL_HEAD, pools)}'


COMMAND_WORDS = ("CONFIG ", "CLIENT ", "clientscope ", "redis-cli ", "kubectl ", "valkey-cli ")


def _step(text: str) -> str:
    """A remediation step; a command is shown as code, its comment as text."""
    if not text.startswith(COMMAND_WORDS):
        return _e(text)
    command, _, comment = text.rpartition("   # ") if "   # " in text else (text, "", "")
    note = f' <span class="meta">— {_e(comment.strip())}</span>' if comment.strip() else ""
    return f"<code>{_e(command.strip())}</code>{note}"


def _servers_html(rows: tuple[tuple[str, ...], ...]) -> str:
    return f"<h3>Servers</h3>{_table_html(SERVER_HEAD, rows)}" if rows else ""


def _settings_html(settings: tuple[Setting, ...]) -> str:
    if not settings:
        return "<p>No change recommended.</p>"
    rows = "".join(
        f"<tr><td><code>{_e(s.name)}</code></td><td>{_e(s.current or '—')}</td><td><strong>{_e(s.value)}</strong></td>"
        f"<td>{_e(s.why)}</td></tr>"
        for s in settings
    )
    return f"<table><tr><th>setting</th><th>now</th><th>recommended</th><th>why</th></tr>{rows}</table>"


def coverage_rows(c: Coverage) -> list[tuple[str, str]]:
    """(what, value) lines of the method and data section."""
    errors = (
        "; ".join(f"{k}: {n} (e.g. {m!r})" if m else f"{k}: {n}" for k, n, m in c.errors) or "none"
    )
    gaps = "; ".join(
        f"{i} {when(a)} → {when(b, date=False)} ({duration(b - a)})" for i, a, b in c.gaps[:8]
    )
    if len(c.gaps) > 8:
        gaps += f"; and {len(c.gaps) - 8} more"
    return [
        (
            "window",
            f"{when(c.first)} → {when(c.last)} ({duration(c.last - c.first) if c.first and c.last else '—'})",
        ),
        ("instances", ", ".join(c.instances) or "—"),
        (
            "captures",
            f"{c.captures} ({c.ok} ok, {c.failed} failed), every {duration(c.median_interval_s)} (median)",
        ),
        ("failed captures by kind", errors),
        ("gaps (more than 3 intervals without a capture)", gaps or "none"),
        ("client rows", f"{c.client_rows:,}"),
        ("CLIENT LIST lines that could not be parsed", f"{c.rejected_lines:,}"),
        ("capture sources", ", ".join(f"{k}: {n}" for k, n in c.sources) or "—"),
        ("timestamps from", ", ".join(f"{k}: {n}" for k, n in c.ts_sources) or "—"),
    ]


METHOD = (
    "Every capture is one CLIENT LIST, INFO and CONFIG GET of a server, parsed into typed tables. "
    "Connected clients are what the server counts against its limit: INFO connected_clients plus "
    "replicas and cluster links (else the CLIENT LIST line count); the limit is the effective "
    "maxclients from CONFIG GET (else INFO). Rejections are growth of INFO rejected_connections "
    "between captures, and captures the server itself refused. A restart is a change of INFO run_id. "
    "The growth trend is a least-squares line through the captures since the last restart, up to the first "
    "one at the limit; its 95 % prediction interval assumes independent normal residuals. Charts aggregate "
    "per capture (or per time bucket when there are many captures) before drawing."
)


def _coverage_html(c: Coverage, notes: tuple[str, ...]) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in coverage_rows(c))
    extra = "".join(f"<li>{_e(n)}</li>" for n in (*c.notes, *notes))
    return f'<p>{_e(METHOD)}</p><dl class="facts">{rows}</dl>' + (
        f"<ul>{extra}</ul>" if extra else ""
    )


def render_html(content: Content) -> str:
    template = Template(
        resources.files("clientscope.reporting")
        .joinpath("templates/report.html")
        .read_text("utf-8")
    )
    css = (
        resources.files("clientscope.reporting").joinpath("templates/report.css").read_text("utf-8")
    )
    main, *rest = content.figures or (None,)
    findings = (
        "".join(_finding_html(f) for f in content.findings)
        or "<p>No findings: nothing unusual was found.</p>"
    )
    return template.substitute(
        title=_e(content.title), subtitle=_e(content.subtitle), version=_e(content.version), css=css,
        dataset=_e(content.dataset), cards=_cards_html(content.summary) + _servers_html(content.servers),
        main_figure=_img(main) if main else "",
        timeline=_timeline_html(content.events), findings=findings, settings=_settings_html(content.settings) + _pools_html(content.pools),
        figures="".join(_img(f) for f in rest if f is not None), coverage=_coverage_html(content.coverage, content.notes),
    )  # fmt: skip


# ------------------------------------------------------------------ Markdown
def _md(value: object) -> str:
    """Plain text for Markdown: names inside it never become markup, links, HTML or cell breaks."""
    return for_markdown(value, limit=PROSE_CHARS)


def render_markdown(content: Content, base: Path) -> str:
    """Markdown for wikis and Git hosts; figure links are relative to `base`."""
    out = [f"# {_md(content.title)}", "", f"_{_md(content.subtitle)}_", "", "## Summary", ""]
    out += [
        f"- **{_md(label)}:** {_md(value)} — {_md(note)}"
        for label, value, note, _ in card_values(content.summary)
    ]
    if content.servers:
        out += ["", "### Servers", "", "| " + " | ".join(SERVER_HEAD) + " |"]
        out += ["| " + " | ".join("---" for _ in SERVER_HEAD) + " |"]
        out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in content.servers]
    out += [""] + [_md_figure(f, base) for f in content.figures[:1]]
    out += [
        "## Incident timeline",
        "",
        "| time (UTC) | event | instance | what happened |",
        "| --- | --- | --- | --- |",
    ]
    out += [
        f"| {when(e.at)} | {_md(e.kind)} | {_md(e.instance)} | {_md(e.text)} |" for e in content.events
    ]
    out += ["", "## Findings", ""]
    for f in content.findings:
        out += _md_finding(f)
    if not content.findings:
        out += ["No findings: nothing unusual was found.", ""]
    out += ["## Recommended settings", ""]
    if content.settings:
        out += ["| setting | now | recommended | why |", "| --- | --- | --- | --- |"]
        out += [
            f"| {_md(s.name)} | {_md(s.current or '—')} | **{_md(s.value)}** | {_md(s.why)} |"
            for s in content.settings
        ]
    else:
        out += ["No change recommended."]
    if content.pools:
        out += ["", "### Pools", "", POOL_NOTE, "", "| " + " | ".join(POOL_HEAD) + " |"]
        out += ["| " + " | ".join("---" for _ in POOL_HEAD) + " |"]
        out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in content.pools]
    out += ["", "## Charts", ""] + [_md_figure(f, base) for f in content.figures[1:]]
    out += ["## Method and data coverage", "", METHOD, ""]
    out += [f"- **{_md(k)}:** {_md(v)}" for k, v in coverage_rows(content.coverage)] + [
        f"- {_md(n)}" for n in (*content.coverage.notes, *content.notes)
    ]
    out += [
        "",
        f"_Generated by clientscope {_md(content.version)} from {_md(content.dataset)}. All times UTC._",
        "",
    ]
    return "\n".join(out)


def _md_figure(f: FigureFile, base: Path) -> str:
    return f"![{_md(f.title)}]({f.png.relative_to(base).as_posix()})\n\n_{_md(f.caption)}_\n"


def _md_finding(f: FindingView) -> list[str]:
    lines = [f"### {f.severity.upper()}: {_md(f.title)}", "", _md(f.summary), ""]
    meta = [f"instance {for_markdown(f.instance, code=True)}" if f.instance else "",
            f"kind {for_markdown(f.kind, code=True)}" if f.kind else "",
            f"group {for_markdown(f.group, code=True)}" if f.group else "",
            f"first seen {when(f.first_seen)}" if f.first_seen else "",
            f"confidence {f.confidence:.0%}" if f.confidence is not None else ""]  # fmt: skip
    if any(meta):
        lines += [" · ".join(m for m in meta if m), ""]
    if f.evidence:
        lines += (
            ["| evidence | value |", "| --- | --- |"]
            + [f"| {_md(k)} | {_md(v)} |" for k, v in f.evidence]
            + [""]
        )
    if f.remediation:
        lines += ["What to do:", ""] + [f"{i}. {_md(r)}" for i, r in enumerate(f.remediation, 1)] + [""]
    return lines
