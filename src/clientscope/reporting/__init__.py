"""Output: the postmortem report, its charts, and the derived series for Prometheus.

import clientscope as cs
cs.report("incident.cs", "reports/incident")           # report.html, report.md, figures/
cs.charts.clients_vs_maxclients(ds)                     # any chart as a matplotlib Figure
cs.export(ds, "incident.om", format="openmetrics")     # for promtool create-blocks-from
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clientscope.reporting.export import ExportResult, export

if TYPE_CHECKING:
    from clientscope.reporting.report import ReportResult, report

__all__ = ["ExportResult", "ReportResult", "export", "report"]


def __getattr__(name: str) -> Any:
    """`report` and `ReportResult` load matplotlib: only when asked for (`[report]` extra), so
    `export` runs on the core install."""
    if name in ("report", "ReportResult"):
        import importlib

        from clientscope.extras import require

        require("matplotlib", "report")
        module = importlib.import_module("clientscope.reporting.report")
        globals().update(report=module.report, ReportResult=module.ReportResult)  # over the submodule
        return globals()[name]
    raise AttributeError(f"module 'clientscope.reporting' has no attribute {name!r}")
