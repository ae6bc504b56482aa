"""`alerts`: replay alert rules over the captured timeline, the way Prometheus evaluates them.

A rule is `metric op threshold for DURATION`. At each capture the condition is
true or false; a rule is *pending* from the first true sample and *fires* once it
has been true continuously for `for`; it *resolves* at the first false sample (or
when captures stop for longer than `max_gap`). Metrics are timeline columns:

    connected_clients, used (clients + replicas + cluster links), maxclients,
    utilization (used / maxclients), connected_ratio (connected_clients / maxclients),
    blocked_clients, pubsub_clients, connected_slaves, rejected_connections,
    rejected_per_s, connections_per_s, n_clients

or a ratio of two of them, written `a / b`.

User rules come from YAML:

    rules:
      - name: PoolNearlyFull
        metric: utilization          # or "connected_clients / maxclients"
        op: ">"                      # > >= < <= == !=
        threshold: 0.9
        for: 2m
        severity: critical

Every value is checked (`clientscope.config`): a threshold is a finite number, `for`
a duration from 0 to 30 days, a key given twice or misspelt is an error naming the
file, rule, line and the value seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from clientscope.analysis._common import DatasetLike, as_tables, timeline
from clientscope.config import (
    Where,
    check_keys,
    duration,
    line_of,
    load_yaml,
    optional,
    real_number,
    shown,
    text,
)
from clientscope.errors import ConfigError

_OPS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "==": "eq", "!=": "ne"}
METRICS = (
    "connected_clients", "used", "maxclients", "utilization", "connected_ratio", "blocked_clients",
    "pubsub_clients", "connected_slaves", "rejected_connections", "rejected_per_s",
    "connections_per_s", "n_clients",
)  # fmt: skip
SEVERITIES = ("critical", "warning", "info")
MAX_FOR = 30 * 86400.0  # a `for` (or max_gap) longer than 30 days is a typo


@dataclass(frozen=True)
class Rule:
    """One alert rule."""

    name: str
    metric: str
    op: str
    threshold: float
    for_s: float = 300.0
    severity: str = "warning"
    summary: str = ""

    def __post_init__(self) -> None:
        """The checks a rules file gets, for a rule built in code."""
        label = f"rule {shown(self.name)}:"
        metric_expr(self.metric)
        check_op(self.op, Where.option(f"{label} op"))
        check_threshold(self.threshold, Where.option(f"{label} threshold"))
        check_for(self.for_s, Where.option(f"{label} for_s"))
        check_severity(self.severity, Where.option(f"{label} severity"))

    def condition(self) -> pl.Expr:
        value = metric_expr(self.metric)
        compare: pl.Expr = getattr(value, _OPS[self.op])(self.threshold)
        return compare.fill_null(False)

    @property
    def expr(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g} for {self.for_s:g}s"


def metric_expr(metric: str) -> pl.Expr:
    parts = [p.strip() for p in metric.split("/")] if isinstance(metric, str) else []
    if not 1 <= len(parts) <= 2 or any(p not in METRICS for p in parts):
        raise ConfigError(
            f"alert metric {shown(metric)} is not known; use one of {', '.join(METRICS)} "
            "or a ratio 'a / b' of two of them"
        )
    if len(parts) == 2:
        return pl.col(parts[0]).cast(pl.Float64) / pl.col(parts[1]).cast(pl.Float64)
    return pl.col(parts[0]).cast(pl.Float64)


RULE_FIELDS = {"name", "alert", "metric", "op", "threshold", "for", "severity", "summary"}


def check_op(value: object, where: Where) -> str:
    if not isinstance(value, str) or value not in _OPS:
        raise where.error(value, f"must be one of {' '.join(_OPS)}")
    return str(value)


def check_threshold(value: object, where: Where) -> float:
    return real_number(value, where, example="0.9")


def check_for(value: object, where: Where) -> float:
    """How long a condition holds before the rule fires: 0 to 30 days."""
    return duration(value, where, MAX_FOR)


def check_severity(value: object, where: Where) -> str:
    if not isinstance(value, str) or value not in SEVERITIES:
        raise where.error(value, f"must be one of {', '.join(SEVERITIES)}")
    return str(value)


DEFAULT_RULES = (
    Rule("RedisHighConnections", "connected_clients", ">", 1000, 300, "warning",
         "Redis has too many connections"),
    Rule("RedisConnectionPoolExhausted", "connected_clients / maxclients", ">", 0.8, 300,
         "critical", "Redis connection pool near exhaustion"),
    Rule("RedisBlockedClients", "blocked_clients", ">", 10, 300, "warning",
         "Many Redis clients blocked"),
)  # fmt: skip


def load_rules(path: Path | str) -> tuple[Rule, ...]:
    """Rules from a YAML file (see module docstring); errors name the file, rule, line and field."""
    path = Path(path)
    doc = load_yaml(path, "alert rules")
    items = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise ConfigError(
            f"{path}: expected a list under 'rules:' (see `clientscope alerts --help`)"
        )
    rules = tuple(_rule(item, path, i + 1) for i, item in enumerate(items))
    twice = sorted(n for n, k in Counter(r.name for r in rules).items() if k > 1)
    if twice:
        raise ConfigError(f"{path}: rule name(s) {', '.join(twice)} used twice; give each rule its own")
    return rules


def _rule(item: Any, path: Path, number: int) -> Rule:
    label = f"rule {number}"
    if not isinstance(item, dict):
        raise ConfigError(
            f"{path}: {label} is {shown(item)}; expected a mapping with metric, op, threshold, for"
        )
    check_keys(item, RULE_FIELDS, path, label)
    for key in ("metric", "threshold"):
        if key not in item:
            raise ConfigError(f"{path}: {label}: field {key!r} is missing")

    def at(key: str) -> Where:
        return Where.field(path, label, key, line_of(item, key))

    metric = text(item["metric"], at("metric"))
    try:
        metric_expr(metric)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {label} (line {line_of(item, 'metric')}): {exc}") from exc
    op = check_op(optional(item, "op", ">"), at("op"))
    threshold = check_threshold(item["threshold"], at("threshold"))
    named = item.get("name") or item.get("alert")
    return Rule(
        name=text(named, at("name" if item.get("name") else "alert")) if named
        else f"{metric} {op} {threshold:g}",
        metric=metric, op=op, threshold=threshold,
        for_s=check_for(optional(item, "for", 0), at("for")),
        severity=check_severity(optional(item, "severity", "warning"), at("severity")),
        summary=text(optional(item, "summary", ""), at("summary")),
    )  # fmt: skip


def alerts(
    ds: DatasetLike,
    rules: Sequence[Rule] | Path | str | None = None,
    *,
    instance: str | None = None,
    include_defaults: bool | None = None,
    max_gap: str | float = "5m",
) -> pl.DataFrame:
    """Firings of each rule: rule, severity, instance, expr, pending_since, fired_at, resolved_at
    (null while still firing at the end), peak (highest metric value while pending/firing)."""
    gap = check_for(max_gap, Where.option("max_gap"))
    if isinstance(rules, str | Path):
        rules = load_rules(rules)
    chosen = list(rules or ())
    if include_defaults or (include_defaults is None and not chosen):
        chosen = [*DEFAULT_RULES, *chosen]
    tl = _metrics(timeline(as_tables(ds), instance))
    frames = [_replay(tl, rule, gap) for rule in chosen]
    return pl.concat(frames) if frames else _empty()


def _metrics(tl: pl.DataFrame) -> pl.DataFrame:
    ok = tl.filter(pl.col("ok"))
    dt = pl.col("ts").diff().dt.total_seconds(fractional=True)
    return ok.with_columns(
        rejected_per_s=(pl.col("rejected_connections").diff() / dt)
        .clip(0)
        .over("instance", "run_id"),
        connections_per_s=(pl.col("total_connections_received").diff() / dt)
        .clip(0)
        .over("instance", "run_id"),
    )


def _empty() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "rule": pl.String, "severity": pl.String, "instance": pl.String, "expr": pl.String,
            "pending_since": pl.Datetime("us", "UTC"), "fired_at": pl.Datetime("us", "UTC"),
            "resolved_at": pl.Datetime("us", "UTC"), "peak": pl.Float64, "summary": pl.String,
        }
    )  # fmt: skip


def _replay(tl: pl.DataFrame, rule: Rule, max_gap: float) -> pl.DataFrame:
    frame = (
        tl.select("instance", "ts", value=metric_expr(rule.metric), cond=rule.condition())
        .filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())
        .sort("instance", "ts")
        .with_columns(
            gap=(pl.col("ts").diff().dt.total_seconds(fractional=True) > max_gap)
            .fill_null(False)
            .over("instance")
        )
        .with_columns(
            episode=((pl.col("cond") != pl.col("cond").shift(1)) | pl.col("gap"))
            .fill_null(True)
            .cum_sum()
            .over("instance"),
            next_ts=pl.col("ts").shift(-1).over("instance"),
            next_gap=pl.col("gap").shift(-1).fill_null(False).over("instance"),
        )
    )
    episodes = (
        frame.filter(pl.col("cond"))
        .group_by("instance", "episode")
        .agg(
            pending_since=pl.col("ts").min(),
            last_true=pl.col("ts").max(),
            fired_at=pl.col("ts")
            .filter(
                (pl.col("ts") - pl.col("ts").min()).dt.total_seconds(fractional=True) >= rule.for_s
            )
            .min(),
            peak=pl.col("value").max(),
            resolved_at=pl.col("next_ts").sort_by("ts").last(),
            resolved_by_gap=pl.col("next_gap").sort_by("ts").last(),
        )
        .filter(pl.col("fired_at").is_not_null())
    )
    return (
        episodes.with_columns(
            resolved_at=pl.when(pl.col("resolved_by_gap"))
            .then(pl.col("last_true"))
            .otherwise(pl.col("resolved_at")),
            rule=pl.lit(rule.name),
            severity=pl.lit(rule.severity),
            expr=pl.lit(rule.expr),
            summary=pl.lit(rule.summary),
        )
        .select(_empty().columns)
        .cast(_empty().schema)
        .sort("instance", "fired_at")
    )
