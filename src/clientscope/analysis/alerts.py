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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from clientscope.analysis._common import (
    DatasetLike,
    as_tables,
    check_keys,
    parse_duration,
    read_yaml,
    timeline,
)
from clientscope.errors import ConfigError

_OPS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "==": "eq", "!=": "ne"}
METRICS = (
    "connected_clients", "used", "maxclients", "utilization", "connected_ratio", "blocked_clients",
    "pubsub_clients", "connected_slaves", "rejected_connections", "rejected_per_s",
    "connections_per_s", "n_clients",
)  # fmt: skip


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

    def condition(self) -> pl.Expr:
        value = metric_expr(self.metric)
        compare: pl.Expr = getattr(value, _OPS[self.op])(self.threshold)
        return compare.fill_null(False)

    @property
    def expr(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g} for {self.for_s:g}s"


DEFAULT_RULES = (
    Rule("RedisHighConnections", "connected_clients", ">", 1000, 300, "warning",
         "Redis has too many connections"),
    Rule("RedisConnectionPoolExhausted", "connected_clients / maxclients", ">", 0.8, 300,
         "critical", "Redis connection pool near exhaustion"),
    Rule("RedisBlockedClients", "blocked_clients", ">", 10, 300, "warning",
         "Many Redis clients blocked"),
)  # fmt: skip


def metric_expr(metric: str) -> pl.Expr:
    parts = [p.strip() for p in metric.split("/")]
    if len(parts) > 2 or any(p not in METRICS for p in parts):
        raise ConfigError(
            f"alert metric {metric!r} is not known; use one of {', '.join(METRICS)} "
            "or a ratio 'a / b' of two of them"
        )
    if len(parts) == 2:
        return pl.col(parts[0]).cast(pl.Float64) / pl.col(parts[1]).cast(pl.Float64)
    return pl.col(parts[0]).cast(pl.Float64)


RULE_FIELDS = {"name", "alert", "metric", "op", "threshold", "for", "severity", "summary"}


def load_rules(path: Path | str) -> tuple[Rule, ...]:
    """Rules from a YAML file (see module docstring); errors name the file, rule and field."""
    path = Path(path)
    doc = read_yaml(path, "alert rules")
    items = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise ConfigError(
            f"{path}: expected a list under 'rules:' (see `clientscope alerts --help`)"
        )
    rules = tuple(_rule(item, f"{path}: rule {i + 1}") for i, item in enumerate(items))
    names = [r.name for r in rules]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{path}: rule name(s) {', '.join(twice)} used twice; give each rule its own")
    return rules


def _rule(item: Any, where: str) -> Rule:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with metric, op, threshold, for")
    check_keys(item, RULE_FIELDS, where)
    for key in ("metric", "threshold"):
        if key not in item:
            raise ConfigError(f"{where}: field {key!r} is missing")
    op = str(item.get("op", ">"))
    if op not in _OPS:
        raise ConfigError(f"{where}: field 'op' is {op!r}; use one of {' '.join(_OPS)}")
    try:
        threshold = float(item["threshold"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: field 'threshold' is {item['threshold']!r}, not a number"
        ) from exc
    severity = str(item.get("severity", "warning"))
    if severity not in ("critical", "warning", "info"):
        raise ConfigError(
            f"{where}: field 'severity' is {severity!r}; use critical, warning or info"
        )
    metric = str(item["metric"])
    metric_expr(metric)
    return Rule(
        name=str(item.get("name") or item.get("alert") or f"{metric} {op} {threshold:g}"),
        metric=metric, op=op, threshold=threshold,
        for_s=parse_duration(item.get("for", 0), f"{where}: field 'for'"),
        severity=severity, summary=str(item.get("summary", "")),
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
    if isinstance(rules, str | Path):
        rules = load_rules(rules)
    chosen = list(rules or ())
    if include_defaults or (include_defaults is None and not chosen):
        chosen = [*DEFAULT_RULES, *chosen]
    tl = _metrics(timeline(as_tables(ds), instance))
    gap = parse_duration(max_gap, "max_gap")
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
