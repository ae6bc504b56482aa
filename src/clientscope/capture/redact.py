"""Passwords never stored or shown: URL redaction, and scrubbing them out of server text.

A server may echo what it was sent: one with AUTH renamed away answers
`unknown command 'AUTH', with args beginning with: '<password>'`, and an
application may name its connection with its own URL. `Scrubber` replaces a
target's passwords (as given, and percent-encoded) with `***` in any text a
server sent before it is stored or shown, and also a leading fragment of eight
characters or more (servers cut long arguments short in their errors).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

__all__ = ["HIDDEN", "Scrubber", "redact_url", "split_userinfo"]

HIDDEN = "***"
MIN_FRAGMENT = 8  # a cut-short echo of a password is hidden from this many characters on
MIN_IN_DATA = 4  # shorter passwords are not searched for in whole replies (they'd hit anything)


def split_userinfo(url: str) -> tuple[str, str | None, str]:
    """`scheme://userinfo@rest` as (`scheme://`, userinfo or None, rest).

    The userinfo ends at the last `@` of the authority, so a password holding `@`,
    `/`, `:`, `#` or `?` unencoded is still all userinfo. A URL whose authority is
    empty (`unix:///run/redis@6379.sock`) has none; in a `unix://` URL it ends at the
    first `@/` (the socket path may hold `@`), else at the last `@`.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None, url
    # a socket path may hold '@' (systemd's redis@6379): there the userinfo ends at "@/"
    at = rest.find("@/") if scheme.lower() == "unix" else -1
    if at < 0:
        at = rest.rfind("@")
    if at < 0 or rest.startswith("/"):
        return scheme + sep, None, rest
    return scheme + sep, rest[:at], rest[at + 1 :]


def redact_url(url: str) -> str:
    """The URL with its password (or a lone userinfo, which redis-cli reads as one) as `***`."""
    head, userinfo, rest = split_userinfo(url)
    if userinfo is None:
        return url
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:{HIDDEN}" if colon else HIDDEN
    return f"{head}{shown}@{rest}"


class Scrubber:
    """Removes given secrets from text; see the module docstring."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        variants = set()
        for secret in secrets:
            if secret:
                variants.add(secret)
                variants.add(urllib.parse.quote(secret, safe=""))
        self._secrets = sorted(variants, key=len, reverse=True)  # longest first

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, value: str) -> str:
        """`value` with every secret, and then every leading fragment of one, as `***`."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, HIDDEN)
        for secret in self._secrets:
            if len(secret) > MIN_FRAGMENT:
                value = _hide_fragments(value, secret)
        return value

    def data(self, value: bytes) -> bytes:
        """A whole reply with every secret of `MIN_IN_DATA` characters or more as `***`."""
        for secret in self._secrets:
            raw = secret.encode()
            if len(secret) >= MIN_IN_DATA and raw in value:
                value = value.replace(raw, HIDDEN.encode())
        return value


def _hide_fragments(value: str, secret: str) -> str:
    """Hide each run of `value` that starts like `secret` for at least MIN_FRAGMENT characters."""
    head = secret[:MIN_FRAGMENT]
    start = value.find(head)
    while start >= 0:
        end = start + MIN_FRAGMENT
        while end < len(value) and end - start < len(secret) and value[end] == secret[end - start]:
            end += 1
        value = value[:start] + HIDDEN + value[end:]
        start = value.find(head, start + len(HIDDEN))
    return value
