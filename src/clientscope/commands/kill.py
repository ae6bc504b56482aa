"""`kill-script`: CLIENT KILL commands for matching clients, to review and pipe into redis-cli."""

from __future__ import annotations

from pathlib import Path

import typer

from clientscope.commands.output import AT_HELP, DATASET, print_json


def register(app: typer.Typer) -> None:
    """Add the kill-script command."""

    @app.command("kill-script")
    def kill_script_command(
        dataset: Path = DATASET,
        idle_over: int | None = typer.Option(600, help="Only clients idle longer than this (s)."),
        group: str | None = typer.Option(None, help="Only this group (client name, or lib@ip)."),
        ip: str | None = typer.Option(None, help="Only this source IP."),
        name: str | None = typer.Option(None, help="Only this client name."),
        lib: str | None = typer.Option(None, help="Only this lib-name."),
        user: str | None = typer.Option(None, help="Only this ACL user."),
        at: str | None = typer.Option(None, help=AT_HELP),
        instance: str | None = typer.Option(
            None, help="The server to kill on; needed when the dataset holds several (ids are per server)."
        ),
        include_protected: bool = typer.Option(
            False, help="Also list replicas, masters, MONITOR and the collector (normally skipped)."
        ),
        out: Path | None = typer.Option(
            None, help="Write the script to this file instead of stdout."
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print the matching clients and commands as JSON, not a script."
        ),
    ) -> None:
        """Emit CLIENT KILL ID commands for matching clients, for review. Never runs them."""
        from clientscope.analysis import kill_script

        ks = kill_script(
            dataset, idle_over=idle_over, group=group, ip=ip, name=name, lib=lib, user=user,
            at=at, instance=instance, include_protected=include_protected,
        )  # fmt: skip
        if as_json:
            print_json(ks)
            return
        if out is not None:
            out.write_text(ks.text())
            typer.echo(
                f"wrote {len(ks.commands)} command(s) to {out} (review before running)", err=True
            )
            return
        typer.echo(ks.text(), nl=False)
