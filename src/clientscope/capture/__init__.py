"""Capture from live Redis / Valkey servers into a dataset, and keep that dataset compact.

    from clientscope.capture import collect
    result = collect(["redis://127.0.0.1:6379"], "incident.cs", interval=10, duration=1800)

Modules: `targets` (URLs, `--via` commands, durations), `channel` (one reused
connection, or a command per request), `snapshot` (one capture -> one raw row),
`cluster` (CLUSTER NODES discovery), `collector` (thread pool, schedule, backoff),
`writer` (flushes each capture), `resp` (the small RESP2 client: limits, deadlines),
`via` (reading `--via` command lines), `redact` (passwords out of URLs and server
text), `compaction` (Delta Lake compaction and vacuum).
"""

from __future__ import annotations

from clientscope.capture.channel import Timeouts
from clientscope.capture.collector import CaptureEvent, CollectResult, TargetSummary, collect
from clientscope.capture.compaction import CompactResult, compact
from clientscope.capture.resp import ReplyLimits
from clientscope.capture.targets import (
    Target,
    TlsOptions,
    parse_duration,
    parse_size,
    parse_target,
    via_target,
)

__all__ = [
    "CaptureEvent",
    "CollectResult",
    "CompactResult",
    "ReplyLimits",
    "Target",
    "TargetSummary",
    "Timeouts",
    "TlsOptions",
    "collect",
    "compact",
    "parse_duration",
    "parse_size",
    "parse_target",
    "via_target",
]
