"""Every error clientscope raises on purpose.

    ClientscopeError                 base: the CLI prints its message on one line and exits 1
    ├── InputError                   a file or text we were given cannot be used
    │   ├── ParseError               a line / field could not be read (file, line, field, value)
    │   └── TimestampError           no usable capture time for a dump
    ├── DatasetError                 the dataset directory is missing, unwritable or damaged
    │   └── DatasetWriteError        a write failed (disk full, permissions); nothing already there is lost
    ├── CaptureError                 talking to a live server failed (kind tells why)
    ├── ConfigError                  a rules / deployment spec / option value is wrong
    ├── AnalysisError                an analysis cannot run on this data (e.g. too few captures)
    └── MissingExtraError            an optional dependency is missing (clientscope.extras):
                                     the message names the extra to install

Messages name what, where and the mend: the file, the line, the field, the value
seen and what to do about it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AnalysisError",
    "CaptureError",
    "ClientscopeError",
    "ConfigError",
    "DatasetError",
    "DatasetWriteError",
    "InputError",
    "MissingExtraError",
    "ParseError",
    "TimestampError",
]


class ClientscopeError(Exception):
    """Base of every error clientscope raises on purpose."""


class InputError(ClientscopeError):
    """A file or text we were given cannot be used."""


class ParseError(InputError):
    """A line or field could not be read."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        field: str | None = None,
        value: str | None = None,
    ) -> None:
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        shown = f" (value {value[:80]!r})" if value is not None else ""
        super().__init__(f"{prefix}: {message}{shown}" if prefix else f"{message}{shown}")
        self.path = path
        self.line = line
        self.field = field
        self.value = value


class TimestampError(InputError):
    """No usable capture time could be found for a dump."""


class DatasetError(ClientscopeError):
    """The dataset directory is missing, unwritable or damaged."""


class DatasetWriteError(DatasetError):
    """A write to the dataset failed; files already in it are untouched."""


class CaptureError(ClientscopeError):
    """Talking to a live server failed; `kind` says how (see capture.errors)."""

    def __init__(self, message: str, *, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class ConfigError(ClientscopeError):
    """A rules file, deployment spec or option value is wrong."""


class AnalysisError(ClientscopeError):
    """An analysis cannot run on this data."""


class MissingExtraError(ClientscopeError):
    """An optional dependency is not installed; the message names the extra that brings it
    (`pip install 'clientscope[report]'`). Raised by `clientscope.extras.require`."""

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        super().__init__(message)
        self.module = module
        self.extra = extra
