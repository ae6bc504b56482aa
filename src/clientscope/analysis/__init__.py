"""Analyses: pure functions over a capture dataset, one per command.

Each takes a `Dataset` (or a path) and returns a frame or a frozen result with
`to_dict()` (for --json) and `_repr_html_()` (for notebooks). None of them print.

    summary(ds)          clients vs maxclients, top sources, idle / blocked counts
    top(ds, by="ip")     who holds the connections
    idle(ds)             idle distribution, what a server timeout would close
    leaks(ds)            growing groups whose connections never close
    forecast(ds)         when maxclients will be reached (and predict_linear's answer)
    plan(ds, spec)       maxclients, pool sizes, timeout
    alerts(ds, rules)    when alert rules would have fired and resolved
    diagnose(ds)         every finding with evidence and remediation
    kill_script(ds)      CLIENT KILL commands (ID + ADDR) for idle clients safe to disconnect

One model of each server (`build_model`: timeline, group counts, lifecycles, group verdicts,
forecast) is built once per command or report; `leaks_from`, `diagnose_from` and `plan_from`
read it, and `forecast` is a field of it.
"""

from __future__ import annotations

from clientscope.analysis.alerts import (
    DEFAULT_RULES,
    AlertReplay,
    Rule,
    alerts,
    load_rules,
    replay_alerts,
    replay_from,
)
from clientscope.analysis.capacity import CapacityPlan, DeploymentSpec, load_spec, plan, plan_from
from clientscope.analysis.diagnose import Diagnosis, Finding, diagnose, diagnose_from
from clientscope.analysis.forecast import Driver, Forecast, forecast
from clientscope.analysis.groups import IdleReport, idle, idle_from, top, top_from
from clientscope.analysis.kill import KillScript, kill_script
from clientscope.analysis.leaks import LeakReport, leaks, leaks_from
from clientscope.analysis.model import Model, ServerModel, build_model
from clientscope.analysis.summary import Summary, summary, summary_from

__all__ = [
    "DEFAULT_RULES",
    "AlertReplay",
    "CapacityPlan",
    "DeploymentSpec",
    "Diagnosis",
    "Driver",
    "Finding",
    "Forecast",
    "IdleReport",
    "KillScript",
    "LeakReport",
    "Model",
    "Rule",
    "ServerModel",
    "Summary",
    "alerts",
    "build_model",
    "diagnose",
    "diagnose_from",
    "forecast",
    "idle",
    "idle_from",
    "kill_script",
    "leaks",
    "leaks_from",
    "load_rules",
    "load_spec",
    "plan",
    "plan_from",
    "replay_alerts",
    "replay_from",
    "summary",
    "summary_from",
    "top",
    "top_from",
]  # fmt: skip
