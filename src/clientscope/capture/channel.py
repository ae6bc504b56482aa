"""Talking to one server: one reused RESP connection, or a command run per request (`--via`).

Both channels answer the same few requests with the exact bytes the server sent
and raise `CommandError` with an error kind from `schema.ERROR_KINDS`. Each
request has one deadline (`Timeouts.read`) for its whole reply, a reply at most
`ReplyLimits.max_bytes`, and gives up soon after `abort` is set. A reply of a
shape none of these commands has (nil, an integer, nested arrays) is a
`protocol` error. Every error text passes the target's scrubber first: a server
that echoes the password never gets it stored or shown.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

from clientscope.capture.resp import (
    AuthError,
    CommandClock,
    ProtocolError,
    Reply,
    ReplyLimits,
    RespConnection,
    RespError,
)
from clientscope.capture.targets import Target
from clientscope.errors import CaptureError
from clientscope.schema import COLLECTOR_CLIENT_NAME

__all__ = [
    "Channel",
    "CommandError",
    "ConnectError",
    "DirectChannel",
    "Timeouts",
    "ViaChannel",
    "classify",
    "open_channel",
]

_WRONG_ARGS = "wrong number of arguments"


class CommandError(CaptureError):
    """One request failed; `kind` is one of schema.ERROR_KINDS."""


class ConnectError(CommandError):
    """Connecting failed (socket, TLS, AUTH, SELECT): no command was refused."""


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0
    read: float = 5.0  # for one request's whole reply, not one read


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


def open_channel(
    target: Target,
    timeouts: Timeouts,
    *,
    limits: ReplyLimits | None = None,
    abort: threading.Event | None = None,
) -> Channel:
    if target.via is not None:
        return ViaChannel(target, timeouts, limits=limits, abort=abort)
    return DirectChannel(target, timeouts, limits=limits, abort=abort)


class _Scrubbing:
    """The part both channels share: errors leave with the target's secrets scrubbed."""

    target: Target

    @contextlib.contextmanager
    def scrubbing(self) -> Iterator[None]:
        try:
            yield
        except CommandError as exc:
            scrubber = self.target.scrubber
            if not scrubber:
                raise
            raise type(exc)(scrubber.text(str(exc)), kind=exc.kind) from None


class DirectChannel(_Scrubbing):
    """One connection (RESP2, raw bytes), opened on first use and reused.

    It names itself `clientscope-collector` so analyses can leave it out. A
    failed request other than a refused command drops the connection; the next
    request reconnects.
    """

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        *,
        limits: ReplyLimits | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        self.target = target
        self.timeouts = timeouts
        self.limits = limits
        self.abort = abort
        self.notes: dict[str, str] = {}
        self._conn: RespConnection | None = None
        self._multi_config = True

    def command(self, *args: str) -> bytes | list[bytes]:
        with self.scrubbing():
            return self._command_reconnecting(args)

    def config_get(self, names: Sequence[str]) -> dict[str, str]:
        with self.scrubbing():
            if self._multi_config:
                try:
                    return _pairs(self._command_reconnecting(("CONFIG", "GET", *names)))
                except CommandError as exc:
                    if _WRONG_ARGS not in str(exc).lower():
                        raise
                    self._multi_config = False  # Redis < 7: one pattern per CONFIG GET
            found: dict[str, str] = {}
            for name in names:
                found.update(_pairs(self._command_reconnecting(("CONFIG", "GET", name))))
            return found

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _command_reconnecting(self, args: tuple[str, ...]) -> bytes | list[bytes]:
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
            raise error from None
        except (OSError, ProtocolError) as exc:
            self.close()
            raise _error(exc) from None
        except BaseException:
            self.close()  # whatever it was, the next reply would not line up
            raise
        return _flat(reply, args)

    def _connection(self) -> RespConnection:
        if self._conn is None:
            conn = RespConnection(
                self.target,
                self.timeouts.connect,
                self.timeouts.read,
                limits=self.limits,
                abort=self.abort,
            )
            try:
                conn.connect()
                self._introduce(conn)
            except (RespError, OSError, ProtocolError) as exc:
                conn.close()
                error = _error(exc)
                kind = error.kind
                if isinstance(exc, AuthError) and kind in ("denied", "other"):
                    kind = "auth"  # AUTH renamed away or refused: not a command denied
                raise ConnectError(
                    f"{error} (connecting to {self.target.address})", kind=kind
                ) from None
            except BaseException:
                conn.close()
                raise
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
                    text = self.target.scrubber.text(str(exc))
                    self.notes[note] = f"could not name the collector connection: {text}"


def _error(exc: BaseException) -> CommandError:
    if isinstance(exc, CommandError):
        return exc
    message = str(exc).strip() or type(exc).__name__
    kind = classify(message)
    if isinstance(exc, ProtocolError):
        kind = "protocol"
    elif kind == "other" and not isinstance(exc, RespError):
        if isinstance(exc, TimeoutError):
            kind = "timeout"
        elif isinstance(exc, ConnectionRefusedError):
            kind = "connection_refused"
        elif isinstance(exc, OSError):
            kind = "io"
    if isinstance(exc, TimeoutError):
        kind = "timeout"
        message = f"timed out: {message}"
    elif isinstance(exc, OSError) and exc.strerror:
        message = exc.strerror  # "Connection refused", not "[Errno 111] Connection refused"
    return CommandError(message, kind=kind)


def _flat(reply: Reply, args: Sequence[str]) -> bytes | list[bytes]:
    """A bulk / status reply, or an array of them: the only shapes these commands answer."""
    if isinstance(reply, bytes):
        return reply
    if isinstance(reply, list) and all(isinstance(item, bytes) for item in reply):
        return reply  # type: ignore[return-value]  # every item is bytes, checked just above
    raise CommandError(
        f"Protocol error: {_command_name(args)} answered {_shape(reply)}, "
        "not text or a list of texts",
        kind="protocol",
    )


def _command_name(args: Sequence[str]) -> str:
    first = args[0].upper() if args else "?"
    return f"{first} {args[1].upper()}" if first in ("CLIENT", "CONFIG", "CLUSTER") else first


def _shape(reply: Reply) -> str:
    if reply is None:
        return "nil"
    if isinstance(reply, int):
        return f"the integer {reply}"
    return "an array holding nil, integers or arrays"


def _pairs(reply: bytes | list[bytes]) -> dict[str, str]:
    if isinstance(reply, bytes):
        raise CommandError(
            f"Protocol error: CONFIG GET answered {reply[:80]!r}, not a list", kind="protocol"
        )
    items = [v.decode("utf-8", "replace") for v in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


# ---------------------------------------------------------------- --via
_ERROR_LINE = re.compile(rb"^(\(error\) )?[A-Z][A-Z_]+ \S")
_MULTILINE = {("CONFIG", "GET"), ("TIME",), ("CLUSTER", "SHARDS")}


class ViaChannel(_Scrubbing):
    """Runs `<command> <redis command>` (e.g. `kubectl exec ... -- redis-cli CLIENT LIST`) per request.

    redis-cli prints bulk replies byte for byte and array replies one element per
    line; an error reply is one line such as `NOPERM ...`. A password reaches
    redis-cli as REDISCLI_AUTH in its environment, never on its command line. The
    command's output is read as it comes, within the deadline and the size limit.
    """

    def __init__(
        self,
        target: Target,
        timeouts: Timeouts,
        *,
        limits: ReplyLimits | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        assert target.via is not None
        self.target = target
        self.argv = target.via
        self.timeout = timeouts.connect + timeouts.read
        self.limits = limits or ReplyLimits()
        self.clock = CommandClock(abort)
        self.notes: dict[str, str] = {
            "via": "one process per request; its own connection is in CLIENT LIST"
        }
        self._env = dict(os.environ)
        if target.password:
            self._env["REDISCLI_AUTH"] = target.password

    def command(self, *args: str) -> bytes | list[bytes]:
        with self.scrubbing():
            return self._command(args)

    def config_get(self, names: Sequence[str]) -> dict[str, str]:
        with self.scrubbing():
            try:
                return _pairs(self._command(("CONFIG", "GET", *names)))
            except CommandError as exc:
                if _WRONG_ARGS not in str(exc).lower():
                    raise
            found: dict[str, str] = {}
            for name in names:
                found.update(_pairs(self._command(("CONFIG", "GET", name))))
            return found

    def close(self) -> None:
        """Nothing stays open between requests."""

    def _command(self, args: Sequence[str]) -> bytes | list[bytes]:
        out = self._run(args)
        if tuple(a.upper() for a in args[:2]) in _MULTILINE or args[0].upper() == "TIME":
            return _lines(out)
        return _strip_cli_newline(out)

    def _run(self, args: Sequence[str]) -> bytes:
        try:
            proc = subprocess.Popen(
                [*self.argv, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=self._env,
            )
        except OSError as exc:
            raise CommandError(
                f"cannot run {self.argv[0]}: {exc.strerror or exc}", kind="io"
            ) from None
        with proc:
            try:
                out, err = self._gather(proc, args)
            finally:
                if proc.poll() is None:
                    proc.kill()
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        _raise_for_cli_error(done, args)
        return out

    def _gather(self, proc: subprocess.Popen[bytes], args: Sequence[str]) -> tuple[bytes, bytes]:
        """stdout and stderr until the process ends, within the deadline and the size limit."""
        assert proc.stdout is not None and proc.stderr is not None
        got: dict[IO[bytes], list[bytes]] = {proc.stdout: [], proc.stderr: []}
        size = 0
        self.clock.start(self.timeout)
        with selectors.DefaultSelector() as selector:
            for stream in got:
                selector.register(stream, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select(self._slice(args)):
                    chunk = os.read(key.fd, 1024 * 1024)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    got[key.fileobj].append(chunk)  # type: ignore[index]
                    size += len(chunk)
                    if size > self.limits.max_bytes:
                        raise CommandError(
                            f"Protocol error: {self.argv[0]} printed more than "
                            f"{self.limits.max_bytes:,} bytes for {args[0]} (--max-reply-bytes)",
                            kind="protocol",
                        )
        while proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(self._slice(args))
        return b"".join(got[proc.stdout]), b"".join(got[proc.stderr])

    def _slice(self, args: Sequence[str]) -> float:
        try:
            return self.clock.slice()
        except TimeoutError as exc:
            raise CommandError(
                f"{self.argv[0]} did not answer {args[0]} within {self.timeout:g}s ({exc})",
                kind="timeout",
            ) from None


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
