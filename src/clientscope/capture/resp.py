"""A small RESP2 client for the collector's one connection: TCP, TLS or unix socket.

Why not redis-py's connection: without hiredis its pure-Python reply parser
copies a large bulk reply several times; at 10,000 clients (a 3.5 MB CLIENT
LIST) that alone cost more than the server's own CLIENT LIST time. Here a bulk
reply is read straight from a buffered socket file into one bytes object, so
the collector's read costs about what the server's write does. Replies come
back exactly as sent: bulk strings as bytes, arrays as lists.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import BinaryIO, cast

from clientscope.capture.targets import Target

__all__ = ["Reply", "RespConnection", "RespError", "pack"]

Reply = bytes | int | list["Reply"] | None
_MAX_LINE = 64 * 1024


class RespError(Exception):
    """The server answered with an error reply (`-ERR ...`, `-NOPERM ...`); the connection is fine."""


def pack(args: Sequence[str | bytes]) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespConnection:
    """One blocking connection; `call` sends a command and reads its reply."""

    def __init__(self, target: Target, connect_timeout: float, read_timeout: float) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None

    def connect(self) -> None:
        """Open the socket and AUTH / SELECT as the target says."""
        sock = self._open_socket()
        sock.settimeout(self.read_timeout)
        self._sock = sock
        self._file = cast(BinaryIO, sock.makefile("rb", buffering=256 * 1024))
        if self.target.password:
            self._auth(self.target.username, self.target.password)
        if self.target.db:
            self.call("SELECT", str(self.target.db))

    def call(self, *args: str) -> Reply:
        if self._sock is None or self._file is None:
            raise ConnectionError("not connected")
        self._sock.sendall(pack(args))
        return self._read()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._file = None

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
            self.call("AUTH", *([username] if username else []), password)
        except RespError as exc:
            if username and "wrong number of arguments" in str(exc).lower():
                self.call("AUTH", password)  # Redis < 6: no ACL users
            else:
                raise

    def _read(self) -> Reply:
        assert self._file is not None
        line = self._file.readline(_MAX_LINE)
        if not line.endswith(b"\r\n"):
            raise ConnectionError(
                "Connection closed by server." if not line else "Protocol error: line too long"
            )
        kind, body = line[:1], line[1:-2]
        if kind == b"$":
            return self._bulk(int(body))
        if kind == b"*":
            n = int(body)
            return None if n < 0 else [self._read() for _ in range(n)]
        if kind == b"+":
            return body
        if kind == b":":
            return int(body)
        if kind == b"-":
            raise RespError(body.decode("utf-8", "replace"))
        raise ConnectionError(f"Protocol error: unexpected reply {line[:40]!r}")

    def _bulk(self, n: int) -> bytes | None:
        assert self._file is not None
        if n < 0:
            return None
        data = self._file.read(n)
        if len(data) != n or self._file.read(2) != b"\r\n":
            raise ConnectionError("Connection closed by server in the middle of a reply.")
        return data


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
