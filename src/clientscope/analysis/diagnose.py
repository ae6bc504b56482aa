"""`diagnose`: findings, each with evidence, severity and a concrete remediation.

One pass over the capture timeline, one per-capture/per-group aggregation of the
clients table and one per-connection lifecycle aggregation feed every detector:

    exhaustion       rejected_connections rising, or captures failing with max_clients
    saturation       peak used / maxclients (real denominator) at or over 80%
    leak             a group growing with new connections that never close and go idle
    no_pooling       high connection churn with short-lived connections from one source
    oversized_pool   a mostly-idle group holding a large share of maxclients
    blocking         clients parked in blocking commands holding connections
    no_idle_timeout  timeout 0 while normal clients sit idle for more than 10 minutes
    pubsub_pileup    subscribers growing without bound
    output_buffer    client output buffers growing (slow consumers)
    no_keepalive     tcp-keepalive 0: dead peers keep their slot
    fd_limit         maxclients lowered to the file-descriptor limit
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from clientscope.analysis._clients import oversized_groups
from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    human_duration,
    jsonable,
    with_clients,
)
from clientscope.analysis.capacity import CapacityPlan, looks_fd_limited, nice_ceil, plan_from
from clientscope.analysis.forecast import Forecast
from clientscope.analysis.groups import suggest_timeout
from clientscope.analysis.leaks import LeakReport, merge_reports
from clientscope.analysis.model import Model, ServerModel, build_model
from clientscope.analysis.timeline import first_at_limit, instances
from clientscope.errors import AnalysisError
from clientscope.escape import for_html, for_markdown, for_shell, shell_line
from clientscope.schema import UNNAMED
from clientscope.vocabulary import Severity

MIB = 1024 * 1024
# stands for the dataset path in the commands of a remediation; it holds a space, which no client
# name can, so its quoted form never occurs inside a quoted name and is replaced alone
DATASET_WORD = "<the dataset>"
DATASET_SHOWN = for_shell(DATASET_WORD)
PROSE_CHARS = 4000  # the most characters of a summary or step shown in Markdown


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth knowing), the numbers behind it and what to do."""

    kind: str
    severity: Severity
    title: str
    summary: str
    evidence: dict[str, object] = field(default_factory=dict)
    remediation: tuple[str, ...] = ()
    group: str | None = None
    first_seen: datetime | None = None
    confidence: float = 1.0
    instance: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = jsonable(self)
        assert isinstance(out, dict)
        return out

    def steps(self, dataset: Path | str | None = None) -> tuple[str, ...]:
        """The remediation, its commands naming `dataset` (shell-quoted), ready to paste."""
        if dataset is None:
            return self.remediation
        return tuple(r.replace(DATASET_SHOWN, for_shell(dataset)) for r in self.remediation)

    def _repr_html_(self) -> str:
        ev = "".join(
            f"<li>{for_html(k)}: {for_html(jsonable(v))}</li>" for k, v in self.evidence.items()
        )
        fix = "".join(f"<li><code>{for_html(r)}</code></li>" for r in self.remediation)
        return (
            f"<div><strong>[{for_html(self.severity)}] {for_html(self.title)}</strong>"
            f"<p>{for_html(self.summary)}</p><ul>{ev}</ul><ol>{fix}</ol></div>"
        )


@dataclass(frozen=True)
class Diagnosis(ResultMixin):
    """All findings, most severe first, plus the overview numbers."""

    findings: tuple[Finding, ...]
    window_start: datetime | None
    window_end: datetime | None
    captures: int
    failed_captures: int
    instances: tuple[str, ...]
    peak_used: int | None
    maxclients: int | None
    peak_utilization: float | None
    leak_report: LeakReport | None = None
    forecasts: tuple[Forecast, ...] = ()  # per server, most urgent first (as `forecast` gives them)

    def kinds(self) -> tuple[str, ...]:
        return tuple(f.kind for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["findings"] = [f.to_dict() for f in self.findings]
        out.pop("leak_report", None)
        out["forecasts"] = [f.to_dict() for f in self.forecasts]
        return out

    def _repr_html_(self) -> str:
        head = (
            f"<p><strong>Diagnosis</strong> {self.captures} captures ({self.failed_captures} failed), "
            f"{for_html(self.window_start)} .. {for_html(self.window_end)}; "
            f"peak {for_html(self.peak_used if self.peak_used is not None else '-')} / "
            f"{for_html(self.maxclients if self.maxclients is not None else '-')}</p>"
        )
        return "<div>" + head + "".join(f._repr_html_() for f in self.findings) + "</div>"

    def to_markdown(self, dataset: Path | str | None = None) -> str:
        """The findings as Markdown; every name in them is text, never markup or HTML."""

        def md(value: object) -> str:
            return for_markdown(value, limit=PROSE_CHARS)

        lines = [f"## Findings ({len(self.findings)})", ""]
        for f in self.findings:
            where = f" (on {f.instance})" if len(self.instances) > 1 and f.instance else ""
            lines += [f"### [{f.severity}] {md(f.title + where)}", "", md(f.summary), ""]
            lines += [f"- {md(k)}: {md(jsonable(v))}" for k, v in f.evidence.items()]
            lines += ["", "Remediation:", ""] + [f"1. {md(r)}" for r in f.steps(dataset)] + [""]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Context:
    tl: pl.DataFrame  # all capture attempts
    ok: pl.DataFrame  # successful ones
    counts: pl.DataFrame  # per capture x group x role
    life: pl.DataFrame  # per connection
    leaks: LeakReport
    maxclients: int
    timeout: int | None
    keepalive: int | None
    fleet: bool = False  # the dataset holds several servers (commands must name one)
    forecast: Forecast | None = None  # the server's, from the model
    plan: CapacityPlan | None = None  # the server's `plan`: the one maxclients advised


def diagnose(
    ds: DatasetLike,
    *,
    instance: str | None = None,
    min_leak_rate_per_hour: float = 10.0,
    alpha: float = 0.01,
) -> Diagnosis:
    """Run every detector and return the findings, most severe first."""
    model = build_model(
        ds, instance=instance, min_rate_per_hour=min_leak_rate_per_hour, alpha=alpha
    )
    return diagnose_from(model)


def diagnose_from(model: Model) -> Diagnosis:
    """`diagnose` on a model already built: each server judged on its own numbers."""
    fleet = model.fleet or len(instances(model.tables)) > 1
    findings: list[Finding] = []
    contexts = []
    for server in sorted(model.servers, key=lambda s: s.instance):
        ctx = _context(model, server, fleet)
        contexts.append(ctx)
        for detect in DETECTORS:
            findings += [
                f if f.instance else replace(f, instance=server.instance) for f in detect(ctx)
            ]
    findings.sort(key=lambda f: (Severity.rank_of(f.severity), -f.confidence, f.kind,
                                 f.instance or "", f.group or ""))  # fmt: skip
    tl = model.timeline
    ok = pl.concat([c.ok for c in contexts])
    peak = ok.sort(["utilization", "used"], descending=True, nulls_last=True).head(1)
    return Diagnosis(
        findings=tuple(findings),
        window_start=tl.select(pl.col("ts").min()).item(),
        window_end=tl.select(pl.col("ts").max()).item(),
        captures=tl.height,
        failed_captures=int((~tl["ok"]).sum()),
        instances=model.instances,
        peak_used=int(ok["used"].max()) if ok["used"].max() is not None else None,  # type: ignore[arg-type]
        maxclients=(
            (contexts[0].maxclients or None)  # one server: its limit now
            if len(contexts) == 1
            else (int(peak["maxclients"][0]) if peak.height and peak["maxclients"][0] else None)
        ),
        peak_utilization=peak["utilization"][0] if peak.height else None,
        leak_report=merge_reports([c.leaks for c in contexts]),
        forecasts=tuple(s.forecast for s in model.servers if s.forecast is not None),
    )


def _context(model: Model, server: ServerModel, fleet: bool) -> _Context:
    tl = server.timeline
    ok = tl.filter(pl.col("ok"))
    last = ok.tail(1).row(0, named=True) if ok.height else {}
    maxclients = int(last.get("maxclients") or 0)
    return _Context(
        tl=tl, ok=ok, counts=server.counts, life=server.lifecycles, leaks=server.groups,
        maxclients=maxclients, timeout=last.get("timeout"), keepalive=last.get("tcp_keepalive"),
        fleet=fleet, forecast=server.forecast,
        plan=_plan(model, server.instance),
    )  # fmt: skip


def _plan(model: Model, instance: str) -> CapacityPlan | None:
    try:
        return plan_from(model, instance=instance)
    except AnalysisError:  # no successful capture to plan from
        return None


def _timeout(ctx: _Context) -> int:
    """The `timeout` to advise: the plan's (the one `plan` and the report give)."""
    return ctx.plan.suggested_timeout if ctx.plan is not None else suggest_timeout(np.array([]))


def _raise_maxclients(ctx: _Context) -> tuple[str, ...]:
    """The maxclients step of a remediation: the plan's limit, the one number `plan`, the
    report and every finding give (never a second rule of thumb that contradicts it)."""
    if ctx.plan is None:
        return ()
    return (f"CONFIG SET maxclients {ctx.plan.recommended_maxclients}   # what `clientscope plan` "
            "recommends, and why; check ulimit -n",)  # fmt: skip


# ------------------------------------------------------------------ detectors
def _leaking(ctx: _Context) -> set[str]:
    return set() if ctx.leaks.groups.is_empty() else set(ctx.leaks.leaking["group"].to_list())


def _exhaustion(ctx: _Context) -> list[Finding]:
    tl = ctx.tl  # the timeline's own new_rejections and at_limit (timeline.limit_reached)
    rejected = int(tl["new_rejections"].fill_null(0).sum())
    failed = tl.filter(pl.col("rejected_error"))
    full = tl.filter((pl.col("used") >= pl.col("maxclients")).fill_null(False))
    hits = tl.filter(pl.col("at_limit"))
    first, from_start = first_at_limit(tl)
    if first is None:
        return []
    at_first = hits.sort("ts")["maxclients"][0]
    limit = int(at_first) if at_first is not None else ctx.maxclients  # the limit it hit
    later = (
        f" (maxclients is {ctx.maxclients} now)"
        if ctx.maxclients and ctx.maxclients != limit
        else ""
    )
    largest, leaking = _holders(ctx)
    top = leaking or largest  # the group to act on
    return [Finding(
        kind="exhaustion", severity=Severity.CRITICAL,
        title=f"maxclients {limit} reached: the server refused connections",
        summary=(
            (f"From the first capture read, {first:%Y-%m-%d %H:%M:%S} UTC (maybe earlier: widen --since "
             "to see when), the server was full: " if from_start else
             f"From {first:%Y-%m-%d %H:%M:%S} UTC the server was full: ")
            + f"{rejected} connection(s) "
            f"rejected (rejected_connections), {failed.height} capture(s) failed with "
            f"'max number of clients reached', {full.height} capture(s) at maxclients{later}."
            + _holders_text(largest, leaking)
        ),
        evidence={"first_at": first, "rejected_connections": rejected, "failed_captures": failed.height,
                  "captures_at_maxclients": full.height, "maxclients": limit,
                  "largest_group": largest[0] if largest else None,
                  "leaking_group": leaking[0] if leaking else None},
        remediation=(
            *_raise_maxclients(ctx),
            f"CONFIG SET timeout {_timeout(ctx)}   # close connections idle that long",
            "fix the source holding the connections (see the other findings), then restart it",
        ),
        first_seen=first, confidence=1.0, group=top[0] if top else None,
    )]  # fmt: skip


def _holders(ctx: _Context) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The largest holder, and the leaking group that grew most (None when nothing leaks), each
    with its connections at the last capture that listed clients (what `top --by group` shows)."""
    last = with_clients(ctx.ok).tail(1)["capture_id"].to_list()
    at_last = (
        ctx.counts.filter(pl.col("capture_id").is_in(last))
        .group_by("group")
        .agg(pl.col("n").sum())
        .sort(["n", "group"], descending=[True, False])
    )
    if at_last.is_empty():
        return None, None
    largest = str(at_last["group"][0]), int(at_last["n"][0])
    if ctx.leaks.groups.is_empty() or ctx.leaks.leaking.is_empty():
        return largest, None
    name = str(ctx.leaks.leaking.row(0, named=True)["group"])
    held = at_last.filter(pl.col("group") == name)["n"]
    return largest, (name, int(held[0]) if held.len() else 0)


def _holders_text(largest: tuple[str, int] | None, leaking: tuple[str, int] | None) -> str:
    if largest is None:
        return ""
    said = f" The largest holder at the end was {largest[0]} with {largest[1]} connections"
    if leaking is None:
        return said + "."
    if leaking[0] == largest[0]:
        return said + ", and it leaks."
    return said + f"; the leaking {leaking[0]} held {leaking[1]}."


def _saturation(ctx: _Context) -> list[Finding]:
    if ctx.ok.is_empty() or not ctx.maxclients:
        return []
    peak = ctx.ok.sort(
        ["utilization", "ts", "instance"], descending=[True, False, False], nulls_last=True
    ).row(0, named=True)
    util = peak["utilization"]
    if util is None or util < 0.8:
        return []
    naive = peak["connected_ratio"]
    return [Finding(
        kind="saturation", severity=Severity.CRITICAL if util >= 0.95 else Severity.WARNING,
        title=f"connections at {util:.0%} of maxclients",
        summary=(
            f"At {peak['ts']:%Y-%m-%d %H:%M:%S} UTC the server held {peak['used']} connections "
            f"(clients {peak['connected_clients']} + replicas {peak['connected_slaves'] or 0} + cluster "
            f"links {peak['cluster_connections'] or 0}) of maxclients {peak['maxclients']} "
            f"({peak['maxclients_source'] or 'unknown source'}); connected_clients / maxclients alone "
            f"reads {naive:.0%}."
        ),
        evidence={"peak_used": peak["used"], "maxclients": peak["maxclients"], "utilization": util,
                  "connected_ratio": naive, "at": peak["ts"], "maxclients_source": peak["maxclients_source"]},
        remediation=(*_raise_maxclients(ctx),
                     shell_line("clientscope", "plan", DATASET_WORD, "--spec", "deployment.yaml")
                     + "   # size pools to fit"),
        first_seen=peak["ts"], confidence=1.0,
    )]  # fmt: skip


def _leaks(ctx: _Context) -> list[Finding]:
    leaking = ctx.leaks.leaking if not ctx.leaks.groups.is_empty() else pl.DataFrame()
    out = []
    exhausted = bool(_exhaustion(ctx))
    timeout = _timeout(ctx)
    f = ctx.forecast  # the same time to maxclients as `forecast` and the report say
    eta = f.time_to_maxclients if f is not None else None
    hours_left = eta.total_seconds() / 3600 if eta is not None else math.inf
    for row in leaking.iter_rows(named=True):
        rate_h = row["slope_theil_sen_per_h"]
        inst = row.get("instance")
        severe = exhausted or hours_left < 24
        ips = row.get("top_ips") or []
        out.append(Finding(
            kind="leak", severity=Severity.CRITICAL if severe else Severity.WARNING,
            title=f"connection leak from {row['group']}: +{rate_h / 60:.1f} connections/min",
            summary=(
                f"{row['group']} grew from {row['first']:.0f} to {row['last']:.0f} connections "
                f"({rate_h:.0f}/h Theil-Sen, R² {row['r2']:.2f}, Mann-Kendall p={row['mk_p']:.1e}). "
                f"Of {row['births']} connections it opened in the window {row['survivors']} never closed and "
                f"{row['survivors_idle_share']:.0%} of those sat idle since their first command."
                + (f" With {_drivers_text(f)} on top of a steady {f.steady_peak or 0:.0f}, the server "
                   f"reaches maxclients in {human_duration(hours_left * 3600)}." if f is not None and math.isfinite(hours_left) and not exhausted else "")
                + _began_text(row, ctx)
            ),
            evidence={
                "slope_per_hour": rate_h, "slope_ols_per_hour": row["slope_ols_per_h"], "r2": row["r2"],
                "mann_kendall_p": row["mk_p"], "births": row["births"], "deaths": row["deaths"],
                "survivors": row["survivors"], "survivors_idle_share": row["survivors_idle_share"],
                "median_survivor_age_s": row["median_survivor_age_s"], "source_ips": ips,
                "lib_name": row.get("lib_name"), "first": row["first"], "last": row["last"],
            },
            remediation=(
                _fix_the_code(row["group"], ips),
                f"CONFIG SET timeout {timeout}   # safety net: the server closes idle leaked connections",
                shell_line("clientscope", "kill-script", DATASET_WORD, "--group", row["group"], "--leaked",
                           *(("--instance", inst) if ctx.fleet and inst else ()))
                + "   # review, then run",
            ),
            group=row["group"], first_seen=row.get("first_survivor_born"), confidence=float(row["confidence"]),
            instance=row["instance"],
        ))  # fmt: skip
    return out


def _fix_the_code(group: str, ips: list[str]) -> str:
    """The first step of a leak's remediation: where the code is, named as well as the data can."""
    how = "(use one pool per process; `with pool.get_connection()` / close clients)"
    if group.startswith(UNNAMED):
        where = ", ".join(ips[:3]) or group.removeprefix(UNNAMED).strip()
        return (f"find the code that connects from {where} without a client name, give its clients "
                f"a name (CLIENT SETNAME / client_name=) and fix where it opens connections without "
                f"closing them {how}")  # fmt: skip
    return f"fix the code in {group} that opens connections without closing them {how}"


def _drivers_text(f: Forecast) -> str:
    """`orders-svc (+60/h) and 10.0.0.7 (+40/h)`: the groups that drive a forecast."""
    parts = [f"{d.group} ({d.rate_per_hour:+.0f}/h)" for d in f.drivers]
    return (
        " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts) or "no group"
    )


def _began_text(row: dict[str, Any], ctx: _Context) -> str:
    """When the leak began: its oldest surviving connection's creation (before the first
    capture, when so — and then said)."""
    born = row.get("first_survivor_born")
    if born is None:
        return ""
    first = ctx.ok.select(pl.col("ts").min()).item()
    before = first is not None and born < first
    return (f" Its oldest surviving connection was opened at {born:%Y-%m-%d %H:%M:%S} UTC"
            + (", before the first capture: the leak is older than the data." if before else "."))  # fmt: skip


def _no_pooling(ctx: _Context) -> list[Finding]:
    rate = _accept_rate(ctx.ok)
    groups = ctx.leaks.groups
    if groups.is_empty() or "short_lived" not in groups.columns:
        return []
    churny = groups.filter(
        (pl.col("role") == "normal") & (pl.col("short_lived") >= 5)
        & (pl.col("short_lived") >= 0.5 * pl.col("births"))
    ).sort(["short_lived", "instance", "group"], descending=[True, False, False])  # fmt: skip
    if churny.is_empty() or (rate is not None and rate < 1.0):
        return []
    row = churny.row(0, named=True)
    per_capture = row["mean"]
    return [Finding(
        kind="no_pooling", severity=Severity.WARNING,
        title=f"{row['group']} opens a connection per request",
        summary=(
            f"The server accepted {rate or float('nan'):.1f} new connections/s "
            f"(total_connections_received); {row['short_lived']} of the {row['births']} connections "
            f"{row['group']} opened were seen once, less than 2 s old. Each costs a TCP handshake, "
            "AUTH/HELLO/SETNAME and a slot, and bursts of them exhaust maxclients."
        ),
        evidence={"accepted_per_s": rate, "short_lived": row["short_lived"], "births": row["births"],
                  "mean_open": per_capture, "source_ips": row.get("top_ips") or []},
        remediation=(
            f"create one ConnectionPool per process in {row['group']} and reuse it "
            f"(redis.ConnectionPool(max_connections={max(10, nice_ceil(per_capture * 2, 10) // max(row['pods'] or 1, 1))}))",
            "never create a Redis client inside a request handler",
        ),
        group=row["group"], confidence=min(1.0, row["short_lived"] / max(row["births"], 1) + 0.2),
        instance=row["instance"],
    )]  # fmt: skip


def _accept_rate(ok: pl.DataFrame) -> float | None:
    d = (
        ok.select(
            rate=(
                pl.col("total_connections_received").diff()
                / pl.col("ts").diff().dt.total_seconds(fractional=True)
            ).over("instance", "run_id")
        )["rate"]
        .drop_nulls()
        .drop_nans()
    )
    d = d.filter(d >= 0)
    return float(d.median()) if d.len() else None  # type: ignore[arg-type]


def _oversized(ctx: _Context) -> list[Finding]:
    stats = oversized_groups(ctx.counts, ctx.maxclients, _leaking(ctx))
    out = []
    for row in stats.iter_rows(named=True):
        pods = max(int(row["pods"] or 1), 1)
        per_pod = math.ceil(row["peak"] / pods)
        pool = max(2, math.ceil((row["busy_peak"] or 0) / pods * 1.5) + 1)
        out.append(Finding(
            kind="oversized_pool", severity=Severity.WARNING,
            title=f"{row['group']}: {pods} pods x {per_pod} connections, {row['idle_share']:.0%} idle",
            summary=(
                f"{row['group']} holds up to {row['peak']} connections ({row['peak'] / ctx.maxclients:.0%} of "
                f"maxclients {ctx.maxclients}) from {pods} source(s), and {row['idle_share']:.0%} of them were idle "
                f"over 5 minutes; at most {row['busy_peak']} were busy at once."
            ),
            evidence={"peak": row["peak"], "pods": pods, "per_pod": per_pod, "idle_share": row["idle_share"],
                      "busy_peak": row["busy_peak"], "share_of_maxclients": row["peak"] / ctx.maxclients},
            remediation=(f"set the pool of {row['group']} to max_connections={pool} per pod ({pool * pods} in total)",
                         f"CONFIG SET timeout {_timeout(ctx)}   # let the server close connections a pool never uses"),
            group=row["group"], confidence=min(1.0, row["idle_share"]), instance=row["instance"],
        ))  # fmt: skip
    return out


def _blocking(ctx: _Context) -> list[Finding]:
    blocked = ctx.counts.filter(pl.col("role") == "blocked")
    info_peak = ctx.ok.select(pl.col("blocked_clients").max()).item() or 0
    if blocked.is_empty() and info_peak < 10:
        return []
    per_cap = blocked.group_by("capture_id").agg(pl.col("n").sum())
    peak = max(int(per_cap["n"].max() or 0), int(info_peak))  # type: ignore[arg-type]
    used = ctx.ok.select(pl.col("used").max()).item() or 1
    if peak < 10 and peak < 0.1 * used:
        return []
    groups = (
        blocked.group_by("group")
        .agg(peak=pl.col("n").max(), pods=pl.col("pods").max())
        .sort(["peak", "group"], descending=[True, False])
    )
    top: dict[str, Any] = (
        groups.row(0, named=True) if groups.height else {"group": None, "peak": peak, "pods": 1}
    )
    size = max(2, math.ceil(int(top["peak"]) / max(int(top["pods"] or 1), 1)))
    return [Finding(
        kind="blocking", severity=Severity.WARNING,
        title=f"{peak} connections parked in blocking commands",
        summary=(
            f"Up to {peak} clients sat in BLPOP/BRPOP/XREAD BLOCK-style commands (flags=b, blocked_clients), "
            f"{peak / used:.0%} of the connections in use; the largest group is {top['group']} "
            f"with {top['peak']}. Each blocked call holds a connection for as long as it waits."
        ),
        evidence={"blocked_peak": peak, "blocked_clients_info_peak": info_peak,
                  "groups": groups.head(5).to_dicts(), "share_of_used": peak / used},
        remediation=(
            f"give blocking consumers in {top['group']} their own small pool "
            f"(redis.ConnectionPool(max_connections={size}) per pod) apart from the request pool",
            "pass a timeout to BLPOP/BRPOP/XREAD BLOCK (e.g. 10 s) instead of 0 (forever)",
        ),
        group=top["group"], confidence=0.9,
    )]  # fmt: skip


def _no_idle_timeout(ctx: _Context) -> list[Finding]:
    if ctx.timeout is None or ctx.timeout != 0 or ctx.counts.is_empty():
        return []
    normal = ctx.counts.filter(pl.col("role") == "normal")
    per_cap = normal.group_by("capture_id").agg(
        pl.col("idle_over_600").sum(), pl.col("n").sum(), pl.col("idle_max").max()
    )
    # ties broken by the longest idle, then the capture: the same capture every run
    worst = per_cap.sort(
        ["idle_over_600", "idle_max", "capture_id"], descending=[True, True, False], nulls_last=True
    ).row(0, named=True)
    if worst["idle_over_600"] < max(5, 0.01 * worst["n"]):
        return []
    timeout = _timeout(ctx)
    longest = ctx.plan.longest_reuse_gap_s if ctx.plan is not None else None
    return [Finding(
        kind="no_idle_timeout", severity=Severity.WARNING,
        title=f"timeout is 0: {worst['idle_over_600']} connections idle over 10 minutes stay open",
        summary=(
            f"The server never closes idle clients (timeout 0). Up to {worst['idle_over_600']} normal clients "
            f"({worst['idle_over_600'] / worst['n']:.0%}) were idle over 600 s at one capture. "
            + (f"The longest gap after which a client still reused its connection was {longest:.0f} s, so "
               f"timeout {timeout} closes forgotten connections without hurting live ones."
               if longest is not None else
               f"No connection was seen used again after an idle stretch, so timeout {timeout} (the 300 s "
               "floor) is a start: watch for clients that reconnect after it.")
        ),
        evidence={"timeout": 0, "idle_over_600_peak": worst["idle_over_600"], "idle_max_s": worst["idle_max"],
                  "longest_reuse_gap_s": longest, "suggested_timeout": timeout},
        remediation=(f"CONFIG SET timeout {timeout}", "CONFIG REWRITE   # keep it after a restart"),
        confidence=0.9,
    )]  # fmt: skip


def _pubsub(ctx: _Context) -> list[Finding]:
    groups = ctx.leaks.groups
    if groups.is_empty():
        return []
    rising = groups.filter(
        (pl.col("role") == "pubsub") & (pl.col("slope_theil_sen_per_h") >= ctx.leaks.min_rate_per_hour)
        & (pl.col("mk_p") < ctx.leaks.alpha)
    )  # fmt: skip
    return [Finding(
        kind="pubsub_pileup", severity=Severity.WARNING,
        title=f"subscribers from {r['group']} pile up: +{r['slope_theil_sen_per_h'] / 60:.1f}/min",
        summary=(
            f"{r['group']} went from {r['first']:.0f} to {r['last']:.0f} subscriber connections; "
            f"{r['survivors']} of {r['births']} new ones never unsubscribed. Each holds a connection "
            "and an output buffer."
        ),
        evidence={"slope_per_hour": r["slope_theil_sen_per_h"], "mann_kendall_p": r["mk_p"],
                  "first": r["first"], "last": r["last"], "births": r["births"], "source_ips": r.get("top_ips") or []},
        remediation=(
            f"reuse one subscriber connection per process in {r['group']} and UNSUBSCRIBE / close on shutdown",
            "CONFIG SET client-output-buffer-limit \"pubsub 32mb 8mb 60\"",
        ),
        group=r["group"], first_seen=r.get("first_survivor_born"), confidence=float(min(1.0, abs(r["mk_z"]) / 5)),
        instance=r["instance"],
    ) for r in rising.iter_rows(named=True)]  # fmt: skip


def _output_buffer(ctx: _Context) -> list[Finding]:
    if ctx.counts.is_empty():
        return []
    top = ctx.counts.sort(
        ["omem_max", "capture_id", "group", "role"],
        descending=[True, False, False, False],
        nulls_last=True,
    ).row(0, named=True)
    omem = top["omem_max"] or 0
    if omem < MIB:
        return []
    return [Finding(
        kind="output_buffer", severity=Severity.WARNING,
        title=f"client output buffer up to {omem / MIB:.1f} MiB ({top['group']})",
        summary=(
            f"A {top['role']} client of {top['group']} had {omem / MIB:.1f} MiB queued in its output buffer "
            "(omem): it reads slower than the server writes. Buffers count against memory and, "
            "at client-output-buffer-limit, the server drops the client."
        ),
        evidence={"omem_max_bytes": omem, "group": top["group"], "role": top["role"]},
        remediation=("fix or scale the slow consumer",
                     "CONFIG SET client-output-buffer-limit \"pubsub 32mb 8mb 60\""),
        group=top["group"], confidence=0.8,
    )]  # fmt: skip


def _keepalive(ctx: _Context) -> list[Finding]:
    if ctx.keepalive is None or ctx.keepalive != 0:
        return []
    return [Finding(
        kind="no_keepalive", severity=Severity.INFO, title="tcp-keepalive is 0",
        summary="Without TCP keepalive, connections of crashed clients or dropped NAT entries hold their slot.",
        evidence={"tcp_keepalive": 0}, remediation=("CONFIG SET tcp-keepalive 300",), confidence=1.0,
    )]  # fmt: skip


def _fd_limit(ctx: _Context) -> list[Finding]:
    if not ctx.maxclients or not looks_fd_limited(ctx.maxclients):
        return []
    return [Finding(
        kind="fd_limit", severity=Severity.WARNING,
        title=f"maxclients {ctx.maxclients} looks capped by the file-descriptor limit",
        summary=(f"{ctx.maxclients} + 32 reserved = {ctx.maxclients + 32}: the server lowers maxclients to "
                 "its open-files limit at start, whatever the configuration says."),
        evidence={"maxclients": ctx.maxclients}, confidence=0.6,
        remediation=("raise LimitNOFILE (systemd) / ulimit -n, restart, then check CONFIG GET maxclients",),
    )]  # fmt: skip


DETECTORS: tuple[Callable[[_Context], list[Finding]], ...] = (
    _exhaustion, _saturation, _leaks, _no_pooling, _oversized, _blocking, _no_idle_timeout,
    _pubsub, _output_buffer, _keepalive, _fd_limit,
)  # fmt: skip
