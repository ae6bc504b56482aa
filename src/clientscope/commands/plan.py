"""`plan`: size maxclients, pools, timeout and tcp-keepalive from the observed needs."""

from __future__ import annotations

from pathlib import Path

import typer

from clientscope.commands.output import (
    DATASET,
    INSTANCE_HELP,
    JSON_HELP,
    fmt,
    print_json,
    screen,
    table,
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
            None, help="Share on top of the peak (default 0.25)."
        ),
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Capacity: recommended maxclients, per-pod pool sizes, timeout and tcp-keepalive."""
        from clientscope.analysis import plan
        from clientscope.analysis.timeline import instances
        from clientscope.dataset import open_dataset

        scaled = _what_if(what_if)
        ds = open_dataset(dataset)  # once: the plan and the list of instances read the same
        p = plan(ds, spec, instance=instance, headroom=headroom, what_if=scaled)
        if as_json:
            print_json(p)
            return
        from clientscope.escape import for_rich

        console = screen()
        console.print(
            f"[bold]{for_rich(p.instance)}[/]: peak {p.peak_used} connections at {fmt(p.peak_at)}, maxclients "
            f"{p.current_maxclients}; from the peak + {p.headroom:.0%}: {p.observed_recommended}"
            + (f"; from the spec: {p.spec_recommended}" if p.spec_recommended else "")
        )
        if not p.apps.is_empty():
            table(p.apps, "deployment spec" + (" (what-if)" if scaled else ""))
        table(p.observed, "observed per group", limit=20)
        if p.per_pod_pool_fit is not None:
            console.print(
                f"largest pool per pod that keeps HPA max under 80%: {p.per_pod_pool_fit}"
            )
        for w in p.warnings:
            console.print(f"[yellow]warning:[/] {for_rich(w, limit=2000)}")
        console.print("[bold]apply:[/]\n  " + "\n  ".join(for_rich(s) for s in p.settings))
        if instance is None and len(names := instances(ds)) > 1:
            console.print(
                f"[dim]this is the busiest of {len(names)} instances ({for_rich(', '.join(names))}); "
                "plan another with --instance[/]"
            )


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
