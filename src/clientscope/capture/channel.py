"""Talking to one server: a reused redis-py connection, or a command run per request (`--via`).

Both channels answer the same few requests with the exact bytes the server sent
and raise `CommandError` with an error kind from `schema.ERROR_KINDS`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from clientscope.capture.resp import RespConnection, RespError
from clientscope.capture.targets import Target
from clientscope.errors import CaptureError
from clientscope.schema import COLLECTOR_CLIENT_NAME

__all__ = [
    "Channel",
    "CommandError",
    "DirectChannel",
    "Timeouts",
    "ViaChannel",
    "classify",
    "open_channel",
]

_WRONG_ARGS = "wrong number of arguments"


class CommandError(CaptureError):
    """One request failed; `kind` is one of schema.ERROR_KINDS."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0
    read: float = 5.0


class Channel(Protocol):
    """What a capture needs from a server."""

    notes: dict[str, str]

    def command(self, *args: str) -> bytes | list[bytes]:
        """One Redis command; bulk replies as bytes, array replies as a list of bytes."""

    def config_get(self, names: Sequence[str]) -> dict[str, str]:
        """CONFIG GET for these names: name -> value, as the server sent them."""

    def close(self) -> None: ...


def classify(message: str) -> str:
    """The error kind of a failure, from its message (redis-py or redis-cli wording)."""
    text = message.lower()
    rules = (
        ("max number of clients", "max_clients"),
        ("loading", "loading"),
        ("noperm", "denied"),
        ("no permissions", "denied"),
        ("unknown command", "denied"),
        ("unknown subcommand", "denied"),
        ("wrongpass", "auth"),
        ("noauth", "auth"),
        ("invalid password", "auth"),
        ("invalid username", "auth"),
        ("authentication", "auth"),
        ("auth failed", "auth"),
        ("connection refused", "connection_refused"),
        ("timed out", "timeout"),
        ("timeout", "timeout"),
        ("protocol error", "protocol"),
        ("connection closed", "io"),
        ("connection reset", "io"),
        ("broken pipe", "io"),
        ("no such file", "io"),
    )
    return next((kind for needle, kind in rules if needle in text), "other")


def open_channel(target: Target, timeouts: Timeouts) -> Channel:
    if target.via is not None:
        return ViaChannel(target, timeouts)
    return DirectChannel(target, timeouts)


class DirectChannel:
    """One connection (RESP2, raw bytes), opened on first use and reused.

    It names itself `clientscope-collector` so analyses can leave it out. A
    failed request other than a refused command drops the connection; the next
    request reconnects.
    """

    def __init__(self, target: Target, timeouts: Timeouts) -> None:
        self.target = target
        self.timeouts = timeouts
        self.notes: dict[str, str] = {}
        self._conn: RespConnection | None = None
        self._multi_config = True

    def command(self, *args: str) -> bytes | list[bytes]:
        reused = self._conn is not None
        try:
            return self._command(args)
        except CommandError as exc:
            if not reused or exc.kind != "io":
                raise
        # The server had closed the reused connection (its idle `timeout`, CLIENT KILL, a
        # restart): one new connection, at once. If the server is full, that is what we record.
        self.notes["reconnected"] = "the server had closed the previous connection; reconnected"
        return self._command(args)

    def _command(self, args: tuple[str, ...]) -> bytes | list[bytes]:
        conn = self._connection()
        try:
            reply = conn.call(*args)
        except RespError as exc:
            error = _error(exc)
            if error.kind not in ("denied", "other"):
                self.close()
            raise error from exc
        except (OSError, ValueError) as exc:
            self.close()
            raise _error(exc) from exc
        if isinstance(reply, int) or reply is None:
            return str(reply if reply is not None else "").encode()
        return reply  # type: ignore[return-value]  # bulk, status or a flat array of bulks

    def config_get(self, names: Sequence[str]) -> dict[str, str]:
        if self._multi_config:
            try:
                return _pairs(self.command("CONFIG", "GET", *names))
            except CommandError as exc:
                if _WRONG_ARGS not in str(exc).lower():
                    raise
                self._multi_config = False  # Redis < 7: one pattern per CONFIG GET
        found: dict[str, str] = {}
        for name in names:
            found.update(_pairs(self.command("CONFIG", "GET", name)))
        return found

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _connection(self) -> RespConnection:
        if self._conn is None:
            conn = RespConnection(self.target, self.timeouts.connect, self.timeouts.read)
            try:
                conn.connect()
                self._introduce(conn)
            except (RespError, OSError, ValueError) as exc:
                conn.close()
                error = _error(exc)
                raise CommandError(
                    f"{error} (connecting to {self.target.address})", kind=error.kind
                ) from exc
            self._conn = conn
        return self._conn

    def _introduce(self, conn: RespConnection) -> None:
        """CLIENT SETNAME / SETINFO; a server that refuses them is still collected."""
        for args, note in (
            (("CLIENT", "SETNAME", COLLECTOR_CLIENT_NAME), "client_setname"),
            (("CLIENT", "SETINFO", "LIB-NAME", "clientscope"), "client_setinfo"),
        ):
            try:
                conn.call(*args)
            except RespError as exc:
                if _error(exc).kind not in ("denied", "other"):
                    raise
                if note == "client_setname":
                    self.notes[note] = f"could not name the collector connection: {exc}"


def _error(exc: BaseException) -> CommandError:
    if isinstance(exc, CommandError):
        return exc
    message = str(exc) or type(exc).__name__
    kind = classify(message)
    if kind == "other" and not isinstance(exc, RespError):
        if isinstance(exc, TimeoutError):
            kind = "timeout"
        elif isinstance(exc, ConnectionRefusedError):
            kind = "connection_refused"
        elif isinstance(exc, OSError):
            kind = "io"
        elif isinstance(exc, ValueError):
            kind = "protocol"
    if isinstance(exc, TimeoutError):
        message = f"timed out: {message}"
    elif isinstance(exc, OSError) and exc.strerror:
        message = exc.strerror  # "Connection refused", not "[Errno 111] Connection refused"
    return CommandError(message, kind=kind)


def _pairs(reply: bytes | list[bytes]) -> dict[str, str]:
    if isinstance(reply, bytes):
        raise CommandError(f"CONFIG GET answered {reply[:80]!r}, not a list", kind="protocol")
    items = [v.decode("utf-8", "replace") for v in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


# ---------------------------------------------------------------- --via
_ERROR_LINE = re.compile(rb"^(\(error\) )?[A-Z][A-Z_]+ \S")
_MULTILINE = {("CONFIG", "GET"), ("TIME",), ("CLUSTER", "SHARDS")}


class ViaChannel:
    """Runs `<command> <redis command>` (e.g. `kubectl exec ... -- redis-cli CLIENT LIST`) per request.

    redis-cli prints bulk replies byte for byte and array replies one element per
    line; an error reply is one line such as `NOPERM ...`. A password reaches
    redis-cli as REDISCLI_AUTH in its environment, never on its command line.
    """

    def __init__(self, target: Target, timeouts: Timeouts) -> None:
        assert target.via is not None
        self.target = target
        self.argv = target.via
        self.timeout = timeouts.connect + timeouts.read
        self.notes: dict[str, str] = {
            "via": "one process per request; its own connection is in CLIENT LIST"
        }
        self._env = dict(os.environ)
        if target.password:
            self._env["REDISCLI_AUTH"] = target.password

    def command(self, *args: str) -> bytes | list[bytes]:
        out = self._run(args)
        if tuple(a.upper() for a in args[:2]) in _MULTILINE or args[0].upper() == "TIME":
            return _lines(out)
        return _strip_cli_newline(out)

    def config_get(self, names: Sequence[str]) -> dict[str, str]:
        try:
            return _pairs(self.command("CONFIG", "GET", *names))
        except CommandError as exc:
            if _WRONG_ARGS not in str(exc).lower():
                raise
        found: dict[str, str] = {}
        for name in names:
            found.update(_pairs(self.command("CONFIG", "GET", name)))
        return found

    def close(self) -> None:
        """Nothing stays open between requests."""

    def _run(self, args: Sequence[str]) -> bytes:
        try:
            done = subprocess.run(
                [*self.argv, *args],
                capture_output=True,
                timeout=self.timeout,
                env=self._env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandError(
                f"{self.argv[0]} did not answer {args[0]} within {self.timeout:g}s", kind="timeout"
            ) from exc
        except OSError as exc:
            raise CommandError(
                f"cannot run {self.argv[0]}: {exc.strerror or exc}", kind="io"
            ) from exc
        _raise_for_cli_error(done, args)
        return done.stdout


def _raise_for_cli_error(done: subprocess.CompletedProcess[bytes], args: Sequence[str]) -> None:
    out, err = done.stdout, done.stderr
    first = out.split(b"\n", 1)[0]
    is_error_reply = bool(_ERROR_LINE.match(first)) and out.rstrip(b"\n").count(b"\n") == 0
    if done.returncode == 0 and not is_error_reply:
        return
    text = (first if is_error_reply else (err.strip() or out.strip())).decode("utf-8", "replace")
    text = text.removeprefix("(error) ")
    if not text:
        text = f"command exited with status {done.returncode}"
    kind = classify(text)
    if kind == "other" and done.returncode != 0:
        kind = "io"
    raise CommandError(f"{args[0]}: {text[:500]}", kind=kind)


def _strip_cli_newline(out: bytes) -> bytes:
    """redis-cli may add one newline after a bulk reply that already ends with one."""
    if out.endswith((b"\n\n", b"\r\n\n")):
        return out[:-1]
    return out


def _lines(out: bytes) -> list[bytes]:
    if out.endswith(b"\n"):
        out = out[:-1]
    return out.split(b"\n") if out else []
