"""simulate: every scenario writes a readable dataset whose numbers agree with each other."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from clientscope.dataset import open_dataset
from clientscope.errors import ConfigError
from clientscope.simulation import SCENARIOS, simulate, simulate_tables


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_tables_are_consistent(scenario: str) -> None:
    truth, batches = simulate_tables(scenario, seed=3, captures=40, clients=60)
    clients = pl.concat([b["clients"] for b in batches])
    info = pl.concat([b["info"] for b in batches])
    caps = pl.concat([b["captures"] for b in batches])
    assert caps.height == 40
    # ids are unique per (run_id, capture), idle never exceeds age
    assert clients.select(pl.struct("capture_id", "run_id", "id").is_duplicated().sum()).item() == 0
    assert clients.filter(pl.col("idle") > pl.col("age")).is_empty()
    # INFO agrees with the client rows it came with
    per = clients.group_by("capture_id").agg(
        n=(~pl.col("is_replica")).sum(), blocked=pl.col("is_blocked").sum()
    )
    joined = info.join(per, on="capture_id")
    assert (joined["connected_clients"] == joined["n"]).all()
    assert (joined["blocked_clients"] == joined["blocked"]).all()
    # the counter of accepted connections never goes down within one server run
    tcr = (
        info.sort("ts")
        .group_by("run_id", maintain_order=True)
        .agg(pl.col("total_connections_received").diff().min().alias("d"))
    )
    assert (tcr["d"].fill_null(0) >= 0).all()
    # a connection keeps its birth time across captures (age grows with the clock)
    born = clients.group_by("run_id", "id").agg(
        (pl.col("created_at").max() - pl.col("created_at").min()).alias("spread")
    )
    assert born["spread"].dt.total_seconds().max() <= 1
    assert truth.scenario == scenario


def test_restart_changes_run_id_and_restarts_ids() -> None:
    _, batches = simulate_tables("restart", seed=1, captures=60, clients=50)
    clients = pl.concat([b["clients"] for b in batches])
    runs = clients.group_by("run_id").agg(pl.col("id").min(), pl.col("ts").min()).sort("ts")
    assert runs.height == 2
    assert runs["id"][1] < runs["id"][0]


def test_incident_hits_maxclients_and_fails_captures(tmp_path: Path) -> None:
    result = simulate("incident", tmp_path / "ds", seed=5, captures=80, clients=80)
    ds = open_dataset(result.path)
    caps = ds.captures.collect()
    info = ds.info.collect()
    assert result.failed_captures > 0
    assert set(caps.filter(~pl.col("ok"))["error_kind"]) == {"max_clients"}
    used = info["connected_clients"] + info["connected_slaves"]
    assert used.max() == result.maxclients
    assert info["rejected_connections"].max() > 0
    assert result.leaking[0].group == "orders-svc"


def test_same_seed_same_data() -> None:
    a = simulate_tables("leak", seed=9, captures=20, clients=30)[1][0]["clients"]
    b = simulate_tables("leak", seed=9, captures=20, clients=30)[1][0]["clients"]
    cols = [c for c in a.columns if c != "capture_id"]
    assert a.select(cols).equals(b.select(cols))


def test_unknown_scenario_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown scenario 'lek'.*healthy"):
        simulate_tables("lek")


def test_batches_bound_memory(tmp_path: Path) -> None:
    result = simulate("healthy", tmp_path / "ds", captures=50, clients=100, rows_per_batch=1500)
    files = list((tmp_path / "ds" / "clients").rglob("*.parquet"))
    assert len(files) > 2
    assert open_dataset(result.path).clients.select(pl.len()).collect().item() == result.client_rows


def test_simulate_command_prints_ground_truth(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from clientscope.cli import app

    args = [
        "simulate",
        "slow_leak",
        "--out",
        str(tmp_path / "s"),
        "--captures",
        "20",
        "--clients",
        "30",
    ]
    out = CliRunner().invoke(app, [*args, "--leak-rate", "4", "--json"])
    assert out.exit_code == 0, out.output
    truth = json.loads(out.output)
    assert truth["leaking"][0]["rate_per_min"] == 4.0
    assert truth["leaking"][0]["group"] == "(unnamed) node-redis@10.0.7.23"
    assert open_dataset(tmp_path / "s").captures.select(pl.len()).collect().item() == 20
    bad = CliRunner().invoke(app, ["simulate", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0


def test_simulate_help_lists_every_scenario_with_what_it_holds() -> None:
    """The help's list comes from SCENARIOS itself: a scenario added there is never missing from
    it (`mixed` was)."""
    from typer.testing import CliRunner

    from clientscope.cli import app

    shown = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "4000"}).output
    for name, what in SCENARIOS.items():
        assert f"{name}: {what}" in " ".join(shown.split()), name
