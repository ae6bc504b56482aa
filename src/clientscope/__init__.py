"""clientscope: why did Redis / Valkey run out of connections?

    import clientscope as cs
    ds = cs.open_dataset("incident.cs")       # tables as Polars LazyFrames
    cs.summary(ds)                            # the runbook's first look
    cs.diagnose(ds)                           # findings with evidence and remediation

Names are loaded on first use, so `import clientscope` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # parsing
    "parse_client_list": "clientscope.parse",
    "parse_info": "clientscope.parse",
    "parse_raw": "clientscope.parse",
    # dataset
    "open_dataset": "clientscope.dataset",
    "Dataset": "clientscope.dataset",
    "import_dumps": "clientscope.ingest",
    # capture
    "collect": "clientscope.capture",
    "compact": "clientscope.capture",
    # analyses, one function per command
    "summary": "clientscope.analysis",
    "top": "clientscope.analysis",
    "idle": "clientscope.analysis",
    "leaks": "clientscope.analysis",
    "forecast": "clientscope.analysis",
    "plan": "clientscope.analysis",
    "alerts": "clientscope.analysis",
    "diagnose": "clientscope.analysis",
    "kill_script": "clientscope.analysis",
    "Finding": "clientscope.analysis",
    # the model every analysis reads, built once, and the analyses' forms that take it
    "build_model": "clientscope.analysis",
    "leaks_from": "clientscope.analysis",
    "diagnose_from": "clientscope.analysis",
    "plan_from": "clientscope.analysis",
    "replay_alerts": "clientscope.analysis",
    "replay_from": "clientscope.analysis",
    "summary_from": "clientscope.analysis",
    "top_from": "clientscope.analysis",
    "idle_from": "clientscope.analysis",
    "simulate": "clientscope.simulation",
    # output
    "report": "clientscope.reporting",
    "export": "clientscope.reporting",
    "charts": "clientscope.reporting.charts",
    # errors
    "ClientscopeError": "clientscope.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clientscope' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module.endswith("." + name) else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
