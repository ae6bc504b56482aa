"""`kill-script`: CLIENT KILL commands for idle clients, to review and pipe into redis-cli.

stdout holds only the commands (so `clientscope kill-script DS | redis-cli ...` and
`redis-cli ... < FILE` run with no error); the review — server, capture, run_id, how the
clients were chosen, one row per kill with its reason, what was left out — goes to stderr,
and with `--out FILE` also to FILE.review.txt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clientscope.commands.output import AT_HELP, DATASET, fmt, print_json

if TYPE_CHECKING:
    import polars as pl
    from rich.console import Console
    from rich.table import Table

    from clientscope.analysis import KillScript

IDLE_OVER_HELP = (
    "Only clients idle longer than this (s). Unset, with no other filter: the idle connections "
    "of the groups `leaks` finds leaking, or normal clients idle over 600 s when there is no "
    "leak; unset with a filter: 600."
)
OUT_HELP = (
    "Write the commands to this file (nothing else) and the review beside it, to "
    "FILE.review.txt; the review is shown on stderr too."
)
PROTECTED_HELP = (
    "Also list replica and master links, MONITOR and the collector (normally left out). "
    "Blocked, pub/sub and in-flight clients are never listed."
)
JSON_HELP = (
    "Print the chosen clients with their reasons and commands, and the clients left out, as "
    "JSON on stdout (no review on stderr)."
)
REVIEW_COLUMNS = ("id", "group", "addr", "age", "idle", "cmd", "reason")  # group: name, or lib@ip
LEFT_OUT_SHOWN = 10


def register(app: typer.Typer) -> None:
    """Add the kill-script command."""

    @app.command("kill-script")
    def kill_script_command(
        dataset: Path = DATASET,
        idle_over: int | None = typer.Option(None, help=IDLE_OVER_HELP),
        group: str | None = typer.Option(None, help="Only this group (client name, or lib@ip)."),
        ip: str | None = typer.Option(None, help="Only this source IP."),
        name: str | None = typer.Option(None, help="Only this client name."),
        lib: str | None = typer.Option(None, help="Only this lib-name."),
        user: str | None = typer.Option(None, help="Only this ACL user."),
        at: str | None = typer.Option(None, help=AT_HELP),
        instance: str | None = typer.Option(
            None, help="The server to kill on; needed when the dataset holds several (ids are per server)."
        ),
        include_protected: bool = typer.Option(False, help=PROTECTED_HELP),
        leaked: bool = typer.Option(
            False, "--leaked", help="The leaking groups' connections, idle since soon after they "
            "opened (what no filter picks), however young the leak; --group and the other "
            "filters narrow it. Not with --idle-over."
        ),
        out: Path | None = typer.Option(None, help=OUT_HELP),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """CLIENT KILL commands for idle clients, to review, then pipe into redis-cli. Never runs them.

        stdout holds only the commands, one a line: `CLIENT KILL ID <id> ADDR <addr> SKIPME yes`
        (both filters must match, so after a restart a kill matches nothing and redis-cli
        answers 0). The review goes to stderr: the server, capture time and run_id the ids
        belong to, how the clients were chosen, and one row per kill with its name, address,
        age, idle, last command and reason. Blocked clients (BLPOP, XREAD BLOCK, ...), pub/sub
        subscribers and clients with a command in flight (MULTI/WATCH, unread input, unsent
        reply) are never listed; replica and master links, MONITOR and the collector only
        with --include-protected. Run the reviewed file with `redis-cli -h HOST -p PORT < FILE`.
        """
        from clientscope.analysis import kill_script

        ks = kill_script(
            dataset, idle_over=idle_over, group=group, ip=ip, name=name, lib=lib, user=user,
            at=at, instance=instance, include_protected=include_protected, leaked=leaked,
        )  # fmt: skip
        if out is not None:
            _write(ks, out)
        if as_json:
            print_json(ks)
            return
        _review(ks, _stderr(), out)
        if out is None:
            typer.echo(ks.text(), nl=False)


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _write(ks: KillScript, out: Path) -> None:
    from rich.console import Console

    out.write_text(ks.text())
    review = out.with_name(out.name + ".review.txt")
    with review.open("w") as fh:
        _review(ks, Console(file=fh, width=200, color_system=None, force_terminal=False), out)


def _review(ks: KillScript, console: Console, out: Path | None) -> None:
    """The header, one row per kill with its reason, what was left out and how to run it."""
    from rich.text import Text

    from clientscope.analysis.kill import WHY_LEFT_OUT
    from clientscope.escape import printable

    for line in ks.header():
        console.print(Text(line))
    if ks.clients.is_empty():
        console.print(Text("No client to kill."))
    else:
        console.print(_table(ks.clients, REVIEW_COLUMNS, f"{len(ks.commands)} client(s) to kill"))
    for kind, n in ks.left_out_counts():
        console.print(Text(f"left out: {n} {WHY_LEFT_OUT[kind]}"))
    if not ks.left_out.is_empty():
        shown = ks.left_out.head(LEFT_OUT_SHOWN)
        title = "left out, never killed" + (
            f" (the first {LEFT_OUT_SHOWN}; --json lists all)" if ks.left_out.height > shown.height else ""
        )
        console.print(_table(shown, ("id", "group", "addr", "idle", "cmd", "left_out", "reason"), title))
    if ks.commands:
        file = printable(out) if out is not None else "FILE (this command's stdout)"
        console.print(Text(f"Run after review: redis-cli -h HOST -p PORT < {file}   "
                           "(it answers 1 per client killed, 0 for one already gone)."))  # fmt: skip


def _table(frame: pl.DataFrame, columns: tuple[str, ...], title: str) -> Table:
    """Every cell as Text: names, addresses and commands come from whoever connects."""
    from rich.table import Table
    from rich.text import Text

    from clientscope.escape import printable

    table = Table(title=Text(title), title_justify="left")
    for column in columns:
        numeric = column in ("id", "age", "idle")
        table.add_column(Text(f"{column} (s)" if column in ("age", "idle") else column),
                         justify="right" if numeric else "left")  # fmt: skip
    for row in frame.select(columns).iter_rows():
        table.add_row(*(Text(printable(fmt(v), 400)) for v in row))
    return table
