"""`plan`: size maxclients, pools, timeout and tcp-keepalive from the observed needs."""

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
    fmt,
    print_json,
    screen,
    table,
    window,
)

if TYPE_CHECKING:
    from rich.console import Console

    from clientscope.analysis.capacity import CapacityPlan

HORIZON_HELP = (
    "Never recommend a maxclients that connections reach within this, on the forecast's course "
    "(steady part + growing groups at their rates): 24h, 2d, 3600 (seconds)."
)


def register(app: typer.Typer) -> None:
    """Add the plan command."""

    @app.command("plan")
    def plan_command(
        dataset: Path = DATASET,
        spec: Path | None = typer.Option(
            None, help="Deployment spec YAML: apps, replicas, hpa_max, pool_size."
        ),
        what_if: list[str] = typer.Option(
            [], "--what-if", help="Scale an app of the spec: APP=REPLICAS (repeat)."
        ),
        headroom: float | None = typer.Option(
            None, help="Share on top of the healthy groups' peak (default 0.25)."
        ),
        horizon: str = typer.Option("24h", help=HORIZON_HELP),
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Capacity: recommended maxclients, per-pod pool sizes, timeout and tcp-keepalive.

        maxclients is sized from the healthy groups' peak; leaking groups are left out and shown
        as "fix first", with how long a limit lasts until they are fixed."""
        from clientscope.analysis.capacity import plan_from, plan_options
        from clientscope.analysis.model import build_model
        from clientscope.dataset import open_dataset

        scaled = _what_if(what_if)
        checked = plan_options(spec, headroom, scaled, horizon)[0]  # before any data is read
        model = build_model(window(open_dataset(dataset), since, until), instance=instance)  # once
        p = plan_from(
            model, checked, instance=instance, headroom=headroom, what_if=scaled, horizon=horizon
        )
        if as_json:
            print_json(p)
            return
        console = screen()
        _needs(console, p)
        if not p.apps.is_empty():
            table(p.apps, "deployment spec" + (" (what-if)" if scaled else ""))
        table(p.observed, "observed per group", limit=20)
        if p.per_pod_pool_fit is not None:
            console.print(
                f"largest pool per pod that keeps HPA max under 80%: {p.per_pod_pool_fit}"
            )
        _warnings(console, p)
        from clientscope.escape import for_rich

        console.print("[bold]apply:[/]\n  " + "\n  ".join(for_rich(s) for s in p.settings))
        if instance is None and model.fleet:
            console.print(
                f"[dim]this is the busiest of {len(model.instances)} instances "
                f"({for_rich(', '.join(model.instances))}); plan another with --instance[/]"
            )


def _needs(console: Console, p: CapacityPlan) -> None:
    """The peak, what sizing reads of it (the healthy groups), and the horizon's floor."""
    from clientscope.analysis.capacity import headroom_words, horizon_text
    from clientscope.escape import for_rich

    console.print(
        f"[bold]{for_rich(p.instance)}[/]: peak {p.peak_used} connections at {fmt(p.peak_at)}, "
        f"maxclients {p.current_maxclients}"
    )
    left = f" (leaving out {for_rich(', '.join(p.left_out))})" if p.left_out else ""
    console.print(
        f"healthy groups{left}: peak {p.healthy_peak} at {fmt(p.healthy_peak_at)}; "
        f"{headroom_words(p)}: {p.observed_recommended}"
        + (f"; from the spec: {p.spec_recommended}" if p.spec_recommended else "")
    )
    if p.at_horizon is not None and p.horizon_floor is not None:
        console.print(
            f"in {horizon_text(p.horizon)} on the forecast's course: {p.at_horizon:.0f} connections; "
            f"any limit under {p.horizon_floor} is reached by then"
        )
    console.print(f"[bold]recommended maxclients: {p.recommended_maxclients}[/]")


def _warnings(console: Console, p: CapacityPlan) -> None:
    """Fix first (the leaks), then the other warnings, each once."""
    from clientscope.escape import for_rich

    if p.fix_first:
        console.print(f"[bold red]{for_rich(p.fix_first, limit=2000)}[/]")
    for w in p.warnings:
        if w != p.fix_first:
            console.print(f"[yellow]warning:[/] {for_rich(w, limit=2000)}")


def _what_if(items: list[str]) -> dict[str, int]:
    from clientscope.errors import ConfigError

    out = {}
    for item in items:
        app, _, value = item.partition("=")
        if not app or not value.strip().isdigit():
            raise ConfigError(
                f"--what-if {item!r}: write it as APP=REPLICAS, e.g. --what-if api=12"
            )
        out[app.strip()] = int(value)
    return out
