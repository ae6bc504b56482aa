"""Regressions: forecast after a restart (NaN crash, too few captures) and deterministic results."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clientscope.analysis import diagnose, forecast, idle, leaks, plan, top
from clientscope.analysis.timeline import timeline
from clientscope.analysis.trend import linear_fit
from clientscope.errors import AnalysisError
from clientscope.simulation import simulate, simulate_tables


@dataclass(frozen=True)
class MemoryTables:
    captures: pl.LazyFrame
    clients: pl.LazyFrame
    info: pl.LazyFrame


def restart_tables(captures: int, clients: int, seed: int) -> MemoryTables:
    _, batches = simulate_tables("restart", seed=seed, captures=captures, clients=clients)
    return MemoryTables(
        *(pl.concat([b[name] for b in batches]).lazy() for name in ("captures", "clients", "info"))
    )


# ------------------------------------------------------------------ forecast after a restart
def test_linear_fit_leaves_out_missing_points() -> None:
    t = np.array([0.0, 10.0, 20.0, 30.0])
    y = np.array([np.nan, 5.0, 7.0, 9.0])
    a, b, se_b, sigma = linear_fit(t, y)
    assert (a, b) == pytest.approx((3.0, 0.2))
    assert math.isfinite(se_b) and sigma == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 4])
def test_forecast_after_a_restart_does_not_crash(seed: int) -> None:
    # the first capture of the new run has no connected_clients, which made the
    # predict_linear fit NaN and `_crossing` raise "cannot convert float NaN to integer"
    tables = restart_tables(160, 150, seed=seed)
    caps = tables.captures.collect()
    tl = timeline(tables).filter(pl.col("run_id") == caps.sort("ts")["run_id"][-1])
    assert tl["connected_clients"].null_count() > 0  # the case is really there
    f = forecast(tables)
    for value in (f.slope_per_hour, f.theil_sen_per_hour, f.prometheus_predicted_1h, f.r2):
        assert math.isfinite(value)
    assert f.samples == tl.height
    # the reconnect burst after the restart is not growth: connections came back, no more
    assert f.verdict == "stable"
    assert f.note.startswith("not growing")


def test_forecast_says_too_few_captures_since_the_restart() -> None:
    tables = restart_tables(40, 30, seed=4)
    caps = tables.captures.collect().sort("ts")
    second_run = caps.filter(pl.col("run_id") == caps["run_id"][-1])
    keep = second_run["ts"].sort()[1]  # two captures into the new run
    cut = MemoryTables(
        tables.captures.filter(pl.col("ts") <= keep),
        tables.clients.filter(pl.col("ts") <= keep),
        tables.info.filter(pl.col("ts") <= keep),
    )
    with pytest.raises(AnalysisError, match="too few captures since the restart"):
        forecast(cut)


def test_forecast_says_when_the_window_is_too_short() -> None:
    with pytest.raises(AnalysisError, match=r"in the last 20s.*Widen --window"):
        forecast(restart_tables(40, 30, seed=4), window="20s")


# ------------------------------------------------------------------ determinism
@pytest.fixture(scope="module")
def oversized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("det") / "oversized"
    simulate("oversized_pool", path, seed=0, captures=80, clients=80)
    return path


@pytest.fixture(scope="module")
def leak(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("det") / "leak"
    simulate("leak", path, seed=4, captures=100, clients=120)
    return path


def test_diagnose_and_plan_are_deterministic(oversized: Path, leak: Path) -> None:
    for path in (oversized, leak):
        first_d, first_p = diagnose(path).to_dict(), plan(path).to_dict()
        for _ in range(3):
            assert diagnose(path).to_dict() == first_d
            assert plan(path).to_dict() == first_p


def test_other_results_are_deterministic(oversized: Path) -> None:
    runs = [
        (
            idle(oversized).to_dict(),
            leaks(oversized).to_dict(),
            top(oversized, "name", since="2000-01-01T00:00:00Z").to_dicts(),
        )
        for _ in range(3)
    ]
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_plan_observed_breaks_ties_by_group(oversized: Path, leak: Path) -> None:
    for path in (oversized, leak):
        observed = plan(path).observed
        assert observed.equals(
            observed.sort(["peak", "group", "role"], descending=[True, False, False])
        )


@pytest.mark.parametrize(
    ("scenario", "seed", "verdict"),
    [
        ("warmup", 1, "plateaued"),
        ("warmup", 3, "plateaued"),
        ("scale_out", 2, "plateaued"),
        ("leak", 1, "will_exhaust"),
        ("slow_leak", 2, "will_exhaust"),  # its total falls in the last third: churn noise
    ],
)
def test_forecast_does_not_project_growth_that_has_stopped(
    scenario: str, seed: int, verdict: str
) -> None:
    _, batches = simulate_tables(scenario, seed=seed)
    f = forecast(
        MemoryTables(
            *(
                pl.concat([b[name] for b in batches]).lazy()
                for name in ("captures", "clients", "info")
            )
        )
    )
    assert f.verdict == verdict
    if verdict == "plateaued":
        assert f.total_slope_per_hour > 0 and "no client group keeps growing" in f.note
        assert f.eta_maxclients is None and f.drivers == ()
