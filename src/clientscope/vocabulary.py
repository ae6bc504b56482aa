"""The words clientscope judges with, typed, in one place: each has one spelling, one order and
one colour, and every module (analyses, the CLI, the report) takes them from here.

    Severity        critical > warning > info (findings and alert rules)
    ForecastVerdict what `forecast` says of a server's count
    GroupVerdict    what `leaks` says of a client group
    Role            why a client may legitimately sit idle or stay connected
    ErrorKind       why a capture failed (`captures.error_kind`)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SCENARIOS", "ErrorKind", "ForecastVerdict", "GroupVerdict", "Role", "Severity"]


class Severity(StrEnum):
    """How bad a finding or an alert is; `rank` orders them, most severe first."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @property
    def color(self) -> str:
        """The Rich colour of the severity on a terminal."""
        return _SEVERITY_COLOR[self]

    @classmethod
    def rank_of(cls, value: str) -> int:
        """The rank of a severity spelt as text (unknown ones last)."""
        try:
            return cls(value).rank
        except ValueError:
            return len(cls)


_SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
_SEVERITY_COLOR = {Severity.CRITICAL: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


class ForecastVerdict(StrEnum):
    """`forecast`: at the limit, heading for it, or not."""

    EXHAUSTED = "exhausted"  # the limit was reached in the window
    WILL_EXHAUST = "will_exhaust"  # groups keep growing toward it: a time to maxclients
    GROWING = "growing"  # groups keep growing, but maxclients is unknown
    PLATEAUED = "plateaued"  # the count grew, but no group keeps growing (warm-up, scale-out)
    STABLE = "stable"
    FALLING = "falling"


class GroupVerdict(StrEnum):
    """`leaks`: what a group's count and lifecycles say (non-normal roles are `excluded:<role>`)."""

    LEAK = "leak"  # grows with new connections that never close and go idle
    GROWTH = "growth"  # grows with connections in use
    SHRINKING = "shrinking"
    STABLE = "stable"


class Role(StrEnum):
    """Why a client may sit idle or stay connected; only `normal` clients are judged."""

    NORMAL = "normal"
    COLLECTOR = "collector"
    REPLICA = "replica"
    MASTER = "master"
    MONITOR = "monitor"
    PUBSUB = "pubsub"
    BLOCKED = "blocked"


class ErrorKind(StrEnum):
    """Why a capture failed."""

    CONNECTION_REFUSED = "connection_refused"
    TIMEOUT = "timeout"
    MAX_CLIENTS = "max_clients"  # "ERR max number of clients reached": the incident itself
    AUTH = "auth"
    LOADING = "loading"
    DENIED = "denied"  # command renamed / ACL without permission
    PROTOCOL = "protocol"
    IO = "io"
    OTHER = "other"


# the simulator's scenarios and what each holds (`simulate`; its --help lists them from here)
SCENARIOS: dict[str, str] = {
    "healthy": "stable named and unnamed pools that recycle connections; nothing wrong",
    "leak": "one service opens ~2 connections/min and never closes them; they go idle",
    "slow_leak": "1 connection/min from an unnamed client that also churns busy connections, "
    "beside a noisy fluctuating pool",
    "no_pooling": "a service opens a connection per request: high churn, short-lived ids",
    "oversized_pool": "many pods x a large pool, mostly idle, close to maxclients",
    "blocking": "consumers parked in BLPOP/BRPOP/XREAD BLOCK hold connections (flags=b)",
    "pubsub": "subscribers pile up (flags=P), some with a growing output buffer",
    "warmup": "pools warm up from empty to their size, then plateau",
    "scale_out": "an app scales from 4 to 10 pods; each new pod holds a stable pool",
    "daily_cycle": "pools grow and shrink with a daily load cycle (two days, 5 min captures)",
    "restart": "the server restarts mid-window: new run_id, ids restart, clients reconnect",
    "incident": "a leak until maxclients is reached: rejected connections, failed captures",
    "mixed": "20 minutes, maxclients 400: an API pool warming up then scaling out, a batch pool "
    "that cycles, BLPOP consumers, a connection-per-request client and two slow leaks (one "
    "named, one unnamed) adding ~100 connections/h on top of a steady ~85",
}
