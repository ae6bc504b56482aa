"""summary: the runbook's first look, checked against the client rows it summarises."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from clientscope.analysis import summary
from clientscope.cli import app
from clientscope.dataset import open_dataset
from clientscope.errors import AnalysisError
from clientscope.simulation import SimulationResult, simulate


@pytest.fixture(scope="module")
def blocking(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    return simulate(
        "blocking", tmp_path_factory.mktemp("ds") / "b", seed=2, captures=30, clients=80
    )


def test_latest_capture_numbers_match_its_rows(blocking: SimulationResult) -> None:
    s = summary(blocking.path)
    snap = s.snapshot.row(0, named=True)
    rows = (
        open_dataset(blocking.path)
        .clients.filter(pl.col("capture_id") == snap["capture_id"])
        .collect()
    )
    assert snap["ts"] == s.last
    assert snap["clients_listed"] == rows.height
    assert snap["used"] == rows.height  # clients + the replica: the server's real count
    assert snap["connected_clients"] == rows.filter(~pl.col("is_replica")).height
    assert snap["utilization"] == pytest.approx(rows.height / blocking.maxclients)
    assert snap["idle_over_300"] == rows.filter(pl.col("idle") > 300).height
    assert snap["idle_over_600"] == rows.filter(pl.col("idle") > 600).height
    assert snap["blocked_clients"] == rows["is_blocked"].sum() > 0
    top_ip = s.tops["ip"].row(0, named=True)
    counts = rows.group_by("ip").len().sort("len", descending=True)
    assert top_ip["clients"] == counts["len"][0]
    assert set(s.tops) == {"ip", "name", "lib", "user", "cmd"}


def test_at_picks_an_earlier_capture(blocking: SimulationResult) -> None:
    s = summary(blocking.path, at=blocking.start.replace(minute=3))
    assert s.snapshot["ts"][0] <= blocking.start.replace(minute=3)
    with pytest.raises(AnalysisError, match="no successful capture at or before"):
        summary(blocking.path, at="2000-01-01T00:00:00Z")


def test_failed_captures_are_counted_not_summarised(tmp_path: Path) -> None:
    result = simulate("incident", tmp_path / "i", seed=1, captures=60, clients=60)
    s = summary(result.path)
    assert s.failed_captures == result.failed_captures > 0
    assert s.snapshot["used"][0] <= result.maxclients
    assert s.timeline.height == result.captures


def test_cli_tables_and_json(blocking: SimulationResult) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["summary", str(blocking.path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "top ip" in out.output and "maxclients" in out.output
    data = json.loads(runner.invoke(app, ["summary", str(blocking.path), "--json"]).output)
    assert data["snapshot"][0]["maxclients"] == blocking.maxclients
    assert data["tops"]["name"][0]["value"] in {"api-pool", "jobs-consumer", "worker", "(unnamed)"}
