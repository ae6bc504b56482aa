"""The `clientscope` command: a thin Typer layer over the library.

Each command group lives in its own module under `clientscope.commands` and
registers itself here. Modules import only Typer at load time (polars,
matplotlib and redis are imported inside the commands), so `clientscope
--help` stays instant. Every `ClientscopeError` becomes one line on stderr and
exit code 1, here and only here.
"""

from __future__ import annotations

import importlib
import sys

import typer

from clientscope.errors import ClientscopeError

COMMAND_MODULES = ("ingest", "collect", "storage", "analyses", "plan", "alerts", "kill", "simulate", "report", "notebook")

app = typer.Typer(
    name="clientscope",
    help=(
        "Find why a Redis / Valkey server ran out of connections: capture CLIENT LIST, INFO and "
        "CONFIG, parse them fast, find leaks, churn, blocking and idle clients, forecast "
        "exhaustion, size maxclients and pools, and write the postmortem."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        from clientscope import __version__

        typer.echo(f"clientscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Find why a Redis / Valkey server ran out of connections."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"clientscope.commands.{_name}").register(app)


def main() -> None:
    """Console-script entry point: library errors become one line on stderr and exit 1."""
    import warnings

    from clientscope.escape import printable

    def one_line(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        typer.secho(f"clientscope: note: {printable(message, limit=2000)}", err=True, fg="yellow")

    warnings.showwarning = one_line  # a library warning (e.g. DatasetWarning) is one line on stderr
    try:
        app()
    except ClientscopeError as exc:  # messages carry file names and values: shown, never run
        typer.secho(f"clientscope: error: {printable(exc, limit=4000)}", err=True, fg="red")
        sys.exit(1)


if __name__ == "__main__":
    main()
