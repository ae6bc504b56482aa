"""`alerts`: replay alert rules over the captured timeline."""

from __future__ import annotations

from pathlib import Path

import typer

from clientscope.commands.output import (
    DATASET,
    INSTANCE_HELP,
    JSON_HELP,
    print_json,
    screen,
    table,
)


def register(app: typer.Typer) -> None:
    """Add the alerts command."""

    @app.command("alerts")
    def alerts_command(
        dataset: Path = DATASET,
        rules: Path | None = typer.Option(
            None,
            help="YAML file of rules: 'rules:' then items with name, metric, op (> >= < <= == !=), "
            "threshold, for (e.g. 5m), severity (critical|warning|info), summary. Metrics: "
            "connected_clients, used, maxclients, utilization, connected_ratio, blocked_clients, "
            "pubsub_clients, connected_slaves, rejected_connections, rejected_per_s, "
            "connections_per_s, n_clients, or a ratio 'a / b'.",
        ),
        defaults: bool = typer.Option(
            False,
            "--with-defaults",
            help="Replay the three classic rules too when --rules is given.",
        ),
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Replay alert rules over the captures: when each would have fired and resolved."""
        from clientscope.analysis import alerts

        frame = alerts(dataset, rules, instance=instance, include_defaults=defaults or None)
        if as_json:
            print_json(frame)
            return
        if frame.is_empty():
            screen().print("[green]no rule would have fired[/]")
            return
        table(frame, "alert firings", ["rule", "severity", "instance", "expr", "pending_since",
                                        "fired_at", "resolved_at", "peak"])  # fmt: skip
