"""The part of PromQL that alert rules replay: comparisons and arithmetic of the series this
tool exports (and redis_exporter's names for them), `and` / `or` / `unless`, an `instance`
matcher, and `rate` / `increase` of the connection counters over a range. Anything else is a
ConfigError that names the part not replayed. A recursive-descent parser over a bounded input
(MAX_EXPR_CHARS, MAX_EXPR_DEPTH): no eval, nothing a rule file writes is run.

    compile_promql(expr, where)   check an expression, with where it came from
    compiled(expr)                the checked expression as a Polars expression over the timeline
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace

import polars as pl

from clientscope.config import Where, prometheus_seconds, shown
from clientscope.errors import ConfigError
from clientscope.escape import printable

__all__ = ["MAX_EXPR_CHARS", "MAX_EXPR_DEPTH", "OPS", "SERIES", "RangeKey", "compile_promql", "compiled", "range_column"]

OPS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "==": "eq", "!=": "ne"}
# PromQL series -> (timeline column, is a counter): redis_exporter's names and `export`'s
SERIES: dict[str, tuple[str, bool]] = {
    "redis_connected_clients": ("connected_clients", False),
    "redis_config_maxclients": ("maxclients", False),
    "redis_blocked_clients": ("blocked_clients", False),
    "redis_connected_slaves": ("connected_slaves", False),
    "redis_connections_received_total": ("total_connections_received", True),
    "redis_rejected_connections_total": ("rejected_connections", True),
    "clientscope_connected_clients": ("used", False),
    "clientscope_maxclients": ("maxclients", False),
    "clientscope_utilization_ratio": ("utilization", False),
    "clientscope_blocked_clients": ("blocked_clients", False),
    "redis_evicted_clients_total": ("evicted_clients", True),
    "clientscope_connections_received_total": ("total_connections_received", True),
    "clientscope_rejected_connections_total": ("rejected_connections", True),
    "clientscope_evicted_clients_total": ("evicted_clients", True),
    # what `export` wrote before it wrote counters, for rule files written against it
    "clientscope_new_connections_per_second": ("new_conns_per_s", False),
    "clientscope_rejected_connections_per_second": ("rejected_per_s_export", False),
}

MAX_EXPR_CHARS = 2000  # an alert expression is a line or two
MAX_RANGE_S = 30 * 86400.0  # a range longer than 30 days is a typo
MAX_EXPR_DEPTH = 32  # brackets, signs and operators in a row

RangeKey = tuple[str, str, float]  # (rate | increase, counter column, range in seconds)
_UNIT = r"(?:ms|[ywdhms])"
_TOKEN = re.compile(
    r"(?P<space>\s+)"
    rf"|(?P<duration>(?:\d{{1,9}}+{_UNIT})++)(?![\w.])"
    r"|(?P<number>(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?)(?![\w:.])"
    r"|(?P<name>[A-Za-z_:][\w:]*+)"
    r"|(?P<string>\"(?:[^\"\\\n]|\\.)*+\"|'(?:[^'\\\n]|\\.)*+')"
    r"|(?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],@:`])",
    re.ASCII,
)
_LEVELS = (("or",), ("and", "unless"), ("==", "!=", ">", "<", ">=", "<="), ("+", "-"), ("*", "/"))
_AGGREGATIONS = frozenset((
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "limitk", "limit_ratio",
))  # fmt: skip
_NOT_REPLAYED = {
    "%": "the % operator", "^": "the ^ operator", "atan2": "atan2",
    "bool": "the bool modifier (compare a series with a threshold instead)",
    "on": "vector matching (on)", "ignoring": "vector matching (ignoring)",
    "group_left": "vector matching (group_left)", "group_right": "vector matching (group_right)",
    "offset": "offset", "@": "the @ modifier", "by": "by (aggregations)",
    "without": "without (aggregations)", "Inf": "Inf", "NaN": "NaN", "inf": "Inf", "nan": "NaN",
}  # fmt: skip
_COUNTERS = ", ".join(n for n, (_, counter) in SERIES.items() if counter)


@dataclass(frozen=True)
class _Token:
    kind: str  # space | duration | number | name | string | op | end
    text: str
    col: int  # 1-based


@dataclass(frozen=True)
class _Node:
    """A compiled (sub)expression: its value per capture, null where it has no result."""

    expr: pl.Expr
    scalar: bool = False
    inputs: frozenset[str] = frozenset()  # timeline columns it reads
    ranges: frozenset[RangeKey] = frozenset()
    compared: bool = False  # a comparison filters it
    depth: int = 1


class _PromQLError(ConfigError):
    """A part of an expression that is not replayed; turned into a ConfigError naming the rule."""


def compile_promql(expr: str, where: Where) -> _Node:
    """`expr` compiled, or a ConfigError: `where` said, then the part not supported."""
    if not isinstance(expr, str):
        raise where.error(expr, "must be text")
    try:
        return compiled(expr)
    except _PromQLError as exc:
        raise where.error(expr, str(exc)) from None


@functools.lru_cache(maxsize=256)
def compiled(expr: str) -> _Node:
    if len(expr) > MAX_EXPR_CHARS:
        raise _PromQLError(
            f"is {len(expr):,} characters long; an alert expression is a line or two: at most "
            f"{MAX_EXPR_CHARS:,}"
        )
    node = _Parser(_tokens(expr)).parse()
    if node.scalar or not node.compared:
        raise _PromQLError(
            "has no comparison with a series (such as '> 0.8'): it would be active at every "
            "capture; compare a series with a threshold"
        )
    return node


def _tokens(expr: str) -> list[_Token]:
    out, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.lastgroup is None:
            word = re.match(r"\S{1,20}", expr[pos:])
            raise _PromQLError(
                f"cannot read {shown(word[0] if word else expr[pos])} at column {pos + 1}"
            )
        if match.lastgroup != "space":
            out.append(_Token(match.lastgroup, match.group(), pos + 1))
        pos = match.end()
    out.append(_Token("end", "", len(expr) + 1))
    return out


class _Parser:
    """Recursive descent over the tokens, by PromQL's precedence; depth bounded."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens, self.i, self.depth = tokens, 0, 0

    def parse(self) -> _Node:
        node = self.binary(0)
        if self.peek().kind != "end":
            raise self.unexpected("an operator or the end")
        return node

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += token.kind != "end"  # the end token stays last
        return token

    def take_kind(self, kind: str, wanted: str) -> _Token:
        if self.peek().kind != kind:
            raise self.unexpected(wanted)
        return self.take()

    def expect(self, text: str) -> _Token:
        if self.peek().text != text:
            raise self.unexpected(repr(text))
        return self.take()

    def unexpected(self, wanted: str) -> _PromQLError:
        token = self.peek()
        if token.text in _NOT_REPLAYED:
            return _not_replayed(token)
        seen = "the end" if token.kind == "end" else shown(token.text)
        return _PromQLError(f"expected {wanted} at column {token.col}, found {seen}")

    def nest(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_EXPR_DEPTH:
            raise _PromQLError(
                f"nests more than {MAX_EXPR_DEPTH} deep at column {token.col} (brackets or signs); "
                "an alert expression nests a few levels"
            )

    def binary(self, level: int) -> _Node:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek().text in _LEVELS[level] and self.peek().kind in ("op", "name"):
            token = self.take()
            if self.peek().text in _NOT_REPLAYED:
                raise _not_replayed(self.peek())
            left = _combine(token, left, self.binary(level + 1))
        if self.peek().text in ("%", "^", "atan2"):
            raise _not_replayed(self.peek())
        return left

    def unary(self) -> _Node:
        token = self.peek()
        if token.text not in ("-", "+"):
            return self.primary()
        self.take()
        self.nest(token)
        node = self.unary()
        self.depth -= 1
        expr = -node.expr if token.text == "-" else node.expr
        return replace(node, expr=expr, depth=_depth(token, node.depth + 1))

    def primary(self) -> _Node:
        token = self.take()
        if token.kind == "number":
            return _number(token)
        if token.text == "(":
            self.nest(token)
            node = self.binary(0)
            self.expect(")")
            self.depth -= 1
            return node
        if token.kind == "name" and token.text in _NOT_REPLAYED:
            raise _not_replayed(token)
        if token.kind == "name" and (self.peek().text == "(" or token.text in _AGGREGATIONS):
            return self.call(token)
        if token.kind == "name":
            return self.selector(token, in_range_function=None)
        if token.text == "{":
            raise _PromQLError(
                f"a selector without a series name at column {token.col} is not supported"
            )
        self.i -= token.kind != "end"
        raise self.unexpected("a number, a series or '('")

    def call(self, token: _Token) -> _Node:
        if token.text in _AGGREGATIONS:
            raise _PromQLError(
                f"aggregation {token.text}() at column {token.col} is not supported: clientscope "
                "replays one series per instance, so write the expression without it"
            )
        if token.text not in ("rate", "increase"):
            raise _PromQLError(
                f"function {token.text}() at column {token.col} is not supported: the functions "
                f"replayed are rate() and increase() of a counter ({_COUNTERS})"
            )
        self.nest(self.expect("("))
        if self.peek().kind != "name" or self.peek().text in _NOT_REPLAYED:
            example = f"{token.text}({_COUNTERS.split(',')[0]}[5m])"
            raise self.unexpected(f"a counter with a range, such as {example},")
        node = self.selector(self.take(), in_range_function=token.text)
        self.expect(")")
        self.depth -= 1
        return node

    def selector(self, name: _Token, in_range_function: str | None) -> _Node:
        if name.text not in SERIES:
            raise _PromQLError(
                f"series {shown(name.text)} at column {name.col} is not one clientscope replays; "
                f"use {', '.join(SERIES)}"
            )
        column, counter = SERIES[name.text]
        instance = self.matchers() if self.peek().text == "{" else None
        seconds = self.range() if self.peek().text == "[" else None
        if self.peek().text in ("offset", "@"):
            raise _not_replayed(self.peek())
        value = pl.col(column).cast(pl.Float64)
        ranges: frozenset[RangeKey] = frozenset()
        if in_range_function is not None:
            if seconds is None or not counter:
                why = (
                    "needs a range, such as [5m]" if seconds is None else f"{name.text} is a gauge"
                )
                raise _PromQLError(
                    f"{in_range_function}({name.text}) at column {name.col} is not supported: {why}; "
                    f"rate() and increase() take a counter with a range: {_COUNTERS}"
                )
            key = (in_range_function, column, seconds)
            value, ranges = pl.col(range_column(key)), frozenset([key])
        elif seconds is not None:
            raise _PromQLError(
                f"the range after {name.text} (column {name.col}) is only replayed inside rate() or "
                "increase()"
            )
        if instance is not None:
            value = pl.when(instance).then(value)
        return _Node(value, inputs=frozenset([column]), ranges=ranges)

    def matchers(self) -> pl.Expr | None:
        self.nest(self.take())
        keep: pl.Expr | None = None
        wanted = 'a label matcher such as instance="cache-a"'
        while self.peek().text != "}":
            label = self.take_kind("name", wanted)
            if self.peek().text not in ("=", "!=", "=~", "!~"):
                raise self.unexpected("=, !=, =~ or !~")
            op = self.take()
            value = self.take_kind("string", "a quoted label value")
            if label.text != "instance" or op.text in ("=~", "!~"):
                raise _PromQLError(
                    f"label matcher {printable(label.text + op.text + value.text, 60)} at column "
                    f"{label.col} is not supported: clientscope's series carry only the instance "
                    'label, matched with = or != (instance="cache-a")'
                )
            name = re.sub(r"\\(.)", r"\1", value.text[1:-1])
            test = pl.col("instance") == name if op.text == "=" else pl.col("instance") != name
            keep = test if keep is None else keep & test
            if self.peek().text != ",":
                break
            self.take()
        self.expect("}")
        self.depth -= 1
        return keep

    def range(self) -> float:
        self.take()
        token = self.take_kind("duration", "a range such as 5m")
        seconds = prometheus_seconds(token.text)
        if self.peek().text.startswith(":"):  # ':1m' reads as a name: names may start with ':'
            raise _PromQLError(f"a subquery at column {token.col} is not supported")
        if seconds is None or not 1 <= seconds <= MAX_RANGE_S:
            raise _PromQLError(f"range [{token.text}] at column {token.col} must be from 1s to 30d")
        self.expect("]")
        return seconds


def _not_replayed(token: _Token) -> _PromQLError:
    return _PromQLError(
        f"{_NOT_REPLAYED[token.text]} at column {token.col} is not supported; clientscope replays "
        "comparisons of its series, + - * /, and/or/unless, rate() and increase()"
    )


def _number(token: _Token) -> _Node:
    value = float(token.text)
    if not math.isfinite(value):
        raise _PromQLError(f"number {shown(token.text)} at column {token.col} is not finite")
    return _Node(pl.lit(value, pl.Float64), scalar=True)


def _depth(token: _Token, depth: int) -> int:
    if depth > MAX_EXPR_DEPTH:
        raise _PromQLError(
            f"nests more than {MAX_EXPR_DEPTH} deep at column {token.col} (operators in a row); "
            "an alert expression nests a few levels"
        )
    return depth


def _combine(token: _Token, a: _Node, b: _Node) -> _Node:
    op = token.text
    base = _Node(pl.lit(None), a.scalar and b.scalar, a.inputs | b.inputs, a.ranges | b.ranges,
                 a.compared or b.compared, _depth(token, 1 + max(a.depth, b.depth)))  # fmt: skip
    if op in ("+", "-", "*", "/"):
        arith = {
            "+": a.expr + b.expr,
            "-": a.expr - b.expr,
            "*": a.expr * b.expr,
            "/": a.expr / b.expr,
        }
        return replace(base, expr=arith[op])
    if op in OPS:
        if a.scalar and b.scalar:
            raise _PromQLError(
                f"comparing two numbers at column {token.col} needs the bool modifier, which is not "
                "supported: compare a series with a threshold"
            )
        holds: pl.Expr = (
            getattr(a.expr, OPS[op])(b.expr) & a.expr.is_not_nan() & b.expr.is_not_nan()
        )
        return replace(
            base, expr=pl.when(holds).then(b.expr if a.scalar else a.expr), compared=True
        )
    if a.scalar or b.scalar:
        raise _PromQLError(f"{op!r} at column {token.col} needs a series on both sides")
    if op == "and":
        return replace(base, expr=pl.when(a.expr.is_not_null() & b.expr.is_not_null()).then(a.expr))
    if op == "unless":
        return replace(base, expr=pl.when(b.expr.is_null()).then(a.expr), compared=a.compared)
    return replace(base, expr=pl.coalesce(a.expr, b.expr), compared=a.compared and b.compared)


def range_column(key: RangeKey) -> str:
    fn, column, seconds = key
    return f"{fn}({column}[{seconds:g}s])"
