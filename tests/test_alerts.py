"""Alert replay (issue 9, item 5): each rule's state over time and at the end of the data, the
warning each rule (and a leak-aware forecast rule) gave before every exhaustion, Prometheus
rules files, and the parser's bounds on hostile input."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from clientscope.analysis._common import jsonable
from clientscope.analysis.alerts import (
    DEFAULT_RULES,
    FORECAST_GRID,
    Rule,
    alerts,
    load_rules,
    replay_alerts,
)
from clientscope.analysis.promql import MAX_EXPR_CHARS
from clientscope.analysis.timeline import timeline
from clientscope.cli import app
from clientscope.config import MAX_BYTES, Where
from clientscope.dataset import Dataset
from clientscope.errors import ConfigError
from clientscope.simulation import SimulationResult, simulate, simulate_tables

# the runbook's "Set Up Monitoring" rules as written there (a bare list of Prometheus rules)
RUNBOOK_RULES = """\
- alert: RedisHighConnections
  expr: redis_connected_clients > 1000
  for: 5m
  labels:
    severity: warning
  annotations:
    summary: "Redis has too many connections"

- alert: RedisConnectionPoolExhausted
  expr: redis_connected_clients / redis_config_maxclients > 0.8
  for: 5m
  labels:
    severity: critical
  annotations:
    summary: "Redis connection pool near exhaustion"

- alert: RedisBlockedClients
  expr: redis_blocked_clients > 10
  for: 5m
  labels:
    severity: warning
  annotations:
    summary: "Many Redis clients blocked"
"""
MAX_CLIENTS_REACHED = """\
- alert: RedisMaxClientsReached
  expr: increase(redis_rejected_connections_total[5m]) > 0
  for: 0s
  labels:
    severity: critical
  annotations:
    summary: "Redis rejected connections: maxclients reached"
"""


def as_group(rules: str) -> str:
    """Bare rules as a Prometheus rules file: groups / name / rules."""
    body = "".join(f"      {line}\n" if line else "\n" for line in rules.splitlines())
    return f"groups:\n  - name: redis\n    rules:\n{body}"


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    """30 minutes at 15 s: a leak reaches maxclients half way, with rejections."""
    return simulate("incident", tmp_path_factory.mktemp("incident") / "ds", seed=3)


@pytest.fixture(scope="module")
def saturated(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    """60 seconds that saturate maxclients: the issue's case, shorter than any rule's `for`."""
    path = tmp_path_factory.mktemp("saturated") / "ds"
    return simulate("incident", path, seed=3, captures=30, interval=2, clients=40)


# ------------------------------------------------------------------ designed series
@dataclass(frozen=True)
class MemoryTables:
    captures: pl.LazyFrame
    clients: pl.LazyFrame
    info: pl.LazyFrame


def designed(n: int, *, maxclients: int = 100, **info: list[int]) -> MemoryTables:
    """A healthy capture series exactly 15 s apart whose INFO fields follow `info`
    (connected_clients, rejected_connections, ...) and whose maxclients is `maxclients`; no
    replicas."""
    result, batches = simulate_tables("healthy", seed=1, captures=n, clients=20, interval=15)
    caps, clients, inf = (
        pl.concat([b[k] for b in batches]) for k in ("captures", "clients", "info")
    )
    exact = caps.sort("ts").select(
        "capture_id", ts=pl.lit(result.start) + pl.duration(seconds=pl.int_range(n) * 15)
    )
    caps, clients, inf = (f.drop("ts").join(exact, on="capture_id") for f in (caps, clients, inf))
    inf = inf.sort("ts").with_columns(
        connected_slaves=pl.lit(0, pl.Int64), maxclients=pl.lit(maxclients, pl.Int64),
        **{k: pl.Series(v, dtype=pl.Int64) for k, v in info.items()},
    )  # fmt: skip
    caps = caps.with_columns(maxclients=pl.lit(maxclients, pl.Int64))
    return MemoryTables(caps.lazy(), clients.lazy(), inf.lazy())


def capture_times(tables: MemoryTables) -> list[datetime]:
    return tables.captures.sort("ts").collect()["ts"].to_list()


def state(replay_states: pl.DataFrame, rule: str) -> dict[str, object]:
    return replay_states.filter(pl.col("rule") == rule).row(0, named=True)


# ------------------------------------------------------------------ state at the end of the data
def test_a_rule_crossing_its_threshold_in_the_last_minutes_is_pending_at_the_end() -> None:
    """Before: `alerts` returned only firings, so this series said nothing at all."""
    connected = [40] * 32 + [85] * 8  # over 0.8 of maxclients for the last 8 captures (105 s)
    tables = designed(40, connected_clients=connected)
    ts = capture_times(tables)
    replay = replay_alerts(tables, forecast_within=None)
    row = state(replay.states, "RedisConnectionPoolExhausted")
    held = round((ts[-1] - ts[32]).total_seconds())
    assert (row["state"], row["since"], row["fired"]) == ("pending", ts[32], 0)
    assert row["detail"] == f"pending for 1 min {held - 60} s of 5 min"
    assert state(replay.states, "RedisHighConnections")["state"] == "inactive"
    assert replay.firings.is_empty() and alerts(tables).is_empty()
    assert replay.headline() == (
        "no rule fired; pending without firing: RedisConnectionPoolExhausted",
        f"at the end of the data RedisConnectionPoolExhausted on redis-master-0 is {row['detail']}",
    )


def test_alerts_on_a_saturated_minute_shows_the_pending_rule_and_the_rejections(
    saturated: SimulationResult,
) -> None:
    """Before: 'no rule would have fired', and nothing about the pending rule or the rejections."""
    out = CliRunner().invoke(app, ["alerts", str(saturated.path)], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    rejected = int(timeline(_open(saturated))["new_rejections"].fill_null(0).sum())
    assert rejected > 0
    text = " ".join(out.output.split())
    assert "no rule would have fired" not in text
    assert re.search(
        r"RedisConnectionPoolExhausted on redis-master-0 is pending for \d+ s of 5 min", text
    )
    assert f"{rejected} connection(s) were rejected at maxclients" in text
    assert re.search(r"RedisMaxClientsReached\s+│ critical │ redis-master-0 │ firing", out.output)


def test_no_rule_would_have_fired_only_when_none_was_pending_and_it_says_what_was_rejected(
    incident: SimulationResult, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: Never, metric: blocked_clients, threshold: 1000}\n")
    out = CliRunner().invoke(app, ["alerts", str(incident.path), "--rules", str(rules)])
    assert out.exit_code == 0, out.output
    rejected = int(timeline(_open(incident))["new_rejections"].fill_null(0).sum())
    assert "no rule would have fired: none was even pending" in out.output
    assert f"{rejected} connection(s) were rejected at maxclients" in out.output
    quiet = replay_alerts(designed(20, connected_clients=[10] * 20), forecast_within=None)
    assert quiet.headline() == ("no rule would have fired: none was even pending",)


def test_a_rule_that_fired_and_resolved_is_inactive_since_its_resolution() -> None:
    tables = designed(40, blocked_clients=[0] * 5 + [20] * 25 + [0] * 10)
    ts = capture_times(tables)
    replay = replay_alerts(tables, forecast_within=None)
    row = state(replay.states, "RedisBlockedClients")
    assert (row["state"], row["since"], row["fired"], row["resolved"]) == ("inactive", ts[30], 1, 1)
    episode = replay.firings.row(0, named=True)
    assert (episode["pending_since"], episode["resolved_at"]) == (ts[5], ts[30])
    brief = replay_alerts(
        designed(20, blocked_clients=[0] * 5 + [20] * 3 + [0] * 12), forecast_within=None
    )
    row = state(brief.states, "RedisBlockedClients")
    assert (row["state"], row["detail"], row["pending_only"], row["fired"]) == (
        "inactive", "was pending, never fired", 1, 0,
    )  # fmt: skip


def test_json_gives_what_the_tables_show(saturated: SimulationResult) -> None:
    out = CliRunner().invoke(app, ["alerts", str(saturated.path), "--json", "--no-forecast"])
    data = json.loads(out.output)
    replay = replay_alerts(saturated.path, forecast_within=None)
    for name in ("states", "firings", "exhaustions", "warnings"):
        assert data[name] == jsonable(getattr(replay, name)), name
    assert data["headline"] == list(replay.headline())
    assert data["rejected"] == replay.rejected > 0
    assert data["rules"][3] == {
        "name": "RedisMaxClientsReached", "expr": "increase(redis_rejected_connections_total[5m]) > 0",
        "for_s": 0.0, "severity": "critical", "labels": {},
        "summary": "Redis rejected connections: maxclients reached",
    }  # fmt: skip


# ------------------------------------------------------------------ warning before an exhaustion
def test_warning_before_an_exhaustion_on_a_designed_series() -> None:
    """Over 0.8 from capture 10 (fires 5 min later, at 30), at maxclients from 40, the first
    rejection counted at 42."""
    connected = [50] * 10 + [85] * 30 + [100] * 10
    rejected = [0] * 42 + [5 * k for k in range(1, 9)]
    tables = designed(50, connected_clients=connected, rejected_connections=rejected)
    ts = capture_times(tables)
    replay = replay_alerts(tables, forecast_within=None)
    ex = replay.exhaustions.row(0, named=True)
    assert (ex["limit_at"], ex["first_rejection_at"], ex["impact_at"], ex["rejected"]) == (
        ts[40], ts[42], ts[42], 40,
    )  # fmt: skip
    said = dict(replay.warnings.select("rule", "warning").iter_rows())
    pool = replay.warnings.filter(pl.col("rule") == "RedisConnectionPoolExhausted").row(
        0, named=True
    )
    assert (pool["fired_at"], pool["lead_s"]) == (ts[30], 180.0)
    assert said == {
        "RedisHighConnections": "never fired",
        "RedisConnectionPoolExhausted": "fired 3 min before the first rejection",
        "RedisBlockedClients": "never fired",
        "RedisMaxClientsReached": "fired at the first rejection",
    }


def test_warning_table_for_the_incident(incident: SimulationResult) -> None:
    replay = replay_alerts(incident.path)
    tl = timeline(_open(incident))
    first = tl.filter((pl.col("new_rejections") > 0) | pl.col("rejected_error"))["ts"].min()
    assert replay.exhaustions.height == 1
    ex = replay.exhaustions.row(0, named=True)
    assert ex["first_rejection_at"] == first == ex["impact_at"]
    assert ex["limit_at"] == tl.filter(pl.col("at_limit"))["ts"].min()
    warned = {r["rule"]: r for r in replay.warnings.iter_rows(named=True)}
    pool = warned["RedisConnectionPoolExhausted"]
    fired = replay.firings.filter(pl.col("rule") == "RedisConnectionPoolExhausted")[
        "fired_at"
    ].item()
    assert pool["fired_at"] == fired and pool["lead_s"] == (first - fired).total_seconds() > 0
    assert warned["RedisHighConnections"]["warning"] == "never fired"
    leak_aware = warned["forecast: maxclients within 1 h"]
    assert leak_aware["lead_s"] > 0 and leak_aware["fired_at"] >= incident.start
    assert leak_aware["warning"].startswith(f"fired {_minutes(leak_aware['lead_s'])}")
    checks = replay.forecast_checks
    assert checks.filter(pl.col("ts") >= leak_aware["fired_at"])["fires"].all()
    assert not checks.filter(pl.col("ts") < leak_aware["fired_at"])["fires"].any()
    out = CliRunner().invoke(app, ["alerts", str(incident.path)], env={"COLUMNS": "250"})
    assert (
        f"warning before exhaustion 1 on redis-master-0: limit reached {ex['limit_at']:%Y-%m-%d %H:%M:%S}"
        in out.output
    )
    assert leak_aware["warning"] in out.output


def test_the_forecast_rule_builds_a_bounded_number_of_models(tmp_path: Path) -> None:
    """About FORECAST_GRID + log2(captures) models per exhaustion, whatever the captures."""
    result = simulate("incident", tmp_path / "ds", seed=5, captures=2000, interval=2, clients=60)
    started = time.perf_counter()
    replay = replay_alerts(result.path)
    took = time.perf_counter() - started
    assert replay.exhaustions.height >= 1
    assert replay.forecast_checks.height <= FORECAST_GRID + 12
    assert took < 60, took


def test_exhaustions_apart_are_counted_apart_and_the_forecast_rule_checks_the_first_five() -> None:
    apart = designed(32 * 7, connected_clients=([50] * 30 + [100] * 2) * 7)  # 7.5 min apart
    replay = replay_alerts(apart)
    assert replay.exhaustions["exhaustion"].to_list() == [1, 2, 3, 4, 5, 6, 7]
    leak_aware = replay.warnings.filter(pl.col("rule") == "forecast: maxclients within 1 h")
    not_checked = leak_aware["warning"].str.starts_with(
        "not checked: the forecast rule is replayed"
    )
    assert not_checked.to_list() == [False] * 5 + [True] * 2
    assert set(replay.forecast_checks["exhaustion"]) == {1, 2, 3, 4, 5}
    close = designed(12 * 4, connected_clients=([50] * 10 + [100] * 2) * 4)  # 2.5 min apart
    assert replay_alerts(close, forecast_within=None).exhaustions.height == 1


# ------------------------------------------------------------------ Prometheus rules files
@pytest.mark.parametrize("form", ["groups", "bare list"])
def test_the_runbooks_rules_file_replays_as_the_built_in_rules(
    incident: SimulationResult, tmp_path: Path, form: str
) -> None:
    """Before: a `groups:` file or the runbook's bare list was 'expected a list under rules:'."""
    text = RUNBOOK_RULES + "\n" + MAX_CLIENTS_REACHED
    path = tmp_path / "runbook.yaml"
    path.write_text(as_group(text) if form == "groups" else text)
    rules = load_rules(path)
    assert rules == DEFAULT_RULES
    mine = replay_alerts(incident.path, path, forecast_within=None)
    built_in = replay_alerts(incident.path, forecast_within=None)
    for name in ("states", "episodes", "firings", "warnings"):
        assert getattr(mine, name).equals(getattr(built_in, name)), name
    assert not built_in.firings.is_empty()


def test_a_prometheus_rule_replays_like_the_same_simple_rule(
    incident: SimulationResult, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(as_group(
        "- alert: Saturated\n  expr: clientscope_connected_clients / clientscope_maxclients >= 0.9\n"
        "  for: 1m30s\n  labels: {severity: critical, team: cache}\n"
        "  annotations: {description: near the limit}\n"
    ))  # fmt: skip
    (prom,) = load_rules(path)
    assert (prom.for_s, prom.labels, prom.summary) == (90.0, (("team", "cache"),), "near the limit")
    simple = Rule("Saturated", "utilization", ">=", 0.9, for_s=90, severity="critical")
    a, b = (alerts(incident.path, [r]).drop("expr", "summary") for r in (prom, simple))
    assert a.height >= 1 and a.equals(b)


def test_rate_and_increase_are_prometheus_own() -> None:
    """3 connections every 15 s. At the 4th sample rate(...[1m]) sees 4 samples over 45 s and
    extrapolates to the range's start: 0.2/s; at the 3rd the start is too far away, so it
    extrapolates half an interval only: 6 * 37.5/30 / 60 = 0.125/s, under 0.19."""
    tables = designed(20, total_connections_received=[1000 + 3 * k for k in range(20)])
    ts = capture_times(tables)
    rule = Rule("Churn", promql="rate(redis_connections_received_total[1m]) > 0.19", for_s=0)
    episodes = replay_alerts(tables, [rule], forecast_within=None).episodes
    assert episodes["pending_since"].to_list() == [ts[3]]
    # a reset (1027 -> 2) counts as an increase of 2: the windows holding it see 8 (10.7
    # extrapolated), never a negative increase; at 13 the counter's zero point (2 at capture 10,
    # 10 s of growth) stops the extrapolation short of the range's start: 9 * 55/45 = 11
    after_reset = [1000 + 3 * k for k in range(10)] + [2 + 3 * k for k in range(10)]
    tables = designed(20, total_connections_received=after_reset)
    ts = capture_times(tables)
    twelve = Rule("Twelve", promql="increase(redis_connections_received_total[1m]) > 11.5", for_s=0)
    episodes = replay_alerts(tables, [twelve], forecast_within=None).episodes
    assert episodes.select("pending_since", "resolved_at").rows() == [
        (ts[3], ts[10]),
        (ts[14], None),
    ]


def test_and_or_unless_and_the_instance_matcher() -> None:
    tables = designed(
        20, connected_clients=[50] * 10 + [90] * 10, blocked_clients=[0] * 15 + [20] * 5
    )
    ts = capture_times(tables)

    def pending(expr: str) -> list[datetime]:
        rule = Rule("R", promql=expr, for_s=0)
        return (
            replay_alerts(tables, [rule], forecast_within=None).episodes["pending_since"].to_list()
        )

    assert pending("redis_connected_clients > 80 and redis_blocked_clients > 10") == [ts[15]]
    assert pending("redis_blocked_clients > 10 or redis_connected_clients > 80") == [ts[10]]
    assert pending("redis_connected_clients > 80 unless redis_blocked_clients > 10") == [ts[10]]
    assert pending('redis_connected_clients{instance="redis-master-0"} > 80') == [ts[10]]
    assert pending('redis_connected_clients{instance!="redis-master-0"} > 80') == []
    assert pending("100 * redis_connected_clients / redis_config_maxclients >= 90") == [ts[10]]


def test_a_user_rule_of_a_built_in_name_replaces_it(incident: SimulationResult) -> None:
    mine = Rule("RedisHighConnections", promql="redis_connected_clients > 10", for_s=0)
    replay = replay_alerts(incident.path, [mine], include_defaults=True, forecast_within=None)
    assert replay.states["rule"].to_list().count("RedisHighConnections") == 1
    assert replay.rules[-1] == mine and len(replay.rules) == len(DEFAULT_RULES)


# ------------------------------------------------------------------ what is not replayed
NOT_REPLAYED = {
    "sum(redis_connected_clients) > 5": "aggregation sum() at column 1 is not supported",
    "max by (instance) (redis_connected_clients) > 5": "aggregation max() at column 1",
    "deriv(redis_connected_clients[5m]) > 1": "function deriv() at column 1 is not supported",
    "rate(redis_connected_clients[5m]) > 1": "redis_connected_clients is a gauge",
    "increase(redis_rejected_connections_total) > 0": "needs a range, such as [5m]",
    'redis_connected_clients{job="redis"} > 5': 'label matcher job="redis" at column 25',
    'redis_connected_clients{instance=~"a.*"} > 5': 'label matcher instance=~"a.*"',
    "redis_connected_clients offset 5m > 1": "offset at column 25 is not supported",
    "redis_connected_clients > bool 5": "the bool modifier",
    "redis_connected_clients > on(instance) redis_blocked_clients": "vector matching (on)",
    "redis_connected_clients % 5 > 1": "the % operator at column 25",
    "redis_up == 0": "series 'redis_up' at column 1 is not one clientscope replays",
    "redis_connected_clients[5m] > 1": "only replayed inside rate() or increase()",
    "rate(redis_rejected_connections_total[5m:1m]) > 0": "a subquery at column 39",
    "increase(redis_rejected_connections_total[0s]) > 0": "range [0s] at column 43 must be from 1s to 30d",
    "redis_connected_clients": "has no comparison with a series",
    "1 > 2": "comparing two numbers at column 3 needs the bool modifier",
    "redis_connected_clients > 5 and 3": "'and' at column 29 needs a series on both sides",
    "redis_connected_clients > 1e999": "number '1e999' at column 27 is not finite",
    "redis_connected_clients >": "expected a number, a series or '(' at column 26, found the end",
    "(redis_connected_clients > 1": "expected ')' at column 29, found the end",
    "redis_connected_clients $ 1": "cannot read '$' at column 25",
}


@pytest.mark.parametrize(("expr", "said"), NOT_REPLAYED.items(), ids=list(NOT_REPLAYED))
def test_an_expression_not_replayed_names_the_part(expr: str, said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        Rule("R", promql=expr)


def test_the_error_names_the_file_group_rule_line_and_part(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        as_group(
            RUNBOOK_RULES.replace("redis_blocked_clients > 10", "sum(redis_blocked_clients) > 10")
        )
    )
    want = (
        f"{path}: group 1 (redis) rule 3 (RedisBlockedClients): field 'expr' is "
        "'sum(redis_blocked_clients) > 10' (line 21): expr aggregation sum() at column 1 is not "
        "supported: clientscope replays one series per instance, so write the expression without it"
    )
    with pytest.raises(ConfigError, match="^" + re.escape(want) + "$"):
        load_rules(path)


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ("- {record: 'job:x:sum', expr: 'sum(x)'}", "rule 1 (line 1) is a recording rule ('job:x:sum')"),
        ("- {expr: 'redis_blocked_clients > 1'}", "rule 1: field 'alert' (the rule's name) is missing"),
        ("- {alert: A, expr: 'redis_blocked_clients > 1', for: 5m1h}", "field 'for' is '5m1h' (line 1): for is not a duration"),
        ("- {alert: A, expr: 'redis_blocked_clients > 1', labels: {severity: page}}", "field 'labels.severity' is 'page' (line 1): labels.severity must be one of critical, warning, info"),
        ("- {alert: A, expr: 'redis_blocked_clients > 1', keep_firing_for: 5m}", "field 'keep_firing_for' is '5m' (line 1): keep_firing_for is not replayed"),
        ("- {alert: A, expr: 'redis_blocked_clients > 1', fro: 5m}", "rule 1: unknown field 'fro'; did you mean 'for'?"),
        ("- {alert: A, expr: [1, 2]}", "field 'expr' is [1, 2] (line 1): expr must be text"),
    ],
)  # fmt: skip
def test_prometheus_rule_fields_are_checked(tmp_path: Path, rule: str, said: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rule + "\n")
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_rules(path)


# ------------------------------------------------------------------ hostile rules files
def test_a_huge_expression_is_refused_by_its_length_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    expr = "redis_connected_clients + " * ((MAX_BYTES - 200) // 26) + "1 > 2"
    path.write_text(f"- alert: Huge\n  expr: '{expr}'\n")
    started = time.perf_counter()
    with pytest.raises(
        ConfigError,
        match=rf"\(line 2\): expr is {len(expr):,} characters long; an alert expression is a line or two: at most 2,000$",
    ):
        load_rules(path)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("expr", "said"),
    [
        ("(" * 900 + "redis_blocked_clients > 1" + ")" * 900, "nests more than 32 deep at column 33"),
        ("-" * 1900 + "redis_blocked_clients > 1", "nests more than 32 deep at column 33"),
        ("redis_blocked_clients > 1" + " + 1" * 400, "nests more than 32 deep at column 151 (operators in a row)"),
        ("1" * 1999 + "x", "cannot read '11111111111111111111' at column 1"),
        ("redis_blocked_clients > \u202e1", r"cannot read '\u202e1' at column 25"),
        ("redis_blocked_clients \x1b[31m> 1", r"cannot read '\x1b[31m>' at column 23"),
        ("redis_blocked_clients > 1 \U0001f525", "cannot read '\U0001f525' at column 27"),
        ('redis_blocked_clients{instance="' + "a" * 1900 + '"} > 1', "field 'expr' is"),
    ],
    ids=["brackets", "signs", "operators", "digits", "bidi", "escape", "emoji", "long label"],
)  # fmt: skip
def test_hostile_expressions_are_bounded_and_named(tmp_path: Path, expr: str, said: str) -> None:
    started = time.perf_counter()
    try:
        Rule("R", promql=expr)
    except ConfigError as exc:
        assert said in str(exc)
        assert len(str(exc)) < 1000 and "\n" not in str(exc) and "\x1b" not in str(exc)
    else:
        assert said == "field 'expr' is"  # a long instance name is legal, only bounded
    assert time.perf_counter() - started < 2


def test_too_many_rules_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "".join(f"- {{alert: R{i}, expr: 'redis_blocked_clients > {i}'}}\n" for i in range(501))
    )
    with pytest.raises(
        ConfigError, match=r"rules.yaml: 501 rules; at most 500 are replayed at once$"
    ):
        load_rules(path)


TOKENS = st.sampled_from([
    "redis_connected_clients", "redis_config_maxclients", "redis_rejected_connections_total",
    "rate", "increase", "sum", "by", "and", "or", "unless", "offset", "(", ")", "[", "]", "{", "}",
    "5m", "1h30m", "0.8", "1e3", ">", ">=", "==", "/", "*", "-", "+", "%", ",", ":", "'x'", '"y"',
    "instance", "=", "=~", "@", "\u202e", "\x00", " ", "é",
])  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=40).map(" ".join))
def test_any_token_soup_compiles_or_is_a_config_error(expr: str) -> None:
    from clientscope.analysis.promql import compile_promql

    try:
        node = compile_promql(expr, Where.option("expr"))
    except ConfigError as exc:
        assert str(exc).startswith("expr ") and len(str(exc)) <= 1000
        return
    assert node.compared and not node.scalar and node.depth <= 32
    assert len(expr) <= MAX_EXPR_CHARS


def test_untrusted_rule_names_are_shown_as_text(
    saturated: SimulationResult, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        '- alert: "[bold red]Evil\\e[2J"\n  expr: redis_connected_clients > 1\n  for: 0s\n'
    )
    out = CliRunner().invoke(app, ["alerts", str(saturated.path), "--rules", str(path), "--no-forecast"],
                             env={"COLUMNS": "250"})  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "\x1b" not in out.output
    assert "[bold red]Evil\\x1b[2J" in out.output  # in the table and the headline, as written


# ------------------------------------------------------------------ helpers
def _open(result: SimulationResult) -> Dataset:
    from clientscope.dataset import open_dataset

    return open_dataset(result.path)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min" if seconds >= 60 else f"{round(seconds)} s"


def test_rules_over_the_counters_export_writes_replay(tmp_path: Path) -> None:
    """`export` writes counters (clientscope_*_total, redis_*_total): a rule file written
    against what it exports replays too."""
    rules = tmp_path / "counters.yaml"
    rules.write_text(
        "groups:\n- name: g\n  rules:\n"
        "  - alert: Rejecting\n    expr: increase(clientscope_rejected_connections_total[5m]) > 0\n"
        "  - alert: Evicting\n    expr: rate(redis_evicted_clients_total[5m]) > 0\n"
        "  - alert: Accepting\n    expr: rate(clientscope_connections_received_total[1m]) > 0\n"
    )
    path = simulate("incident", tmp_path / "inc", seed=4).path
    fired = set(alerts(path, rules)["rule"].to_list())
    assert {"Rejecting", "Accepting"} <= fired
