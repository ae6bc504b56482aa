"""`--via` command lines, read word by word: option values, secrets and the instance name.

    kubectl exec -n redis redis-master-0 -- redis-cli -a PW   ->  redis-master-0
    ssh -i key.pem -p 2222 cache-1 redis-cli                  ->  cache-1
    redis-cli -h 10.0.0.5 -a PW -p 6380                       ->  10.0.0.5:6380

Each known program has its table of options that take a value (`-n redis`,
`--user=x`, `-p6380`) and of those whose value is a secret (`-a`, `--pass`,
`--token`, sshpass's `-p`); for a program not in a table, any option is taken
to have a value. So an instance name is never an option's value, and every
secret (also a password in a URL or in `REDISCLI_AUTH=...`) is found for
`redact` and the scrubber.
"""

from __future__ import annotations

import re
import shlex
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from clientscope.capture.redact import HIDDEN, redact_url, split_userinfo

__all__ = ["ViaCommand", "read_via"]

_CLIS = frozenset({"redis-cli", "valkey-cli", "keydb-cli"})
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:AUTH|PASS|PASSWORD|PWD|SECRET|TOKEN)[A-Za-z0-9_]*=", re.I)  # fmt: skip
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_REFERENCE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")
_REDIS_SCHEMES = ("redis://", "rediss://", "valkey://", "unix://")
_GENERIC_SECRETS = frozenset({"-a", "--pass", "--password", "--askpass-value", "--token"})


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


@dataclass(frozen=True)
class _Program:
    """What one program's options are; `role` says what its plain words are."""

    valued: frozenset[str]  # options whose value is the next word (or attached / after `=`)
    flags: frozenset[str] = frozenset()  # options that take no value
    secret: frozenset[str] = frozenset()  # valued options whose value is a secret
    role: str = "unknown"  # host: names the host / pod; runner: runs the next word; cli; unknown
    dest_after: frozenset[str] = frozenset()  # host: the plain word after one of these is the host
    skip: int = 0  # runner: plain words before the program it runs (timeout's duration)
    script: frozenset[str] = frozenset()  # options whose value is a shell command (sh -c)

    def value_words(self, option: str) -> int:
        """How many of the following words are `option`'s value (0 or 1)."""
        if option.startswith("--"):
            if "=" in option or option in self.flags:
                return 0
            return 1 if option in self.valued or self.role in ("unknown", "host") else 0
        for i, letter in enumerate(option[1:], start=1):
            short = f"-{letter}"
            if short in self.flags:
                continue
            attached = i + 1 < len(option)
            if short in self.valued or self.role != "cli":
                return 0 if attached else 1
            return 0
        return 0

    def is_secret(self, option: str) -> bool:
        secret = self.secret | _GENERIC_SECRETS if self.role == "unknown" else self.secret
        if option.split("=", 1)[0] in secret:
            return True
        return not option.startswith("--") and option[:2] in secret  # `-pPW`


_REDIS_CLI = _Program(
    valued=_words(
        "-h -p -s -a -u -r -i -n -t -d -D -X --user --pass --sni --cacert --cacertdir "
        "--tls-ciphers --tls-ciphersuites --cert --key --show-pushes --lru-test --rdb "
        "--functions-rdb --pipe-timeout --memkeys-samples --keystats-samples --pattern "
        "--quoted-pattern --count --cursor --top --intrinsic-latency --eval --cluster"
    ),
    flags=_words(
        "-2 -3 -x -c -e -4 -6 --raw --no-raw --quoted-input --csv --json --quoted-json --stat "
        "--latency --latency-history --latency-dist --replica --pipe --bigkeys --memkeys "
        "--keystats --hotkeys --scan --ldb --ldb-sync-mode --verbose --no-auth-warning --help "
        "--version --tls --insecure --askpass"
    ),
    secret=_words("-a --pass --askpass-value"),
    role="cli",
)
_KUBECTL = _Program(
    valued=_words(
        "-n --namespace -c --container --context --kubeconfig --cluster --user --token --as "
        "--as-group --as-uid -s --server --request-timeout --pod-running-timeout -f --filename "
        "--certificate-authority --client-certificate --client-key --tls-server-name "
        "--cache-dir --log-file -v --v --username --password --profile -l --selector"
    ),
    flags=_words("-i -t -q --stdin --tty --quiet --insecure-skip-tls-verify"),
    secret=_words("--token --password"),
    role="host",
    dest_after=_words("exec attach debug"),
)
_SSH = _Program(
    valued=_words("-B -b -c -D -E -e -F -I -i -J -L -l -m -O -o -P -p -Q -R -S -W -w"),
    flags=_words("-4 -6 -A -a -C -f -G -g -K -k -M -N -n -q -s -T -t -V -v -X -x -Y -y"),
    role="host",
)
_DOCKER = _Program(
    valued=_words(
        "-e --env --env-file -u --user -w --workdir --detach-keys -H --host -c --context "
        "--config -l --log-level --tlscacert --tlscert --tlskey -f --file -p --project-name"
    ),
    flags=_words("-i -t -d -T --interactive --tty --detach --privileged --tls --tlsverify"),
    role="host",
    dest_after=_words("exec"),
)
_RUNNERS = {
    "sudo": _Program(
        valued=_words("-u -g -C -D -h -p -r -t -U -T"),
        flags=_words("-E -H -n -S -i -s -k -K -b -A -P"),
        role="runner",
    ),
    "env": _Program(valued=_words("-u -C -S"), flags=_words("-i -0 -v"), role="runner"),
    "timeout": _Program(
        valued=_words("-s -k --signal --kill-after"),
        flags=_words("-v --verbose --foreground --preserve-status"),
        role="runner",
        skip=1,
    ),
    "nice": _Program(valued=_words("-n --adjustment"), role="runner"),
    "sshpass": _Program(valued=_words("-p -f -d -e -P"), secret=_words("-p"), role="runner"),
    "sh": _Program(
        valued=_words("-c -o"),
        flags=_words("-e -x -u -l -i -s -v"),
        role="runner",
        script=_words("-c"),
    ),
}
_PROGRAMS: dict[str, _Program] = {
    **dict.fromkeys(_CLIS, _REDIS_CLI),
    "kubectl": _KUBECTL,
    "oc": _KUBECTL,
    "ssh": _SSH,
    "docker": _DOCKER,
    "podman": _DOCKER,
    "nerdctl": _DOCKER,
    **_RUNNERS,
    "bash": _RUNNERS["sh"],
    "dash": _RUNNERS["sh"],
    "zsh": _RUNNERS["sh"],
}
_UNKNOWN = _Program(valued=frozenset())


@dataclass
class ViaCommand:
    """A `--via` command read: its words with secrets as `***`, the secrets, its instance name."""

    argv: tuple[str, ...]
    redacted: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    instance: str = ""


def read_via(argv: Sequence[str]) -> ViaCommand:
    """Read a `--via` command line; see the module docstring."""
    return _Reader(tuple(argv)).read()


def _program(word: str) -> _Program:
    return _PROGRAMS.get(PurePosixPath(word).name, _UNKNOWN)


class _Reader:
    """One pass over the words, switching tables at each program the command runs."""

    def __init__(self, argv: tuple[str, ...]) -> None:
        self.argv = argv
        self.out = ViaCommand(argv, redacted=list(argv))
        self.known: str | None = None  # host / pod / container given to a known program
        self.unknown: str | None = None  # last plain word given to a program not in a table
        self.cli: dict[str, str] = {}  # redis-cli's -h -p -s -u
        self.inner: str | None = None  # what a `sh -c` script names
        self.programs: list[str] = []  # the programs the command runs, in order

    def read(self) -> ViaCommand:
        i = self._start(0)
        if self.argv and _ASSIGNMENT.match(self.argv[0]):  # `NAME=value cmd`: as `env` reads it
            self.program, self.programs, i = _RUNNERS["env"], [], 0
        while i < len(self.argv):
            i = self._word(i)
        self.out.instance = self._instance()
        return self.out

    def _start(self, i: int) -> int:
        """Word i is a program: use its table from the next word on."""
        self.program = _program(self.argv[i]) if i < len(self.argv) else _UNKNOWN
        if i < len(self.argv):
            self.programs.append(PurePosixPath(self.argv[i]).name)
        self.plain: list[str] = []
        self.dest_seen = False
        return i + 1

    def _word(self, i: int) -> int:
        word, program = self.argv[i], self.program
        if word == "--":
            return self._start(i + 1)
        if word.startswith("-") and len(word) > 1:
            return self._option(i)
        if _ASSIGNMENT.match(word) and program.role in ("runner", "unknown"):
            if _SECRET_NAME.match(word):
                name, _, value = word.partition("=")
                self._secret(i, value, f"{name}={HIDDEN}")
            return i + 1
        self._url(i)
        return self._plain(i, word)

    def _plain(self, i: int, word: str) -> int:
        program = self.program
        if PurePosixPath(word).name in _PROGRAMS and program.role in ("runner", "unknown"):
            return self._start(i)
        if program.role == "runner":
            if len(self.plain) < program.skip:
                self.plain.append(word)
                return i + 1
            return self._start(i)
        if program.role == "host":
            if self.dest_seen:
                return self._start(i)  # the remote command
            if not program.dest_after or (self.plain and self.plain[-1] in program.dest_after):
                self.known, self.dest_seen = _host_of(word), True
            self.plain.append(word)
            return i + 1
        if program.role == "unknown":
            self.unknown = _host_of(word)
        return i + 1

    def _option(self, i: int) -> int:
        option, program = self.argv[i], self.program
        takes = program.value_words(option)
        value = self.argv[i + 1] if takes and i + 1 < len(self.argv) else None
        name, eq, attached = option.partition("=")
        if program.is_secret(option):
            if value is not None:
                self._secret(i + 1, value, HIDDEN)
            elif eq:
                self._secret(i, attached, f"{name}={HIDDEN}")
            elif not option.startswith("--") and len(option) > 2:
                self._secret(i, option[2:], f"{option[:2]}{HIDDEN}")
        if program.role == "cli":
            self._cli_option(name, attached if eq else value)
        if value is not None and option in program.script:
            self._script(i + 1, value)
            return i + 2
        if value is not None and not program.is_secret(option):
            self._url(i + 1)
        elif eq:
            self._url(i)
        return i + 1 + takes

    def _cli_option(self, name: str, value: str | None) -> None:
        keys = {"-h": "host", "-p": "port", "-s": "socket", "-u": "url"}
        if name in keys and value is not None:
            self.cli[keys[name]] = value

    def _secret(self, i: int, value: str, shown: str) -> None:
        if value and not _REFERENCE.fullmatch(value):  # `$REDIS_PASSWORD` is not the secret
            self.out.secrets.append(value)
            self.out.redacted[i] = shown

    def _script(self, i: int, script: str) -> None:
        """`sh -c '<script>'`: the script's own words, read the same way."""
        try:
            words = shlex.split(script)
        except ValueError:
            return
        inner = _Reader(tuple(words))
        inner.read()
        self.out.secrets += inner.out.secrets
        if inner.out.secrets:
            self.out.redacted[i] = shlex.join(inner.out.redacted)
        self.inner = inner.candidate()

    def _url(self, i: int) -> None:
        """A password in a URL word (`-u redis://:PW@h`, `--url=...`) is a secret too."""
        word = self.argv[i]
        if "://" not in word:
            return
        _, userinfo, _ = split_userinfo(word)
        if userinfo is not None:
            user, colon, password = userinfo.partition(":")
            if colon or word.lower().startswith(_REDIS_SCHEMES):  # redis-cli: a lone userinfo
                secret = password if colon else user  # is the password
                self.out.secrets += dict.fromkeys([secret, urllib.parse.unquote(secret)])
            self.out.redacted[i] = redact_url(word)

    def _instance(self) -> str:
        return self.candidate() or (self.programs[0] if self.programs else "via")

    def candidate(self) -> str | None:
        """The name the words give, if any: a host program's host, an unknown program's last
        plain word, redis-cli's address, then what a `sh -c` script names."""
        return self.known or self.unknown or self._cli_address() or self.inner

    def _cli_address(self) -> str | None:
        if "url" in self.cli:
            return _host_of(self.cli["url"])
        if "host" in self.cli or "port" in self.cli:
            host = self.cli.get("host", "127.0.0.1")
            return f"{host}:{self.cli['port']}" if "port" in self.cli else host
        return self.cli.get("socket")


def _host_of(word: str) -> str:
    """A plain word as a name: a URL becomes its host[:port], never its userinfo."""
    if "://" not in word:
        return word
    head, _, rest = split_userinfo(word)
    try:
        parts = urllib.parse.urlsplit(head + rest)
        port = parts.port
    except ValueError:
        return rest.split("/", 1)[0] or "via"
    host = parts.hostname or parts.path or "via"
    return f"{host}:{port}" if port else host
