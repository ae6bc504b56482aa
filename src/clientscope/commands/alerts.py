"""`alerts`: replay alert rules over the captures — each rule's state, its firings, and the
warning each gave before every exhaustion."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clientscope.commands.output import (
    DATASET,
    INSTANCE_HELP,
    JSON_HELP,
    SINCE,
    UNTIL,
    print_json,
    screen,
    table,
    window,
)

if TYPE_CHECKING:
    from clientscope.analysis.alerts import AlertReplay

EXHAUSTIONS_SHOWN = 5

RULES_HELP = (
    "YAML rules file: a Prometheus rules file ('groups:' / 'rules:' with alert, expr, for, "
    "labels.severity, annotations.summary; expr over redis_connected_clients, "
    "redis_config_maxclients, redis_blocked_clients, redis_connected_slaves, rate/increase of "
    "redis_connections_received_total or redis_rejected_connections_total, or the clientscope_* "
    "series of `export`), or 'rules:' then items with name, metric, op (> >= < <= == !=), "
    "threshold, for (e.g. 5m), severity (critical|warning|info), summary. Metrics: "
    "connected_clients, used, maxclients, utilization, connected_ratio, blocked_clients, "
    "pubsub_clients, connected_slaves, rejected_connections, rejected_per_s, "
    "connections_per_s, n_clients, or a ratio 'a / b'."
)


def register(app: typer.Typer) -> None:
    """Add the alerts command."""

    @app.command("alerts")
    def alerts_command(
        dataset: Path = DATASET,
        rules: Path | None = typer.Option(None, help=RULES_HELP),
        defaults: bool = typer.Option(
            False,
            "--with-defaults",
            help="Replay the built-in rules too when --rules is given (the runbook's three and "
            "RedisMaxClientsReached).",
        ),
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        max_gap: str = typer.Option(
            "5m", help="Captures further apart than this end a pending or firing episode."
        ),
        forecast_within: str = typer.Option(
            "1h",
            help="The leak-aware rule replayed before each exhaustion: the forecast puts "
            "maxclients within this.",
        ),
        no_forecast: bool = typer.Option(
            False, "--no-forecast", help="Leave out the leak-aware forecast rule (faster)."
        ),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Replay alert rules over the captures: each rule's state at the end of the data
        (inactive, pending, firing), when it fired and resolved, and how much warning it gave
        before each exhaustion."""
        from clientscope.analysis.alerts import replay_alerts

        replay = replay_alerts(
            window(dataset, since, until), rules, instance=instance, include_defaults=defaults or None,
            max_gap=max_gap, forecast_within=None if no_forecast else forecast_within,
        )  # fmt: skip
        if as_json:
            print_json(replay)
            return
        show(replay)


def show(replay: AlertReplay) -> None:
    """The replay for people: the rules' states, the firings, the warning before each
    exhaustion, then what it all says."""
    import polars as pl

    from clientscope.escape import for_rich

    table(replay.states, f"alert rules at the end of the data ({replay.data_end:%Y-%m-%d %H:%M:%S} UTC)",
          ["rule", "severity", "instance", "state", "since", "detail", "fired", "resolved"])  # fmt: skip
    if not replay.firings.is_empty():
        table(replay.firings, "firings", ["rule", "severity", "instance", "pending_since",
                                          "fired_at", "resolved_at", "peak"])  # fmt: skip
    for ex in replay.exhaustions.head(EXHAUSTIONS_SHOWN).iter_rows(named=True):
        mine = replay.warnings.filter(
            (pl.col("instance") == ex["instance"]) & (pl.col("exhaustion") == ex["exhaustion"])
        )
        table(mine, _exhaustion_title(ex), ["rule", "severity", "warning", "fired_at"])
    console = screen()
    hidden = replay.exhaustions.height - EXHAUSTIONS_SHOWN
    if hidden > 0:
        console.print(f"[dim]... {hidden} more exhaustion(s) (use --json for all)[/]")
    quiet = replay.episodes.is_empty()
    for line in replay.headline():
        console.print(f"[{'green' if quiet else 'yellow'}]{for_rich(line)}[/]")


def _exhaustion_title(ex: dict[str, object]) -> str:
    first = ex["first_rejection_at"]
    rejection = (
        f"first rejection {first:%Y-%m-%d %H:%M:%S}" if first is not None else "no rejection seen"
    )
    return (
        f"warning before exhaustion {ex['exhaustion']} on {ex['instance']}: limit reached "
        f"{ex['limit_at']:%Y-%m-%d %H:%M:%S}, {rejection}, {ex['rejected']} connection(s) rejected"
    )
