"""`plan` never makes things worse (issue 9, item 3): it sizes maxclients from the healthy
groups, leaves the leaks out as "fix first — until fixed, maxclients N buys T", never recommends
a limit the forecast's course reaches within its horizon, and says when the window is too short
to have seen a real peak."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from clientscope.analysis import plan
from clientscope.analysis._common import human_duration
from clientscope.analysis.capacity import nice_ceil, plan_from, why_maxclients
from clientscope.analysis.forecast import Forecast
from clientscope.analysis.model import build_model
from clientscope.cli import app
from clientscope.errors import ConfigError
from clientscope.simulation import SimulationResult, simulate

LEAKING = ("leak", "slow_leak", "mixed", "mixed-2", "incident")


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimulationResult]:
    root = tmp_path_factory.mktemp("plan")
    out = {
        sc: simulate(sc, root / sc, seed=4, captures=100, clients=120)
        for sc in ("healthy", "leak", "slow_leak", "incident")
    }
    out["mixed"] = simulate("mixed", root / "mixed", seed=4)  # 20 min, maxclients 400
    out["mixed-2"] = simulate("mixed", root / "mixed-2", seed=2)  # the drift
    out["daily_cycle"] = simulate("daily_cycle", root / "daily_cycle", seed=4, clients=120)
    return out


def forecast_of(path: Path) -> Forecast:
    return build_model(path).server().require_forecast()


def trajectory(f: Forecast, hours: float) -> float:
    """Where the forecast says the count will be in `hours`: its steady part, plus each driver's
    connections now and its rate for that long (computed here, not by the code under test)."""
    assert f.steady_peak is not None
    return f.steady_peak + sum(d.connections_now + d.rate_per_hour * hours for d in f.drivers)


def lasts(f: Forecast, limit: int) -> timedelta:
    """How long `limit` lasts on that course."""
    start = trajectory(f, 0)
    return timedelta(hours=max(limit - start, 0) / sum(d.rate_per_hour for d in f.drivers))


# ------------------------------------------------------------------ the horizon
@pytest.mark.parametrize("scenario", LEAKING)
def test_plan_never_recommends_a_limit_under_its_24h_trajectory(
    sims: dict[str, SimulationResult], scenario: str
) -> None:
    path = sims[scenario].path
    f = forecast_of(path)
    assert f.drivers and f.steady_peak is not None
    p = plan(path)
    assert p.recommended_maxclients > trajectory(f, 24)
    assert p.at_horizon == pytest.approx(trajectory(f, 24))
    assert f"CONFIG SET maxclients {p.recommended_maxclients}" in p.settings
    longer = plan(path, horizon="3d")
    assert longer.recommended_maxclients > trajectory(f, 72)


def test_plan_does_not_recommend_150_that_the_leaks_pass_in_20_minutes(
    sims: dict[str, SimulationResult],
) -> None:
    """The issue's drift: peak 119 + 25 % -> `CONFIG SET maxclients 150`, while the two leaks would
    pass 150 within about 20 minutes. Here (seed 2) the peak is 104 and the old plan said 130."""
    path = sims["mixed-2"].path
    f = forecast_of(path)
    p = plan(path)
    healthy_sized = nice_ceil(p.peak_used * 1.25)
    assert healthy_sized == 130 and lasts(f, healthy_sized) < timedelta(minutes=20)
    assert p.recommended_maxclients > trajectory(f, 24)
    assert p.recommended_maxclients >= p.current_maxclients == 400  # never lowered mid-leak
    assert not any(s.startswith("CONFIG SET maxclients 1") for s in p.settings)
    said = next(w for w in p.warnings if "reached within 24 h" in w)
    assert f"so this plan recommends {p.recommended_maxclients}" in said


def test_a_limit_lowered_mid_leak_is_not_advised(sims: dict[str, SimulationResult]) -> None:
    """maxclients 10000 lasts 3 days on the leak's course; 3100 would outlast 24 h but bring the
    exhaustion closer: the limit in force is kept."""
    p = plan(sims["leak"].path)
    assert p.horizon_floor is not None and p.horizon_floor < p.current_maxclients
    assert p.recommended_maxclients == p.current_maxclients
    assert any("the limit in force: lowering it while connections grow" in w for w in p.warnings)


# ------------------------------------------------------------------ the leaks: fix first
def test_leaking_groups_are_not_in_the_peak_used_for_sizing(
    sims: dict[str, SimulationResult],
) -> None:
    path = sims["mixed"].path
    server = build_model(path).server()
    leaking = sorted(server.leaking)
    assert leaking == ["(unnamed) 10.0.6.10", "billing-worker"]
    held = (
        server.counts.filter(pl.col("group").is_in(leaking) & (pl.col("role") == "normal"))
        .group_by("capture_id")
        .agg(pl.col("n").sum().alias("leaked"))
    )
    healthy = (
        server.timeline.filter(pl.col("has_clients"))
        .join(held, on="capture_id", how="left")
        .select((pl.col("used") - pl.col("leaked").fill_null(0)).max())
        .item()
    )
    p = plan(path)
    assert sorted(p.left_out) == leaking
    assert p.healthy_peak == healthy < p.peak_used
    assert p.observed_recommended == nice_ceil(healthy * 1.25)
    verdicts = dict(p.observed.select("group", "verdict").iter_rows())
    assert all(verdicts[g] == "leak" for g in leaking)


def test_a_spec_does_not_count_a_leaking_group_as_a_need(
    tmp_path: Path, sims: dict[str, SimulationResult]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("buffer: 0\napps:\n  - {name: api, match: api, replicas: 6, pool_size: 10}\n")
    p = plan(sims["mixed"].path, spec)
    needs = p.observed.filter((pl.col("group") != "api") & (pl.col("verdict") != "leak"))
    others = int(needs["peak"].sum())
    assert others < int(p.observed.filter(pl.col("group") != "api")["peak"].sum())
    assert p.spec_recommended == nice_ceil((60 + others) * 1.25)


@pytest.mark.parametrize("scenario", ["mixed", "mixed-2", "leak", "slow_leak"])
def test_fix_first_says_what_a_limit_buys_in_the_forecasts_own_time(
    sims: dict[str, SimulationResult], scenario: str
) -> None:
    path = sims[scenario].path
    f = forecast_of(path)
    p = plan(path)
    assert p.fix_first is not None and p.fix_first == p.warnings[0]
    assert p.fix_first.startswith(f"fix first — {p.left_out[0]} ")
    assert f.time_to_maxclients is not None
    assert f.time_to(f.maxclients) == f.time_to_maxclients  # the forecast's own time
    now = next(r for r in p.runways if "now" in r.label)
    assert now.maxclients == p.current_maxclients and now.lasts == f.time_to_maxclients
    label = "now, recommended" if p.recommended_maxclients == p.current_maxclients else "now"
    assert (
        f"until fixed, maxclients {p.current_maxclients} ({label}) buys "
        f"{human_duration(f.time_to_maxclients)}" in p.fix_first
    )
    for r in p.runways:
        assert r.lasts is not None
        assert abs(r.lasts - lasts(f, r.maxclients)) < timedelta(seconds=1)
        assert (
            f"maxclients {r.maxclients} ({r.label}) buys {human_duration(r.lasts)}" in p.fix_first
        )
    assert f"Once fixed, the healthy groups need {p.observed_recommended}" in p.fix_first


def test_fix_first_at_the_limit_says_it_is_already_reached(
    sims: dict[str, SimulationResult],
) -> None:
    p = plan(sims["incident"].path)
    assert p.fix_first is not None
    assert f"maxclients {p.current_maxclients} (now) is already reached" in p.fix_first
    assert p.recommended_maxclients > p.current_maxclients
    assert p.short_window is not None and "capped at maxclients" in p.short_window


# ------------------------------------------------------------------ healthy servers
def test_a_healthy_server_gets_its_peak_plus_headroom(sims: dict[str, SimulationResult]) -> None:
    for scenario in ("healthy", "daily_cycle"):
        p = plan(sims[scenario].path)
        assert p.left_out == () and p.fix_first is None
        assert p.horizon_floor is None and p.at_horizon is None and p.runways == ()
        assert p.healthy_peak == p.peak_used
        assert p.recommended_maxclients == nice_ceil(p.peak_used * 1.25)
        assert plan(sims[scenario].path, headroom=0.5).recommended_maxclients == nice_ceil(
            p.peak_used * 1.5
        )


def test_a_peak_under_the_floor_says_the_floor_set_the_number(tmp_path: Path) -> None:
    """A handful of clients: 100 is the floor, not the peak + 25%, and the plan says so (it read
    `peak 11; + 25%: 100`)."""
    r = simulate("healthy", tmp_path / "tiny", seed=1, captures=40, clients=4)
    p = plan(r.path)
    assert p.healthy_peak * 1.25 < 100 and p.observed_recommended == 100
    assert f"peak {p.healthy_peak} at" in cli("plan", str(r.path))
    assert "+ 25%, at least 100: 100" in cli("plan", str(r.path))
    assert f"peak {p.healthy_peak} + 25% headroom, at least 100: 100" in why_maxclients(p)
    big = plan(r.path, headroom=10.0)  # sized above the floor: no floor said
    assert "at least" not in why_maxclients(big)


# ------------------------------------------------------------------ the window
def test_a_20_minute_window_is_too_short_to_have_seen_a_real_peak(
    sims: dict[str, SimulationResult],
) -> None:
    p = plan(sims["mixed"].path)
    assert p.short_window is not None and p.short_window in p.warnings
    assert p.short_window.startswith("the window is too short to have seen a real peak: ")
    assert "the captures span 19 min 50 s, less than a day" in p.short_window
    assert "still growing" not in p.short_window  # the cycling batch pool is no driver
    assert plan(sims["daily_cycle"].path).short_window is None  # two days, 576 captures
    shown = cli("plan", str(sims["mixed"].path))
    assert "warning: the window is too short to have seen a real peak" in shown


def test_a_few_captures_are_too_few(tmp_path: Path) -> None:
    path = simulate("healthy", tmp_path / "few", seed=1, captures=10, clients=50).path
    p = plan(path)
    assert p.short_window is not None
    assert "only 10 capture(s) count connections (a peak needs 24)" in p.short_window


# ------------------------------------------------------------------ the option, the CLI
def test_horizon_is_checked_like_every_option() -> None:
    with pytest.raises(
        ConfigError, match=r"^--horizon 'a day' is not a duration: write it like 300"
    ):
        plan(Path("no-such-dataset"), horizon="a day")  # refused before the dataset is opened
    with pytest.raises(ConfigError, match=r"^--horizon '400d' is out of range: .* at most 365d"):
        plan(Path("no-such-dataset"), horizon="400d")
    result = CliRunner().invoke(app, ["plan", "no-such-dataset", "--horizon", "soon"])
    assert isinstance(result.exception, ConfigError)  # not the missing dataset: checked first
    assert str(result.exception).startswith("--horizon 'soon' is not a duration")


def test_horizon_changes_the_floor(sims: dict[str, SimulationResult]) -> None:
    path = sims["mixed"].path
    f = forecast_of(path)
    short, day = plan(path, horizon="2h"), plan(path, horizon=86400)
    assert short.horizon == timedelta(hours=2) and day.horizon == timedelta(days=1)
    assert short.at_horizon == pytest.approx(trajectory(f, 2))
    assert short.horizon_floor is not None and day.horizon_floor is not None
    assert short.horizon_floor < day.horizon_floor
    assert short.recommended_maxclients == 400  # the floor is under the limit in force


def test_plan_from_a_model_built_once_is_plan(sims: dict[str, SimulationResult]) -> None:
    path = sims["mixed"].path
    assert plan_from(build_model(path)).to_dict() == plan(path).to_dict()


def test_the_command_shows_the_healthy_peak_the_floor_and_fix_first(
    sims: dict[str, SimulationResult],
) -> None:
    path = str(sims["mixed"].path)
    p = plan(path)
    shown = cli("plan", path)
    assert f"healthy groups (leaving out {', '.join(p.left_out)}): peak {p.healthy_peak}" in shown
    assert f"any limit under {p.horizon_floor} is reached by then" in shown
    assert f"what the healthy groups need ({p.observed_recommended}) is under where" in shown
    assert f"recommended maxclients: {p.recommended_maxclients}" in shown
    assert " ".join(p.fix_first.split()) in " ".join(shown.split())  # type: ignore[union-attr]
    assert shown.count("fix first —") == 1
    data = json.loads(cli("plan", path, "--json"))
    assert data["recommended_maxclients"] == p.recommended_maxclients
    assert data["horizon"] == 86400 and data["left_out"] == list(p.left_out)
    assert [r["lasts"] for r in data["runways"]] == [r.lasts.total_seconds() for r in p.runways]  # type: ignore[union-attr]
    assert "--horizon" in cli("plan", "--help")


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_fix_first_says_its_times_assume_the_leak_runs_on(tmp_path: Path) -> None:
    """plan sets a server timeout, which closes leaked idle connections: the runways say they
    assume the leak runs on, so nobody reads them as the timeout's effect."""
    path = simulate("leak", tmp_path / "leak.cs", seed=2).path
    p = plan(path)
    assert p.fix_first is not None
    assert "The times assume the leak runs on" in p.fix_first
    assert f"CONFIG SET timeout {p.suggested_timeout}" in p.settings
