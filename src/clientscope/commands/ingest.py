"""`clientscope import`: text dumps into a capture dataset."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("import", help=IMPORT_HELP)(import_command)


IMPORT_HELP = """Import text dumps you already have into a capture dataset.

Reads `redis-cli client list`, `redis-cli info` and `redis-cli config get` output, one capture per
file or many per file separated by `date` lines (the output of a shell loop); gzip, bzip2 and
xz files are read as the text inside. Each capture's time
comes from --at, a `date` line before it, a timestamp in the file name (ISO 8601,
YYYYmmdd-HHMMSS, unix seconds or ms) or the file's modification time (for standard input: the
time it is read); the table says which.
Importing the same file again is detected and skipped. Lines that are not client lines are kept
and listed with their file line numbers; a line longer than --max-line-length is kept cut, and
runs of blank lines are counted. Files with no Redis output in them (a README, scripts, logs
next to the dumps) are skipped and listed, never imported as captures.

Example: clientscope import dumps/ --out incident.cs --instance redis-master-0
"""


def import_command(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Dump files, globs (quote them), directories (read recursively), or - for "
            "standard input (redis-cli client list | clientscope import - -o DS).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Dataset directory to append to (created if missing)."),
    ],
    instance: Annotated[
        str, typer.Option("--instance", "-i", help="Name of the server the dumps came from.")
    ] = "imported",
    at: Annotated[
        datetime | None,
        typer.Option(
            help="Capture time for a single-capture file (ISO 8601; naive times are read in --tz).",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"],
        ),
    ] = None,
    tz: Annotated[
        str,
        typer.Option(
            help="Time zone of timestamps that do not name one (IANA name, e.g. Europe/Berlin)."
        ),
    ] = "UTC",
    maxclients: Annotated[
        int | None,
        typer.Option(
            help="The server's maxclients, when the dumps have no INFO/CONFIG that says it."
        ),
    ] = None,
    max_file_size: Annotated[
        str,
        typer.Option(
            help="Largest dump to read, once decompressed (bytes, or 500M, 2G ...); a larger "
            "file is an error that names it."
        ),
    ] = "2G",
    max_line_length: Annotated[
        str,
        typer.Option(
            help="Longest line to read (bytes, or 64K, 1M ...); a longer line is kept cut in "
            "`rejects` with its line number."
        ),
    ] = "1M",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    from rich.progress import Progress

    from clientscope.ingest import expand_inputs, import_dumps

    files = expand_inputs(inputs)  # walked once; import_dumps takes the files as they are
    with Progress(transient=True, disable=as_json or len(files) < 5) as bar:
        reading = bar.add_task("reading dumps", total=len(files))
        writing = bar.add_task("writing captures", total=None, visible=False)

        def written(done: int, total: int) -> None:
            bar.update(writing, completed=done, total=total, visible=True)

        result = import_dumps(
            files,
            out,
            instance=instance,
            at=at,
            tz=tz,
            maxclients=maxclients,
            max_file_size=max_file_size,
            max_line_length=max_line_length,
            progress=lambda _path: bar.advance(reading),
            written=written,
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    _render(result)


def _shown(path: Path) -> str:
    """A file as the user would write it: relative to here when it is below here."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _render(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from clientscope.escape import for_rich, rich_text

    console = Console()
    table = Table(
        title=f"Imported into {for_rich(result.dataset, 1000)} (instance {for_rich(result.instance)})"
    )
    for col in ("file", "captures", "time from", "first capture (UTC)", "rejected lines"):
        table.add_column(
            col,
            justify="right" if col in ("captures", "rejected lines") else "left",
            overflow="fold" if col == "file" else "ellipsis",  # a path is shown whole
        )
    for f in result.files:
        table.add_row(
            rich_text(_shown(f.path), 1000),
            "skipped (already imported)" if f.skipped else str(f.captures),
            f.ts_source,
            f.first_ts.strftime("%Y-%m-%d %H:%M:%S") if f.first_ts else "-",
            str(len(f.rejected_lines)),
        )
    console.print(table)
    console.print(f"{result.captures_written} capture(s) written.")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {for_rich(note, 1000)}")
    _render_skipped(console, result)
    if result.rejected_lines:
        console.print(
            f"[yellow]{result.rejected_lines} line(s) could not be read as client or INFO lines; "
            "they are kept in the dataset's `rejects` table:[/]"
        )
        shown = 0
        for f in result.files:
            for line, reason in f.rejected_lines:
                if shown < 10:
                    console.print(f"  {for_rich(_shown(f.path), 1000)}:{line}: {for_rich(reason)}")
                shown += 1
        if shown > 10:
            console.print(f"  ... and {shown - 10} more (see `rejects`)")


def _render_skipped(console: Any, result: Any) -> None:
    """Files that are not dumps, and blank lines: said in a line each, never a table row."""
    from clientscope.escape import for_rich

    if result.not_dumps:
        n = len(result.not_dumps)
        names = ", ".join(for_rich(_shown(p), 200) for p in result.not_dumps[:10])
        more = f" and {n - 10} more" if n > 10 else ""
        what = f"{n} files that are not dumps" if n > 1 else "1 file that is not a dump"
        console.print(
            f"[yellow]skipped {what} (no CLIENT LIST, INFO or CONFIG GET output):[/] {names}{more}"
        )
    if result.blank_lines:
        console.print(f"{result.blank_lines:,} blank line(s) skipped (counted, not kept).")
