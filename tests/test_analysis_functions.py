"""top, idle, forecast, plan, alerts, kill_script and their commands, on simulated datasets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from clientscope.analysis import (
    alerts,
    build_model,
    diagnose,
    forecast,
    idle,
    idle_from,
    kill_script,
    leaks,
    load_rules,
    plan,
    top,
)
from clientscope.analysis._common import human_duration
from clientscope.analysis.capacity import nice_ceil
from clientscope.cli import app
from clientscope.dataset import open_dataset
from clientscope.errors import AnalysisError, ConfigError
from clientscope.ingest import import_dumps
from clientscope.simulation import SimulationResult, simulate, simulate_tables

SPECS = Path(__file__).resolve().parents[1] / "fixtures" / "specs"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimulationResult]:
    root = tmp_path_factory.mktemp("sims")
    return {
        sc: simulate(sc, root / sc, seed=4, captures=100, clients=120)
        for sc in ("healthy", "leak", "incident", "blocking")
    }


def last_rows(result: SimulationResult) -> pl.DataFrame:
    clients = open_dataset(result.path).clients.collect()
    return clients.filter(pl.col("ts") == pl.col("ts").max())


# ------------------------------------------------------------------ top / idle
def test_top_by_combination_adds_up(datasets: dict[str, SimulationResult]) -> None:
    frame = top(datasets["leak"].path, "ip,name", limit=1000)
    rows = last_rows(datasets["leak"])
    assert frame["clients"].sum() == rows.height
    assert frame["share"].sum() == pytest.approx(1.0)
    first = frame.row(0, named=True)
    assert first["clients"] == rows.group_by("ip", "name").len()["len"].max()


def test_top_over_a_window_reports_peaks(datasets: dict[str, SimulationResult]) -> None:
    r = datasets["leak"]
    frame = top(r.path, "name", since=r.start, until=r.end)
    orders = frame.filter(pl.col("name") == "orders-svc").row(0, named=True)
    assert orders["clients"] > orders["mean_clients"]  # it grew: the peak is above the mean
    assert orders["captures_seen"] == r.captures


def test_top_refuses_unknown_dimension(datasets: dict[str, SimulationResult]) -> None:
    with pytest.raises(ConfigError, match=r"cannot group by.*'colour'.*choose from"):
        top(datasets["leak"].path, "colour")


def test_idle_distribution_and_timeout_effect(datasets: dict[str, SimulationResult]) -> None:
    report = idle(datasets["leak"].path, timeouts=(300, 600))
    groups = {r["group"]: r for r in report.groups.iter_rows(named=True)}
    assert groups["orders-svc"]["never_used"] > 10
    assert groups["orders-svc"]["share_over_300"] > 0.5
    assert groups["api-pool"]["over_300"] == 0
    rows = last_rows(datasets["leak"]).filter(
        ~pl.col("is_replica") & (pl.col("name") != "clientscope-collector")
    )
    effect = dict(report.timeouts.select("timeout", "would_close_now").iter_rows())
    assert effect[300] == rows.filter(pl.col("idle") > 300).height
    assert set(report.excluded["role"]) == {"collector", "replica"}
    # healthy pools reuse every connection within a minute: the shortest usual timeout is safe
    assert idle(datasets["healthy"].path).suggested_timeout == 300
    custom = idle(datasets["leak"].path, timeouts=(30, 3600)).groups  # the columns follow the ask
    assert {"over_30", "over_3600", "share_over_30"} <= set(custom.columns)
    assert "over_300" not in custom.columns
    orders = custom.filter(pl.col("group") == "orders-svc").row(0, named=True)
    assert (
        orders["over_30"]
        == rows.filter((pl.col("name") == "orders-svc") & (pl.col("idle") > 30)).height
    )


# ------------------------------------------------------------------ forecast
def test_forecast_matches_the_leak_rate(datasets: dict[str, SimulationResult]) -> None:
    r = datasets["leak"]
    f = forecast(r.path)
    assert f.verdict == "will_exhaust"
    assert f.slope_per_hour == pytest.approx(r.leaking[0].rate_per_min * 60, rel=0.4)
    assert f.eta_maxclients is not None and f.eta_maxclients_low is not None
    assert f.eta_maxclients_low <= f.eta_maxclients <= (f.eta_maxclients_high or f.eta_maxclients)
    # the steady part at its peak plus the leaking group at its own rate
    (driver,) = f.drivers
    assert driver.group == r.leaking[0].group and driver.verdict == "leak"
    start = (f.steady_peak or 0) + driver.connections_now
    expected = f.now + timedelta(hours=(f.maxclients - start) / f.slope_per_hour)
    assert abs((f.eta_maxclients - expected).total_seconds()) < 1
    # here the leak is all the growth: the naive line through the whole count agrees
    assert f.total_slope_per_hour == pytest.approx(f.slope_per_hour, rel=0.2)
    assert f.prometheus_eta_maxclients is not None
    assert f.note.endswith(
        f"maxclients {f.maxclients} is reached in {human_duration(f.eta_maxclients - f.now)}"
    )


def test_human_duration_reads_like_people_write_it() -> None:
    assert human_duration(17) == "17 s"  # not "0.0 h", what a short demo run used to say
    assert human_duration(200) == "3 min 20 s"
    assert human_duration(timedelta(hours=3, minutes=30, seconds=9)) == "3 h 30 min"
    assert human_duration(90_000) == "1 d 1 h"
    assert human_duration(None) == "—"


def test_forecast_healthy_and_exhausted(datasets: dict[str, SimulationResult]) -> None:
    assert forecast(datasets["healthy"].path).verdict == "stable"
    f = forecast(datasets["incident"].path)
    assert f.verdict == "exhausted" and f.exhausted_at is not None
    assert f.exhausted_at > datasets["incident"].start


# ------------------------------------------------------------------ alerts
@dataclass(frozen=True)
class MemoryTables:
    captures: pl.LazyFrame
    clients: pl.LazyFrame
    info: pl.LazyFrame


def designed_timeline(blocked: list[int]) -> MemoryTables:
    """A healthy capture series whose INFO blocked_clients follows `blocked`."""
    _, batches = simulate_tables("healthy", seed=1, captures=len(blocked), clients=20, interval=15)
    caps, clients, info = (
        pl.concat([b[n] for b in batches]) for n in ("captures", "clients", "info")
    )
    info = info.sort("ts").with_columns(blocked_clients=pl.Series(blocked, dtype=pl.Int64))
    return MemoryTables(caps.lazy(), clients.lazy(), info.lazy())


def test_alert_fires_after_for_and_resolves() -> None:
    blocked = [0, 0] + [20] * 24 + [0] * 10  # true from capture 2 to 25 (345 s)
    tables = designed_timeline(blocked)
    fired = alerts(tables).filter(pl.col("rule") == "RedisBlockedClients")
    ts = tables.info.sort("ts").collect()["ts"]
    assert fired.height == 1
    row = fired.row(0, named=True)
    assert row["pending_since"] == ts[2]
    assert row["fired_at"] == ts[22]  # first capture >= 300 s after pending started
    assert row["resolved_at"] == ts[26]
    assert row["peak"] == 20


def test_alert_shorter_than_for_never_fires() -> None:
    tables = designed_timeline([0] + [20] * 15 + [0] * 10)  # 210 s < 5m
    assert alerts(tables).filter(pl.col("rule") == "RedisBlockedClients").is_empty()


def test_default_and_user_rules_on_the_incident(datasets: dict[str, SimulationResult]) -> None:
    r = datasets["incident"]
    fired = alerts(r.path, SPECS / "alerts.yaml", include_defaults=True)
    rules = set(fired["rule"])
    assert {"RedisConnectionPoolExhausted", "RealSaturation", "ConnectionsRejected"} <= rules
    assert "RedisHighConnections" not in rules  # never over 1000 connections
    assert fired.filter(pl.col("rule") == "ConnectionsRejected")["fired_at"].min() > r.start
    assert alerts(datasets["healthy"].path).is_empty()


def test_bad_rules_name_file_rule_and_field(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - metric: connected_clients\n    threshold: lots\n")
    with pytest.raises(ConfigError, match=r"rules.yaml: rule 1: field 'threshold' is 'lots'"):
        load_rules(path)
    path.write_text("rules:\n  - metric: colour\n    threshold: 1\n")
    with pytest.raises(ConfigError, match="alert metric 'colour' is not known"):
        load_rules(path)
    path.write_text("rules:\n  - metric: used\n    threshold: 1\n    fro: 10m\n")  # a typo
    with pytest.raises(ConfigError, match=r"rule 1: unknown field 'fro'; did you mean 'for'\?"):
        load_rules(path)  # not a rule that fires at once
    path.write_text(
        "rules:\n  - {name: A, metric: used, threshold: 1}\n  - {name: A, metric: used, threshold: 2}\n"
    )
    with pytest.raises(ConfigError, match="rule name\\(s\\) A used twice"):
        load_rules(path)


def test_alerts_help_lists_every_metric() -> None:
    from clientscope.analysis.alerts import METRICS

    shown = " ".join(
        CliRunner().invoke(app, ["alerts", "--help"], env={"COLUMNS": "400"}).output.split()
    )
    assert all(m in shown for m in METRICS), [m for m in METRICS if m not in shown]


# ------------------------------------------------------------------ plan
def test_plan_from_spec_and_what_if(datasets: dict[str, SimulationResult]) -> None:
    r = datasets["leak"]
    p = plan(r.path, SPECS / "deployment.yaml")
    apps = {row["app"]: row for row in p.apps.iter_rows(named=True)}
    assert apps["api"]["worst_case"] == 8 * 20
    assert (
        apps["api"]["observed_peak"] == p.observed.filter(pl.col("group") == "api-pool")["peak"][0]
    )
    others = p.observed.filter(~pl.col("group").is_in(["api-pool", "worker", "orders-svc"]))[
        "peak"
    ].sum()
    assert p.spec_recommended == nice_ceil((160 + 120 + 30 + 50 + others) * 1.25)
    assert p.recommended_maxclients >= p.spec_recommended
    assert (
        any("file-descriptor" in w for w in p.warnings)
        or p.recommended_maxclients <= p.current_maxclients
    )
    bigger = plan(r.path, SPECS / "deployment.yaml", what_if={"api": 12})
    assert bigger.apps.filter(pl.col("app") == "api")["worst_case"][0] == 12 * 20
    assert bigger.spec_recommended is not None and bigger.spec_recommended > p.spec_recommended
    assert f"CONFIG SET maxclients {p.recommended_maxclients}" in p.settings
    with pytest.raises(ConfigError, match="what-if names apps not in the spec"):
        plan(r.path, SPECS / "deployment.yaml", what_if={"nope": 2})
    with pytest.raises(ConfigError, match="give --spec"):  # not silently ignored
        plan(r.path, what_if={"api": 12})


def test_plan_does_not_size_maxclients_from_a_peak_that_is_still_growing(
    datasets: dict[str, SimulationResult],
) -> None:
    p = plan(datasets["leak"].path)
    assert p.observed_recommended < p.current_maxclients  # the healthy peak + 25% ...
    assert p.recommended_maxclients == p.current_maxclients  # ... is not applied
    assert p.fix_first is not None and p.warnings[0] == p.fix_first
    assert p.fix_first.startswith("fix first — orders-svc +120/h leak")
    assert f"CONFIG SET maxclients {p.current_maxclients}" in p.settings
    calm = plan(datasets["healthy"].path)
    assert calm.fix_first is None and not any("fix first" in w for w in calm.warnings)


def test_plan_pool_fit_and_fd_warning(datasets: dict[str, SimulationResult]) -> None:
    r = datasets["incident"]
    p = plan(r.path, SPECS / "deployment.yaml")
    assert p.current_maxclients == r.maxclients
    # pools are fitted to the limit the plan says to apply, not the one in force
    assert p.per_pod_pool_fit is not None
    assert p.per_pod_pool_fit * (8 + 6 + 3) <= p.recommended_maxclients * 0.8
    assert any("HPA max" in w for w in p.warnings)
    # ... but not to the room that limit keeps for the leak's course: with orders-svc leaking,
    # the pools fit the limit the needs call for (it offered 265 per pod against a spec of 20)
    assert p.left_out and p.horizon_floor is not None
    needs = max(p.observed_recommended, p.spec_recommended or 0, p.current_maxclients)
    assert needs < p.recommended_maxclients
    assert p.per_pod_pool_fit * (8 + 6 + 3) <= needs * 0.8
    assert any(f"fits maxclients {needs}, what the needs call for" in w for w in p.warnings)
    # the leaking app held more than that pool, but what it held is the leak: no "give it room"
    orders = p.apps.filter(pl.col("match") == "orders-svc").row(0, named=True)
    assert orders["observed_per_pod"] > p.per_pod_pool_fit
    assert not any(w.startswith(f"{orders['app']} already held") for w in p.warnings), p.warnings


def test_plan_checks_the_spec_against_what_the_server_saw(
    tmp_path: Path, datasets: dict[str, SimulationResult]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "apps:\n"
        "  - {name: api, match: api-pol, replicas: 4, hpa_max: 8, pool_size: 20}\n"  # a typo
        "  - {name: orders, match: orders-svc, replicas: 3, hpa_max: 3, pool_size: 10}\n"
    )
    p = plan(datasets["incident"].path, spec)
    said = "\n".join(p.warnings)
    assert "spec app api: match 'api-pol' is no client group seen here" in said
    assert "orders: " in said and "more than the spec's worst case 30" in said  # it leaked past it
    bad = tmp_path / "bad.yaml"
    bad.write_text("apps:\n  - {name: orders, replicas: 3, hpa_max: 1, pool_size: 10}\n")
    with pytest.raises(ConfigError, match=r"\(orders\): hpa_max 1 is below replicas 3"):
        plan(datasets["incident"].path, bad)
    bad.write_text("apps:\n  - {name: orders, replicas: 3, hpa_mx: 4, pool_size: 10}\n")
    with pytest.raises(ConfigError, match=r"unknown field 'hpa_mx'; did you mean 'hpa_max'\?"):
        plan(datasets["incident"].path, bad)
    with pytest.raises(ConfigError, match=r"--headroom -0\.9 is a share on top of the peak"):
        plan(datasets["healthy"].path, headroom=-0.9)
    with pytest.raises(ConfigError, match=r"--what-if api=2\.5: replicas must be a whole number"):
        plan(datasets["healthy"].path, SPECS / "deployment.yaml", what_if={"api": 2.5})  # type: ignore[dict-item]
    low = plan(datasets["healthy"].path)
    if low.recommended_maxclients * 2 < low.current_maxclients:
        assert any(
            w.startswith(f"this lowers maxclients from {low.current_maxclients}")
            for w in low.warnings
        )


def test_bad_spec_names_the_field(tmp_path: Path, datasets: dict[str, SimulationResult]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("apps:\n  - name: api\n    replicas: three\n    pool_size: 10\n")
    with pytest.raises(ConfigError, match=r"app 1 \(api\): field 'replicas' is 'three'"):
        plan(datasets["leak"].path, spec)


# ------------------------------------------------------------------ leaks / kill-script
def test_leaks_on_a_dataset(datasets: dict[str, SimulationResult]) -> None:
    report = leaks(datasets["leak"].path)
    assert report.leaking["group"].to_list() == ["orders-svc"]
    assert leaks(datasets["healthy"].path).leaking.is_empty()
    d = report.to_dict()
    assert "series" not in d and d["groups"][0]["group"] == "orders-svc"
    assert "<table" in report._repr_html_()


def test_leaks_needs_captures(tmp_path: Path) -> None:
    r = simulate("healthy", tmp_path / "two", captures=2, clients=10)
    with pytest.raises(AnalysisError, match="at least 3 successful capture"):
        leaks(r.path)


def test_kill_script_targets_only_matching_clients(datasets: dict[str, SimulationResult]) -> None:
    r = datasets["incident"]
    ks = kill_script(r.path, group="orders-svc", idle_over=600)
    rows = last_rows(r).filter((pl.col("name") == "orders-svc") & (pl.col("idle") > 600))
    assert sorted(ks.clients["id"].to_list()) == sorted(rows["id"].to_list())
    assert ks.commands == tuple(
        f"CLIENT KILL ID {i} ADDR {a} SKIPME yes"
        for i, a in ks.clients.select("id", "addr").iter_rows()
    )
    assert ks.text() == "".join(f"{c}\n" for c in ks.commands)  # commands only: no '#' line
    assert "REVIEW BEFORE RUNNING" in ks.header()[0] and str(ks.run_id) in ks.header()[1]
    everything = kill_script(r.path, idle_over=-1)  # any idle
    assert not everything.clients.filter(pl.col("role").is_in(["replica", "collector"])).height
    assert everything.protected_skipped == 2


# ------------------------------------------------------------------ commands
COMMANDS = [
    ["top", "--by", "lib"], ["idle"], ["leaks"], ["forecast"], ["plan"], ["alerts"], ["diagnose"],
    ["kill-script", "--idle-over", "600"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_command_json_and_tables(datasets: dict[str, SimulationResult], command: list[str]) -> None:
    runner = CliRunner()
    path = str(datasets["incident"].path)
    human = runner.invoke(app, [command[0], path, *command[1:]], env={"COLUMNS": "200"})
    assert human.exit_code == 0, human.output
    if command[0] == "kill-script":
        assert "CLIENT KILL ID" in human.output
        return
    text = runner.invoke(app, [command[0], path, *command[1:], "--json"]).output
    data = json.loads(text)
    assert data
    assert "Series:" not in text and "shape: (" not in text  # values, not printed frames
    if command[0] == "alerts":  # the replay: each rule's state, its firings, ... as row lists
        data = data["states"]
    if command[0] in ("top", "alerts"):  # frames come out as a list of row objects
        assert isinstance(data, list) and all(isinstance(row, dict) for row in data)
        key = "clients" if command[0] == "top" else "rule"
        assert all(isinstance(row[key], int | str) for row in data)


def test_narrow_terminal_drops_trailing_columns_instead_of_cutting_every_cell(
    datasets: dict[str, SimulationResult],
) -> None:
    out = CliRunner().invoke(app, ["leaks", str(datasets["leak"].path)], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    table = out.output.split("more column(s)")[0]
    assert "…" not in table  # whole cells, not 17 columns of "n…"
    assert "orders-svc" in table and "leak" in table
    assert "do not fit 80 characters" in out.output and "top_ips" in out.output
    assert max(len(line) for line in table.splitlines()) <= 80


def test_a_column_of_sentences_is_wrapped_into_the_room_left_not_dropped(
    datasets: dict[str, SimulationResult],
) -> None:
    """alerts' warning column (the point of that table) was dropped at 120 columns behind two
    short ones: the first column that does not fit whole is shown wrapped when 24+ characters
    are left for it, and only the columns after it are dropped."""
    out = CliRunner().invoke(app, ["alerts", str(datasets["incident"].path)], env={"COLUMNS": "120"})
    assert out.exit_code == 0, out.output
    warning = out.output[out.output.index("warning before exhaustion") :]
    table = warning.split("more column(s)")[0]
    assert any("┃ warning" in line for line in table.splitlines())  # its header
    assert "before the first rejection" in table and "…" not in table
    assert "do not fit 120 characters: fired_at" in warning
    assert max(len(line) for line in table.splitlines()) <= 120


def test_diagnose_command_names_the_leak(datasets: dict[str, SimulationResult]) -> None:
    out = CliRunner().invoke(app, ["diagnose", str(datasets["leak"].path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    assert "connection leak from orders-svc" in out.output
    assert "CONFIG SET timeout" in out.output
    md = CliRunner().invoke(app, ["diagnose", str(datasets["leak"].path), "--markdown"]).output
    assert md.startswith("## Findings")


# ------------------------------------------------------------------ several instances, results
def test_two_instances_are_judged_apart(tmp_path: Path) -> None:
    path = tmp_path / "fleet"
    leaking = simulate("leak", path, seed=1, captures=80, clients=60, instance="cache-a")
    simulate("healthy", path, seed=2, captures=80, clients=60, instance="cache-b")
    report = leaks(path)
    assert report.leaking.select("instance", "group").rows() == [("cache-a", "orders-svc")]
    assert set(report.groups["instance"]) == {"cache-a", "cache-b"}
    assert leaks(path, instance="cache-b").leaking.is_empty()
    d = diagnose(path)
    assert [(f.instance, f.group) for f in d.findings if f.kind == "leak"] == [
        ("cache-a", "orders-svc")
    ]
    assert d.instances == ("cache-a", "cache-b")
    assert top(path, "name")["instance"].unique().sort().to_list() == ["cache-a", "cache-b"]
    effect = idle(path).timeouts  # the timeout is per server: its effect too
    assert set(effect["instance"]) == {"cache-a", "cache-b"}
    per = {
        (r["instance"], r["timeout"]): r["would_close_now"] for r in effect.iter_rows(named=True)
    }
    assert per[("cache-a", 300)] > 0 and per[("cache-b", 300)] == 0  # only the leaking one's idle
    with pytest.raises(
        ConfigError, match=r"2 instances \(cache-a, cache-b\).*choose one with --instance"
    ):
        kill_script(path)  # ids are per server: no guessing
    assert kill_script(path, instance="cache-a", group="orders-svc").instance == "cache-a"
    assert forecast(path, instance="cache-a").slope_per_hour == pytest.approx(
        leaking.leaking[0].rate_per_min * 60, rel=0.4
    )


def test_a_fleet_leak_is_measured_on_its_own_server(tmp_path: Path) -> None:
    path = tmp_path / "fleet"
    simulate("leak", path, seed=1, captures=80, clients=60, instance="cache-a")
    simulate("healthy", path, seed=2, captures=80, clients=2000, instance="cache-z")  # busier
    (leak,) = [f for f in diagnose(path).findings if f.kind == "leak"]
    assert leak.instance == "cache-a"
    assert any(r.endswith("--instance cache-a   # review, then run") for r in leak.remediation)
    f = forecast(path, instance="cache-a")  # cache-a's own count and limit, as forecast says
    assert (
        f"the server reaches maxclients in {human_duration(f.eta_maxclients - f.now)}."
        in leak.summary
    )


def test_a_fleet_is_diagnosed_server_by_server(tmp_path: Path) -> None:
    path = tmp_path / "fleet"
    incident = simulate("incident", path, seed=3, captures=120, instance="cache-full")
    simulate("healthy", path, seed=2, captures=120, clients=150, instance="cache-calm")
    d = diagnose(path)
    by_kind = {(f.kind, f.instance) for f in d.findings}
    assert ("exhaustion", "cache-full") in by_kind  # every finding says which server
    assert all(f.instance for f in d.findings)
    assert not any(f.instance == "cache-calm" and f.severity == "critical" for f in d.findings)
    (full,) = [f for f in d.findings if f.kind == "exhaustion"]
    assert f"maxclients {incident.maxclients} reached" in full.title
    alone = diagnose(path, instance="cache-full")
    assert {(f.kind, f.group) for f in alone.findings} == {
        (f.kind, f.group) for f in d.findings if f.instance == "cache-full"
    }  # the same verdicts as judging that server alone
    assert set(d.leak_report.groups["instance"]) == {"cache-full", "cache-calm"}
    # what a timeout would close is per server: the model's kept lifecycles give the same
    fleet_idle = idle_from(build_model(path))
    assert fleet_idle.to_dict() == idle(path).to_dict()
    assert set(fleet_idle.timeouts["instance"]) == {"cache-full", "cache-calm"}
    shown = CliRunner().invoke(app, ["diagnose", str(path)], env={"COLUMNS": "200"}).output
    assert "(exhaustion on cache-full, confidence" in shown
    assert "(on cache-full)" in d.to_markdown()


def test_forecast_command_covers_every_instance_most_urgent_first(tmp_path: Path) -> None:
    path = tmp_path / "fleet"
    simulate("healthy", path, seed=2, captures=80, clients=200, instance="cache-busy")
    simulate("leak", path, seed=1, captures=80, clients=60, instance="cache-leaky")
    runner = CliRunner()
    data = json.loads(runner.invoke(app, ["forecast", str(path), "--json"]).output)
    assert [(f["instance"], f["verdict"]) for f in data] == [
        ("cache-leaky", "will_exhaust"),  # first, though cache-busy holds more connections
        ("cache-busy", "stable"),
    ]
    human = runner.invoke(app, ["forecast", str(path)], env={"COLUMNS": "200"}).output
    assert human.index("cache-leaky") < human.index("cache-busy")
    stable = human[human.index("cache-busy") :]
    assert "maxclients at 20" not in stable.split("Prometheus")[0]  # no crossing for a flat line
    one = json.loads(
        runner.invoke(app, ["forecast", str(path), "--instance", "cache-busy", "--json"]).output
    )
    assert one["instance"] == "cache-busy"
    planned = runner.invoke(app, ["plan", str(path)], env={"COLUMNS": "200"}).output
    assert (
        "busiest of 2 instances (cache-busy, cache-leaky); plan another with --instance" in planned
    )


def test_forecast_of_an_exhausted_server_says_when_once(
    datasets: dict[str, SimulationResult],
) -> None:
    """Exhausted: the note says when maxclients was reached; no projected crossing beside it (it
    printed "maxclients at <the last capture> (95%: within the same second)"), and a flat naive
    line says it never reaches maxclients, not "at never"."""
    path = str(datasets["incident"].path)
    f = json.loads(CliRunner().invoke(app, ["forecast", path, "--json"]).output)[0]
    assert f["verdict"] == "exhausted"
    shown = CliRunner().invoke(app, ["forecast", path], env={"COLUMNS": "200"}).output
    assert "maxclients was already reached at" in shown
    assert "(95%:" not in shown and "at never" not in shown
    assert shown.count("maxclients at ") == (1 if f["prometheus_eta_maxclients"] else 0), shown


def test_idle_histogram_bins_add_up(datasets: dict[str, SimulationResult]) -> None:
    report = idle(datasets["leak"].path)
    per_group = report.histogram.group_by("group").agg(pl.col("clients").sum())
    expected = dict(report.groups.select("group", "clients").iter_rows())
    assert dict(per_group.iter_rows()) == expected
    orders = report.histogram.filter(pl.col("group") == "orders-svc")
    assert orders.filter(pl.col("bin").is_in(["600-3600s", "300-600s"]))["clients"].sum() > 0


def test_results_serialise_and_render(datasets: dict[str, SimulationResult]) -> None:
    d = diagnose(datasets["incident"].path)
    assert d.kinds()[0] == "exhaustion"  # most severe first
    severities = [f.severity for f in d.findings]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    payload = json.loads(json.dumps(d.to_dict()))
    assert payload["findings"][0]["kind"] == "exhaustion"
    assert "first_at" in payload["findings"][0]["evidence"]
    leak = next(f for f in d.findings if f.kind == "leak")
    assert leak.group == "orders-svc" and leak.first_seen is not None
    assert any(r.startswith("CONFIG SET timeout") for r in leak.remediation)
    assert "orders-svc" in leak._repr_html_() and "<li>" in d._repr_html_()
    assert "### [critical]" in d.to_markdown()
    for result in (
        forecast(datasets["leak"].path),
        plan(datasets["leak"].path),
        idle(datasets["leak"].path),
    ):
        assert json.dumps(result.to_dict(), default=str)
        assert "<table" in result._repr_html_()


def test_fresh_eyes_details(datasets: dict[str, SimulationResult], tmp_path: Path) -> None:
    """What a user run found: wrong errors, `None` and `-0.0` on screen, placeholders to edit."""
    runner = CliRunner()
    leak = str(datasets["leak"].path)
    with pytest.raises(
        ConfigError, match=r"no instance 'nope' in this dataset; it has redis-master-0"
    ):
        forecast(leak, instance="nope")  # not "needs 3 captures, the dataset has 0"
    data = json.loads(runner.invoke(app, ["forecast", leak, "--json"]).output)
    assert isinstance(data, list) and data[0]["instance"] == "redis-master-0"  # always a list ...
    one = json.loads(
        runner.invoke(app, ["forecast", leak, "--instance", "redis-master-0", "--json"]).output
    )
    assert isinstance(one, dict)  # ... unless one instance is asked for
    calm = runner.invoke(
        app, ["forecast", str(datasets["healthy"].path)], env={"COLUMNS": "200"}
    ).output
    assert "-0.0/h" not in calm and "maxclients at -," not in calm
    shown = runner.invoke(app, ["diagnose", leak], env={"COLUMNS": "300"}).output
    assert f"clientscope kill-script {leak} --group" in shown  # ready to paste, no DATASET
    dump = tmp_path / "c-20261126-093000.txt"
    dump.write_text("id=3 addr=10.0.0.1:5000 fd=8 name=a age=1 idle=1\n")
    import_dumps([dump], tmp_path / "ds", instance="x")
    bare = runner.invoke(app, ["summary", str(tmp_path / "ds")], env={"COLUMNS": "300"}).output
    assert "None" not in bare and "maxclients unknown" in bare
    told = runner.invoke(app, ["diagnose", str(tmp_path / "ds")], env={"COLUMNS": "300"}).output
    assert "None" not in told and "peak 1 / - (-%)" in told  # no INFO: the limit is unknown
    idled = runner.invoke(app, ["idle", str(tmp_path / "ds")], env={"COLUMNS": "300"}).output
    assert "reused: - s" not in idled and "no connection was seen used again" in idled
    d = diagnose(datasets["incident"].path)
    assert {f.instance for f in d.findings} == {"redis-master-0"}  # one server: named all the same
    (full,) = [f for f in d.findings if f.kind == "exhaustion"]
    (sat,) = [f for f in d.findings if f.kind == "saturation"]
    assert full.evidence["maxclients"] == sat.evidence["maxclients"]  # one limit in one diagnosis


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_leak_rate_is_read_before_the_limit_capped_it(tmp_path: Path, seed: int) -> None:
    r = simulate("incident", tmp_path / "incident", seed=seed)
    row = leaks(r.path).leaking.row(0, named=True)
    assert row["group"] == "orders-svc"
    ratio = row["slope_theil_sen_per_h"] / 60 / r.leaking[0].rate_per_min
    # the trend through the saturated stretch read 0.57-0.7x the real rate; the group's pool
    # warming up at the start can add to it, never take away
    assert 0.8 <= ratio <= 2.0, ratio


def test_a_trend_the_test_cannot_see_is_not_called_stable(tmp_path: Path) -> None:
    """5 captures of a leak: Mann-Kendall cannot reach p < 0.01 on 5 points, so no group gets a
    verdict (it read "stable" at R² 0.99) and the forecast says why it has no time, not "not
    growing"."""
    from clientscope.analysis.trend import captures_to_judge, theil_sen_mann_kendall

    for alpha in (0.05, 0.01, 0.001):
        need = captures_to_judge(alpha)
        p = [theil_sen_mann_kendall(np.arange(float(n))[None, :], np.arange(float(n)), np.zeros(n))[3][0]
             for n in (need - 1, need)]  # fmt: skip
        assert p[0] >= alpha > p[1], (alpha, need, p)
    r = simulate("leak", tmp_path / "five", seed=1, captures=5, clients=50)
    report = leaks(r.path)
    assert report.groups.is_empty() and report.leaking.is_empty()
    assert report.left_out == (("too few to judge: a trend at alpha 0.01 needs 6 captures with clients", 5),)
    f = forecast(r.path)
    assert f.note.startswith("too few captures to tell a trend (5; a trend at p < 0.01 needs 6)")
    assert f.too_few_to_tell
    from clientscope.reporting import report

    card = report(r.path, tmp_path / "five-report").markdown.read_text()
    assert "too few captures to tell a trend" in card and "not growing" not in card
    shown = CliRunner().invoke(app, ["leaks", str(r.path)], env={"COLUMNS": "200"}).output
    assert "stable" not in shown and "too few to judge" in shown
    from clientscope.analysis import kill_script

    assert kill_script(r.path).chosen_by.startswith("no filter given and no leak found")  # no crash
    assert kill_script(r.path, leaked=True).commands == ()
    more = simulate("leak", tmp_path / "six", seed=1, captures=6, clients=50)
    assert not leaks(more.path).groups.is_empty()  # from 6 on, groups are judged
    assert not forecast(more.path).too_few_to_tell


def test_leaks_shows_the_groups_that_change_unless_all(datasets: dict[str, SimulationResult]) -> None:
    path = str(datasets["incident"].path)
    run = CliRunner()
    default = run.invoke(app, ["leaks", path], env={"COLUMNS": "250"}).output
    every = run.invoke(app, ["leaks", path, "--all"], env={"COLUMNS": "250"}).output
    assert "orders-svc" in default and "excluded:" not in default and " stable " not in default
    assert "excluded:replica" in every and " stable " in every


def test_a_window_that_starts_at_the_limit_says_the_limit_may_be_older(
    datasets: dict[str, SimulationResult], tmp_path: Path
) -> None:
    """Looking at only the end of an incident: diagnose and forecast say the server was full from
    the first capture read, maybe earlier (not that it became full then), and leaks says its
    trends ran through a capped count."""
    from datetime import timedelta

    from clientscope.analysis.timeline import first_at_limit, timeline
    from clientscope.window import select

    path = datasets["incident"].path
    whole = timeline(open_dataset(path))
    first, from_start = first_at_limit(whole)
    assert first is not None and not from_start
    view = select(path, start=first + timedelta(minutes=1))
    (full,) = [f for f in diagnose(view).findings if f.kind == "exhaustion"]
    assert full.summary.startswith("From the first capture read, ")
    assert "maybe earlier: widen --since" in full.summary
    assert "maybe earlier" in forecast(view).note
    from clientscope.reporting import report

    card = report(view, tmp_path / "late").markdown.read_text()
    assert "the limit was hit by the first capture read" in card
    judged = leaks(view)
    assert judged.judged_at_limit > 0
    shown = CliRunner().invoke(app, ["leaks", str(path), "--since", f"{first + timedelta(minutes=1):%Y-%m-%dT%H:%M:%S}"],
                               env={"COLUMNS": "200"}).output  # fmt: skip
    assert "were at maxclients" in shown and "Widen --since to before the limit" in shown
    # 4 captures before the limit: too few to judge alone (6 at alpha 0.01), so the trends read
    # the capped ones too, and say so (it left them out and then judged nothing)
    listed = whole.filter(pl.col("has_clients") & (pl.col("ts") < first))["ts"]
    few = leaks(select(path, start=listed[-4]))
    assert few.captures > 4 and few.captures - few.judged_at_limit == 4 and not few.groups.is_empty()
    (before,) = [f for f in diagnose(path).findings if f.kind == "exhaustion"]
    assert before.summary.startswith(f"From {first:%Y-%m-%d %H:%M:%S} UTC the server was full")


def test_idle_on_a_fleet_suggests_a_timeout_safe_on_each_server(tmp_path: Path) -> None:
    """A connection of one server was used again after 15 minutes idle; the other server's
    many short gaps must not hide them: idle suggests the largest timeout a server's plan does."""
    from dataclasses import replace

    from clientscope.analysis import idle_from
    from clientscope.analysis.groups import suggest_timeout
    from clientscope.analysis.model import build_model

    path = tmp_path / "fleet"
    simulate("healthy", path, seed=1, captures=40, clients=60, instance="a")
    simulate("healthy", path, seed=2, captures=40, clients=3000, instance="b")
    model = build_model(path)
    a = model.server("a")
    normal = pl.col("role") == "normal"
    first = pl.int_range(pl.len()) < 1
    patient = a.lifecycles.with_columns(  # one of a's clients: idle 900 s, then used again
        max_idle=pl.when(normal & first).then(900).otherwise(pl.col("max_idle")),
        idle_at_last=pl.when(normal & first).then(0).otherwise(pl.col("idle_at_last")),
    )
    servers = tuple(replace(s, lifecycles=patient) if s.instance == "a" else s for s in model.servers)
    fleet = replace(model, servers=servers)
    each = [suggest_timeout(s.reuse_gaps()) for s in fleet.servers]
    assert max(each) >= 1350 and min(each) == 300  # 1.5 x 900 on a, the floor on b
    assert idle_from(fleet).suggested_timeout == max(each)
    pooled = np.concatenate([s.reuse_gaps() for s in fleet.servers])
    assert suggest_timeout(pooled) < max(each)  # what pooling the gaps would have said


def test_no_idle_timeout_without_a_reuse_gap_says_so(tmp_path: Path) -> None:
    """timeout 0 and no connection ever used again after idling: the finding says there is no gap
    to size from (it read "the longest gap ... was 0 s"), as idle does."""
    for k, ts in enumerate(("093000", "093100", "093200")):
        lines = [f"id={i} addr=10.0.0.{i}:5000 fd={i + 8} name=app age={700 + 60 * k} idle={700 + 60 * k} cmd=get"
                 for i in range(1, 11)]  # fmt: skip
        (tmp_path / f"c-20261126-{ts}.txt").write_text("\n".join(lines) + "\ntimeout\n0\nmaxclients\n100\n")
    import_dumps(sorted(tmp_path.glob("c-*.txt")), tmp_path / "ds", instance="x")
    (finding,) = [f for f in diagnose(tmp_path / "ds").findings if f.kind == "no_idle_timeout"]
    assert "was 0 s" not in finding.summary
    assert "No connection was seen used again after an idle stretch, so timeout 300" in finding.summary


def test_an_instance_outside_the_window_is_told_apart_from_an_unknown_one(tmp_path: Path) -> None:
    from clientscope.analysis import summary
    from clientscope.window import select

    path = tmp_path / "fleet"
    simulate("healthy", path, seed=1, captures=20, clients=30, instance="a")
    simulate("healthy", path, seed=3, captures=10, clients=30, instance="r1")  # 10 captures, then none
    late = select(path, start="2026-11-25T08:03:00")
    with pytest.raises(ConfigError, match=r"instance 'r1' has no capture in the window --since "
                       r"2026-11-25 08:03:00 UTC, which holds a; widen the window"):  # fmt: skip
        summary(late, instance="r1")
    with pytest.raises(ConfigError, match=r"no instance 'nope' in this dataset; it has a"):
        summary(late, instance="nope")
