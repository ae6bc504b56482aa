"""`report`: a dataset -> the postmortem (report.html, report.md, figures/).

    import clientscope as cs
    result = cs.report("incident.cs", "reports/incident")
    result.html        # reports/incident/report.html: one file, figures inline, opens from disk

The report states what happened (summary card, timeline), why (findings from
`diagnose`, with evidence), what to change (settings from the findings and
`plan`) and how sure it is (method, captures, gaps, collector errors).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import polars as pl

from clientscope.analysis.model import Model, ServerModel, build_model
from clientscope.analysis.timeline import timeline
from clientscope.dataset import Dataset
from clientscope.errors import AnalysisError, ConfigError, DatasetError, DatasetWriteError
from clientscope.escape import for_html
from clientscope.reporting import facts as F
from clientscope.reporting import series as S
from clientscope.reporting.analyses import (
    SYMPTOMS,
    alert_events,
    capacity,
    cause,
    exhaustion,
    finding_events,
    findings,
)
from clientscope.reporting.charts import CHARTS
from clientscope.reporting.render import (
    Content,
    FigureFile,
    FindingView,
    render_html,
    render_markdown,
    when,
)
from clientscope.reporting.style import style
from clientscope.vocabulary import Severity
from clientscope.window import select

__all__ = ["ReportResult", "report", "write_figures"]


@dataclass(frozen=True)
class ReportResult:
    """Where the report went and what it says in one line."""

    out: Path
    html: Path
    markdown: Path
    figures: tuple[Path, ...]
    findings: int
    cause: str
    html_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out), "html": str(self.html), "markdown": str(self.markdown),
            "figures": [str(p) for p in self.figures], "findings": self.findings, "cause": self.cause,
            "html_bytes": self.html_bytes, "seconds": round(self.seconds, 3),
        }  # fmt: skip

    def _repr_html_(self) -> str:
        return (
            f"<div><strong>clientscope report</strong> <code>{for_html(str(self.html))}</code>: "
            f"{self.findings} finding(s); cause: {for_html(self.cause)}; "
            f"{self.html_bytes / 1024:.0f} KiB, {len(self.figures)} figure files, {self.seconds:.1f} s</div>"
        )


def report(
    ds_or_path: Dataset | Path | str,
    out: Path | str,
    *,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    instance: str | None = None,
    title: str | None = None,
) -> ReportResult:
    """Write report.html, report.md and figures/ (PNG + SVG) for a dataset into `out`."""
    began = time.perf_counter()
    ds = select(ds_or_path, start=start, end=end, instance=instance)
    series = timeline(ds)
    if series.is_empty():
        raise DatasetError(
            f"{ds.root} has no captures in the chosen window/instance: nothing to report"
        )
    out = Path(out)
    staging = _prepare(out)
    try:  # everything is written aside first: a failure leaves no half-written report
        content = _content(ds, series, staging, instance, title)
        _write_text(staging / "report.html", render_html(content))
        _write_text(staging / "report.md", render_markdown(content, staging))
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    html_path, md_path = out / "report.html", out / "report.md"
    files = tuple(out / "figures" / p.name for f in content.figures for p in (f.png, f.svg))
    return ReportResult(
        out=out, html=html_path, markdown=md_path, figures=files, findings=len(content.findings),
        cause=content.summary.cause, html_bytes=html_path.stat().st_size, seconds=time.perf_counter() - began,
    )  # fmt: skip


def _prepare(out: Path) -> Path:
    """A fresh staging folder beside `out` (same file system, so publishing is a rename)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        (staging / "figures").mkdir()
    except OSError as exc:
        raise DatasetWriteError(
            f"cannot create report directory {out}: {exc.strerror or exc}; choose another --out"
        ) from exc
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Move a complete report from `staging` into `out`, replacing the previous one's files only."""
    old = staging / "previous-figures"
    try:
        if (out / "figures").exists():
            (out / "figures").rename(old)
        (staging / "figures").rename(out / "figures")
        for name in ("report.md", "report.html"):  # the HTML last: it is what people open
            (staging / name).replace(out / name)
    except OSError as exc:
        raise DatasetWriteError(f"could not write the report into {out}: {exc.strerror or exc}") from exc


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise DatasetWriteError(f"could not write {path}: {exc.strerror or exc}") from exc


def _content(
    ds: Dataset, series: pl.DataFrame, out: Path, instance: str | None, title: str | None
) -> Content:
    from clientscope import __version__

    notes: list[str] = []
    model = _model(ds, series, notes)  # once: findings, card, charts, servers read the same
    found = findings(model, notes)
    summary = F.summary_card(series, instance or _cause_instance(found))
    server = _server(model, summary.instance)
    summary = replace(exhaustion(server, summary, notes), cause=cause(found))
    events = [
        *F.timeline(series, server.forecast if server else None),
        *alert_events(model, notes),
        *finding_events(found, summary.instance),
    ]
    settings, pools = capacity(model, summary.instance, notes)
    rejected_lines = int(ds.rejects.select(pl.len()).collect().item())
    coverage = F.coverage(ds, series, rejected_lines)
    return Content(
        title=title or f"Connection exhaustion review: {summary.instance or '?'}",
        subtitle=_subtitle(coverage, summary),
        dataset=str(ds.root), version=__version__, summary=summary,
        events=_bounded(sorted(events, key=lambda e: (e.at, e.instance, e.kind))),
        findings=tuple(found), settings=tuple(settings), pools=_pool_rows(pools),
        figures=write_figures(
            ds, out / "figures", instance=summary.instance, overview=instance is None, model=server,
            series=series,
        ),
        coverage=coverage, notes=tuple(notes), servers=_servers(model, series, found),
    )  # fmt: skip


def _model(ds: Dataset, series: pl.DataFrame, notes: list[str]) -> Model | None:
    try:
        return build_model(ds, built=series)
    except (AnalysisError, ConfigError) as exc:
        notes.append(f"the analyses could not run on this window: {exc}")
        return None


def _server(model: Model | None, instance: str | None) -> ServerModel | None:
    if model is None:
        return None
    try:
        return model.server(instance)
    except AnalysisError:
        return None


def _servers(model: Model | None, series: pl.DataFrame, found: list[FindingView]) -> tuple[tuple[str, ...], ...]:
    """One row per server of a fleet, the one in most trouble first (the model's order): peak,
    trend and time to maxclients as `clientscope forecast` gives them, findings."""
    from clientscope.analysis._common import human_duration, signed

    if model is None or len(model.servers) < 2:
        return ()
    rows = []
    for server in model.servers:  # most urgent first
        name = server.instance
        peak = S.peak_capture(series.filter(pl.col("instance") == name), name) or {}
        util = peak.get("utilization")
        used = f"{peak.get('used', '?')} / {peak.get('maxclients') or '?'}" + (
            f" ({util:.0%})" if isinstance(util, float) else ""
        )
        f = server.forecast
        if f is None:
            trend, eta = f"not forecast ({server.forecast_error})", "—"
        else:
            trend = f"{f.verdict}, {signed(f.slope_per_hour, 0)}/h"
            eta = (
                f"reached {f.exhausted_at:%Y-%m-%d %H:%M} UTC" if f.exhausted_at
                else human_duration(f.time_to_maxclients) if f.time_to_maxclients is not None
                else "—"
            )  # fmt: skip
        mine = [v for v in found if v.instance == name]
        counts = ", ".join(f"{sum(v.severity == sev for v in mine)} {sev}"
                           for sev in Severity if sev != Severity.INFO and any(v.severity == sev for v in mine))  # fmt: skip
        rows.append((name, used, trend, eta, counts or "none"))
    return tuple(rows)


MAX_EVENTS = 80


def _bounded(events: list[F.Event]) -> tuple[F.Event, ...]:
    """At most MAX_EVENTS lines: the first ones, a note, and the last one."""
    if len(events) <= MAX_EVENTS:
        return tuple(events)
    hidden = len(events) - MAX_EVENTS + 1
    last = events[-1]
    note = F.Event(
        last.at, "data", last.instance, f"... {hidden} more events in this window not listed"
    )
    return (*events[: MAX_EVENTS - 2], note, last)


POOL_COLUMNS = ("group", "role", "peak", "pods", "peak_per_pod", "busy_peak", "idle_over_300_peak")


def _pool_rows(observed: pl.DataFrame) -> tuple[tuple[str, ...], ...]:
    """Per-group peaks from `plan` (for pool sizes), as text cells."""
    if observed.is_empty() or not set(POOL_COLUMNS) <= set(observed.columns):
        return ()
    top = observed.select(POOL_COLUMNS).head(12)
    return tuple(tuple("" if v is None else str(v) for v in row) for row in top.iter_rows())


def _subtitle(c: F.Coverage, s: F.Summary) -> str:
    span = f"{when(c.first)} → {when(c.last)}"
    others = f" (and {len(c.instances) - 1} other instance(s))" if len(c.instances) > 1 else ""
    return f"{s.instance}{others} · {span} · {c.captures} captures, {c.client_rows:,} client rows"


def _cause_instance(found: list[FindingView]) -> str | None:
    """The instance the explaining finding is about: the one the report centres on."""
    named = [f for f in found if f.instance and f.kind not in SYMPTOMS]
    return named[0].instance if named else None


def write_figures(
    ds: Dataset, folder: Path, *, instance: str | None = None, overview: bool = False,
    model: ServerModel | None = None, series: pl.DataFrame | None = None,
) -> tuple[FigureFile, ...]:
    """Every chart as figures/<name>.png and .svg (reproducible bytes: no dates in metadata).

    Charts are about `instance`; with `overview` the main chart shows every instance; the
    forecast chart draws `model`'s forecast (the one the card states) and every chart reads
    `series` (the report's timeline) when given, so nothing is computed twice.
    """
    written = []
    for chart in CHARTS:
        extra: dict[str, object] = (
            {"model": model} if chart.name == "leak-trend" and model is not None
            else {"series": series} if series is not None and chart.name != "leak-trend" else {}
        )  # fmt: skip
        fig = chart.draw(ds, instance=None if overview and chart.name == "clients" else instance, **extra)
        png, svg = folder / f"{chart.name}.png", folder / f"{chart.name}.svg"
        with style():  # the SVG ids are salted by rcParams at save time
            fig.savefig(png, format="png", metadata={"Software": None})
            fig.set_layout_engine("none")  # keep the layout just computed: a third faster
            fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
        written.append(FigureFile(chart.name, chart.title, chart.caption, png, svg))
    return tuple(written)
