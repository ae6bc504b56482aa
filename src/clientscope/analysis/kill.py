"""`kill_script`: CLIENT KILL commands for idle clients that are safe to disconnect — to review
and pipe into redis-cli; never run here.

Which clients, at the latest capture (or `at`) of one server (ids are per server):

* with a filter (group, ip, name, lib, user) or `idle_over`: the clients matching every one
  given, idle over `idle_over` seconds (600 when not given);
* with neither: the idle connections of the groups `leaks()` finds leaking on that server —
  connections idle since soon after they opened (idle >= 3/4 of their age, old enough to
  tell), as `leaks` counts them; with no leak, normal clients idle over 600 s;
* with `leaked`: that leak rule, whatever the filters (which narrow it, e.g. to one leaking
  group). A young leak's connections are idle for less than 600 s: this is what `diagnose`
  proposes, so its command picks the leak's connections however long it has run.

Never chosen, whatever the filters (`left_out` lists each one that matched, and why):

* blocked clients (flag `b`, or a blocking command such as BLPOP, BRPOP, BLMOVE, WAIT):
  idle by design while they wait, and a killed worker is a lost consumer;
* pub/sub subscribers (flag `P`, or sub / psub / ssub > 0): idle until a message comes;
* a client with a command in flight, read from its CLIENT LIST fields: in a transaction
  (flag `x`, `multi` >= 0 — Valkey shows 0 after WATCH — or `watch` > 0: keys WATCHed for
  an EXEC to come; Redis before 7.4 has no `watch` field, so there a client between WATCH
  and MULTI looks idle), input not yet processed (`qbuf` > 0), a command being executed
  (`argv-mem` > 0), a reply not yet sent (`obl` > 0 or `oll` > 0), or just unblocked
  (flag `u`). A field the server does not report counts as its idle value;
* a client without an address in the capture: its kill could not be pinned to it;
* replicas, masters, MONITOR and the collector's own connection, unless `include_protected`.

Each command is `CLIENT KILL ID <id> ADDR <addr> SKIPME yes`. CLIENT KILL ANDs its filters,
so once the server has restarted (ids start again at 1) it kills nothing — redis-cli answers
0 — unless a connection has both the id and the address. The address is one redis-cli
word, double-quoted when it holds anything but `[0-9A-Za-z.:/_-[]]` (unix socket paths).
The commands are the whole script: no `#` lines, which redis-cli would send as a command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    Tables,
    as_tables,
    pick_captures,
    snapshot_clients,
)
from clientscope.analysis.leaks import IDLE_AGE_RATIO, LeakReport, idle_min_age, leaks, went_idle
from clientscope.analysis.timeline import timeline
from clientscope.errors import AnalysisError, ConfigError
from clientscope.escape import printable

PROTECTED_ROLES = ("collector", "replica", "master", "monitor")
DEFAULT_IDLE_OVER = 600
COLUMNS = ("id", "addr", "name", "group", "role", "age", "idle", "cmd")
FILTERS = {"group": "group", "ip": "ip", "name": "name", "lib": "lib_name", "user": "user"}
WHY_LEFT_OUT = {  # what each kind of left-out client is, in words (for the review)
    "blocked": "blocked: waits in a blocking command (BLPOP, BRPOP, XREAD BLOCK, ...), idle by design",
    "pubsub": "pub/sub subscriber: idle until a message comes",
    "in flight": "a command in flight (transaction, unread input, executing, unsent reply)",
    "no address": "no address in the capture: the kill could not be pinned to the connection",
    "replica": "replica link (--include-protected lists it)",
    "master": "link to its master (--include-protected lists it)",
    "monitor": "MONITOR connection (--include-protected lists it)",
    "collector": "clientscope's own collector (--include-protected lists it)",
}


@dataclass(frozen=True)
class KillScript(ResultMixin):
    """The clients of one capture chosen to disconnect, why each was chosen, the commands that
    would do it, and the clients that matched but are never killed."""

    instance: str | None
    run_id: str | None
    capture_ts: datetime | None
    chosen_by: str  # how the clients were chosen, in words
    clients: pl.DataFrame  # COLUMNS + reason (why chosen) + command
    commands: tuple[str, ...]
    left_out: pl.DataFrame  # COLUMNS + left_out (a WHY_LEFT_OUT key) + reason (the fields seen)

    @property
    def protected_skipped(self) -> int:
        """Replicas, masters, MONITOR and the collector that matched but were left out."""
        return int(self.left_out.filter(pl.col("left_out").is_in(PROTECTED_ROLES)).height)

    def text(self) -> str:
        """The commands, one a line: the script to pipe into `redis-cli -h HOST -p PORT`."""
        return "".join(f"{c}\n" for c in self.commands)

    def header(self) -> list[str]:
        """What the script is, for the review: server, capture, run_id and how it was chosen."""
        return [
            f"kill-script for instance {printable(self.instance)}, capture {_when(self.capture_ts)}, "
            f"server run_id {printable(self.run_id)}. REVIEW BEFORE RUNNING: nothing has been run.",
            f"Client ids are only valid for run_id {printable(self.run_id)}: check "
            "`redis-cli INFO server` first; after a restart each kill matches nothing (answer 0).",
            f"Chosen: {printable(self.chosen_by, 1000)}.",
        ]

    def left_out_counts(self) -> list[tuple[str, int]]:
        """(kind, clients) of the clients left out, in WHY_LEFT_OUT order."""
        counts = dict(self.left_out.group_by("left_out").len().iter_rows())
        return [(kind, int(counts[kind])) for kind in WHY_LEFT_OUT if kind in counts]


def _when(ts: datetime | None) -> str:
    return "-" if ts is None else f"{ts:%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True)
class _Selection:
    """Which clients are candidates, why each one is, and the rule in words."""

    match: pl.Expr
    reason: pl.Expr
    chosen_by: str


def kill_script(
    ds: DatasetLike,
    *,
    idle_over: float | None = None,
    group: str | None = None,
    ip: str | None = None,
    name: str | None = None,
    lib: str | None = None,
    user: str | None = None,
    at: datetime | str | None = None,
    instance: str | None = None,
    include_protected: bool = False,
    leaked: bool = False,
) -> KillScript:
    """CLIENT KILL commands for the clients at the latest capture (or `at`) that are safe to
    disconnect. See the module docstring for which clients, and which never."""
    if leaked and idle_over is not None:
        raise ConfigError("--leaked picks the leak's connections by their age and idle time: "
                          "give it or --idle-over, not both")  # fmt: skip
    tables = as_tables(ds)
    cap = _one_capture(tables, instance, at)
    filters = {k: v for k, v in (("group", group), ("ip", ip), ("name", name), ("lib", lib),
                                 ("user", user)) if v is not None}  # fmt: skip
    if leaked:
        sel = _leaked(tables, cap, filters)
    elif filters or idle_over is not None:
        sel = _filtered(filters, DEFAULT_IDLE_OVER if idle_over is None else idle_over,
                        default=idle_over is None)  # fmt: skip
    else:
        sel = _leaking_or_default(tables, cap)
    rows = snapshot_clients(tables, [cap["capture_id"]]).collect()
    matched = rows.filter(sel.match.fill_null(False) & pl.col("id").is_not_null()).with_columns(
        left_out=_left_out(include_protected), reason=sel.reason
    )
    chosen = matched.filter(pl.col("left_out").is_null())
    chosen = chosen.sort(["idle", "id"], descending=[True, False]).select(
        *COLUMNS, _with_protected_note(include_protected)
    )
    commands = [kill_command(i, a) for i, a in chosen.select("id", "addr").iter_rows()]
    left_out = matched.filter(pl.col("left_out").is_not_null()).sort("left_out", "id")
    return KillScript(
        instance=cap["instance"], run_id=cap["run_id"], capture_ts=cap["ts"],
        chosen_by=sel.chosen_by,
        clients=chosen.with_columns(command=pl.Series(commands, dtype=pl.String)),
        commands=tuple(commands),
        left_out=left_out.select(*COLUMNS, "left_out", _left_out_reason()),
    )  # fmt: skip


def _one_capture(tables: Tables, instance: str | None, at: datetime | str | None) -> dict[str, Any]:
    caps = pick_captures(timeline(tables, instance), at)
    if caps.height > 1:  # client ids are per server: never guess which one
        names = ", ".join(sorted(caps["instance"].cast(pl.String).to_list()))
        raise ConfigError(
            f"the dataset holds {caps.height} instances ({names}) and CLIENT KILL ids are only "
            "valid on their own server: choose one with --instance"
        )
    return caps.row(0, named=True)


# ------------------------------------------------------------------ which clients are candidates
def _filtered(filters: dict[str, str], idle_over: float, *, default: bool) -> _Selection:
    match = (pl.col("idle") > idle_over) & _matching(filters)
    given = "".join(f"--{option} {value}, " for option, value in filters.items())
    reason = pl.concat_str(pl.lit(f"{given}idle "), pl.col("idle"), pl.lit(f" s > {idle_over:g} s"))
    limit = f"idle over {idle_over:g} s" + (" (the default)" if default else "")
    return _Selection(match, reason, given + limit)


def _leaking_groups(tables: Tables, cap: dict[str, Any]) -> tuple[LeakReport | None, list[str], str]:
    """The capture's server's leak report and its leaking groups; with no report, why not."""
    try:
        report = leaks(tables, instance=cap["instance"])
    except AnalysisError as exc:
        return None, [], f"no leak verdict ({exc})"
    mine = report.leaking.filter(pl.col("instance") == cap["instance"])
    return report, sorted(mine["group"].unique().to_list()), ""


def _leaking_or_default(tables: Tables, cap: dict[str, Any]) -> _Selection:
    """No filter: the leaking groups' idle connections; with no leak, the default idle rule."""
    report, groups, error = _leaking_groups(tables, cap)
    if report is None or not groups:
        return _default(f"no filter given and {error or 'no leak found'}")
    return _leak_rule(report, groups, "no filter given, and ")


def _leaked(tables: Tables, cap: dict[str, Any], filters: dict[str, str]) -> _Selection:
    """--leaked: the leak rule, narrowed by the filters; nothing when nothing leaks."""
    given = "".join(f"--{option} {value}, " for option, value in filters.items())
    report, groups, error = _leaking_groups(tables, cap)
    if report is None or not groups:
        said = f"--leaked {given}but {error or 'leaks finds no leaking group'}"
        return _Selection(pl.lit(False), pl.lit(""), said)
    sel = _leak_rule(report, groups, f"--leaked {given}and ")
    return _Selection(sel.match & _matching(filters), sel.reason, sel.chosen_by)


def _matching(filters: dict[str, str]) -> pl.Expr:
    """Every filter given (--group, --ip, ...) at once."""
    return pl.all_horizontal(pl.lit(True), *(pl.col(FILTERS[o]) == v for o, v in filters.items()))


def _leak_rule(report: LeakReport, groups: list[str], said: str) -> _Selection:
    """The leaking `groups`' connections idle since soon after they opened, as leaks counts them."""
    start, end = report.window_start, report.window_end
    span = (end - start).total_seconds() if start and end else 0.0
    min_age = idle_min_age(span)
    match = pl.col("group").is_in(groups) & went_idle(span)  # as leaks counts "went idle"
    reason = pl.concat_str(pl.lit("leaking group "), "group", pl.lit(", idle "), "idle",
                           pl.lit(" s of its "), "age", pl.lit(" s"))  # fmt: skip
    chosen_by = (
        f"{said}leaks finds {len(groups)} leaking group(s): {', '.join(groups)}; "
        f"their connections idle since soon after they opened (idle >= {IDLE_AGE_RATIO:.0%} of "
        f"age, age >= {min_age:.3g} s)"
    )
    return _Selection(match, reason, chosen_by)


def _default(why: str) -> _Selection:
    sel = _filtered({}, DEFAULT_IDLE_OVER, default=True)
    return _Selection(sel.match, sel.reason, f"{why}: normal clients {sel.chosen_by}")


# ------------------------------------------------------------------ which clients never
def _in_flight_signs() -> list[pl.Expr]:
    """Each sign of a command in flight as it shows (`qbuf=26`, `in MULTI (flag x)`), or null.
    A field the server did not report counts as its idle value."""

    def over(column: str, field: str, floor: int = 0) -> pl.Expr:
        value = pl.col(column).fill_null(floor)
        return pl.when(value > floor).then(pl.format(f"{field}={{}}", value))

    def flag(column: str, text: str) -> pl.Expr:
        return pl.when(pl.col(column).fill_null(False)).then(pl.lit(text))

    return [
        flag("is_multi", "in MULTI (flag x)"), over("multi", "multi", -1), over("watch", "watch"),
        over("qbuf", "qbuf"), over("argv_mem", "argv-mem"), over("obl", "obl"), over("oll", "oll"),
        flag("is_unblocked", "just unblocked (flag u)"),
    ]  # fmt: skip


def in_flight() -> pl.Expr:
    """A client with a command in flight (see the module docstring), from CLIENT LIST fields."""
    return pl.any_horizontal(*(sign.is_not_null() for sign in _in_flight_signs()))


def _left_out(include_protected: bool) -> pl.Expr:
    """The WHY_LEFT_OUT kind of a client that is never killed; null for the others."""
    never = ["blocked", "pubsub", *(() if include_protected else PROTECTED_ROLES)]
    return (
        pl.when(pl.col("role").is_in(never)).then(pl.col("role"))
        .when(in_flight()).then(pl.lit("in flight"))
        .when(pl.col("addr").is_null() | (pl.col("addr") == "")).then(pl.lit("no address"))
        .otherwise(pl.lit(None, pl.String))
        .alias("left_out")
    )  # fmt: skip


def _left_out_reason() -> pl.Expr:
    """What made a client left out: `flags b, cmd blpop`, `watch=1, qbuf=26`, or the kind."""
    flags_and_cmd = pl.concat_str(
        pl.lit("flags "), pl.col("flags").fill_null("?"), pl.lit(", cmd "), pl.col("cmd").fill_null("?")
    )
    return (
        pl.when(pl.col("left_out") == "in flight")
        .then(pl.concat_str(_in_flight_signs(), separator=", ", ignore_nulls=True))
        .when(pl.col("left_out").is_in(["blocked", "pubsub"]))
        .then(flags_and_cmd)
        .otherwise(pl.col("left_out").replace_strict(WHY_LEFT_OUT, default=None))
        .alias("reason")
    )


def _with_protected_note(include_protected: bool) -> pl.Expr:
    if not include_protected:
        return pl.col("reason")
    return (
        pl.when(pl.col("role").is_in(PROTECTED_ROLES))
        .then(pl.concat_str("reason", pl.lit("; "), "role", pl.lit(" listed by --include-protected")))
        .otherwise(pl.col("reason"))
        .alias("reason")
    )


# ------------------------------------------------------------------ the command
_PLAIN_WORD = re.compile(r"[0-9A-Za-z.:/_\[\]-]+")


def redis_cli_word(value: str) -> str:
    """`value` as one redis-cli argument: as is when plain, else double-quoted with `\\"`,
    `\\\\` and every byte outside printable ASCII as `\\xHH` (redis-cli's own escapes)."""
    if _PLAIN_WORD.fullmatch(value):
        return value
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def kill_command(client_id: int, addr: str) -> str:
    """`CLIENT KILL ID <id> ADDR <addr> SKIPME yes`: both must match (safe after a restart)."""
    return f"CLIENT KILL ID {int(client_id)} ADDR {redis_cli_word(addr)} SKIPME yes"
