"""One capture: TIME, CLIENT LIST, INFO and CONFIG GET from one server, as one raw row.

A failed capture is a row too (ok=False, error_kind, error_message): whatever
goes wrong while it is taken, a reply no check foresaw included, becomes the
row's error, never an exception out of `take_capture`. Commands the server
refuses (renamed, or denied by ACL) are noted once per run and not asked again;
the capture goes on with what is allowed. The target's secrets are scrubbed
from everything the row holds that the server wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from clientscope.capture.channel import Channel, CommandError, ConnectError
from clientscope.capture.redact import Scrubber
from clientscope.capture.resp import ProtocolError
from clientscope.capture.targets import Target

__all__ = ["CONFIG_NAMES", "CaptureOptions", "CaptureState", "add_content_hash", "take_capture"]

CONFIG_NAMES = (
    "maxclients",
    "timeout",
    "tcp-keepalive",
    "tcp-backlog",
    "client-output-buffer-limit",
)
_RUN_ID = re.compile(rb"(?:^|\n)run_id:([0-9a-fA-F]{1,64})(?![0-9a-fA-F])")  # 40 in practice
_INFO_COUNTS = re.compile(
    rb"^(connected_clients|connected_slaves|cluster_connections):(\d{1,18})\r?$", re.M
)
_INFO_MAXCLIENTS = re.compile(rb"(?:^|\n)maxclients:(\d{1,18})(?!\d)")
_NUMBERS = re.compile(r"\d+(?:\.\d+)?")
_DIGITS = re.compile(rb"[0-9]{1,12}")
_MALFORMED = (ValueError, TypeError, ArithmeticError, LookupError, RecursionError, ProtocolError)
_LAST_SECOND = 253402300799  # 9999-12-31 23:59:59 UTC
T = TypeVar("T")


@dataclass(frozen=True)
class CaptureOptions:
    """How each capture is taken (shared by every target of a run)."""

    info_sections: tuple[str, ...] = ("everything",)
    config_names: tuple[str, ...] = CONFIG_NAMES
    maxclients: int | None = None  # what the user says is configured (--maxclients)
    interval: float = 10.0
    slow_fraction: float = 0.1  # warn when CLIENT LIST takes more than this share of the interval
    collector_version: str = ""


@dataclass
class CaptureState:
    """What one target's worker remembers between captures."""

    run_id: str | None = None
    denied: dict[str, str] = field(default_factory=dict)  # command -> server's answer
    info_fallback: bool = False  # server knows no `INFO everything`: plain INFO
    announced: set[str] = field(default_factory=set)  # warnings already said once


@dataclass
class _Taken:
    """Replies and timings gathered while a capture runs."""

    server_time: datetime | None = None
    client_list: bytes | None = None
    info: bytes | None = None
    config: dict[str, str] | None = None
    ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def take_capture(
    channel: Channel, target: Target, options: CaptureOptions, state: CaptureState
) -> dict[str, Any]:
    """One capture attempt as a raw row (schema.RAW_SCHEMA columns)."""
    collector_time = datetime.now(UTC)
    start = time.perf_counter()
    taken = _Taken()
    error = _attempt(channel, lambda: _run_commands(channel, options, state, taken))
    total_ms = (time.perf_counter() - start) * 1000
    if error is None and taken.client_list is None and taken.info is None:
        error = CommandError("the server refused both CLIENT LIST and INFO", kind="denied")
    notes: dict[str, Any] = {}
    noted = _attempt(channel, lambda: notes.update(_notes(options, state, taken, channel.notes)))
    error = error or noted
    channel.notes.pop("reconnected", None)  # said for this capture only
    scrubber = target.scrubber
    if scrubber:
        notes, error = _scrubbed(notes, scrubber), _scrubbed_error(error, scrubber)
        taken.config = _scrubbed(taken.config, scrubber)
        taken.client_list = scrubber.data(taken.client_list) if taken.client_list else None
        taken.info = scrubber.data(taken.info) if taken.info else None
    return _row(target, options, taken, notes, error, collector_time, total_ms)


def _attempt(channel: Channel, step: Callable[[], None]) -> CommandError | None:
    """Run `step`; what goes wrong is the capture's error, whatever it was."""
    try:
        step()
    except CommandError as exc:
        return exc
    except Exception as exc:  # a reply no check foresaw: a fault row, never a dead worker
        channel.close()  # what the connection holds next is unknown
        kind = "protocol" if isinstance(exc, _MALFORMED) else "other"
        return CommandError(f"{type(exc).__name__}: {exc}"[:500], kind=kind)
    return None


def _run_commands(
    channel: Channel, options: CaptureOptions, state: CaptureState, taken: _Taken
) -> None:
    reply = _allowed(state, "TIME", taken, lambda: channel.command("TIME"))
    taken.server_time = server_time(reply) if reply is not None else None
    listed = _allowed(state, "CLIENT LIST", taken, lambda: channel.command("CLIENT", "LIST"))
    if isinstance(listed, list):
        raise CommandError(
            "Protocol error: CLIENT LIST answered an array, not text", kind="protocol"
        )
    taken.client_list = listed
    info = _allowed(state, "INFO", taken, lambda: _info(channel, options, state))
    taken.info = info if isinstance(info, bytes) else None
    if options.config_names:
        names = options.config_names
        taken.config = _allowed(state, "CONFIG GET", taken, lambda: channel.config_get(names))


def _scrubbed(value: T, scrubber: Scrubber) -> T:
    """Every string in `value` (nested dicts and lists too) without the secrets."""
    if isinstance(value, str):
        return scrubber.text(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {_scrubbed(k, scrubber): _scrubbed(v, scrubber) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_scrubbed(v, scrubber) for v in value]  # type: ignore[return-value]
    return value


def _scrubbed_error(error: CommandError | None, scrubber: Scrubber) -> CommandError | None:
    return None if error is None else CommandError(scrubber.text(str(error)), kind=error.kind)


def server_time(reply: bytes | list[bytes]) -> datetime:
    """TIME's [seconds, microseconds] as a UTC datetime; anything else is a protocol error."""
    if (
        isinstance(reply, list)
        and len(reply) == 2
        and all(isinstance(part, bytes) and _DIGITS.fullmatch(part) for part in reply)
    ):
        seconds, micros = int(reply[0]), int(reply[1])
        if micros <= 999_999 and seconds <= _LAST_SECOND:
            return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    shown = repr(reply)[:80]
    raise CommandError(
        f"Protocol error: TIME answered {shown}, not [seconds, microseconds] of a date up to "
        "year 9999",
        kind="protocol",
    )


def _info(channel: Channel, options: CaptureOptions, state: CaptureState) -> bytes:
    sections = () if state.info_fallback else options.info_sections
    reply = channel.command("INFO", *sections)
    if isinstance(reply, bytes) and not reply.strip() and sections:
        state.info_fallback = True  # e.g. Redis < 6 has no `INFO everything`
        reply = channel.command("INFO")
    if not isinstance(reply, bytes):
        raise CommandError("INFO did not answer with text", kind="protocol")
    return reply


def _allowed(state: CaptureState, name: str, taken: _Taken, call: Callable[[], T]) -> T | None:
    """Run one command, timing it; a refused command is remembered and skipped from then on."""
    if name in state.denied:
        return None
    start = time.perf_counter()
    try:
        return call()
    except CommandError as exc:
        if exc.kind != "denied" or isinstance(exc, ConnectError):
            raise  # a connection that could not be opened refused no command
        state.denied[name] = str(exc)
        return None
    finally:
        taken.ms[name] = (time.perf_counter() - start) * 1000


def _row(
    target: Target,
    options: CaptureOptions,
    taken: _Taken,
    notes: dict[str, Any],
    error: CommandError | None,
    collector_time: datetime,
    total_ms: float,
) -> dict[str, Any]:
    return {
        "capture_id": uuid.uuid4().hex,
        "instance": target.instance,
        "ts": taken.server_time or collector_time,
        "ts_source": "server_time" if taken.server_time else "collector_clock",
        "server_time": taken.server_time,
        "collector_time": collector_time,
        "source": "collect",
        "origin": target.origin,
        "ok": error is None,
        "error_kind": error.kind if error else None,
        "error_message": str(error) if error else None,
        "client_list": taken.client_list,
        "info": taken.info,
        "config": json.dumps(taken.config, sort_keys=True) if taken.config is not None else None,
        "time_ms": taken.ms.get("TIME"),
        "client_list_ms": taken.ms.get("CLIENT LIST"),
        "info_ms": taken.ms.get("INFO"),
        "config_ms": taken.ms.get("CONFIG GET"),
        "total_ms": total_ms,
        "content_sha256": None,  # filled by `add_content_hash`, off the capture thread
        "notes": json.dumps(notes, sort_keys=True) if notes else None,
        "collector_version": options.collector_version,
    }


def _notes(
    options: CaptureOptions, state: CaptureState, taken: _Taken, channel_notes: dict[str, str]
) -> dict[str, Any]:
    """The row's `notes` JSON: denied commands, maxclients seen, warnings, restarts."""
    notes: dict[str, Any] = dict(channel_notes)
    if state.denied:
        notes["denied"] = dict(sorted(state.denied.items()))
    maxclients = maxclients_seen(taken.config, taken.info, options.maxclients)
    if options.maxclients is not None:
        notes["maxclients"] = options.maxclients  # user-given; parse_raw reads `$.maxclients`
    if any(v is not None for v in maxclients.values()):
        notes["maxclients_seen"] = maxclients  # configured (user) vs enforced (CONFIG / INFO)
    warnings = [*taken.warnings, *_maxclients_warnings(maxclients)]
    listed_ms = taken.ms.get("CLIENT LIST") if taken.client_list is not None else None
    if listed_ms is not None and listed_ms > options.slow_fraction * options.interval * 1000:
        warnings.append(
            f"CLIENT LIST took {listed_ms:.0f} ms, more than {options.slow_fraction:.0%} of the "
            f"{options.interval:g} s interval; it blocks the server while it runs: "
            "consider a longer --interval"
        )
    run_id = run_id_of(taken.info)
    if run_id and state.run_id and run_id != state.run_id:
        notes["restart"] = {"previous_run_id": state.run_id, "run_id": run_id}
        warnings.append(f"server restarted: run_id changed from {state.run_id} to {run_id}")
    if run_id:
        state.run_id = run_id
    if warnings:
        notes["warnings"] = warnings
    return notes


def add_content_hash(row: dict[str, Any]) -> dict[str, Any]:
    """Set `content_sha256`: the SHA-256 of the CLIENT LIST bytes followed by the INFO bytes.

    The collector's writer thread does this, so hashing a large reply (about 4 ms
    for 10,000 clients) never delays the next capture.
    """
    if row["content_sha256"] is None and (
        row["client_list"] is not None or row["info"] is not None
    ):
        digest = hashlib.sha256(row["client_list"] or b"")
        digest.update(row["info"] or b"")
        row["content_sha256"] = digest.hexdigest()
    return row


def maxclients_seen(
    config: dict[str, str] | None, info: bytes | None, user: int | None
) -> dict[str, int | None]:
    """maxclients as CONFIG GET, INFO and the user report it, and the effective one."""
    from_config = _int_or_none(config.get("maxclients")) if config else None
    match = _INFO_MAXCLIENTS.search(info) if info else None
    from_info = int(match.group(1)) if match else None
    effective = from_config if from_config is not None else from_info
    return {
        "config": from_config,
        "info": from_info,
        "user": user,
        "effective": effective if effective is not None else user,
    }


def _maxclients_warnings(seen: dict[str, int | None]) -> list[str]:
    user, server = seen["user"], seen["config"] if seen["config"] is not None else seen["info"]
    if user is None or server is None or user == server:
        return []
    return [
        f"maxclients is configured as {user} (--maxclients) but the server enforces {server}; "
        "a server lowers maxclients to fit its open-file limit (ulimit -n)"
    ]


def run_id_of(info: bytes | None) -> str | None:
    match = _RUN_ID.search(info) if info else None
    return match.group(1).decode() if match else None


def clients_in(client_list: bytes | None) -> int | None:
    """How many clients a CLIENT LIST reply lists."""
    return client_list.count(b"\n") if client_list is not None else None


def connections_in(client_list: bytes | None, info: bytes | None) -> int | None:
    """What the server counts against maxclients: INFO connected_clients + connected_slaves +
    cluster_connections (as `summary` does), else the clients CLIENT LIST lists."""
    fields = dict(_INFO_COUNTS.findall(info)) if info else {}
    if b"connected_clients" not in fields:
        return clients_in(client_list)
    return sum(int(v) for v in fields.values())


def announce_once(state: CaptureState, messages: Sequence[str]) -> list[str]:
    """The messages not said before for this target (then remembered as said).

    Messages that differ only in their numbers (durations, counts) count as said.
    """
    fresh = []
    for message in messages:
        key = _NUMBERS.sub("#", message)
        if key not in state.announced:
            state.announced.add(key)
            fresh.append(message)
    return fresh


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
