"""What every command that shows an analysis shares: the dataset argument, help texts, and
rendering — Rich tables for people (every cell shown as text, never markup), JSON for machines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import polars as pl
    from rich.console import Console

__all__ = [
    "AT_HELP", "DATASET", "INSTANCE_HELP", "JSON_HELP", "SINCE", "UNTIL", "fmt", "print_json",
    "screen", "table", "window",
]  # fmt: skip

DATASET = typer.Argument(..., help="Dataset directory (from collect, import or simulate).")
INSTANCE_HELP = "Only this instance (default: all, or the busiest where one is needed)."
JSON_HELP = "Print JSON instead of tables."
TIME_WORDS = (
    "ISO 8601 (2026-11-26T09:30:00Z, 2026-11-26 09:30; no zone means UTC), epoch seconds, "
    "or relative to the data's end (-2h, -1h30m)"
)
AT_HELP = f"Use the last capture at or before this time, not the latest: {TIME_WORDS}."
SINCE = typer.Option(None, "--since", help=f"Only captures from this time on: {TIME_WORDS}.")
UNTIL = typer.Option(None, "--until", help=f"Only captures up to this time: {TIME_WORDS}.")


def screen() -> Console:
    from rich.console import Console

    return Console()


def print_json(value: Any) -> None:
    import json

    import polars as pl

    from clientscope.analysis._common import jsonable

    # a DataFrame has a to_dict() too, but of Series: rows are what a machine wants
    plain = hasattr(value, "to_dict") and not isinstance(value, pl.DataFrame)
    payload = value.to_dict() if plain else jsonable(value)
    typer.echo(json.dumps(payload, indent=2, default=str))


def fmt(value: Any, column: str = "") -> str:
    from datetime import datetime

    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if "share" in column or column.endswith(("_pct", "utilization")):
            return f"{value:.1%}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.1f}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


SHORT_HEADERS = {  # long column names, shorter on screen (--json keeps the names)
    "slope_theil_sen_per_h": "slope/h", "slope_ols_per_h": "ols/h",
    "survivors_idle_share": "idle share", "growth_idle_share": "growth idle",
    "share_of_maxclients": "of max", "idle_over_300": "idle>300", "idle_over_600": "idle>600",
    "connections_closed_over_window": "closed in window", "live_connections_hit": "live hit",
}  # fmt: skip


def table(
    frame: pl.DataFrame, title: str, columns: list[str] | None = None, limit: int = 50
) -> None:
    from rich.table import Table
    from rich.text import Text

    from clientscope.escape import for_rich, printable

    if frame.is_empty():
        screen().print(f"[dim]{for_rich(title)}: none[/]")
        return
    cols = [c for c in (columns or frame.columns) if c in frame.columns]
    rows = [  # every cell is data (names come from whoever connects): shown as Text, never markup
        [printable(fmt(v, c)) for v, c in zip(row, cols, strict=True)]
        for row in frame.head(limit).select(cols).iter_rows()
    ]
    console = screen()
    headers = [SHORT_HEADERS.get(c, c) for c in cols]
    shown, wrapped = _fitting(headers, rows, console.width)
    table = Table(title=Text(printable(title)), title_justify="left")
    for i, (c, header) in enumerate(zip(cols[:shown], headers, strict=False)):
        table.add_column(Text(header), justify="right" if frame.schema[c].is_numeric() else "left",
                         no_wrap=not (wrapped and i == shown - 1))  # fmt: skip
    for row in rows:
        table.add_row(*(Text(cell) for cell in row[:shown]))
    console.print(table)
    if shown < len(cols):
        console.print(
            f"[dim]{len(cols) - shown} more column(s) do not fit {console.width} characters: "
            f"{for_rich(', '.join(headers[shown:]))} (widen the terminal or use --json)[/]"
        )
    if frame.height > limit:
        console.print(f"[dim]... {frame.height - limit} more rows (use --json for all)[/]")


WRAPPED_MIN = 24  # characters left for a column that does not fit whole: shown wrapped in them


def _fitting(columns: list[str], rows: list[list[str]], width: int) -> tuple[int, bool]:
    """How many leading columns to show in `width` characters (columns come most useful first),
    and whether the last of them is wrapped: each fits whole, but the first that does not is
    still shown, wrapped, when WRAPPED_MIN characters are left for it (a table of long sentences
    lost its point, the sentence, at 120 columns)."""
    used = 1  # the table's left border
    for i, column in enumerate(columns):
        cell = max([len(column), *(len(row[i]) for row in rows)])
        if used + cell + 3 > width:  # padding and the border after it
            if width - used - 3 >= WRAPPED_MIN:
                return i + 1, True
            return max(i, 2), False
        used += cell + 3
    return len(columns), False


def window(dataset: Any, since: str | None, until: str | None) -> Any:
    """The dataset, narrowed to [since, until] when either is given (`clientscope.window`): the
    one window of every analysis command, `report` and `export`."""
    if since is None and until is None:
        return dataset
    from clientscope.window import select

    return select(dataset, start=since, end=until)
