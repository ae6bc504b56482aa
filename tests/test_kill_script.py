"""kill-script on real servers: it never lists a blocked, pub/sub or busy client, its stdout pipes
into a real `redis-cli` with no error and kills exactly the clients it chose, a restart makes
every kill a no-op, with no filter it proposes a leak's idle connections, and the review
names every kill with its reason.

Each scene is a real Valkey or Redis whose workdir (so its unix socket) has a space in its
path: idle clients over TCP and the unix socket, workers blocked in BLPOP and XREAD BLOCK, a
subscriber, a client inside MULTI, a client that sent half a command, and (Valkey, which
shows `watch=`) a client that WATCHes a key.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
import redis
from typer.testing import CliRunner

from clientscope.analysis import kill_script
from clientscope.capture import collect
from clientscope.cli import app
from clientscope.errors import ConfigError
from clientscope.simulation import SimulationResult, simulate
from servers import REDIS_SERVER, Server, serve, valkey_binary

REDIS_CLI = shutil.which("redis-cli")
KILLABLE = ("idle-app", "idle-unix")
BLOCKED = ("worker", "stream-reader")
IN_FLIGHT = ("txn", "half-sent", "watcher")
# Redis before 7.4 shows no sign of WATCH (no `watch=` field): a client between WATCH and EXEC
# looks idle there, and is listed
SHOWS_WATCH = {"valkey": True, "redis": False}
KINDS = [pytest.param("valkey", id="valkey"), pytest.param("redis", id="redis", marks=pytest.mark.redis)]


# ------------------------------------------------------------------ real servers and clients
@contextlib.contextmanager
def spaced_server(kind: str) -> Iterator[Server]:
    """A real server whose unix socket path holds a space."""
    binary = valkey_binary() if kind == "valkey" else REDIS_SERVER
    if binary is None:
        pytest.skip("redis-server is not installed (Debian's redis-server; `make test` installs it)")
    with serve(kind, binary, None, {}, workdir_prefix="cs kill ") as srv:
        yield srv


def clients_by_name(srv: Server) -> dict[str, list[dict[str, str]]]:
    """CLIENT LIST now, as field dicts by client name (the admin connection left out)."""
    with srv.client() as admin:
        text = admin.execute_command("CLIENT", "LIST").decode()
    out: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\S+?)=(.*?)(?= \S+=|$)", line))
        out.setdefault(fields.get("name", ""), []).append(fields)
    return out


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Scene:
    srv: Server
    held: list[redis.Redis] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def ids(self, *names: str) -> set[int]:
        now = clients_by_name(self.srv)
        return {int(c["id"]) for name in names for c in now.get(name, [])}

    def background(self, call: Callable[[], object]) -> None:
        def run() -> None:
            try:
                call()
            except redis.ConnectionError as exc:  # killed: the test then says so
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)


def _named(srv: Server, name: str, **kwargs: object) -> redis.Redis:
    r = srv.client(client_name=name, **kwargs)  # every connection of its pool carries the name
    r.ping()
    return r


@contextlib.contextmanager
def scene(kind: str) -> Iterator[Scene]:
    """Every kind of client, each idle for at least a second (so `--idle-over 0` matches it)."""
    with spaced_server(kind) as srv:
        s = Scene(srv)
        s.held += [_named(srv, "idle-app") for _ in range(2)]
        unix = redis.Redis(unix_socket_path=str(srv.unix_socket), client_name="idle-unix")
        unix.ping()
        s.held.append(unix)
        for _ in range(2):  # a worker waits in BLPOP as long as the queue is empty
            worker = _named(srv, "worker", socket_timeout=None)
            s.held.append(worker)
            s.background(lambda w=worker: w.blpop(["jobs"], timeout=0))
        reader = _named(srv, "stream-reader", socket_timeout=None)
        s.held.append(reader)
        s.background(lambda: reader.xread({"events": "$"}, block=0))
        notifier = srv.client(client_name="notifier")
        sub = notifier.pubsub()
        sub.subscribe("news")
        s.held.append(notifier)
        txn = _named(srv, "txn")
        txn.execute_command("MULTI")
        txn.execute_command("SET", "k", "v")  # QUEUED: EXEC is still to come
        s.held.append(txn)
        watcher = _named(srv, "watcher")
        watcher.execute_command("WATCH", "k")
        s.held.append(watcher)
        half = socket.create_connection((srv.host, srv.port))
        half.sendall(b"CLIENT SETNAME half-sent\r\n")
        assert half.recv(100) == b"+OK\r\n"
        half.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nab")  # half of a SET
        s.sockets.append(half)

        def all_idle() -> bool:
            now = clients_by_name(srv)
            mine = [c for name in (*KILLABLE, *BLOCKED, "notifier", *IN_FLIGHT) for c in now.get(name, [])]
            blocked = [c for name in BLOCKED for c in now.get(name, [])]
            return len(blocked) == 3 and all("b" in c["flags"] for c in blocked) and all(
                int(c["idle"]) >= 1 for c in mine
            )

        wait_for(all_idle, "every client blocked or idle for a second")
        try:
            yield s
        finally:
            with contextlib.suppress(redis.ConnectionError), srv.client() as admin:
                for client_id in s.ids(*BLOCKED):
                    admin.execute_command("CLIENT", "UNBLOCK", client_id)
            for thread in s.threads:
                thread.join(10)
            sub.close()
            for r in s.held:
                r.close()
            for sock in s.sockets:
                sock.close()


def capture(srv: Server, out: Path) -> Path:
    result = collect([srv.url], out, interval=0.1, count=1, handle_signals=False)
    assert result.captures_written == 1
    return out


def redis_cli(srv: Server, script: str) -> list[str]:
    """Pipe `script` into a real redis-cli; its answers, one a line."""
    if REDIS_CLI is None:
        pytest.skip("redis-cli is not installed (Debian's redis-tools)")
    done = subprocess.run([REDIS_CLI, "-h", srv.host, "-p", str(srv.port)], input=script,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0 and not done.stderr, done
    assert "ERR" not in done.stdout, done.stdout
    return done.stdout.splitlines()


def cli(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


@dataclass(frozen=True)
class Captured:
    path: Path
    kind: str
    ids: dict[str, set[int]]  # client name -> ids at the capture


@pytest.fixture(scope="module", params=KINDS)
def captured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Captured:
    """One capture of a scene, for the tests that only read it."""
    kind = str(request.param)
    with scene(kind) as s:
        path = capture(s.srv, tmp_path_factory.mktemp(kind) / "ds")
        names = (*KILLABLE, *BLOCKED, "notifier", *IN_FLIGHT)
        return Captured(path, kind, {name: s.ids(name) for name in names})


# ------------------------------------------------------------------ never the wrong client
def test_never_lists_blocked_pubsub_or_busy_clients(captured: Captured) -> None:
    ids = captured.ids
    ks = kill_script(captured.path, idle_over=0)
    watcher = set() if SHOWS_WATCH[captured.kind] else ids["watcher"]
    assert set(ks.clients["id"]) == ids["idle-app"] | ids["idle-unix"] | watcher
    kinds = {kind: set(part["id"]) for (kind,), part in ks.left_out.partition_by("left_out", as_dict=True).items()}
    assert kinds["blocked"] == ids["worker"] | ids["stream-reader"]  # BLPOP, and XREAD by flag b
    assert kinds["pubsub"] == ids["notifier"]
    busy = ids["txn"] | ids["half-sent"] | (ids["watcher"] - watcher)
    assert kinds["in flight"] == busy
    reasons = dict(ks.left_out.select("id", "reason").iter_rows())
    assert "in MULTI (flag x)" in reasons[min(ids["txn"])]
    assert "qbuf=" in reasons[min(ids["half-sent"])]
    assert "cmd blpop" in reasons[min(ids["worker"])]


@pytest.mark.parametrize("option", [{"group": "worker"}, {"name": "stream-reader"}, {"name": "notifier"},
                                    {"name": "txn"}, {"group": "half-sent"}])  # fmt: skip
def test_a_filter_that_names_them_still_lists_none(captured: Captured, option: dict[str, str]) -> None:
    ks = kill_script(captured.path, idle_over=0, **option)
    assert ks.commands == () and ks.clients.is_empty()
    assert ks.left_out.height >= 1
    ks = kill_script(captured.path, idle_over=0, include_protected=True, **option)
    assert ks.commands == ()


# ------------------------------------------------------------------ the commands, run for real
@pytest.mark.parametrize("kind", KINDS)
def test_stdout_pipes_into_redis_cli_and_kills_only_the_chosen(kind: str, tmp_path: Path) -> None:
    with scene(kind) as s:
        path = capture(s.srv, tmp_path / "ds")
        killable = (*KILLABLE, *(() if SHOWS_WATCH[kind] else ("watcher",)))
        chosen, spared = s.ids(*killable), s.ids(*BLOCKED, "notifier", "txn", "half-sent")
        stdout, _ = cli("kill-script", str(path), "--idle-over", "0")
        n = len(stdout.splitlines())
        assert n == len(chosen) == len(killable) + 1  # two idle-app
        assert redis_cli(s.srv, stdout) == ["1"] * n  # one client killed per command, no error
        now = clients_by_name(s.srv)
        alive = {int(c["id"]) for group in now.values() for c in group}
        assert not chosen & alive and spared <= alive
        assert all("b" in c["flags"] for name in BLOCKED for c in now[name])  # still waiting
        assert redis_cli(s.srv, stdout) == ["0"] * n  # run twice: nothing left to kill, no error
        assert not s.errors


def test_after_a_restart_the_script_kills_nothing(tmp_path: Path) -> None:
    """Ids restart at 1, so new connections take the script's ids: ID and ADDR must both match."""
    with spaced_server("valkey") as srv:
        held = [_named(srv, "idle-app") for _ in range(3)]
        wait_for(lambda: all(int(c["idle"]) >= 1 for c in clients_by_name(srv)["idle-app"]), "idle")
        path = capture(srv, tmp_path / "ds")
        ks = kill_script(path, idle_over=0)
        assert ks.clients.height == 3
        srv.restart()
        fresh = [_named(srv, "after-restart") for _ in range(max(ks.clients["id"]) + 2)]
        reused = set(ks.clients["id"]) & {int(c["id"]) for c in clients_by_name(srv)["after-restart"]}
        assert reused == set(ks.clients["id"])  # the same ids, other connections
        assert redis_cli(srv, ks.text()) == ["0"] * 3
        assert len(clients_by_name(srv)["after-restart"]) == len(fresh)
        for r in held + fresh:
            r.close()


@pytest.mark.parametrize("addr", ["10.0.0.7:6379", "[::1]:6379", "fe80::1%eth0:6379",
                                  "/tmp/cs kill x/server.sock:0", "[/run/a b.sock:0]:0",
                                  'a"b\\c', "tab\there\nnewline", "ünïcode ☃"])  # fmt: skip
def test_an_address_is_one_redis_cli_word(addr: str) -> None:
    """redis-cli reads the word back as the address, whatever it holds (ECHO shows what it got)."""
    from clientscope.analysis.kill import kill_command, redis_cli_word

    word = redis_cli_word(addr)
    assert kill_command(7, addr) == f"CLIENT KILL ID 7 ADDR {word} SKIPME yes"
    assert word.isascii() and "\n" not in word
    with spaced_server("valkey") as srv:
        if REDIS_CLI is None:
            pytest.skip("redis-cli is not installed (Debian's redis-tools)")
        done = subprocess.run([REDIS_CLI, "-p", str(srv.port)], input=f"ECHO {word}\n".encode(),
                              capture_output=True, timeout=30, check=True)  # fmt: skip
        assert done.stdout == addr.encode() + b"\n"


# ------------------------------------------------------------------ no filter: the leak
def leak_while_collecting(srv: Server, out: Path) -> list[redis.Redis]:
    """A leaker opens a connection every 0.2 s and never uses it again, beside a busy pool and
    a BLPOP worker of the leak's name; returns the leaked connections (still open). The window
    is as long as `leaks` needs to judge second-resolution idle times (8 s, as in
    test_analysis_real_server)."""
    stop = threading.Event()
    leaked: list[redis.Redis] = []
    pool = redis.Redis(host=srv.host, port=srv.port, client_name="api-pool")

    def leaker() -> None:
        while not stop.is_set():
            leaked.append(_named(srv, "leaky-worker"))
            stop.wait(0.2)

    def busy() -> None:
        while not stop.is_set():
            pool.set("k", "v")
            stop.wait(0.02)

    threads = [threading.Thread(target=f) for f in (leaker, busy)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        collect([srv.url], out, interval=0.25, count=32, handle_signals=False)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        pool.close()
    return leaked


@pytest.mark.slow
def test_no_filter_and_a_leak_proposes_the_leaking_groups_idle_connections(tmp_path: Path) -> None:
    with spaced_server("valkey") as srv:
        s = Scene(srv)
        worker = _named(srv, "leaky-worker", socket_timeout=None)  # the leak's name, but blocked
        s.background(lambda: worker.blpop(["jobs"], timeout=0))
        leaked = leak_while_collecting(srv, tmp_path / "ds")
        ks = kill_script(tmp_path / "ds")
        assert "leaking group(s): leaky-worker" in ks.chosen_by
        assert set(ks.clients["group"]) == {"leaky-worker"}
        assert ks.clients.height >= 10
        assert ks.clients["reason"].str.starts_with("leaking group leaky-worker, idle ").all()
        assert ks.left_out["left_out"].to_list().count("blocked") == 1  # the worker in BLPOP
        _, review = cli("kill-script", str(tmp_path / "ds"))
        assert "Chosen: no filter given, and leaks finds 1 leaking group(s): leaky-worker" in review
        assert redis_cli(srv, ks.text()) == ["1"] * ks.clients.height
        now = clients_by_name(srv)
        assert len(now["leaky-worker"]) == len(leaked) + 1 - ks.clients.height
        assert "api-pool" not in ks.clients["group"].to_list()
        assert any("b" in c["flags"] for c in now["leaky-worker"])  # still waiting in BLPOP
        with srv.client() as admin:
            admin.lpush("jobs", "done")
        for t in s.threads:
            t.join(10)
        assert not s.errors
        for r in [*leaked, worker]:
            r.close()


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimulationResult]:
    root = tmp_path_factory.mktemp("sims")
    return {sc: simulate(sc, root / sc, seed=4, captures=100, clients=120)
            for sc in ("incident", "healthy")}  # fmt: skip


def test_no_filter_on_a_simulated_incident_proposes_only_the_leak(sims: dict[str, SimulationResult]) -> None:
    path = sims["incident"].path
    ks = kill_script(path)
    assert ks.chosen_by.startswith("no filter given, and leaks finds 1 leaking group(s): orders-svc")
    assert set(ks.clients["group"]) == {"orders-svc"} and ks.clients.height > 10
    assert (ks.clients["idle"] >= 0.75 * ks.clients["age"]).all()
    explicit = kill_script(path, idle_over=600)  # an explicit --idle-over is a filter: no leak rule
    assert explicit.chosen_by == "idle over 600 s" and (explicit.clients["idle"] > 600).all()


def test_leaked_picks_the_leak_rule_narrowed_by_the_filters(sims: dict[str, SimulationResult]) -> None:
    """--leaked (what diagnose proposes): the connections the no-filter rule picks, of the group
    given; a group that does not leak gets none, and --idle-over with it is refused."""
    path = sims["incident"].path
    everything = kill_script(path)
    one = kill_script(path, group="orders-svc", leaked=True)
    assert one.clients.height > 10
    assert one.clients["id"].sort().to_list() == everything.clients.filter(
        pl.col("group") == "orders-svc"
    )["id"].sort().to_list()
    assert one.chosen_by.startswith("--leaked --group orders-svc, and leaks finds 1 leaking group(s)")
    calm = kill_script(path, group="api-pool", leaked=True)
    assert calm.clients.is_empty() and calm.commands == ()
    assert kill_script(sims["healthy"].path, leaked=True).chosen_by == (
        "--leaked but leaks finds no leaking group"
    )
    with pytest.raises(ConfigError, match="give it or --idle-over, not both"):
        kill_script(path, leaked=True, idle_over=60)


def test_no_filter_and_no_leak_keeps_the_600_s_default(sims: dict[str, SimulationResult]) -> None:
    ks = kill_script(sims["healthy"].path)
    assert ks.chosen_by == "no filter given and no leak found: normal clients idle over 600 s (the default)"
    assert (ks.clients["idle"] > 600).all()
    assert kill_script(sims["incident"].path, group="orders-svc").chosen_by == (
        "--group orders-svc, idle over 600 s (the default)"
    )


# ------------------------------------------------------------------ the review
def test_the_review_names_every_kill_with_its_reason(captured: Captured, tmp_path: Path) -> None:
    ks = kill_script(captured.path, idle_over=0)
    stdout, review = cli("kill-script", str(captured.path), "--idle-over", "0")
    assert stdout.splitlines() == list(ks.commands)
    assert all(re.fullmatch(r"CLIENT KILL ID \d+ ADDR \S+ SKIPME yes|CLIENT KILL ID \d+ ADDR \".*\" SKIPME yes", line)
               for line in stdout.splitlines())  # fmt: skip
    assert f"run_id {ks.run_id}" in review and f"only valid for run_id {ks.run_id}" in review
    assert str(ks.instance) in review and "REVIEW BEFORE RUNNING" in review
    for row in ks.clients.iter_rows(named=True):
        line = next(line for line in review.splitlines() if re.search(rf"│\s+{row['id']} │", line))
        assert row["group"] in line and f"idle {row['idle']} s > 0 s" in line
    assert "left out: 3 blocked" in review and "left out: 1 pub/sub subscriber" in review
    assert "command in flight" in review

    out = tmp_path / "kill.redis"
    _, shown = cli("kill-script", str(captured.path), "--idle-over", "0", "--out", str(out))
    assert out.read_text().splitlines() == list(ks.commands)  # the file: commands only
    written = (tmp_path / "kill.redis.review.txt").read_text()
    assert all(f"idle {i} s > 0 s" in written for i in ks.clients["idle"])
    assert f"redis-cli -h HOST -p PORT < {out}" in written and "left out: 3 blocked" in shown

    data = json.loads(cli("kill-script", str(captured.path), "--idle-over", "0", "--json")[0])
    assert [c["command"] for c in data["clients"]] == data["commands"] == list(ks.commands)
    assert all(c["reason"] for c in data["clients"])
    assert {c["left_out"] for c in data["left_out"]} >= {"blocked", "pubsub", "in flight"}


def test_the_review_says_how_clients_were_chosen_without_a_filter(captured: Captured) -> None:
    _, review = cli("kill-script", str(captured.path))  # one capture: no leak verdict possible
    assert "Chosen: no filter given and no leak verdict (leak detection needs at least 3" in review
    assert "normal clients idle over 600 s (the default)" in review and "No client to kill." in review
