"""What to collect from: servers named by URL or reached through a command.

A `Target` holds everything needed to reach one server. Its password is kept
out of `repr`, out of `origin` and out of everything written to a dataset: its
`scrubber` removes it (and any secret in a `--via` command) from server text.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from clientscope.capture.redact import Scrubber, redact_url, split_userinfo
from clientscope.capture.via import read_via
from clientscope.errors import ConfigError

__all__ = ["Target", "TlsOptions", "parse_duration", "parse_size", "parse_target", "via_target"]

PASSWORD_ENV = "REDISCLI_AUTH"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class TlsOptions:
    """TLS files for `rediss://` targets (paths to PEM files)."""

    ca_cert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure: bool = False  # skip certificate verification (self-signed test servers)


@dataclass(frozen=True)
class Target:
    """One server to collect from."""

    instance: str
    scheme: str  # redis | rediss | unix | via
    host: str | None = None
    port: int | None = None
    path: str | None = None  # unix socket path
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)
    tls: TlsOptions | None = None
    via: tuple[str, ...] | None = None  # argv prefix; the Redis command is appended

    @property
    def origin(self) -> str:
        """Where the data came from, as stored in the dataset: never a password."""
        if self.via is not None:
            return "via: " + shlex.join(read_via(self.via).redacted)
        user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
        if self.scheme == "unix":
            return f"unix://{user}{self.path}"
        db = f"/{self.db}" if self.db else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}{db}"

    @functools.cached_property
    def secrets(self) -> tuple[str, ...]:
        """The password, and any secret written in a `--via` command."""
        found = [self.password] if self.password else []
        if self.via is not None:
            found += read_via(self.via).secrets
        return tuple(dict.fromkeys(found))

    @functools.cached_property
    def scrubber(self) -> Scrubber:
        """Removes `secrets` from server text before it is stored or shown."""
        return Scrubber(self.secrets)

    @property
    def address(self) -> str:
        """host:port, the unix socket path, or the instance name for `--via` targets."""
        if self.scheme == "unix":
            return str(self.path)
        if self.via is not None:
            return self.instance
        return f"{self.host}:{self.port}"


def parse_duration(text: str | float, *, option: str = "--interval") -> float:
    """Seconds from "500ms", "10s", "2m", "1h30m", "1d" or a bare number of seconds: the one
    duration grammar (`config.duration`), above zero."""
    from clientscope.config import Where, duration

    seconds = duration(text, Where.option(option), high=366 * 86400.0)
    if seconds <= 0:
        raise ConfigError(f"{option}: {text!r} must be greater than zero")
    return seconds


def parse_size(text: str | int, *, option: str = "--max-reply-bytes") -> int:
    """Bytes from "256MiB", "64M", "1GiB", "512k" or a bare number (units are powers of 1024)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(
            f"{option}: cannot read {text!r} as a size; write it like 64MiB, 512KiB or 1GiB"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_target(
    url: str,
    *,
    instance: str | None = None,
    username: str | None = None,
    password: str | None = None,
    tls: TlsOptions | None = None,
    env: Mapping[str, str] | None = None,
) -> Target:
    """A target from `redis://[user[:password]@]host[:port][/db]`, `rediss://...` or `unix:///path`.

    The password is taken from the URL, else `password`, else the `REDISCLI_AUTH`
    environment variable (as redis-cli does).
    """
    if "://" not in url:
        url = f"redis://{url}"
    head, userinfo, rest = split_userinfo(url)  # a password may hold '@', '/', '#' unencoded
    parts = urllib.parse.urlsplit(head + rest)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"target {redact_url(url)!r}: scheme {scheme!r} is not supported; "
            "use redis://host:port, rediss://host:port (TLS) or unix:///path/to/socket"
        )
    name, colon, word = (userinfo or "").partition(":")
    user = urllib.parse.unquote(name) if name else username
    secret = urllib.parse.unquote(word) if colon and word else None
    secret = (
        secret or password or (env if env is not None else os.environ).get(PASSWORD_ENV) or None
    )
    if scheme == "unix":
        if not parts.path:
            raise ConfigError(f"target {redact_url(url)!r}: a unix:// URL needs a socket path")
        return Target(
            instance or parts.path, "unix", path=parts.path, username=user, password=secret
        )
    host, port, db = _host_port_db(url, parts)
    return Target(
        instance or f"{host}:{port}",
        scheme,
        host=host,
        port=port,
        db=db,
        username=user,
        password=secret,
        tls=(tls or TlsOptions()) if scheme == "rediss" else None,
    )


def _host_port_db(url: str, parts: urllib.parse.SplitResult) -> tuple[str, int, int]:
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"target {redact_url(url)!r}: the port is not a number") from exc
    host = parts.hostname or "127.0.0.1"
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(
            f"target {redact_url(url)!r}: the path {path!r} should be a database number, e.g. /0"
        )
    return host, port, int(path or 0)


def via_target(
    command: str,
    *,
    instance: str | None = None,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Target:
    """A target reached by running `command` with the Redis command appended.

    `command` is split like a shell would (`kubectl exec -n redis redis-0 -- redis-cli`).
    A password, when given or in `REDISCLI_AUTH`, reaches redis-cli through the
    environment, never the command line.
    """
    argv = tuple(shlex.split(command))
    if not argv:
        raise ConfigError(
            "--via: the command is empty; give e.g. 'kubectl exec redis-0 -- redis-cli'"
        )
    secret = password or (env if env is not None else os.environ).get(PASSWORD_ENV) or None
    return Target(instance or default_via_instance(argv), "via", password=secret, via=argv)


def default_via_instance(argv: Sequence[str]) -> str:
    """A short name for a `--via` target: the pod or host the command goes to, never an
    option's value (see `capture.via`).

    `kubectl exec -n redis redis-master-0 -- redis-cli` -> `redis-master-0`;
    `ssh cache-1 redis-cli` -> `cache-1`; `redis-cli -h H -a PW -p P` -> `H:P`;
    `./redis-cli-wrapper` -> `redis-cli-wrapper`.
    """
    return read_via(argv).instance


def with_instance(target: Target, instance: str) -> Target:
    return replace(target, instance=instance)
