"""Command group placeholder: its owner replaces this module with real commands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds no command yet."""
