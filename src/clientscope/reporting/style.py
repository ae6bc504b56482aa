"""One look for every clientscope figure: font, sizes, colours, UTC time axes.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot, so
the library does not touch the user's backend; saving to PNG renders with Agg.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import matplotlib.dates as mdates
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from clientscope.escape import for_figure

__all__ = ["COLORS", "DPI", "PALETTE", "figure", "style", "time_axis"]

DPI = 100
SIZE = (10.0, 4.2)

# Okabe-Ito: readable for colour-blind readers and in grey print.
COLORS = {
    "clients": "#0072B2",
    "limit": "#D55E00",
    "threshold": "#E69F00",
    "reject": "#C0001A",
    "restart": "#6B6B6B",
    "forecast": "#CC79A7",
    "blocked": "#009E73",
    "churn": "#56B4E9",
    "muted": "#9A9A9A",
}
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#8C8C8C")

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9.5,
    "axes.titlesize": 11.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.titlepad": 10.0,
    "axes.labelsize": 9.5,
    "axes.labelcolor": "#333333",
    "axes.edgecolor": "#BBBBBB",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "axes.prop_cycle": f"cycler(color={list(PALETTE)!r})",
    "grid.color": "#E6E6E6",
    "grid.linewidth": 0.7,
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "timezone": "UTC",
    "svg.hashsalt": "clientscope",
    "svg.fonttype": "path",
    "path.simplify": True,
    "agg.path.chunksize": 10000,
}


@contextmanager
def style() -> Iterator[None]:
    """The clientscope rcParams, for everything drawn inside the block. Matplotlib's font
    lookups stay quiet inside it: a tick label such as 10^3 is mathtext, whose fallback fonts
    (STIX, Computer Modern) a slim matplotlib install lacks, and each miss logs a "findfont"
    warning to stderr that an on-call reader takes for an error; DejaVu draws the glyphs."""
    fonts = logging.getLogger("matplotlib.font_manager")
    level = fonts.level
    fonts.setLevel(logging.ERROR)
    try:
        with rc_context(cast(Any, RC)):
            yield
    finally:
        fonts.setLevel(level)


def figure(size: tuple[float, float] = SIZE) -> tuple[Figure, Axes]:
    """A new Figure (not registered with pyplot, so nothing leaks) and its single Axes."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def time_axis(ax: Axes) -> None:
    """UTC dates on the x axis, concise labels, named with the zone."""
    locator = mdates.AutoDateLocator(minticks=5, maxticks=10, tz="UTC")  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz="UTC")  # type: ignore[no-untyped-call]
    formatter.formats = ["%Y", "%b", "%d", "%H:%M", "%H:%M", "%H:%M:%S", "%H:%M:%S.%f"]
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel("time (UTC)")


def no_data(ax: Axes, message: str) -> None:
    """Say plainly that there is nothing to draw, instead of an empty frame."""
    ax.text(
        0.5,
        0.5,
        for_figure(message, limit=300),
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="#777777",
    )
    ax.set_xticks([])
    ax.set_yticks([])
