"""A small RESP2 client for the collector's one connection: TCP, TLS or unix socket.

Why not redis-py's connection: without hiredis its pure-Python reply parser
copies a large bulk reply several times; at 10,000 clients (a 3.5 MB CLIENT
LIST) that alone cost more than the server's own CLIENT LIST time. Here a bulk
reply is received in large pieces and joined once. Replies come back exactly as
sent: bulk strings as bytes, arrays as lists.

The server is not trusted. `RespReader` believes no declared length: a reply may
hold at most `ReplyLimits.max_bytes` (its bytes, plus `ELEMENT_COST` per array
element for the objects that hold them) and nest at most `max_depth` arrays; a
bulk string is read as its bytes arrive, so a server that declares 4 GB and
sends nothing costs nothing. Anything that is not RESP2 raises `ProtocolError`,
a reply cut short `ConnectionClosed`; nothing else. `RespConnection` gives each
command one deadline for its whole reply (not one per read), and gives up on a
reply still arriving shortly after `abort` is set (SIGTERM).
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clientscope.capture.targets import Target

__all__ = [
    "AuthError",
    "CommandClock",
    "ConnectionClosed",
    "ProtocolError",
    "Reply",
    "ReplyLimits",
    "RespConnection",
    "RespError",
    "RespReader",
    "pack",
]

Reply = bytes | int | list["Reply"] | None
MAX_REPLY_BYTES = 256 * 1024 * 1024  # a CLIENT LIST of 100,000 clients is about 40 MB
MAX_DEPTH = 8  # the collector's replies nest one level (TIME, CONFIG GET)
ELEMENT_COST = 64  # bytes charged per array element: the list slot and the object it holds
STOP_GRACE = 1.0  # seconds a reply may still take once the collector is told to stop
_MAX_LINE = 64 * 1024
_FIRST_PIECE = 4 * 1024 * 1024  # a bulk string's buffer at first; doubled as its bytes arrive
_CHUNK = 64 * 1024  # what one read for a line asks for
_POLL = 0.2  # seconds between looks at `abort` while a reply is slow to come
_NUMBER = re.compile(rb"-?[0-9]{1,19}")


class RespError(Exception):
    """The server answered with an error reply (`-ERR ...`, `-NOPERM ...`); the connection is fine."""


class ProtocolError(Exception):
    """The server sent something that is not a RESP2 reply, or one over a limit (size, nesting)."""


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the reply was complete."""


class AuthError(RespError):
    """The server refused AUTH (wrong password, or AUTH renamed away, or full)."""


class CommandClock:
    """One command's time: `seconds` from `start()`, and at most STOP_GRACE once `abort` is set.

    `left()` raises TimeoutError when the time is up. Shared by the commands of one
    connection, so a collector told to stop waits one grace in all, not one per command.
    """

    def __init__(self, abort: threading.Event | None) -> None:
        self.abort = abort
        self.seconds = 0.0
        self._deadline = 0.0
        self._abort_seen: float | None = None

    def start(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds

    def left(self) -> float:
        now = time.monotonic()
        if self.abort is not None and self.abort.is_set():
            if self._abort_seen is None:
                self._abort_seen = now
            if now - self._abort_seen > STOP_GRACE:
                raise TimeoutError("the collector is stopping; the reply was still arriving")
        left = self._deadline - now
        if left <= 0:
            raise TimeoutError(f"no complete reply within {self.seconds:g}s (--read-timeout)")
        return left

    def slice(self) -> float:
        """How long the next wait may block: what is left, in slices while `abort` may come."""
        left = self.left()
        return min(left, _POLL) if self.abort is not None else left


@dataclass(frozen=True)
class ReplyLimits:
    """How much one reply may take: bytes (with `ELEMENT_COST` per array element) and nesting."""

    max_bytes: int = MAX_REPLY_BYTES
    max_depth: int = MAX_DEPTH

    def __post_init__(self) -> None:
        if self.max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, not {self.max_bytes}")


def pack(args: Sequence[str | bytes]) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespReader:
    """Replies from a byte source `recv_into(view)`: fills the start of `view` with what has
    arrived (at least one byte, waiting if need be) and returns how many; 0 once the peer
    closed. A source that cannot answer in time raises (TimeoutError)."""

    def __init__(
        self, recv_into: Callable[[memoryview], int], limits: ReplyLimits | None = None
    ) -> None:
        self._recv_into = recv_into
        self.limits = limits or ReplyLimits()
        self._buf = bytearray()
        self._pos = 0
        self._budget = 0
        self._chunk = bytearray(_CHUNK)

    def read(self) -> Reply:
        """One whole reply; RespError for an error reply (after it was read whole)."""
        self._budget = self.limits.max_bytes
        return self._value(0)

    def _value(self, depth: int) -> Reply:
        line = self._line()
        kind, body = line[:1], line[1:]
        if kind == b"$":
            return self._bulk(self._number(body, "bulk length"))
        if kind == b"*":
            return self._array(self._number(body, "array length"), depth)
        if kind == b"+":
            return body
        if kind == b":":
            return self._number(body, "integer")
        if kind == b"-":
            raise RespError(body.decode("utf-8", "replace"))
        raise ProtocolError(f"Protocol error: unexpected reply {line[:40]!r}")

    def _array(self, n: int, depth: int) -> list[Reply] | None:
        if n < -1:
            raise ProtocolError(f"Protocol error: array length {n}")
        if n == -1:
            return None
        if depth >= self.limits.max_depth:
            raise ProtocolError(
                f"Protocol error: arrays nested more than {self.limits.max_depth} deep"
            )
        self._charge(n * ELEMENT_COST, f"an array of {n} elements")
        items: list[Reply] = []
        error: RespError | None = None
        for _ in range(n):  # read to the end even past an error element, so the next reply lines up
            try:
                items.append(self._value(depth + 1))
            except RespError as exc:
                error = error or exc
        if error is not None:
            raise error
        return items

    def _bulk(self, n: int) -> bytes | None:
        if n < -1:
            raise ProtocolError(f"Protocol error: bulk length {n}")
        if n == -1:
            return None
        self._charge(n, f"a bulk string of {n} bytes")
        data = self._take(n)
        if self._take(2) != b"\r\n":
            raise ProtocolError("Protocol error: a bulk string does not end with CRLF")
        return data

    def _number(self, body: bytes, what: str) -> int:
        if not _NUMBER.fullmatch(body):
            raise ProtocolError(f"Protocol error: {what} {body[:40]!r} is not a number")
        return int(body)

    def _charge(self, size: int, what: str) -> None:
        if size > self._budget:
            raise ProtocolError(
                f"Protocol error: {what} would take the reply past its limit of "
                f"{self.limits.max_bytes:,} bytes (--max-reply-bytes)"
            )
        self._budget -= size

    def _line(self) -> bytes:
        searched = 0  # bytes after _pos already searched for CRLF
        while True:
            end = self._buf.find(b"\r\n", self._pos + searched)
            if end >= 0:
                line = bytes(self._buf[self._pos : end])
                self._pos = end + 2
                self._charge(len(line) + 2, "a line")
                return line
            pending = len(self._buf) - self._pos
            if pending > _MAX_LINE:
                raise ProtocolError(f"Protocol error: a line longer than {_MAX_LINE} bytes")
            searched = max(0, pending - 1)
            self._fill()

    def _take(self, n: int) -> bytes:
        """The next n bytes: from the buffer, then received straight into one growing buffer,
        so memory follows the bytes that came, not the length a header declared."""
        have = len(self._buf) - self._pos
        if have >= n:
            with memoryview(self._buf) as view:
                data = bytes(view[self._pos : self._pos + n])
            self._pos += n
            return data
        out = bytearray(min(n, max(_FIRST_PIECE, have)))
        out[:have] = self._buf[self._pos :]
        self._buf.clear()
        self._pos = 0
        got = have
        while got < n:
            if got == len(out):
                out.extend(bytes(min(n, 2 * len(out)) - len(out)))
            received = self._recv_into(memoryview(out)[got:])
            if not received:
                raise ConnectionClosed("Connection closed by server in the middle of a reply.")
            got += received
        return bytes(out)

    def _fill(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        with memoryview(self._chunk) as view:
            received = self._recv_into(view)
            if not received:
                raise ConnectionClosed(
                    "Connection closed by server." if not self._buf
                    else "Connection closed by server in the middle of a reply."
                )  # fmt: skip
            self._buf += view[:received]


class RespConnection:
    """One blocking connection; `call` sends a command and reads its reply within one deadline."""

    def __init__(
        self,
        target: Target,
        connect_timeout: float,
        read_timeout: float,
        *,
        limits: ReplyLimits | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout  # for a whole reply, from sending the command
        self.limits = limits or ReplyLimits()
        self.clock = CommandClock(abort)
        self._sock: socket.socket | None = None
        self._reader: RespReader | None = None

    def connect(self) -> None:
        """Open the socket and AUTH / SELECT as the target says."""
        sock = self._open_socket()
        self._sock = sock
        self._reader = RespReader(self._recv_into, self.limits)
        if self.target.password:
            self._auth(self.target.username, self.target.password)
        if self.target.db:
            self.call("SELECT", str(self.target.db))

    def call(self, *args: str) -> Reply:
        if self._sock is None or self._reader is None:
            raise ConnectionError("not connected")
        self.clock.start(self.read_timeout)
        self._sock.settimeout(self.read_timeout)
        self._sock.sendall(pack(args))
        return self._reader.read()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._reader = None

    def _recv_into(self, view: memoryview) -> int:
        """What has arrived, before the command's deadline (or the grace after `abort`)."""
        assert self._sock is not None
        while True:
            self._sock.settimeout(self.clock.slice())
            try:
                return self._sock.recv_into(view)
            except TimeoutError:
                continue  # the clock raises once the time is up

    def _open_socket(self) -> socket.socket:
        target = self.target
        if target.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(str(target.path))
            except OSError:
                sock.close()
                raise
            return sock
        sock = socket.create_connection(
            (str(target.host), int(target.port or 6379)), self.connect_timeout
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.scheme == "rediss":
            try:
                return _tls_context(target).wrap_socket(sock, server_hostname=target.host)
            except OSError:
                sock.close()
                raise
        return sock

    def _auth(self, username: str | None, password: str) -> None:
        try:
            try:
                self.call("AUTH", *([username] if username else []), password)
            except RespError as exc:
                if not (username and "wrong number of arguments" in str(exc).lower()):
                    raise
                self.call("AUTH", password)  # Redis < 6: no ACL users
        except RespError as exc:
            raise AuthError(str(exc)) from None


def _tls_context(target: Target) -> ssl.SSLContext:
    tls = target.tls
    assert tls is not None
    context = ssl.create_default_context(cafile=str(tls.ca_cert) if tls.ca_cert else None)
    if tls.cert:
        context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
