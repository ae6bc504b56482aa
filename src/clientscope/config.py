"""Settings from files and options, read and checked in one place.

Alert rules files and deployment specs are YAML that anyone may hand over, and the
same settings also arrive as CLI options or keyword arguments. Both go through
this module, so a value is accepted or refused the same way wherever it came from:

    load_yaml(path, what)   a bounded YAML document: at most MAX_BYTES of UTF-8,
                            nested at most MAX_DEPTH deep, and at most MAX_EXPANDED
                            once aliases are expanded (a billion-laughs file is
                            refused before it is built); a key given twice is an
                            error, not a silent last-wins
    Where                   where a value came from, as an error names it: an option
                            (`--headroom -5`) or a field of a file (`spec.yaml: app 1
                            (api): field 'replicas' is True (line 4)`)
    check_keys, whole_number, real_number, duration, text
                            the typed checks; each raises `ConfigError` naming the
                            file, line, field, the value seen and what to write instead

Mappings from `load_yaml` remember the line of each key (`line_of`), so a field's
error can say where it is.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from clientscope.errors import ConfigError
from clientscope.escape import printable

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_EXPANDED",
    "Where",
    "check_keys",
    "duration",
    "duration_seconds",
    "line_of",
    "load_yaml",
    "moment",
    "optional",
    "real_number",
    "resolve_moment",
    "shown",
    "text",
    "whole_number",
]

MAX_BYTES = 1 << 20  # a rules file or spec is a few KB
MAX_DEPTH = 32  # they nest 3 or 4 deep
# nodes + characters once aliases are expanded: a file under MAX_BYTES without aliases
# stays under it (each node and character comes from the file), a billion-laughs one
# (9 aliases of 9 aliases ... ) does not
MAX_EXPANDED = 4 << 20
_MERGE = "tag:yaml.org,2002:merge"
_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist, _SHOW.maxdict = 2, 60, 60, 4, 4


def shown(value: object) -> str:
    """A value as an error shows it: repr, short, one line, whatever its size or nesting."""
    return printable(_SHOW.repr(value), 100)


# ------------------------------------------------------------------ where a value came from
@dataclass(frozen=True)
class Where:
    """Where a value came from; `said(value)` starts the sentence an error makes of it.

    An option reads `--headroom -5`; a field of a file reads `spec.yaml: app 1 (api):
    field 'replicas' is -5 (line 7): replicas`, so either continues with the same
    words (`must be a whole number from 0 to 100000`).
    """

    before: str
    after: str = ""

    @classmethod
    def option(cls, name: str, noun: str = "") -> Where:
        """`--headroom` reads `--headroom 11 ...`; `option("--what-if api=", "replicas")`
        reads `--what-if api=2.5: replicas ...`."""
        sep = "" if name.endswith("=") else " "
        return cls(f"{name}{sep}", f": {noun}" if noun else "")

    @classmethod
    def field(cls, path: Path | str, item: str | None, name: str, line: int | None) -> Where:
        """Field `name` of `item` ('rule 2', 'app 1 (api)', None for the top level) of a file."""
        head = f"{printable(path)}: " + (f"{item}: " if item else "")
        at = f" (line {line})" if line is not None else ""
        return cls(f"{head}field {name!r} is ", f"{at}: {name}")

    def said(self, value: object) -> str:
        return f"{self.before}{shown(value)}{self.after}"

    def error(self, value: object, rest: str) -> ConfigError:
        """`said(value)` + `rest`, e.g. rest = 'must be a whole number from 0 to 10'."""
        return ConfigError(f"{self.said(value)} {rest}")


# ------------------------------------------------------------------ typed checks
def whole_number(value: object, where: Where, low: int, high: int, rest: str | None = None) -> int:
    """An int in [low, high]; True, 2.5, '3' and 1e300 are refused, not rounded or read.
    `rest` words the error instead of 'must be a whole number from low to high'."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise where.error(value, rest or f"must be a whole number from {low:,} to {high:,}")
    return value


def real_number(
    value: object,
    where: Where,
    low: float = -math.inf,
    high: float = math.inf,
    example: str = "0.9",
    rest: str | None = None,
) -> float:
    """A finite number in [low, high]; NaN, .inf, True and 'abc' are refused.
    `rest` words the error instead of 'must be a finite number from low to high'."""
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value) if abs(value) < 1e308 else math.inf  # float(10**400) overflows
    if not low <= number <= high or not math.isfinite(number):
        raise where.error(
            value, rest or f"must be a finite number{_bounds(low, high)}, such as {example}"
        )
    return number


def _bounds(low: float, high: float) -> str:
    if math.isfinite(low) and math.isfinite(high):
        return f" from {low:g} to {high:g}"
    if math.isfinite(low):
        return f" of at least {low:g}"
    return f" of at most {high:g}" if math.isfinite(high) else ""


_UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0,
          "ms": 0.001}  # fmt: skip
_DECIMAL = re.compile(r"(\d+\.?\d*|\.\d+)(ms|[ywdhms])?", re.ASCII)  # 300, 90s, 1.5m
_PROMETHEUS_DURATION = re.compile(r"(?:\d{1,9}(?:ms|[ywdhms]))+", re.ASCII)  # 1h30m, 2w, 500ms
_PROMETHEUS_PART = re.compile(r"(\d{1,9})(ms|[ywdhms])", re.ASCII)


def duration(value: object, where: Where, high: float) -> float:
    """Seconds from a duration, in [0, high]: the one grammar of every option and file.

    Prometheus' (`500ms`, `90s`, `1h30m`, `2d`, `1w`, `1y`: units largest first, each once),
    a decimal with one unit (`1.5m`, `.5h`), or a bare number of seconds (300, 2.5)."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = duration_seconds(value.strip().lower())
    return _in_range(seconds, value, where, high)


def _in_range(seconds: float | None, value: object, where: Where, high: float) -> float:
    mend = f"write it like 300, 90s, 5m, 1h30m or 2d, at most {span_text(high)}"
    if seconds is None or not math.isfinite(seconds):
        raise where.error(value, f"is not a duration: {mend}")
    if not 0 <= seconds <= high:
        raise where.error(value, f"is out of range: {mend}")
    return seconds


def duration_seconds(text: str) -> float | None:
    """`text` as seconds when it is a duration (see `duration`), else None."""
    if len(text) > 64:
        return None
    decimal = _DECIMAL.fullmatch(text)
    if decimal:
        return float(decimal[1]) * _UNITS[decimal[2] or "s"]
    return prometheus_seconds(text)


def prometheus_seconds(text: str) -> float | None:
    """'1h30m' as 5400.0; None when `text` is not a Prometheus duration (as PromQL's ranges
    are written: whole numbers, units largest first, each once)."""
    if len(text) > 64 or not _PROMETHEUS_DURATION.fullmatch(text):
        return None
    parts = _PROMETHEUS_PART.findall(text)
    order = [list(_UNITS).index(unit) for _, unit in parts]
    if order != sorted(set(order)):  # '5m1h', '1m1m': Prometheus refuses them too
        return None
    return sum(int(n) * _UNITS[unit] for n, unit in parts)


# ------------------------------------------------------------------ times
EPOCH_MIN = 1e8  # a bare number this large is epoch seconds (1973-03-03 on); smaller: a typo
MAX_TIME_CHARS = 64


def moment(value: object, where: Where) -> datetime | timedelta:
    """A point in time: ISO 8601 with or without a `T` or a zone (UTC when none; `.5Z`
    fractions), epoch seconds, or a time relative to the data's end (`-2h`, `-1h30m`): a
    negative timedelta, resolved by `resolve_moment`. The one time grammar of every option."""
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise where.error(value, f"is not a time: {_TIME_MEND}")
    text = str(value).strip()
    if len(text) > MAX_TIME_CHARS:
        raise where.error(value, f"is not a time: {_TIME_MEND}")
    if text.startswith("-") and (ago := duration_seconds(text[1:].lower())) is not None:
        return -timedelta(seconds=ago)
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number) or number < EPOCH_MIN or number > 1e11:
            raise where.error(value, f"is not a time: {_TIME_MEND}")
        return datetime.fromtimestamp(number, UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise where.error(value, f"is not a time: {_TIME_MEND}") from None
    return _utc(parsed)


_TIME_MEND = (
    "write it in ISO 8601 (2026-11-26T09:30:00Z, 2026-11-26 09:30, UTC when no zone), as epoch "
    "seconds (1795000000), or relative to the data's end (-2h, -1h30m)"
)


def resolve_moment(point: datetime | timedelta, end: datetime | None, where: Where) -> datetime:
    """An absolute time from `moment`'s result: a relative one counts back from `end`."""
    if isinstance(point, datetime):
        return point
    if end is None:
        raise where.error(f"-{span_text(-point.total_seconds())}", "is relative to the data's end, "
                          "and there is no data to count back from")  # fmt: skip
    return end + point


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def span_text(seconds: float) -> str:
    """Seconds written in the duration grammar (`2d`, `90m`, `45s`): how errors show a span."""
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def text(value: object, where: Where) -> str:
    """A string (a number is taken as its text); a list, mapping, null or date is refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise where.error(value, "must be text")


def optional(item: dict[Any, Any], key: str, default: object) -> object:
    """`item[key]`, or `default` when it is absent or null (`for:` with nothing after it)."""
    value = item.get(key)
    return default if value is None else value


def check_keys(
    item: dict[Any, Any], known: Collection[str], path: Path | str, item_name: str | None,
    required: Collection[str] = (),
) -> None:
    """A misspelt key is an error that suggests the right one, never silently ignored; a
    `required` key that is missing is an error that names it."""
    head = f"{printable(path)}: " + (f"{item_name}: " if item_name else "")
    for key in item:
        if key in known:
            continue
        near = difflib.get_close_matches(str(key), sorted(known), n=1)
        hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(sorted(known))}"
        line = line_of(item, key)
        at = f" (line {line})" if line is not None else ""
        raise ConfigError(f"{head}unknown field {shown(key)}; {hint}{at}")
    for key in required:  # after the misspellings: 'threshhold' suggests 'threshold'
        if key not in item:
            raise ConfigError(f"{head}field {key!r} is missing")


# ------------------------------------------------------------------ bounded YAML
class _Mapping(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    lines: dict[Any, int]


def line_of(mapping: object, key: object) -> int | None:
    """The line `key` was written on, when `mapping` came from `load_yaml`."""
    lines = getattr(mapping, "lines", None)
    try:
        return lines.get(key) if isinstance(lines, dict) else None
    except TypeError:  # an unhashable key
        return None


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses documents nested deeper than MAX_DEPTH while composing
    (before Python's recursion limit is near) and keys given twice."""

    path: Path
    _depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ConfigError(
                    f"{printable(self.path)}, line {mark.line + 1}: nested more than {MAX_DEPTH} "
                    "deep; a rules file or spec nests 3 or 4 levels: check the brackets and indentation"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(loader: _Loader, node: MappingNode) -> Iterator[_Mapping]:
    data = _Mapping()
    data.lines = {}
    yield data
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE or not isinstance(key_node, ScalarNode):
            continue
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in first:
            raise ConfigError(
                f"{printable(loader.path)}, line {line}: key {shown(key)} is given twice (lines "
                f"{first[key]} and {line}); YAML would keep only the last: keep one of them"
            )
        first[key] = line
    data.update(loader.construct_mapping(node))
    for key_node, _ in node.value:  # after the merge: a merged key points at its anchor
        if isinstance(key_node, ScalarNode):
            data.lines[loader.construct_object(key_node)] = key_node.start_mark.line + 1


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: Node, path: Path) -> None:
    """Refuse a document whose aliases expand it past MAX_EXPANDED or MAX_DEPTH, or refer to
    themselves, before it is built. Iterative, each node visited once: costs the file's size."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            kids = _children(node)
            own = len(node.value) if isinstance(node, ScalarNode) else 0
            size[key] = 1 + own + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_EXPANDED or depth[key] > MAX_DEPTH:
                raise _expansion_error(path, node, size[key] > MAX_EXPANDED)
        elif key in open_nodes:
            raise ConfigError(
                f"{printable(path)}, line {node.start_mark.line + 1}: an alias refers to the "
                "anchor it is inside of (a structure that contains itself): write the values out"
            )
        elif key not in size:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((kid, False) for kid in _children(node))


def _expansion_error(path: Path, node: Node, too_big: bool) -> ConfigError:
    what = (
        f"its aliases expand it past {MAX_EXPANDED:,} nodes and characters"
        if too_big
        else f"its aliases nest it more than {MAX_DEPTH} deep"
    )
    return ConfigError(
        f"{printable(path)}, line {node.start_mark.line + 1}: {what} (a 'billion laughs' "
        "file?); a rules file or spec needs few anchors: write the values out"
    )


def _read_text(path: Path, what: str) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {printable(path)}: {exc.strerror or exc}") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"{printable(path)}: larger than {MAX_BYTES // 1024:,} KiB; {what} files are a few KB: "
            "is this the right file?"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{printable(path)}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); "
            "save the file as UTF-8"
        ) from exc


def load_yaml(path: Path | str, what: str) -> Any:
    """The YAML document of `path` (see module docstring); errors name the file and line."""
    path = Path(path)
    source = _read_text(path, what)
    loader: _Loader | None = None
    try:
        loader = _Loader(source)  # checks every character first
        loader.path = path
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, path)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f", line {mark.line + 1}" if mark is not None else ""
        problem = ": ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise ConfigError(
            f"{printable(path)}{at}: not valid YAML: {printable(problem)}; fix the {what} there"
        ) from exc
    except yaml.reader.ReaderError as exc:
        line = source[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(
            f"{printable(path)}, line {line}: not valid YAML: the control character U+{char:04X} "
            f"is not allowed in YAML; remove it from the {what}"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{printable(path)}: not valid YAML: {printable(exc)}") from exc
    except RecursionError as exc:  # a last resort: the depth checks above come first
        raise ConfigError(f"{printable(path)}: nested too deeply to read") from exc
    finally:
        if loader is not None:
            loader.dispose()
