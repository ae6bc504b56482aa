"""`clientscope report`, `export` and `demo`: thin Typer layer over clientscope.reporting and clientscope.demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from clientscope.commands.output import SINCE, UNTIL

INSTANCE_HELP = "Only this instance (as named in the dataset)."


def register(app: typer.Typer) -> None:
    """Add `report`, `export` and `demo` to the app."""

    @app.command()
    def report(
        dataset: Path = typer.Argument(
            ..., help="Capture dataset directory (from collect, import or simulate)."
        ),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Report directory (default: reports/<dataset name>)."
        ),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        start: str | None = typer.Option(None, "--from", hidden=True, help="Old spelling of --since."),
        end: str | None = typer.Option(None, "--to", hidden=True, help="Old spelling of --until."),
        instance: str | None = typer.Option(None, "--instance", help=INSTANCE_HELP),
        title: str | None = typer.Option(
            None, "--title", help="Report title (default names the instance)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    ) -> None:
        """Write the postmortem: report.html (self-contained), report.md and figures/ (PNG + SVG)."""
        from clientscope.extras import require

        require("matplotlib", "report")
        from clientscope.reporting.report import report as make_report

        target = out or Path("reports") / dataset.resolve().name
        result = make_report(dataset, target, start=since or start, end=until or end,
                             instance=instance, title=title)  # fmt: skip
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        _print_report(result)

    @app.command()
    def export(
        dataset: Path = typer.Argument(..., help="Capture dataset directory."),
        out: Path = typer.Option(
            ..., "--out", "-o", help="File to write (e.g. incident.om, series.csv)."
        ),
        format: str = typer.Option(
            "openmetrics",
            "--format",
            "-f",
            help="openmetrics (for `promtool tsdb create-blocks-from openmetrics`), csv or parquet.",
        ),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        start: str | None = typer.Option(None, "--from", hidden=True, help="Old spelling of --since."),
        end: str | None = typer.Option(None, "--to", hidden=True, help="Old spelling of --until."),
        instance: str | None = typer.Option(None, "--instance", help=INSTANCE_HELP),
        top: int = typer.Option(
            20, "--top", min=1, help="Groups kept per dimension; the rest become (other)."
        ),
        names: str = typer.Option(
            "clientscope",
            "--names",
            help="Metric names: clientscope, or redis_exporter (redis_connected_clients, "
            "redis_config_maxclients, redis_connections_received_total...: dashboards and "
            "alert rules written for the exporter work on the backfilled data).",
        ),
        label: list[str] = typer.Option(
            [],
            "--label",
            "-l",
            metavar="NAME=VALUE",
            help="Label on every series, name=value (repeatable), e.g. --label job=redis "
            "--label cluster=eu-1.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    ) -> None:
        """Export low-cardinality series (clients per name / library / IP, idle, blocked,
        utilization; connections received, rejected and evicted clients as counters)."""
        from clientscope.reporting.export import export as do_export
        from clientscope.reporting.export import parse_labels

        result = do_export(
            dataset, out, format, start=since or start, end=until or end, instance=instance, top=top,
            names=names, labels=parse_labels(label),
        )  # fmt: skip
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        typer.echo(
            f"wrote {result.samples:,} samples of {result.series:,} series "
            f"({len(result.metrics)} metrics) to {result.path} [{result.format}]"
        )
        if result.same_millisecond:
            typer.echo(
                f"{result.same_millisecond:,} samples left out: a later capture of the same "
                "instance fell in the same millisecond (its values are kept)"
            )

    @app.command()
    def demo(
        seconds: float = typer.Option(
            60, "--seconds", min=6, help="How long to collect (seconds)."
        ),
        out: Path = typer.Option(
            Path("demo-output"), "--out", "-o", help="Where the dataset and report go."
        ),
        maxclients: int = typer.Option(
            80, "--maxclients", min=20, help="maxclients of the embedded server."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Embedded Valkey + a small app with a leaking worker: collect, diagnose, write the report."""
        from clientscope.demo import run_demo
        from clientscope.escape import printable

        if not as_json:
            typer.echo(
                f"Starting embedded Valkey (maxclients {maxclients}) and the demo app: api (pooled), "
                "leaky-worker (one new connection a second), queue-consumer (BLPOP)."
            )
            typer.echo(f"Collecting every 2 s for {seconds:g} s (Ctrl-C stops early) ...")
        result = run_demo(
            seconds, out, maxclients=maxclients, on_capture=None if as_json else _progress
        )
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        typer.echo("")
        if result.interrupted:
            typer.echo(f"Stopped early: {result.captures} captures. The report covers them.")
        _print_findings(result.findings)
        typer.echo(f"Cause: {printable(result.report.cause, limit=500)}")
        typer.echo(f"\nReport: {result.report.html.resolve()}")
        typer.echo(
            f"Dataset: {result.dataset.resolve()} (try: clientscope summary / top / leaks / "
            "diagnose on it)"
        )


def _progress(captures: int, elapsed: float, clients: int | None) -> None:
    shown = "?" if clients is None else str(clients)
    typer.echo(f"  capture {captures:>3}  t+{elapsed:5.1f} s  {shown} clients")


def _print_report(result: Any) -> None:
    from rich.console import Console

    from clientscope.escape import for_rich

    console = Console()
    console.print(
        f"[bold]Report[/bold] {for_rich(result.html)}  ({result.html_bytes / 1024:.0f} KiB, "
        f"{result.seconds:.1f} s)"
    )
    console.print(f"Markdown {for_rich(result.markdown)}; figures in {for_rich(result.out / 'figures')}")
    console.print(f"{result.findings} finding(s). Cause: [bold]{for_rich(result.cause, limit=500)}[/bold]")


def _print_findings(findings: tuple[Any, ...]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from clientscope.escape import rich_text
    from clientscope.vocabulary import Severity

    table = Table(title="Findings", show_lines=False)
    for column in ("severity", "finding", "group"):
        table.add_column(column)
    for f in findings:
        table.add_row(
            Text(f.severity, style=Severity(f.severity).color),
            rich_text(f.title, limit=500),
            rich_text(f.group or ""),
        )
    Console().print(table if findings else "No findings.")
