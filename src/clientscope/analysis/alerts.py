"""`alerts`: replay alert rules over the captured timeline the way Prometheus evaluates them,
and say how much warning each gave before the server ran out of connections.

    replay_alerts(ds, rules)   AlertReplay: each rule's episodes (pending, firing, resolved), its
                               state at the end of the data ("pending for 1 min of 5 min"), each
                               exhaustion and the warning every rule gave before it
    replay_from(model, rules)  the same on a model already built (`analysis.model`)
    alerts(ds, rules)          only the firings, as a frame (the report's timeline reads it)

Built in: the runbook's RedisHighConnections, RedisConnectionPoolExhausted and
RedisBlockedClients, and RedisMaxClientsReached (rejected connections increasing). Yours come
from YAML in either of two forms. A Prometheus rules file (or a bare list of its rules):

    groups:
      - name: redis
        rules:
          - alert: PoolNearlyFull
            expr: redis_connected_clients / redis_config_maxclients > 0.9
            for: 2m
            labels: {severity: critical}
            annotations: {summary: connections within 10% of maxclients}

`expr` is PromQL over the series in SERIES (one sample per capture and instance): numbers,
+ - * /, brackets, > >= < <= == !=, `and` / `or` / `unless`, rate(...[5m]) and
increase(...[5m]) of the two counters, and an `instance` matcher ({instance="cache-a"}).
Anything else (sum by, offset, other functions or labels, recording rules, keep_firing_for) is
a ConfigError naming the file, the rule and the part. A group's interval, limit, query_offset
and labels are read and not used. Or the simple form, a timeline column (METRICS) or a ratio
`a / b`:

    rules:
      - {name: PoolNearlyFull, metric: utilization, op: ">", threshold: 0.9, for: 2m,
         severity: critical}

Replay: at each successful capture a rule's expression has a result or not. A rule is
*pending* from the first capture with one, *firing* once it has had one for `for`, and
resolved at the first capture without one, or when its series have no sample for longer than
`max_gap` (a failed capture, such as ours refused at maxclients, is a gap, not a resolution).
rate and increase are Prometheus': over the samples in (t - range, t], extrapolated toward the
range's start as Prometheus does, counter resets counted, no result under two samples. Rules are
evaluated at each capture, not at a Prometheus evaluation interval.

Exhaustion: a run of captures at the limit (`timeline.limit_reached`); runs under `max_gap`
apart are one. For each, the warning every rule gave before its first rejection (else its first
capture at the limit), and the warning of a leak-aware rule: "the forecast (`analysis.model`,
the decomposition) puts maxclients within `forecast_within`", evaluated on the last
`forecast_lookback` of captures (at most LOOKBACK_CAPTURES) at up to FORECAST_GRID captures
before the exhaustion, its first firing then looked for by bisection to within a minute or 5 %
of its lead (assuming it keeps firing once it starts): about 20 models per exhaustion, not one
per capture, for the first MAX_FORECAST_EXHAUSTIONS exhaustions of the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    Tables,
    as_tables,
    human_duration,
    no_data,
)
from clientscope.analysis.promql import (
    OPS,
    SERIES,
    RangeKey,
    compile_promql,
    compiled,
    range_column,
)
from clientscope.analysis.timeline import timeline
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
from clientscope.errors import AnalysisError, ConfigError, DatasetError
from clientscope.escape import printable
from clientscope.vocabulary import Severity

if TYPE_CHECKING:
    from clientscope.analysis.model import Model

__all__ = [
    "DEFAULT_RULES", "METRICS", "SERIES", "AlertReplay", "Rule", "alerts", "load_rules",
    "replay_alerts", "replay_from",
]  # fmt: skip

METRICS = (
    "connected_clients", "used", "maxclients", "utilization", "connected_ratio", "blocked_clients",
    "pubsub_clients", "connected_slaves", "rejected_connections", "rejected_per_s",
    "connections_per_s", "n_clients",
)  # fmt: skip
SEVERITIES = tuple(s.value for s in Severity)
MAX_FOR = 30 * 86400.0  # a `for` (or max_gap, or a range) longer than 30 days is a typo
MAX_RULES = 500
FORECAST_GRID = 12  # leak-aware rule: captures evaluated before each exhaustion, then bisection
LOOKBACK_CAPTURES = 2000  # ... each on at most this many captures before it
MAX_FORECAST_EXHAUSTIONS = 5  # the first ones of the data (of every instance)


# ------------------------------------------------------------------ rules
@dataclass(frozen=True)
class Rule:
    """One alert rule: the simple form (`metric op threshold`) or a PromQL `promql` expression."""

    name: str
    metric: str = ""
    op: str = ">"
    threshold: float = 0.0
    for_s: float = 300.0
    severity: str = "warning"
    summary: str = ""
    promql: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        """The checks a rules file gets, for a rule built in code."""
        label = f"rule {shown(self.name)}:"
        if self.promql and self.metric:
            raise ConfigError(f"{label} give a metric (with op and threshold) or promql, not both")
        if self.promql:
            compile_promql(self.promql, Where.option(f"{label} promql"))
        else:
            metric_expr(self.metric)
            check_op(self.op, Where.option(f"{label} op"))
            check_threshold(self.threshold, Where.option(f"{label} threshold"))
        object.__setattr__(self, "for_s", check_for(self.for_s, Where.option(f"{label} for_s")))
        check_severity(self.severity, Where.option(f"{label} severity"))

    def to_dict(self) -> dict[str, Any]:
        """The rule as its file would say it."""
        said: dict[str, Any] = {"name": self.name, "expr": self.promql or None}
        if not self.promql:
            said |= {"metric": self.metric, "op": self.op, "threshold": self.threshold}
        return said | {"for_s": self.for_s, "severity": self.severity, "summary": self.summary,
                       "labels": dict(self.labels)}  # fmt: skip

    def value(self) -> pl.Expr:
        """The expression's value at a capture (null: no result)."""
        if self.promql:
            return compiled(self.promql).expr
        return metric_expr(self.metric)

    def sampled(self) -> pl.Expr:
        """The capture has a sample of every series the rule reads."""
        if self.promql:
            inputs = sorted(compiled(self.promql).inputs)
            return pl.all_horizontal([pl.col(c).is_not_null() for c in inputs])
        value = metric_expr(self.metric)
        return (value.is_not_null() & value.is_not_nan()).fill_null(False)

    def condition(self) -> pl.Expr:
        """The rule is active at the capture."""
        if self.promql:
            return self.value().is_not_null()
        compare: pl.Expr = getattr(self.value(), OPS[self.op])(self.threshold)
        return compare.fill_null(False)

    @property
    def expr(self) -> str:
        if self.promql:
            return f"{self.promql} for {self.for_s:g}s"
        return f"{self.metric} {self.op} {self.threshold:g} for {self.for_s:g}s"

    def ranges(self) -> frozenset[RangeKey]:
        return compiled(self.promql).ranges if self.promql else frozenset()


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


def check_op(value: object, where: Where) -> str:
    if not isinstance(value, str) or value not in OPS:
        raise where.error(value, f"must be one of {' '.join(OPS)}")
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
    Rule("RedisHighConnections", promql="redis_connected_clients > 1000", for_s=300,
         severity="warning", summary="Redis has too many connections"),
    Rule("RedisConnectionPoolExhausted", for_s=300, severity="critical",
         promql="redis_connected_clients / redis_config_maxclients > 0.8",
         summary="Redis connection pool near exhaustion"),
    Rule("RedisBlockedClients", promql="redis_blocked_clients > 10", for_s=300,
         severity="warning", summary="Many Redis clients blocked"),
    Rule("RedisMaxClientsReached", promql="increase(redis_rejected_connections_total[5m]) > 0",
         for_s=0, severity="critical", summary="Redis rejected connections: maxclients reached"),
)  # fmt: skip


# ------------------------------------------------------------------ rules files
RULE_FIELDS = {"name", "alert", "metric", "op", "threshold", "for", "severity", "summary"}
PROMETHEUS_FIELDS = {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
GROUP_FIELDS = {"name", "interval", "rules", "labels", "limit", "query_offset"}


def load_rules(path: Path | str) -> tuple[Rule, ...]:
    """Rules from a YAML file (see module docstring); errors name the file, rule, line and field."""
    path = Path(path)
    doc = load_yaml(path, "alert rules")
    items = list(_items(doc, path))
    if len(items) > MAX_RULES:
        raise ConfigError(f"{path}: {len(items):,} rules; at most {MAX_RULES} are replayed at once")
    rules = tuple(_rule(item, path, label) for item, label in items)
    twice = sorted(n for n, k in Counter(r.name for r in rules).items() if k > 1)
    if twice:
        raise ConfigError(
            f"{path}: rule name(s) {', '.join(printable(n, 60) for n in twice)} used twice; give "
            "each rule its own"
        )
    return rules


def _items(doc: Any, path: Path) -> Iterator[tuple[Any, str]]:
    """(rule mapping, 'rule 2' or 'group 1 (redis) rule 2') of either form of file."""
    if isinstance(doc, dict) and "groups" in doc:
        groups = doc["groups"]
        if not isinstance(groups, list) or not groups:
            raise ConfigError(
                f"{path}: expected a list of groups under 'groups:' (line {line_of(doc, 'groups')})"
            )
        for g, group in enumerate(groups, 1):
            if not isinstance(group, dict):
                raise ConfigError(
                    f"{path}: group {g} is {shown(group)}; expected a mapping with name and rules"
                )
            check_keys(group, GROUP_FIELDS, path, f"group {g}")
            name = f"group {g} ({printable(group.get('name'), 60)})"
            rules = group.get("rules")
            if not isinstance(rules, list):
                raise ConfigError(
                    f"{path}: {name}: expected a list under 'rules:' (line {line_of(group, 'rules')})"
                )
            yield from ((item, f"{name} rule {i}") for i, item in enumerate(rules, 1))
        return
    items = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise ConfigError(
            f"{path}: expected a list under 'rules:' or a Prometheus 'groups:' (see `clientscope "
            "alerts --help`)"
        )
    yield from ((item, f"rule {i}") for i, item in enumerate(items, 1))


def _rule(item: Any, path: Path, label: str) -> Rule:
    if not isinstance(item, dict):
        raise ConfigError(
            f"{path}: {label} is {shown(item)}; expected a mapping with metric, op, threshold, for "
            "(or a Prometheus rule: alert, expr, for)"
        )
    if "record" in item:
        raise ConfigError(
            f"{path}: {label} (line {line_of(item, 'record')}) is a recording rule "
            f"({shown(item['record'])}); only alerting rules (alert, expr) are replayed: remove it"
        )
    if "expr" in item:
        return _prometheus_rule(item, path, label)
    check_keys(item, RULE_FIELDS, path, label, required=("metric", "threshold"))

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


def _prometheus_rule(item: dict[Any, Any], path: Path, label: str) -> Rule:
    check_keys(item, PROMETHEUS_FIELDS, path, label)
    if "alert" not in item:
        raise ConfigError(f"{path}: {label}: field 'alert' (the rule's name) is missing")

    def at(key: str, mapping: object = item, shown_as: str | None = None) -> Where:
        return Where.field(path, label, shown_as or key, line_of(mapping, key))

    name = text(item["alert"], at("alert"))
    label = f"{label} ({printable(name, 60)})"
    expr = text(item["expr"], at("expr"))
    compile_promql(expr, at("expr"))
    keep = duration(optional(item, "keep_firing_for", 0), at("keep_firing_for"), MAX_FOR)
    if keep:
        raise at("keep_firing_for").error(item["keep_firing_for"], "is not replayed: remove it")
    labels = _text_map(item.get("labels"), path, label, "labels", line_of(item, "labels"))
    notes = _text_map(
        item.get("annotations"), path, label, "annotations", line_of(item, "annotations")
    )
    severity = check_severity(
        labels.pop("severity", "warning"), at("severity", item.get("labels"), "labels.severity")
    )
    return Rule(
        name=name, promql=expr, for_s=duration(optional(item, "for", 0), at("for"), MAX_FOR),
        severity=severity, summary=notes.get("summary") or notes.get("description", ""),
        labels=tuple(sorted(labels.items())),
    )  # fmt: skip


def _text_map(
    value: object, path: Path, label: str, field: str, line: int | None
) -> dict[str, str]:
    if value is None:
        return {}
    where = Where.field(path, label, field, line)
    if not isinstance(value, dict):
        raise where.error(value, "must be a mapping of names to text")
    return {str(k): text(v, Where.field(path, label, f"{field}.{k}", line_of(value, k)))
            for k, v in value.items()}  # fmt: skip


def _chosen_rules(
    rules: Sequence[Rule] | Path | str | None, include_defaults: bool | None
) -> list[Rule]:
    """The user's rules, after the built-in ones (a user's rule of the same name replaces one)."""
    if isinstance(rules, str | Path):
        rules = load_rules(rules)
    chosen = list(rules or ())
    if include_defaults or (include_defaults is None and not chosen):
        mine = {r.name for r in chosen}
        chosen = [*(r for r in DEFAULT_RULES if r.name not in mine), *chosen]
    return chosen


# ------------------------------------------------------------------ the series rules read
def _series(tl: pl.DataFrame, ranges: set[RangeKey]) -> pl.DataFrame:
    """The successful captures, with the rates the simple metrics and `export` name and the
    rate / increase columns the rules read."""
    dt_all = pl.col("ts").diff().dt.total_seconds(fractional=True).over("instance")
    ok = tl.with_columns(
        rejected_per_s_export=pl.when(dt_all > 0).then(pl.col("new_rejections") / dt_all)
    ).filter(pl.col("ok"))
    dt = pl.col("ts").diff().dt.total_seconds(fractional=True)
    ok = ok.with_columns(
        rejected_per_s=(pl.col("rejected_connections").diff() / dt).clip(0).over("instance", "run_id"),
        connections_per_s=(pl.col("total_connections_received").diff() / dt)
        .clip(0).over("instance", "run_id"),
    )  # fmt: skip
    if not ranges or ok.is_empty():
        return ok.with_columns(pl.lit(None, pl.Float64).alias(range_column(k)) for k in ranges)
    parts = ok.partition_by("instance", maintain_order=True)
    return pl.concat([_with_ranges(part, ranges) for part in parts], how="vertical")


def _with_ranges(part: pl.DataFrame, ranges: set[RangeKey]) -> pl.DataFrame:
    out = []
    for key in sorted(ranges):
        _, column, _ = key
        have = part[column].is_not_null().to_numpy()
        sub = part.filter(pl.Series(have))
        values = np.full(part.height, np.nan)
        if sub.height:
            t = sub["ts"].dt.epoch("us").to_numpy() / 1e6
            v = sub[column].cast(pl.Float64).to_numpy()
            values[have] = _range_values(t, v, sub["restart"].to_numpy(), key)
        out.append(pl.Series(range_column(key), values).fill_nan(None))
    return part.with_columns(out)


def _range_values(t: np.ndarray, v: np.ndarray, reset: np.ndarray, key: RangeKey) -> np.ndarray:
    """Prometheus' increase / rate of a counter over (t - range, t] at each sample: resets
    counted, extrapolated toward the range's start (not below zero); NaN under two samples."""
    fn, _, width = key
    step = np.diff(v, prepend=v[:1])
    step = np.where(reset | (step < 0), v, step)
    step[0] = 0.0
    total = np.cumsum(step)
    first = np.searchsorted(t, t - width, side="right")
    count = np.arange(t.size) - first + 1
    raw, span, start = total - total[first], t - t[first], v[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        average = span / (count - 1)
        to_start = t[first] - (t - width)
        to_start = np.where(to_start >= 1.1 * average, average / 2, to_start)
        to_zero = np.where((raw > 0) & (start >= 0), span * start / raw, np.inf)
        result = raw * (span + np.minimum(to_start, to_zero)) / span
    result = np.where((count >= 2) & (span > 0), result, np.nan)
    return result / width if fn == "rate" else result


# ------------------------------------------------------------------ replay
_EPISODE_SCHEMA: dict[str, pl.DataType] = {
    "rule": pl.String(), "severity": pl.String(), "instance": pl.String(), "expr": pl.String(),
    "pending_since": pl.Datetime("us", "UTC"), "fired_at": pl.Datetime("us", "UTC"),
    "resolved_at": pl.Datetime("us", "UTC"), "peak": pl.Float64(), "summary": pl.String(),
    "last_active": pl.Datetime("us", "UTC"),
}  # fmt: skip
FIRING_COLUMNS = ("rule", "severity", "instance", "expr", "pending_since", "fired_at",
                  "resolved_at", "peak", "summary")  # fmt: skip


def _episodes(
    series: pl.DataFrame, rule: Rule, gap_s: float
) -> tuple[list[dict[str, Any]], dict[str, datetime]]:
    """Every episode of `rule` (pending, maybe firing, maybe resolved) per instance, and the
    last capture that had the rule's series, per instance."""
    frame = series.select(
        "instance", "ts", value=rule.value(), sampled=rule.sampled(), active=rule.condition()
    ).filter(pl.col("sampled"))
    rows: list[dict[str, Any]] = []
    last: dict[str, datetime] = {}
    for (inst,), part in frame.partition_by("instance", as_dict=True, maintain_order=True).items():
        ts = part["ts"].to_list()
        last[str(inst)] = ts[-1]
        us = part["ts"].dt.epoch("us").to_numpy()
        value = part["value"].fill_null(float("nan")).to_numpy()
        for s, fired, e, after in _runs(us, part["active"].to_numpy(), rule.for_s, gap_s):
            peak = value[s : e + 1]
            rows.append({
                "rule": rule.name, "severity": rule.severity, "instance": str(inst),
                "expr": rule.expr, "pending_since": ts[s],
                "fired_at": ts[fired] if fired is not None else None,
                "resolved_at": None if after is None else ts[after], "summary": rule.summary,
                "peak": float(np.nanmax(peak)) if (~np.isnan(peak)).any() else None,
                "last_active": ts[e],
            })  # fmt: skip
    return rows, last


def _runs(us: np.ndarray, active: np.ndarray, for_s: float, gap_s: float
          ) -> Iterator[tuple[int, int | None, int, int | None]]:  # fmt: skip
    """(first, fired, last, resolved) capture indexes of each run of active captures; resolved is
    the next capture, or the last active one when the series stopped for longer than gap_s."""
    n = us.size
    gap = np.zeros(n, dtype=bool)
    gap[1:] = np.diff(us) > gap_s * 1e6
    new = np.ones(n, dtype=bool)
    new[1:] = (active[1:] != active[:-1]) | gap[1:]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:] - 1, n - 1)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        if not active[s]:
            continue
        f = int(np.searchsorted(us, us[s] + round(for_s * 1e6), side="left"))
        after = None if e == n - 1 else (e if gap[e + 1] else e + 1)
        yield s, (f if f <= e else None), e, after


def _state(rule: Rule, episodes: list[dict[str, Any]], last_sample: datetime | None,
           end: datetime, gap_s: float) -> dict[str, Any]:  # fmt: skip
    """A rule's state on one instance at the end of the data."""
    fired = [e for e in episodes if e["fired_at"] is not None]
    row: dict[str, Any] = {"state": "inactive", "since": None, "detail": "never active", "fired": len(fired),
           "resolved": sum(e["resolved_at"] is not None for e in fired),
           "pending_only": sum(e["fired_at"] is None and e["resolved_at"] is not None for e in episodes),
           "for_s": float(rule.for_s), "last_sample": last_sample}  # fmt: skip
    if last_sample is None:
        return {**row, "state": "no data", "detail": "no capture had this rule's series"}
    now = episodes[-1] if episodes and episodes[-1]["resolved_at"] is None else None
    if now is not None and now["fired_at"] is not None:
        row |= {"state": "firing", "since": now["fired_at"],
                "detail": f"firing for {_short(last_sample - now['fired_at'])}"}  # fmt: skip
    elif now is not None:
        pending = _short(last_sample - now["pending_since"])
        row |= {"state": "pending", "since": now["pending_since"],
                "detail": f"pending for {pending} of {_short(rule.for_s)}"}  # fmt: skip
    elif episodes:
        ended = "resolved" if episodes[-1]["fired_at"] is not None else "was pending, never fired"
        row |= {"since": episodes[-1]["resolved_at"], "detail": ended}
    silent = (end - last_sample).total_seconds()
    if now is not None and silent > gap_s:
        row["detail"] += f"; no sample in the last {_short(silent)} (failed captures)"
    return row


def _short(span: timedelta | float) -> str:
    """'42 s', '1 min', '4 min 30 s', then `human_duration` ('1 h 5 min')."""
    seconds = round(span.total_seconds() if isinstance(span, timedelta) else span)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    return human_duration(seconds)


# ------------------------------------------------------------------ exhaustions and warning
_EXHAUSTION_SCHEMA: dict[str, pl.DataType] = {
    "instance": pl.String(), "exhaustion": pl.Int64(), "limit_at": pl.Datetime("us", "UTC"),
    "first_rejection_at": pl.Datetime("us", "UTC"), "impact_at": pl.Datetime("us", "UTC"),
    "ended_at": pl.Datetime("us", "UTC"), "rejected": pl.Int64(), "refused_captures": pl.Int64(),
}  # fmt: skip
_WARNING_SCHEMA: dict[str, pl.DataType] = {
    "instance": pl.String(), "exhaustion": pl.Int64(), "impact_at": pl.Datetime("us", "UTC"),
    "rule": pl.String(), "severity": pl.String(), "fired_at": pl.Datetime("us", "UTC"),
    "lead_s": pl.Float64(), "warning": pl.String(),
}  # fmt: skip
_CHECK_SCHEMA: dict[str, pl.DataType] = {
    "instance": pl.String(), "exhaustion": pl.Int64(), "ts": pl.Datetime("us", "UTC"),
    "time_to_maxclients_s": pl.Float64(), "fires": pl.Boolean(),
}  # fmt: skip


def _exhaustions(tl: pl.DataFrame, merge_s: float) -> list[dict[str, Any]]:
    """Runs of captures at the limit (any attempt: ours refused counts), per instance, runs under
    `merge_s` apart as one; `impact_at` is the first rejection in the run, else its first capture."""
    rows: list[dict[str, Any]] = []
    for (inst,), part in tl.partition_by("instance", as_dict=True, maintain_order=True).items():
        hit = np.flatnonzero(part["at_limit"].to_numpy())
        if not hit.size:
            continue
        us = part["ts"].dt.epoch("us").to_numpy()
        split = (np.diff(hit) > 1) & (np.diff(us[hit]) > merge_s * 1e6)
        ts, rejected = part["ts"].to_list(), part["new_rejections"].fill_null(0).to_numpy()
        refused = part["rejected_error"].to_numpy()
        for n, run in enumerate(np.split(hit, np.flatnonzero(split) + 1), 1):
            first, last = int(run[0]), int(run[-1])
            sl = slice(first, last + 1)
            rejecting = np.flatnonzero((rejected[sl] > 0) | refused[sl])
            first_rejection = ts[first + int(rejecting[0])] if rejecting.size else None
            rows.append({
                "instance": str(inst), "exhaustion": n, "limit_at": ts[first],
                "first_rejection_at": first_rejection, "impact_at": first_rejection or ts[first],
                "ended_at": ts[last + 1] if last + 1 < len(ts) else None,
                "rejected": int(rejected[sl].sum()), "refused_captures": int(refused[sl].sum()),
            })  # fmt: skip
    return rows


def _impact(ex: dict[str, Any]) -> str:
    return "the first rejection" if ex["first_rejection_at"] is not None else "the limit"


def _rule_warning(rule: Rule, episodes: list[dict[str, Any]], ex: dict[str, Any],
                  since: datetime | None) -> dict[str, Any]:  # fmt: skip
    """How much warning `rule` gave before exhaustion `ex` (episodes on its instance, in order);
    `since`: the end of the exhaustion before (a firing before it warned of that one)."""
    impact, what = ex["impact_at"], _impact(ex)
    row = {"instance": ex["instance"], "exhaustion": ex["exhaustion"], "impact_at": impact,
           "rule": rule.name, "severity": rule.severity, "fired_at": None, "lead_s": None}  # fmt: skip
    fired = [
        e
        for e in episodes
        if e["fired_at"] is not None and (since is None or e["fired_at"] >= since)
    ]
    before = [e for e in fired if e["fired_at"] <= impact]
    standing = [e for e in before if e["resolved_at"] is None or e["resolved_at"] > impact]
    if standing or before:
        chosen = (standing or before)[-1]
        lead = (impact - chosen["fired_at"]).total_seconds()
        text = f"fired {_short(lead)} before {what}" if lead > 0 else f"fired at {what}"
        if not standing:
            text += f", but resolved {_short(impact - chosen['resolved_at'])} before it"
        return {**row, "fired_at": chosen["fired_at"], "lead_s": lead, "warning": text}
    end = ex["ended_at"]
    after = [e for e in fired if e["fired_at"] > impact and (end is None or e["fired_at"] <= end)]
    if after:
        lag = (after[0]["fired_at"] - impact).total_seconds()
        return {**row, "fired_at": after[0]["fired_at"], "lead_s": -lag,
                "warning": f"fired {_short(lag)} after {what}: no warning"}  # fmt: skip
    pending = [e for e in episodes if e["pending_since"] <= impact
               and (e["resolved_at"] is None or e["resolved_at"] > impact)]  # fmt: skip
    if pending:
        held = _short(impact - pending[-1]["pending_since"])
        text = f"pending for {held} of {_short(rule.for_s)} at {what}; never fired"
        return {**row, "warning": text}
    return {**row, "warning": "never fired"}


@dataclass(frozen=True)
class _Window:
    """The captures of one instance between two times, as tables a model is built from."""

    captures: pl.LazyFrame
    clients: pl.LazyFrame
    info: pl.LazyFrame


def _forecast_warning(tables: Tables, part: pl.DataFrame, ex: dict[str, Any], since: datetime | None,
                      within_s: float, lookback_s: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """The leak-aware rule "the forecast puts maxclients within `within_s`" before exhaustion
    `ex`: evaluated at up to FORECAST_GRID captures, its firing then bisected to the capture."""
    row = _forecast_row(ex, within_s)
    keep = pl.col("ok") & pl.col("used").is_not_null() & (pl.col("ts") < ex["limit_at"])
    ts = part.filter(keep & (pl.col("ts") >= since) if since is not None else keep)["ts"].to_list()
    if len(ts) < 3:
        return {**row, "warning": f"too few captures before {_impact(ex)} to forecast"}, []
    checks: dict[int, dict[str, Any]] = {}

    def fires(i: int) -> bool:
        if i not in checks:
            left = _forecast_left(tables, ex["instance"], ts, i, since, lookback_s)
            checks[i] = {"instance": ex["instance"], "exhaustion": ex["exhaustion"], "ts": ts[i],
                         "time_to_maxclients_s": left, "fires": left is not None and left <= within_s}  # fmt: skip
        return bool(checks[i]["fires"])

    grid = sorted({round(x) for x in np.linspace(0, len(ts) - 1, min(FORECAST_GRID, len(ts)))})
    held = [fires(i) for i in grid]
    done = sorted(checks.values(), key=lambda c: c["ts"])
    if not held[-1]:
        return {**row, "warning": f"never fired (checked at {len(checks)} captures)"}, done
    k = len(held) - 1
    while k > 0 and held[k - 1]:
        k -= 1
    low, high = (grid[k - 1], grid[k]) if k else (grid[0], grid[0])
    impact = ex["impact_at"]
    while high - low > 1 and ts[high] - ts[low] > _precision(impact - ts[high]):
        mid = (low + high) // 2  # the first capture it fires at, if it keeps firing once it does
        low, high = (low, mid) if fires(mid) else (mid, high)
    lead = (impact - ts[high]).total_seconds()
    text = f"fired {_short(lead)} before {_impact(ex)}"
    if not k:
        text += " (at the first capture checked: maybe earlier)"
    elif high - low > 1:
        text += f" (to within {_short(ts[high] - ts[low])})"
    text += f"; checked at {len(checks)} captures"
    return ({**row, "fired_at": ts[high], "lead_s": lead, "warning": text},
            sorted(checks.values(), key=lambda c: c["ts"]))  # fmt: skip


def _forecast_row(ex: dict[str, Any], within_s: float) -> dict[str, Any]:
    return {"instance": ex["instance"], "exhaustion": ex["exhaustion"], "impact_at": ex["impact_at"],
            "rule": f"forecast: maxclients within {_short(within_s)}",
            "severity": Severity.CRITICAL.value, "fired_at": None, "lead_s": None}  # fmt: skip


def _precision(lead: timedelta) -> timedelta:
    """How closely the forecast rule's firing is looked for: a minute, or 5 % of its lead."""
    return max(timedelta(minutes=1), lead * 0.05)


def _forecast_left(tables: Tables, instance: str, ts: list[datetime], i: int,
                   since: datetime | None, lookback_s: float) -> float | None:  # fmt: skip
    """Seconds to maxclients the model built on the captures up to ts[i] gives (None: none)."""
    from clientscope.analysis.model import build_model

    low = max(ts[i] - timedelta(seconds=lookback_s), ts[max(i - LOOKBACK_CAPTURES + 1, 0)])
    low = max(low, since) if since is not None else low
    keep = (pl.col("instance") == instance) & pl.col("ts").is_between(low, ts[i])
    window = _Window(
        tables.captures.filter(keep), tables.clients.filter(keep), tables.info.filter(keep)
    )
    try:
        forecast = build_model(window).server(instance).forecast
    except (AnalysisError, DatasetError):
        return None
    left = forecast.time_to_maxclients if forecast is not None else None
    return left.total_seconds() if left is not None else None


# ------------------------------------------------------------------ the result
@dataclass(frozen=True)
class AlertReplay(ResultMixin):
    """Every rule replayed over the captures (see the module docstring)."""

    rules: tuple[Rule, ...]
    states: pl.DataFrame  # per rule and instance, at the end of the data (_STATE_SCHEMA)
    episodes: pl.DataFrame  # every pending episode, fired or not (_EPISODE_SCHEMA)
    firings: pl.DataFrame  # the episodes that fired (FIRING_COLUMNS), what `alerts()` returns
    exhaustions: pl.DataFrame  # runs at the limit (_EXHAUSTION_SCHEMA)
    warnings: pl.DataFrame  # per exhaustion and rule, and the leak-aware forecast rule
    forecast_checks: pl.DataFrame  # the captures the forecast rule was evaluated at
    rejected: int  # connections the servers rejected over the data (INFO rejected_connections)
    data_end: datetime
    max_gap_s: float
    forecast_within_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {
            "rules": [r.to_dict() for r in self.rules], "headline": list(self.headline()),
        }  # fmt: skip

    def headline(self) -> tuple[str, ...]:
        """What the replay says, in plain sentences (untrusted names left as written)."""
        lines = []
        if self.episodes.is_empty():
            lines.append("no rule would have fired: none was even pending")
        elif self.firings.is_empty():
            lines.append("no rule fired; pending without firing: " + _names(self.episodes["rule"]))
        else:
            lines.append("fired: " + _names(self.firings["rule"]))
        waiting = self.states.filter(pl.col("state").is_in(["pending", "firing"]))
        for row in waiting.iter_rows(named=True):
            lines.append(
                f"at the end of the data {row['rule']} on {row['instance']} is {row['detail']}"
            )
        if self.rejected:
            lines.append(f"{self.rejected:,} connection(s) were rejected at maxclients")
        return tuple(lines)


_TS = pl.Datetime("us", "UTC")
_STATE_SCHEMA: dict[str, pl.DataType] = {
    "rule": pl.String(), "severity": pl.String(), "instance": pl.String(), "state": pl.String(),
    "since": _TS, "detail": pl.String(), "fired": pl.Int64(), "resolved": pl.Int64(),
    "pending_only": pl.Int64(), "for_s": pl.Float64(), "last_sample": _TS, "expr": pl.String(),
}  # fmt: skip


def _names(column: pl.Series) -> str:
    counts = Counter(column.to_list())
    return ", ".join(f"{n} ({k}x)" if k > 1 else str(n) for n, k in counts.items())


def replay_alerts(
    ds: DatasetLike,
    rules: Sequence[Rule] | Path | str | None = None,
    *,
    instance: str | None = None,
    include_defaults: bool | None = None,
    max_gap: str | float = "5m",
    forecast_within: str | float | None = "1h",
    forecast_lookback: str | float = "6h",
) -> AlertReplay:
    """Replay `rules` (default: the built-in ones; `include_defaults` adds them to yours) over
    the captures of `ds` (or of `instance`). `forecast_within=None` leaves out the leak-aware
    forecast rule (the part that builds models: about 20 per exhaustion)."""
    gap, within, lookback = _options(max_gap, forecast_within, forecast_lookback)
    chosen = _chosen_rules(rules, include_defaults)
    tables = as_tables(ds)
    return _replay(tables, timeline(tables, instance), chosen, gap, within, lookback)


def replay_from(
    model: Model,
    rules: Sequence[Rule] | Path | str | None = None,
    *,
    include_defaults: bool | None = None,
    max_gap: str | float = "5m",
    forecast_within: str | float | None = "1h",
    forecast_lookback: str | float = "6h",
) -> AlertReplay:
    """`replay_alerts` on a model already built (its tables and timeline)."""
    gap, within, lookback = _options(max_gap, forecast_within, forecast_lookback)
    chosen = _chosen_rules(rules, include_defaults)
    return _replay(model.tables, model.timeline, chosen, gap, within, lookback)


def alerts(
    ds: DatasetLike,
    rules: Sequence[Rule] | Path | str | None = None,
    *,
    instance: str | None = None,
    include_defaults: bool | None = None,
    max_gap: str | float = "5m",
) -> pl.DataFrame:
    """Firings of each rule: rule, severity, instance, expr, pending_since, fired_at, resolved_at
    (null while still firing at the end), peak (highest value while pending/firing), summary.
    `replay_alerts` tells the rest (pending rules, the state at the end, warning before each
    exhaustion)."""
    replay = replay_alerts(ds, rules, instance=instance, include_defaults=include_defaults,
                           max_gap=max_gap, forecast_within=None)  # fmt: skip
    return replay.firings


def _options(max_gap: str | float, within: str | float | None, lookback: str | float
             ) -> tuple[float, float | None, float]:  # fmt: skip
    gap = check_for(max_gap, Where.option("max_gap"))
    horizon = None if within is None else check_for(within, Where.option("forecast_within"))
    return gap, horizon, check_for(lookback, Where.option("forecast_lookback"))


def _replay(tables: Tables, tl: pl.DataFrame, rules: list[Rule], gap: float,
            within: float | None, lookback: float) -> AlertReplay:  # fmt: skip
    if tl.is_empty():
        raise no_data("alerts")
    series = _series(tl, {key for r in rules for key in r.ranges()})
    ends = {str(k): v for k, v in tl.group_by("instance").agg(pl.col("ts").max()).iter_rows()}
    episodes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    states, flat = [], []
    for rule in rules:
        rows, last = _episodes(series, rule, gap)
        flat += rows
        for inst in sorted(ends):
            mine = [r for r in rows if r["instance"] == inst]
            episodes[(rule.name, inst)] = mine
            states.append({"rule": rule.name, "severity": rule.severity, "instance": inst,
                           "expr": rule.expr, **_state(rule, mine, last.get(inst), ends[inst], gap)})  # fmt: skip
    exhaustions = _exhaustions(tl, gap)
    warnings, checks = _warnings(tables, tl, rules, episodes, exhaustions, within, lookback)
    all_episodes = pl.DataFrame(flat, schema=_EPISODE_SCHEMA)
    return AlertReplay(
        rules=tuple(rules), states=pl.DataFrame(states, schema=_STATE_SCHEMA),
        episodes=all_episodes,
        firings=all_episodes.filter(pl.col("fired_at").is_not_null()).select(FIRING_COLUMNS).sort("instance", "fired_at"),
        exhaustions=pl.DataFrame(exhaustions, schema=_EXHAUSTION_SCHEMA),
        warnings=pl.DataFrame(warnings, schema=_WARNING_SCHEMA),
        forecast_checks=pl.DataFrame(checks, schema=_CHECK_SCHEMA),
        rejected=int(tl["new_rejections"].fill_null(0).sum()), data_end=tl["ts"].max(),  # type: ignore[arg-type]
        max_gap_s=gap, forecast_within_s=within,
    )  # fmt: skip


def _warnings(tables: Tables, tl: pl.DataFrame, rules: list[Rule],
              episodes: dict[tuple[str, str], list[dict[str, Any]]], exhaustions: list[dict[str, Any]],
              within: float | None, lookback: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    warnings: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    since: dict[str, datetime | None] = {}
    parts = {str(k[0]): v for k, v in tl.partition_by("instance", as_dict=True).items()}
    first = sorted(exhaustions, key=lambda e: e["impact_at"])[:MAX_FORECAST_EXHAUSTIONS]
    checked = {(e["instance"], e["exhaustion"]) for e in first}
    for ex in exhaustions:
        inst = ex["instance"]
        before = since.get(inst)
        warnings += [_rule_warning(r, episodes[(r.name, inst)], ex, before) for r in rules]
        if within is not None and (inst, ex["exhaustion"]) in checked:
            row, done = _forecast_warning(tables, parts[inst], ex, before, within, lookback)
            warnings.append(row)
            checks += done
        elif within is not None:
            warnings.append(_forecast_row(ex, within) | {"warning": (
                f"not checked: the forecast rule is replayed before the first "
                f"{MAX_FORECAST_EXHAUSTIONS} exhaustions of the data only (about 20 models each)"
            )})  # fmt: skip
        since[inst] = ex["ended_at"]
    return warnings, checks
