"""Output: the postmortem report, its charts, and the derived series for Prometheus.

import clientscope as cs
cs.report("incident.cs", "reports/incident")           # report.html, report.md, figures/
cs.charts.clients_vs_maxclients(ds)                     # any chart as a matplotlib Figure
cs.export(ds, "incident.om", format="openmetrics")     # for promtool create-blocks-from
"""

from __future__ import annotations

from clientscope.reporting.export import ExportResult, export
from clientscope.reporting.report import ReportResult, report

__all__ = ["ExportResult", "ReportResult", "export", "report"]
