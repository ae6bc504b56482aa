"""clientscope: why did Redis / Valkey run out of connections?

    import clientscope as cs
    ds = cs.open_dataset("incident.cs")       # tables as Polars LazyFrames
    cs.summary(ds)                            # the runbook's first look
    cs.diagnose(ds)                           # findings with evidence and remediation

Names are loaded on first use, so `import clientscope` (and the CLI) stays fast;
the `TYPE_CHECKING` imports below give a type checker the same names, typed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ loads at run time: to a type checker, typed
    from clientscope.analysis import (
        AlertReplay,
        CapacityPlan,
        Diagnosis,
        Finding,
        Forecast,
        IdleReport,
        KillScript,
        LeakReport,
        Model,
        Summary,
        alerts,
        build_model,
        diagnose,
        diagnose_from,
        forecast,
        idle,
        idle_from,
        kill_script,
        leaks,
        leaks_from,
        plan,
        plan_from,
        replay_alerts,
        replay_from,
        summary,
        summary_from,
        top,
        top_from,
    )
    from clientscope.capture import CollectResult, CompactResult, collect, compact
    from clientscope.dataset import Dataset, DatasetWarning, open_dataset
    from clientscope.errors import (
        AnalysisError,
        CaptureError,
        ClientscopeError,
        ConfigError,
        DatasetError,
        DatasetWriteError,
        InputError,
        MissingExtraError,
        ParseError,
        TimestampError,
    )
    from clientscope.ingest import ImportResult, import_dumps
    from clientscope.parse import parse_client_list, parse_info, parse_raw
    from clientscope.reporting import charts
    from clientscope.reporting.export import ExportResult, export
    from clientscope.reporting.report import ReportResult, report
    from clientscope.simulation import SimulationResult, simulate

    __version__: str

# module -> the public names it defines: the imports above, loaded on first use
_EXPORTS: dict[str, str] = {
    "clientscope.analysis": (
        "AlertReplay CapacityPlan Diagnosis Finding Forecast IdleReport KillScript LeakReport "
        "Model Summary alerts build_model diagnose diagnose_from forecast idle idle_from "
        "kill_script leaks leaks_from plan plan_from replay_alerts replay_from summary "
        "summary_from top top_from"
    ),
    "clientscope.capture": "CollectResult CompactResult collect compact",
    "clientscope.dataset": "Dataset DatasetWarning open_dataset",
    "clientscope.errors": (
        "AnalysisError CaptureError ClientscopeError ConfigError DatasetError DatasetWriteError "
        "InputError MissingExtraError ParseError TimestampError"
    ),
    "clientscope.ingest": "ImportResult import_dumps",
    "clientscope.parse": "parse_client_list parse_info parse_raw",
    "clientscope.reporting.charts": "charts",
    "clientscope.reporting.export": "ExportResult export",
    "clientscope.reporting.report": "ReportResult report",
    "clientscope.simulation": "SimulationResult simulate",
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names.split()}

# names that are modules, not attributes of one
_SUBMODULES = frozenset({"charts"})

# modules that need an extra, checked first so a missing one names the extra to install
_NEEDS_EXTRA: dict[str, tuple[str, str]] = {
    "clientscope.reporting.report": ("matplotlib", "report"),
    "clientscope.reporting.charts": ("matplotlib", "report"),
}

__all__ = [
    "AlertReplay",
    "AnalysisError",
    "CapacityPlan",
    "CaptureError",
    "ClientscopeError",
    "CollectResult",
    "CompactResult",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "DatasetWarning",
    "DatasetWriteError",
    "Diagnosis",
    "ExportResult",
    "Finding",
    "Forecast",
    "IdleReport",
    "ImportResult",
    "InputError",
    "KillScript",
    "LeakReport",
    "MissingExtraError",
    "Model",
    "ParseError",
    "ReportResult",
    "SimulationResult",
    "Summary",
    "TimestampError",
    "__version__",
    "alerts",
    "build_model",
    "charts",
    "collect",
    "compact",
    "diagnose",
    "diagnose_from",
    "export",
    "forecast",
    "idle",
    "idle_from",
    "import_dumps",
    "kill_script",
    "leaks",
    "leaks_from",
    "open_dataset",
    "parse_client_list",
    "parse_info",
    "parse_raw",
    "plan",
    "plan_from",
    "replay_alerts",
    "replay_from",
    "report",
    "simulate",
    "summary",
    "summary_from",
    "top",
    "top_from",
]


def _version() -> str:
    """The installed distribution's version (pyproject.toml's), or a stand-in from a bare source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clientscope")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    else:
        module = _HOME.get(name)
        if module is None:
            raise AttributeError(f"module 'clientscope' has no attribute {name!r}")
        if module in _NEEDS_EXTRA:
            from clientscope.extras import require

            require(*_NEEDS_EXTRA[module])
        mod = importlib.import_module(module)
        value = mod if name in _SUBMODULES else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
