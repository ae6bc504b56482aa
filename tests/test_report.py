"""`report`: report.html (self-contained), report.md, figures/; what it states is what the data says."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import clientscope as cs
from clientscope.cli import app
from clientscope.errors import ConfigError
from clientscope.reporting import ReportResult

FIGURES = ("clients", "by-name", "by-ip", "leak-trend", "idle", "age-idle", "blocked", "churn")


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> cs.Dataset:
    path = tmp_path_factory.mktemp("report") / "incident.cs"
    cs.simulate("incident", path, seed=5, captures=120, clients=150)
    return cs.open_dataset(path)


@pytest.fixture(scope="module")
def written(incident: cs.Dataset, tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    return cs.report(incident, tmp_path_factory.mktemp("out") / "incident")


def test_writes_html_markdown_and_figures(written: ReportResult) -> None:
    assert written.html.name == "report.html" and written.markdown.name == "report.md"
    for name in FIGURES:
        for ext in ("png", "svg"):
            path = written.out / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 1000, path
    assert written.html_bytes == written.html.stat().st_size < 3_000_000


def test_html_is_self_contained(written: ReportResult) -> None:
    page = written.html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", page)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "@media print" in page


def test_markdown_links_the_png_files_beside_it(written: ReportResult) -> None:
    text = written.markdown.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(f"figures/{n}.png" for n in FIGURES)
    assert all((written.out / link).is_file() for link in links)


def test_summary_card_states_the_peak_and_the_first_rejection(
    incident: cs.Dataset, written: ReportResult
) -> None:
    info = incident.info.select(
        (pl.col("connected_clients") + pl.col("connected_slaves").fill_null(0)).alias("used"),
        "ts",
        "maxclients",
    ).collect()
    peak = info.sort(["used", "ts"], descending=[True, False]).row(0, named=True)
    page = written.html.read_text()
    assert f"{peak['used']} / {peak['maxclients']}" in page
    assert peak["ts"].strftime("%Y-%m-%d %H:%M:%S UTC") in page
    refused = (
        incident.captures.filter(pl.col("error_kind") == "max_clients")
        .select(pl.col("ts").min())
        .collect()
        .item()
    )
    grew = (
        incident.info.sort("ts")
        .filter(pl.col("rejected_connections").diff() > 0)
        .select(pl.col("ts").min())
        .collect()
        .item()
    )
    first = min(t for t in (refused, grew) if t is not None)
    assert "First rejected connection" in page
    assert first.strftime("%Y-%m-%d %H:%M:%S UTC") in page


def test_findings_and_cause_come_from_the_diagnosis(
    incident: cs.Dataset, written: ReportResult
) -> None:
    diagnosis = cs.diagnose(incident)
    page = written.html.read_text()
    assert diagnosis.findings, "the incident scenario has findings"
    for finding in diagnosis.findings:
        assert _escaped(finding.title) in page
        for step in finding.remediation:  # a command shows as code, its comment beside it
            assert _escaped(step.partition("#")[0].strip()) in page
    assert written.findings == len(diagnosis.findings)
    assert "orders-svc" in written.cause


def test_timeline_has_threshold_rejections_and_growth(written: ReportResult) -> None:
    page = written.html.read_text()
    timeline = page[page.index('id="timeline"') : page.index('id="findings"')]
    for kind in ("threshold", "rejection", "growth", "data"):
        assert f'class="ev ev-{kind}"' in timeline, kind


def test_coverage_counts_captures_and_failures(incident: cs.Dataset, written: ReportResult) -> None:
    caps = incident.captures.collect()
    failed = caps.filter(~pl.col("ok")).height
    md = written.markdown.read_text()
    assert f"{caps.height} ({caps.height - failed} ok, {failed} failed)" in md
    assert f"max_clients: {failed}" in md


def test_window_narrows_every_section(incident: cs.Dataset, tmp_path: Path) -> None:
    ts = incident.captures.select("ts").sort("ts").collect()["ts"]
    start, end = ts[10], ts[39]
    result = cs.report(incident, tmp_path / "w", start=start, end=end)
    md = result.markdown.read_text()
    assert "30 (30 ok, 0 failed)" in md
    assert start.strftime("%Y-%m-%d %H:%M:%S UTC") in md


def test_unknown_instance_and_empty_window_are_clear_errors(
    incident: cs.Dataset, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"instance .nope. is not in .*it has: redis-master-0"):
        cs.report(incident, tmp_path / "x", instance="nope")
    with pytest.raises(ConfigError, match="is before --since"):
        cs.report(incident, tmp_path / "x", start="2026-11-25T09:00:00", end="2026-11-25T08:00:00")
    # an empty window says so, and where the captures are (every command: `window.select`)
    with pytest.raises(ConfigError, match=r"no capture in the window --since 2031-01-01 00:00:00 "
                       r"UTC; the captures of .* run from 2026-11-25 08:00:00 to "):  # fmt: skip
        cs.report(incident, tmp_path / "x", start="2031-01-01")
    done = subprocess.run([sys.executable, "-m", "clientscope", "leaks", str(incident.root), "--since",
                           "2031-01-01"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0 and "no capture in the window --since 2031-01-01" in done.stderr
    assert "needs at least" not in done.stderr and "Traceback" not in done.stderr


def test_figures_are_reproducible(
    incident: cs.Dataset, written: ReportResult, tmp_path: Path
) -> None:
    again = cs.report(incident, tmp_path / "again")
    for name in FIGURES:
        for ext in ("png", "svg"):
            path = f"figures/{name}.{ext}"
            assert (again.out / path).read_bytes() == (written.out / path).read_bytes(), path


def test_cli_report(incident: cs.Dataset, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(incident.root), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output and "Cause:" in res.output
    assert (tmp_path / "cli" / "report.html").is_file()


def test_drawing_the_report_logs_no_font_fallbacks(
    incident: cs.Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Matplotlib's "findfont: ... not found" lines (mathtext tick labels on an install without
    the STIX fonts) would reach the reader's stderr on every report: none is logged."""
    with caplog.at_level(logging.WARNING):
        cs.report(incident, tmp_path / "quiet")
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("matplotlib")]


def _escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_several_instances_centre_on_the_one_with_the_cause(tmp_path: Path) -> None:
    cs.simulate("leak", tmp_path / "fleet.cs", seed=1, captures=60, clients=120, instance="cache-a")
    cs.simulate(
        "healthy", tmp_path / "fleet.cs", seed=2, captures=60, clients=250, instance="cache-b"
    )
    result = cs.report(tmp_path / "fleet.cs", tmp_path / "fleet")
    md = result.markdown.read_text()
    assert md.startswith("# Connection exhaustion review: cache-a")
    assert "instances:** cache-a, cache-b" in md
    assert "| cache-b |" in md  # the timeline names each event's instance
    assert "orders-svc" in result.cause
    growth = [line for line in md.splitlines() if "| growth |" in line]
    # the leak grows on cache-a; cache-b is busier but flat: the growth row is cache-a's
    assert len(growth) == 1 and "| cache-a |" in growth[0], growth
    findings = md[md.index("## Findings") :].split("### ")[1:]
    (leak,) = [f for f in findings if "connection leak from orders-svc" in f.split("\n")[0]]
    assert "instance `cache-a`" in leak  # each finding says which server
    servers = md[md.index("### Servers") :].split("\n\n")[1].splitlines()[2:]
    assert [row.split(" | ")[0] for row in servers] == [
        "| cache-a",
        "| cache-b",
    ]  # most at risk first
    assert "will_exhaust" in servers[0] and "stable" in servers[1] and "| none |" in servers[1]
    assert "<h3>Servers</h3>" in result.html.read_text()


def test_imported_dumps_without_maxclients_say_so(tmp_path: Path) -> None:
    dumps = Path(__file__).resolve().parents[1] / "fixtures" / "dumps" / "loop-valkey.txt"
    cs.import_dumps([dumps], tmp_path / "dumps.cs", instance="valkey-0")
    md = cs.report(tmp_path / "dumps.cs", tmp_path / "dumps").markdown.read_text()
    assert "(maxclients unknown)" in md
    assert "maxclients is unknown" in md  # the coverage note says what to do


def test_a_long_timeline_is_cut_with_a_note() -> None:
    from datetime import UTC, datetime, timedelta

    from clientscope.reporting.facts import Event
    from clientscope.reporting.report import MAX_EVENTS, _bounded

    t0 = datetime(2026, 11, 25, tzinfo=UTC)
    events = [Event(t0 + timedelta(minutes=i), "threshold", "a", f"e{i}") for i in range(200)]
    shown = _bounded(events)
    assert len(shown) == MAX_EVENTS
    assert shown[-1] == events[-1] and shown[0] == events[0]
    assert shown[-2].text == f"... {200 - MAX_EVENTS + 1} more events in this window not listed"


def test_timeline_tells_a_restart_by_its_run_id(tmp_path: Path) -> None:
    from clientscope.analysis.timeline import timeline
    from clientscope.reporting import facts

    cs.simulate("restart", tmp_path / "restart.cs", seed=4, captures=60, clients=80)
    ds = cs.open_dataset(tmp_path / "restart.cs")
    frame = timeline(ds)
    runs = ds.info.select("ts", "run_id").sort("ts").collect()
    changed = runs.filter(pl.col("run_id") != pl.col("run_id").shift())["ts"]
    events = facts.timeline(frame)
    restarts = [e.at for e in events if e.kind == "restart"]
    assert restarts == changed.to_list() and len(restarts) == 1
