"""`clientscope compact`, `upgrade` and `reparse`: looking after a dataset's Delta tables."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clientscope.commands.output import DATASET, JSON_HELP, print_json

if TYPE_CHECKING:
    from clientscope.capture import CompactResult

__all__ = ["compact_line", "register"]

RETAIN_HELP = (
    "Keep the files an older version still uses this long (a reader in flight, "
    "open_dataset(version=/as_of=)); at least 1h. Files compaction replaced, and files a "
    "killed writer left, are deleted once older."
)


def register(app: typer.Typer) -> None:
    """Add `compact`, `upgrade` and `reparse` to the app."""

    @app.command()
    def compact(
        dataset: Path = DATASET,
        retain: str = typer.Option("24h", "--retain", help=RETAIN_HELP),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Merge the small files collectors and imports leave, then delete what no reader needs.

        Safe while collect, import and readers run: compaction is one Delta commit per
        table, and readers keep reading the version they opened.
        """
        from datetime import timedelta

        from clientscope.capture import compact as compact_dataset
        from clientscope.config import Where, duration

        seconds = duration(retain, Where.option("--retain"), 10 * 365 * 86400)
        result = compact_dataset(dataset, retain=timedelta(seconds=seconds))
        if as_json:
            print_json(result.to_dict())
        else:
            typer.echo(compact_line(result))

    @app.command()
    def upgrade(
        dataset: Path = DATASET,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Turn a dataset written by clientscope 0.1 (loose Parquet files) into Delta tables.

        Every row is copied and checked (row counts per table, the raw bytes of every
        capture) before the old files move to DATASET/.hive-0.1/, which you may delete
        once satisfied. Run again after an interruption: it finishes.
        """
        from clientscope.dataset import mend
        from clientscope.upgrade import upgrade as upgrade_dataset

        result = upgrade_dataset(
            dataset, progress=None if as_json else lambda text: typer.echo(text, err=True)
        )
        parsed = mend(dataset) if result.unparsed else 0  # an upgrade is a write: parse them now
        if as_json:
            print_json({**result.to_dict(), "parsed_now": parsed})
        else:
            typer.echo(result.note)
            if parsed:
                typer.echo(f"parsed {parsed} of them now")

    @app.command()
    def reparse(
        dataset: Path = DATASET,
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Parse every raw capture again and replace the parsed tables (one commit each).

        For data parsed by an older clientscope. Raw is only read; readers keep the
        version they opened. Refused while a collector writes to the dataset.
        """
        from clientscope.dataset import reparse as reparse_dataset

        result = reparse_dataset(dataset)
        if as_json:
            print_json(result.to_dict())
        else:
            typer.echo(
                f"reparsed {result.captures} captures: "
                + ", ".join(f"{name} {rows}" for name, rows in result.rows.items())
                + " rows"
                + (f"; kept {result.kept} captures that have no raw text to parse (simulated, say) "
                   "as they were" if result.kept else "")
            )  # fmt: skip


def compact_line(result: CompactResult) -> str:
    """One line for people: what `compact` did."""
    return (
        f"compacted {result.tables} tables: {result.files_before} -> {result.files_after} files; "
        f"{result.files_deleted} old files deleted (kept {result.retain_hours} h)"
        + (f"; parsed {result.mended} captures a stopped writer had left" if result.mended else "")
    )
