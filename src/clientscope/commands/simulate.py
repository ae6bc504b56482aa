"""`clientscope simulate`: write a capture dataset for a named scenario with known ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clientscope.vocabulary import SCENARIOS

_SCENARIO_HELP = "Scenario: " + ", ".join(SCENARIOS) + " (each described below)."
_SCENARIOS_TEXT = "Scenarios:\n\n" + "\n\n".join(f"{name}: {what}" for name, what in SCENARIOS.items())


def register(app: typer.Typer) -> None:
    """Add the `simulate` command."""

    @app.command("simulate", epilog=_SCENARIOS_TEXT)
    def simulate_command(
        scenario: str = typer.Argument(..., help=_SCENARIO_HELP),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Dataset directory to write (appended to)."
        ),
        seed: int = typer.Option(0, help="Random seed: the same seed gives the same dataset."),
        captures: int | None = typer.Option(
            None, help="Number of captures (default 120; 576 for daily_cycle)."
        ),
        clients: int = typer.Option(200, help="About how many connections the healthy part holds."),
        interval: float | None = typer.Option(
            None, help="Seconds between captures (default 15; 300 for daily_cycle)."
        ),
        instance: str = typer.Option("redis-master-0", help="Instance name to tag the captures."),
        leak_rate: float | None = typer.Option(
            None, help="Connections/min the leak / slow_leak scenarios leak (default 2 / 1)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the ground truth as JSON."),
    ) -> None:
        """Generate captures of a scenario (leak, no pooling, blocking, ...) with known ground truth."""
        from clientscope.simulation import simulate

        result = simulate(
            scenario, out, seed=seed, captures=captures, clients=clients,
            interval=interval, instance=instance, leak_rate=leak_rate,
        )  # fmt: skip
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
            return
        from rich.console import Console

        from clientscope.escape import for_rich

        console = Console()
        console.print(
            f"[bold]{result.scenario}[/] → {for_rich(result.path)}: {result.captures} captures "
            f"({result.failed_captures} failed), {result.client_rows:,} client rows, "
            f"{result.start:%Y-%m-%d %H:%M} .. {result.end:%H:%M} UTC, maxclients {result.maxclients}"
        )
        for leak in result.leaking:
            console.print(f"  leaking: {for_rich(leak.group)} at {leak.rate_per_min:g} connections/min")
        if result.expected:
            console.print(f"  a diagnosis should report: {', '.join(result.expected)}")
