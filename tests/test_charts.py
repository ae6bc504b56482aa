"""Charts: each a Figure from a dataset, aggregated before drawing, compared with reference images.

Reference PNGs live in tests/baseline_images/. They are drawn with the Agg
backend, DejaVu Sans (bundled with matplotlib) and the DPI the report uses, from
a dataset simulated with a fixed seed. To redraw them after an intended change:

    CLIENTSCOPE_UPDATE_BASELINES=1 .venv/bin/python -m pytest tests/test_charts.py
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import polars as pl
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.testing.compare import compare_images

import clientscope as cs
from clientscope.reporting import charts
from clientscope.reporting.style import DPI

BASELINES = Path(__file__).parent / "baseline_images"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "charts"
TOLERANCE = 2.0  # RMS over 0-255 grey levels
UPDATE = os.environ.get("CLIENTSCOPE_UPDATE_BASELINES") == "1"


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> cs.Dataset:
    path = tmp_path_factory.mktemp("charts") / "incident.cs"
    cs.simulate("incident", path, seed=3, captures=120, clients=120)
    return cs.open_dataset(path)


def test_charts_are_the_public_chart_module() -> None:
    assert cs.charts is charts
    assert {c.name for c in charts.CHARTS} == {
        "clients", "by-name", "by-ip", "leak-trend", "idle", "age-idle", "blocked", "churn",
    }  # fmt: skip


@pytest.mark.parametrize("chart", charts.CHARTS, ids=lambda c: c.name)
def test_chart_matches_reference_image(
    incident: cs.Dataset, chart: charts.Chart, tmp_path: Path
) -> None:
    fig = chart.draw(incident)
    assert isinstance(fig, Figure)
    assert fig.dpi == DPI
    [ax, *_] = fig.axes
    assert ax.get_title(loc="left")
    assert ax.get_ylabel() and ax.get_xlabel()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    actual = ARTIFACTS / f"{chart.name}.png"
    fig.savefig(actual, metadata={"Software": None})
    expected = BASELINES / f"{chart.name}.png"
    if UPDATE:
        expected.write_bytes(actual.read_bytes())
    assert expected.exists(), (
        f"no reference image {expected}; run with CLIENTSCOPE_UPDATE_BASELINES=1"
    )
    diff = compare_images(str(expected), str(actual), tol=TOLERANCE)
    assert diff is None, diff


def test_time_axes_are_utc(incident: cs.Dataset) -> None:
    ax = charts.clients_vs_maxclients(incident).axes[0]
    assert ax.get_xlabel() == "time (UTC)"
    first = incident.captures.select(pl.col("ts").min()).collect().item()
    start = ax.get_lines()[0].get_xdata()[0]  # numpy datetime64, UTC without a zone
    assert start == np.datetime64(first.replace(tzinfo=None), "us")
    assert str(ax.xaxis.get_major_formatter()._tz) == "UTC"


def test_main_chart_marks_limit_threshold_and_rejections(incident: cs.Dataset) -> None:
    fig = charts.clients_vs_maxclients(incident)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["connected clients", "maxclients", "alert threshold (80% of maxclients)"]
    assert "connections rejected" in labels
    limit = incident.captures.select(pl.col("maxclients").max()).collect().item()
    ax = fig.axes[0]
    assert np.nanmax(ax.get_lines()[1].get_ydata()) == limit
    notes = [t.get_text() for t in ax.texts]
    assert any(n.startswith("first rejection") for n in notes)
    assert any(n.startswith(f"peak {limit} (100% of {limit})") for n in notes)


def test_leak_trend_names_the_leaking_group(incident: cs.Dataset) -> None:
    fig = charts.leak_trend(incident)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "orders-svc (leak)" in labels  # the forecast's driver, drawn alone
    assert not any(lab.startswith("forecast:") for lab in labels)  # at the limit: no projection
    assert any("limit reached" in t.get_text() for t in fig.axes[0].texts)


def test_leak_trend_draws_the_forecast_of_the_forecast_command(tmp_path: Path) -> None:
    cs.simulate("mixed", tmp_path / "mixed.cs", seed=1)
    ds = cs.open_dataset(tmp_path / "mixed.cs")
    f = cs.forecast(ds)
    fig = charts.leak_trend(ds)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"forecast: steady {f.steady_peak:.0f} + growing groups {f.slope_per_hour:+.0f}/h" in labels
    assert f"reaches maxclients ≈ {f.eta_maxclients:%Y-%m-%d %H:%M} UTC" in [t.get_text() for t in fig.axes[0].texts]
    assert not any(lab.startswith("api") for lab in labels)  # the warm-up and scale-out settled


def test_idle_chart_states_the_timeout_what_if(incident: cs.Dataset) -> None:
    fig = charts.idle_distribution(incident, timeout=600)
    [label] = [t.get_text() for t in fig.legends[0].get_texts() if "what-if" in t.get_text()]
    assert label.startswith("what-if timeout 600 s: closes ")


def test_age_vs_idle_switches_to_hexbin_when_crowded(incident: cs.Dataset) -> None:
    scatter = charts.age_vs_idle(incident)
    hexbin = charts.age_vs_idle(incident, hexbin_above=10)
    assert not any(isinstance(c, PolyCollection) for c in scatter.axes[0].collections)
    assert any(isinstance(c, PolyCollection) for c in hexbin.axes[0].collections)
    assert len(hexbin.axes) == 2  # the colour bar


def test_long_series_are_downsampled_before_plotting(tmp_path: Path) -> None:
    cs.simulate("leak", tmp_path / "long.cs", seed=1, captures=4000, clients=8, interval=1)
    ds = cs.open_dataset(tmp_path / "long.cs")
    for draw in (
        charts.clients_vs_maxclients,
        charts.churn,
        charts.blocked_clients,
        charts.clients_by_source,
    ):
        fig = draw(ds)
        ax = fig.axes[0]
        sizes = [len(line.get_xdata()) for line in ax.get_lines()]
        sizes += [len(p.get_paths()[0].vertices) // 2 for p in ax.collections if p.get_paths()]
        assert max(sizes) <= 2 * charts.MAX_POINTS, (draw.__name__, max(sizes))


def test_an_empty_window_draws_a_message_not_an_error(tmp_path: Path) -> None:
    cs.simulate("healthy", tmp_path / "h.cs", seed=1, captures=10, clients=20)
    view = cs.open_dataset(tmp_path / "h.cs")
    from datetime import UTC, datetime

    from clientscope.window import DatasetView

    # `window.select` refuses an empty window; a view built by hand can still be one
    empty = DatasetView(view, start=datetime(2030, 1, 1, tzinfo=UTC), end=None, instance=None)
    fig = charts.clients_vs_maxclients(empty)
    assert any("no captures" in t.get_text() for t in fig.axes[0].texts)
