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
    kill_script(ds)      CLIENT KILL ID commands to review
"""

from __future__ import annotations

from clientscope.analysis.alerts import DEFAULT_RULES, Rule, alerts, load_rules
from clientscope.analysis.capacity import CapacityPlan, DeploymentSpec, load_spec, plan
from clientscope.analysis.diagnose import Diagnosis, Finding, diagnose
from clientscope.analysis.forecast import Forecast, forecast
from clientscope.analysis.groups import IdleReport, idle, top
from clientscope.analysis.kill import KillScript, kill_script
from clientscope.analysis.leaks import LeakReport, leaks
from clientscope.analysis.summary import Summary, summary

__all__ = [
    "DEFAULT_RULES", "CapacityPlan", "DeploymentSpec", "Diagnosis", "Finding", "Forecast",
    "IdleReport", "KillScript", "LeakReport", "Rule", "Summary", "alerts", "diagnose", "forecast",
    "idle", "kill_script", "leaks", "load_rules", "load_spec", "plan", "summary", "top",
]  # fmt: skip
