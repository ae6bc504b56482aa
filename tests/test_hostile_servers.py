"""Hostile servers: small fake RESP servers on loopback that send what no real server would.

Each `FakeServer` listens on 127.0.0.1 only, answers one connection at a time from a
script (`answers`: command -> reply), accepts a bounded number of connections and stops
with its `with` block. A reply is `bytes` (sent at once), `Drip` (sent a byte at a time)
or `Stream` (a header, then filler until the client hangs up or a byte budget is spent).
The collector must record a fault row for each and go on: never die, never balloon.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clientscope.capture import CaptureEvent, CollectResult, Timeouts, collect
from clientscope.capture.resp import (
    ConnectionClosed,
    ProtocolError,
    Reply,
    ReplyLimits,
    RespError,
    RespReader,
)
from clientscope.dataset import open_dataset
from servers import free_port

CLIENT_LINE = b"id=7 addr=10.0.0.9:50000 laddr=10.0.0.1:6379 fd=8 name=app age=9 idle=1 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=1800 events=r cmd=get user=default redir=-1 resp=2 lib-name= lib-ver=\n"
INFO = b"# Server\r\nredis_version:7.2.4\r\nrun_id:0123456789abcdef0123456789abcdef01234567\r\n# Clients\r\nconnected_clients:1\r\nmaxclients:100\r\n"


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items: bytes) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


@dataclass(frozen=True)
class Drip:
    """Send `data` one byte every `every` seconds (a server, or a network, that crawls)."""

    data: bytes
    every: float = 0.1


@dataclass(frozen=True)
class Stream:
    """Send `head`, then filler bytes until the client hangs up or `budget` bytes are sent."""

    head: bytes
    budget: int = 64 * 1024 * 1024
    filler: bytes = b"x" * 65536


Answer = bytes | Drip | Stream


Script = Answer | Callable[[tuple[str, ...]], Answer]


def normal_answers() -> dict[str, Script]:
    """What a small healthy server answers (keys: the command's first words, upper case)."""
    return {
        "AUTH": b"+OK\r\n",
        "SELECT": b"+OK\r\n",
        "CLIENT SETNAME": b"+OK\r\n",
        "CLIENT SETINFO": b"+OK\r\n",
        "TIME": array(b"1700000000", b"123456"),
        "CLIENT LIST": bulk(CLIENT_LINE),
        "INFO": bulk(INFO),
        "CONFIG GET": array(b"maxclients", b"100", b"timeout", b"0"),
        "CLUSTER NODES": bulk(b""),
    }


@dataclass
class FakeServer:
    """A RESP server on 127.0.0.1 answering from `answers`; see the module docstring."""

    answers: dict[str, Script] = field(default_factory=normal_answers)
    max_connections: int = 200
    lifetime: float = 120.0  # the server stops by itself after this long, whatever happens
    seen: list[tuple[str, ...]] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.5)
        self.port = int(self._listener.getsockname()[1])
        self.halt = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-resp", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeServer:
        self._timer = threading.Timer(self.lifetime, self.halt.set)
        self._timer.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self._timer.cancel()
        self._thread.join(10)
        self._listener.close()

    def saw(self, *words: str) -> bool:
        """Whether a command starting with these words has come in."""
        return any(c[: len(words)] == words for c in list(self.seen))

    def _serve(self) -> None:
        while not self.halt.is_set() and self.connections < self.max_connections:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(0.5)
                with contextlib.suppress(OSError):
                    self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        buffer = b""
        while not self.halt.is_set():
            command, buffer = _read_command(conn, buffer, self.halt)
            if command is None:
                return
            self.seen.append(command)
            self._send(conn, self._answer(command))

    def _answer(self, command: tuple[str, ...]) -> Answer:
        words = [w.upper() for w in command[:2]]
        for key in (" ".join(words), words[0]):
            if key in self.answers:
                answer = self.answers[key]
                return answer(command) if callable(answer) else answer
        return b"-ERR unknown command '%s'\r\n" % command[0].encode()

    def _send(self, conn: socket.socket, answer: Answer) -> None:
        conn.settimeout(5.0)
        if isinstance(answer, bytes):
            conn.sendall(answer)
        elif isinstance(answer, Drip):
            for i in range(len(answer.data)):
                conn.sendall(answer.data[i : i + 1])
                if self.halt.wait(answer.every):
                    return
        else:
            conn.sendall(answer.head)
            sent = 0
            while sent < answer.budget and not self.halt.is_set():
                conn.sendall(answer.filler)
                sent += len(answer.filler)
        conn.settimeout(0.5)


def _read_command(
    conn: socket.socket, buffer: bytes, halt: threading.Event
) -> tuple[tuple[str, ...] | None, bytes]:
    """One RESP command (an array of bulk strings) from the client, or None when it hung up."""
    while not halt.is_set():
        parsed = _parse_command(buffer)
        if parsed is not None:
            return parsed
        try:
            data = conn.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return None, b""
        buffer += data
    return None, b""


def _parse_command(buffer: bytes) -> tuple[tuple[str, ...], bytes] | None:
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None
    head, rest = buffer.split(b"\r\n", 1)
    words = []
    for _ in range(int(head[1:])):
        if b"\r\n" not in rest:
            return None
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line[1:])
        if len(rest) < size + 2:
            return None
        words.append(rest[:size].decode("utf-8", "replace"))
        rest = rest[size + 2 :]
    return tuple(words), rest


@contextlib.contextmanager
def fake_server(**answers: Script) -> Iterator[FakeServer]:
    """A fake server answering normally except for these commands (`CLIENT_LIST="..."` etc.)."""
    script = normal_answers()
    script.update({k.replace("_", " "): v for k, v in answers.items()})
    with FakeServer(answers=script) as server:
        yield server


# ------------------------------------------------------------------ helpers

# The child says its own peak RSS at exit: VmHWM starts over at exec, while wait4's ru_maxrss
# keeps the high-water mark of the process that forked it (pytest, hundreds of MB late in a run)
HWM = "clientscope-test-vmhwm-kb="
CLIENTSCOPE = [sys.executable, "-c", (
    "import atexit, os\n"
    "def hwm():\n"
    "    kb = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    f"    os.write(2, b'\\n{HWM}' + kb.encode() + b'\\n')\n"
    "atexit.register(hwm)\n"
    "from clientscope.cli import main\n"
    "main()\n"
)]
FAST = Timeouts(connect=1.0, read=2.0)


@dataclass(frozen=True)
class Run:
    """A finished `clientscope` child: its exit code, output, wall time and peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float

    def summary(self) -> dict[str, object]:
        assert self.stdout.strip(), self.stderr
        return json.loads(self.stdout)  # type: ignore[no-any-return]


def run_cli(
    *args: str,
    timeout: float = 90,
    on_start: Callable[[int], None] | None = None,
    env: dict[str, str] | None = None,
) -> Run:
    """Run `clientscope` in a child (killed after `timeout`), measured by wait4."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [*CLIENTSCOPE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REDISCLI_AUTH": "", **(env or {})},
    )
    output: dict[str, str] = {}

    def drain(name: str, stream: object) -> None:
        output[name] = stream.read()  # type: ignore[attr-defined]

    readers = [
        threading.Thread(target=drain, args=(name, stream), daemon=True)
        for name, stream in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        if on_start is not None:
            on_start(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(10)
    seconds = time.monotonic() - started
    assert seconds < timeout, f"clientscope {' '.join(args)} was killed after {timeout}s"
    err, _, kb = output["err"].rpartition(f"\n{HWM}")
    peak = int(kb.strip()) / 1024 if kb.strip().isdigit() else usage.ru_maxrss / 1024
    return Run(proc.returncode, output["out"], err if kb else output["err"], seconds, peak)


def rows_of(out: Path) -> pl.DataFrame:
    return open_dataset(out).raw.sort("collector_time").collect()


def collect_from(server: FakeServer, out: Path, **options: object) -> CollectResult:
    settings: dict[str, object] = {"interval": 0.2, "count": 2, "timeouts": FAST}
    settings.update(options)
    return collect([server.url], out, handle_signals=False, **settings)  # type: ignore[arg-type]


def assert_faults(rows: pl.DataFrame, kind: str, text: str, count: int = 2) -> None:
    """Every capture is a failed row of this kind whose message holds `text`."""
    assert rows.height == count, rows
    assert rows["ok"].to_list() == [False] * count
    assert rows["error_kind"].to_list() == [kind] * count, rows["error_message"].to_list()
    assert all(text in m for m in rows["error_message"]), rows["error_message"].to_list()


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ------------------------------------------------- sizes: lengths are not trusted


@pytest.mark.parametrize("declared", [2**32, 2**40], ids=["2^32", "2^40"])
def test_a_declared_bulk_length_over_the_limit_is_refused_unread(
    tmp_path: Path, declared: int
) -> None:
    """Before: 2^32 was trusted (RSS 4.3 GB while the bytes came); 2^40 killed the worker
    with MemoryError. Now it is refused at its header: a protocol fault, nothing read."""
    with fake_server(CLIENT_LIST=Stream(b"$%d\r\n" % declared, budget=256 * 1024 * 1024)) as srv:
        tracemalloc.start()
        try:
            started = time.monotonic()
            result = collect_from(srv, tmp_path / "ds")
            seconds = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert_faults(rows_of(tmp_path / "ds"), "protocol", f"a bulk string of {declared} bytes")
    assert "(--max-reply-bytes)" in rows_of(tmp_path / "ds")["error_message"][0]
    assert result.stopped == () and result.failed == 2
    assert peak < 32 * 1024 * 1024 and seconds < 10


def test_a_four_gigabyte_bulk_stays_small_end_to_end(tmp_path: Path) -> None:
    """The CLI child, measured by wait4: the server streams up to 1 GiB behind a $2^32 header."""
    with fake_server(CLIENT_LIST=Stream(b"$4294967296\r\n", budget=1024**3)) as srv:
        run = run_cli("collect", srv.url, "-o", str(tmp_path / "ds"), "--count", "2",
                      "--interval", "200ms", "--json")  # fmt: skip
    assert run.returncode == 7, run.stderr  # nothing captured: protocol faults (exit 7, see collect --help)
    summary = run.summary()
    assert (summary["captures"], summary["failed"]) == (2, 2)
    assert summary["targets"][0]["errors"] == {"protocol": 2}  # type: ignore[index]
    assert run.peak_rss_mb < 400, run.peak_rss_mb  # was 4,200 MB before the limit
    assert run.seconds < 60


def test_the_reply_limit_is_an_option(tmp_path: Path) -> None:
    big = bulk(CLIENT_LINE * 6000)  # about 2 MB, as 6,000 clients
    with fake_server(CLIENT_LIST=big) as srv:
        collect_from(srv, tmp_path / "small", max_reply_bytes=1024 * 1024)
        collect_from(srv, tmp_path / "default")
        run = run_cli("collect", srv.url, "-o", str(tmp_path / "cli"), "--count", "1",
                      "--interval", "200ms", "--max-reply-bytes", "1MiB", "--json")  # fmt: skip
    assert_faults(rows_of(tmp_path / "small"), "protocol", "limit of 1,048,576 bytes")
    assert rows_of(tmp_path / "default")["ok"].all()
    assert run.returncode == 7 and run.summary()["failed"] == 1


def test_a_reply_limit_too_small_to_be_useful_is_refused(tmp_path: Path) -> None:
    run = run_cli("collect", "redis://127.0.0.1:1", "-o", str(tmp_path / "ds"),
                  "--max-reply-bytes", "10")  # fmt: skip
    assert run.returncode == 1
    assert "--max-reply-bytes 10 is below the minimum of 65536" in run.stderr
    run = run_cli("collect", "redis://127.0.0.1:1", "-o", str(tmp_path / "ds"),
                  "--max-reply-bytes", "lots")  # fmt: skip
    assert run.returncode == 1 and "--max-reply-bytes: cannot read 'lots'" in run.stderr


def test_an_array_of_two_billion_elements_is_refused_at_its_header(tmp_path: Path) -> None:
    """Before: the elements were read into a list as they came, memory growing without end."""
    flood = Stream(b"*2147483648\r\n", budget=512 * 1024 * 1024, filler=b":1\r\n" * 16384)
    with fake_server(TIME=flood) as srv:
        tracemalloc.start()
        try:
            collect_from(srv, tmp_path / "ds")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert_faults(rows_of(tmp_path / "ds"), "protocol", "an array of 2147483648 elements")
    assert peak < 32 * 1024 * 1024


def test_a_hundred_thousand_nested_arrays_are_a_protocol_fault(tmp_path: Path) -> None:
    """Before: RecursionError killed the worker; nothing was recorded."""
    with fake_server(TIME=b"*1\r\n" * 100_000 + b":1\r\n") as srv:
        result = collect_from(srv, tmp_path / "ds")
    assert_faults(rows_of(tmp_path / "ds"), "protocol", "nested more than 8 deep")
    assert result.stopped == ()


# ----------------------------------------------------- shapes no command answers


@pytest.mark.parametrize(
    "reply",
    [
        array(b"soon", b"0"),  # ValueError
        array(b"999999999999", b"0"),  # the year 33658: ValueError
        array(b"99999999999999999999", b"0"),  # past time_t: OverflowError
        array(b"1700000000", b"1000000"),  # microsecond out of range: ValueError
        b"*2\r\n*1\r\n$1\r\n1\r\n$1\r\n1\r\n",  # an array in an array: TypeError
        b"*2\r\n:1700000000\r\n:5\r\n",  # integers, not bulk strings
        array(b"1700000000"),  # one element
    ],
    ids=["text", "year-33658", "time_t", "micros", "nested", "integers", "short"],
)
def test_a_malformed_time_reply_is_a_protocol_fault(tmp_path: Path, reply: bytes) -> None:
    with fake_server(TIME=reply) as srv:
        result = collect_from(srv, tmp_path / "ds")
    rows = rows_of(tmp_path / "ds")
    assert_faults(rows, "protocol", "TIME answered")
    assert result.stopped == () and result.failed == 2


def test_a_nested_config_get_reply_is_a_protocol_fault(tmp_path: Path) -> None:
    """Before: TypeError (a list where bytes were expected) killed the worker."""
    nested = b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n"
    with fake_server(CONFIG_GET=nested) as srv:
        collect_from(srv, tmp_path / "ds")
    assert_faults(rows_of(tmp_path / "ds"), "protocol", "CONFIG GET answered an array holding")


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (b"$-5\r\n", "bulk length -5"),
        (b"$-1\r\n", "CLIENT LIST answered nil"),
        (b":12\r\n", "CLIENT LIST answered the integer 12"),
        (array(CLIENT_LINE), "CLIENT LIST answered an array"),
        (b"$1_0\r\n0123456789\r\n", "bulk length b'1_0' is not a number"),
        (b"%1\r\n", "unexpected reply b'%1'"),  # RESP3, never asked for
    ],
    ids=["minus-5", "nil", "integer", "array", "underscore", "resp3"],
)
def test_a_client_list_that_is_not_text_is_a_protocol_fault(
    tmp_path: Path, reply: bytes, text: str
) -> None:
    """Before: `$-5` was an ok capture with 0 clients."""
    with fake_server(CLIENT_LIST=reply) as srv:
        collect_from(srv, tmp_path / "ds")
    assert_faults(rows_of(tmp_path / "ds"), "protocol", text)


def test_absurd_numbers_in_info_are_not_read_as_numbers(tmp_path: Path) -> None:
    """Before: a 5,000-digit maxclients raised ValueError (int's digit limit) outside the
    capture's error handling, and the worker died."""
    info = (
        b"# Server\r\nrun_id:" + b"f" * 10_000 + b"\r\n# Clients\r\nconnected_clients:"
        + b"9" * 5_000 + b"\r\nmaxclients:" + b"9" * 5_000 + b"\r\n"
    )  # fmt: skip
    with fake_server(INFO=bulk(info), CONFIG_GET=array(b"maxclients", b"9" * 5_000)) as srv:
        result = collect_from(srv, tmp_path / "ds")
    rows = rows_of(tmp_path / "ds")
    assert rows["ok"].to_list() == [True, True] and result.stopped == ()
    assert result.targets[0].maxclients is None and result.targets[0].last_clients == 1
    assert all(len(n or "") < 1000 for n in rows["notes"])


def test_the_next_capture_after_a_fault_is_whole_again(tmp_path: Path) -> None:
    """A protocol fault drops the connection, so the next reply lines up with its command."""
    replies = iter([b"$-5\r\nGARBAGE", bulk(CLIENT_LINE), bulk(CLIENT_LINE)])
    with fake_server(CLIENT_LIST=lambda command: next(replies)) as srv:
        collect_from(srv, tmp_path / "ds", count=3)
        connections = srv.connections
    rows = rows_of(tmp_path / "ds")
    assert rows["error_kind"].to_list() == ["protocol", None, None]
    assert rows["client_list"][1] == rows["client_list"][2] == CLIENT_LINE
    assert connections == 2


# ------------------------------------------------------------- time: deadlines


def test_a_dripped_reply_fails_at_the_command_deadline(tmp_path: Path) -> None:
    """Before: the socket timeout was per read, so a byte every 100 ms kept it going for good."""
    with fake_server(CLIENT_LIST=Drip(bulk(CLIENT_LINE * 2))) as srv:  # 70 s to send
        started = time.monotonic()
        collect_from(srv, tmp_path / "ds", timeouts=Timeouts(connect=1.0, read=1.5))
        seconds = time.monotonic() - started
    assert_faults(rows_of(tmp_path / "ds"), "timeout", "no complete reply within 1.5s")
    assert seconds < 12  # two captures, 1.5 s each, and a backoff between


def test_a_duration_run_ends_on_time_against_a_dripping_server(tmp_path: Path) -> None:
    """Before: `--duration 12s` ran 58 s (until the reply was all there)."""
    with fake_server(CLIENT_LIST=Drip(bulk(CLIENT_LINE * 2))) as srv:
        run = run_cli("collect", srv.url, "-o", str(tmp_path / "ds"), "--duration", "3s",
                      "--interval", "1s", "--read-timeout", "2", "--json")  # fmt: skip
    assert run.returncode == 6, run.stderr  # nothing captured: timed out
    assert run.summary()["stopped_by"] == "duration"
    assert run.seconds < 3 + 2 + 15  # the last capture's deadline, and the child's start-up


def test_sigterm_is_honoured_mid_reply(tmp_path: Path) -> None:
    """Before: the first SIGTERM waited for the dripped reply (55 s)."""
    with fake_server(CLIENT_LIST=Drip(bulk(CLIENT_LINE * 2))) as srv:
        sent: dict[str, float] = {}

        def terminate_mid_reply(pid: int) -> None:
            wait_until(lambda: srv.saw("CLIENT", "LIST"), "the collector to ask CLIENT LIST")
            sent["at"] = time.monotonic()
            os.kill(pid, signal.SIGTERM)

        run = run_cli("collect", srv.url, "-o", str(tmp_path / "ds"), "--interval", "1s",
                      "--timeout", "60", "--json", on_start=terminate_mid_reply)  # fmt: skip
        after = time.monotonic() - sent["at"]
    assert run.returncode == 6, run.stderr  # nothing captured: the reply in flight timed out at the stop
    assert "Traceback" not in run.stderr
    summary = run.summary()
    assert summary["stopped_by"] == "signal" and summary["captures_written"] == 1
    assert after < 8  # one second of grace for the reply, then flush and compact
    rows = rows_of(tmp_path / "ds")
    assert rows["error_kind"].to_list() == ["timeout"]
    assert "the collector is stopping" in rows["error_message"][0]


# -------------------------------------------------------- workers and the pool


def test_a_worker_that_stopped_is_reported_and_counted(tmp_path: Path) -> None:
    """Before: the dead target showed "0 captures, 0 failed" and the run looked fine."""
    with fake_server() as good, fake_server() as bad:
        broken = f"127.0.0.1:{bad.port}"

        def fails_for_one(event: CaptureEvent) -> None:
            if event.instance == broken:
                raise RuntimeError("a bug in the caller's callback")

        result = collect(
            [good.url, bad.url], tmp_path / "ds", interval=0.2, count=3, timeouts=FAST,
            on_event=fails_for_one, handle_signals=False,
        )  # fmt: skip
    by_name = {t.instance: t for t in result.targets}
    assert by_name[broken].stopped == "RuntimeError: a bug in the caller's callback"
    assert by_name[broken].attempts == 1  # its one capture is written all the same
    assert by_name[f"127.0.0.1:{good.port}"].attempts == 3
    assert [t.instance for t in result.stopped] == [broken]
    assert result.to_dict()["stopped"] == 1
    assert rows_of(tmp_path / "ds").height == 4


def test_the_cli_fails_when_a_worker_stopped(tmp_path: Path) -> None:
    from clientscope.capture.collector import TargetSummary
    from clientscope.commands.collect import _fail_if_stopped
    from clientscope.errors import CaptureError

    def target(name: str, stopped: str | None) -> TargetSummary:
        return TargetSummary(name, "redis://x", 1, 1, 0, {}, 0, 0, 0, (), 1, 10, (), stopped)

    now = datetime.now(UTC)
    result = CollectResult(
        out=tmp_path, started=now, finished=now, stopped_by="count", captures_written=2,
        targets=(target("a", None), target("b[/]\x1b[2J", "RuntimeError: boom")),
    )  # fmt: skip
    with pytest.raises(CaptureError) as caught:
        _fail_if_stopped(result)
    assert str(caught.value) == (
        "1 of 2 target(s) stopped collecting before the end: b[/]\\x1b[2J (RuntimeError: boom). "
        "The captures taken before are kept."
    )


def cluster_nodes(n: int) -> bytes:
    """CLUSTER NODES naming n primaries on loopback addresses nobody listens on."""
    port = free_port()
    lines = [
        f"{i:040x} 127.0.{1 + i // 250}.{1 + i % 250}:{port}@1{port} master - 0 0 1 connected"
        for i in range(n)
    ]
    return bulk("\n".join(lines).encode() + b"\n")


def test_a_seed_announcing_twenty_thousand_nodes_is_capped(tmp_path: Path) -> None:
    """Before: 20,000 nodes, 20,000 threads."""
    from clientscope.errors import ConfigError

    threads_before = threading.active_count()  # other tests' threads may still be winding down
    with fake_server(CLUSTER_NODES=cluster_nodes(20_000)) as srv:
        started = time.monotonic()
        with pytest.raises(ConfigError) as caught:
            collect([srv.url], tmp_path / "ds", cluster=True, interval=0.2, count=1)
        seconds = time.monotonic() - started
    assert str(caught.value) == (
        "--cluster: CLUSTER NODES lists 20000 nodes, more than --max-nodes 1000; "
        "if the cluster really is that large, raise --max-nodes"
    )
    assert seconds < 10 and threading.active_count() - threads_before < 20


def test_many_nodes_share_a_bounded_pool_of_threads(tmp_path: Path) -> None:
    most = [0]

    def count_threads(event: CaptureEvent) -> None:
        most[0] = max(most[0], sum(t.name.startswith("collect-") for t in threading.enumerate()))

    with fake_server(CLUSTER_NODES=cluster_nodes(300)) as srv:
        result = collect(
            [srv.url], tmp_path / "ds", cluster=True, interval=0.2, count=1, threads=8,
            max_nodes=300, rediscover=None, timeouts=FAST, on_event=count_threads,
            handle_signals=False, compact_on_exit=False,
        )  # fmt: skip
    assert len(result.targets) == 300 and result.captures == 300
    assert set(result.targets[0].errors) == {"connection_refused"}
    assert most[0] <= 8 + 3  # the pool, the writer, the parser and the compactor


# ------------------------------------------------------- server text on screen


def test_server_error_texts_with_markup_are_shown_as_written(tmp_path: Path) -> None:
    """Severe: before, `-NOPERM [/]` killed the worker through Rich markup (MarkupError in the
    live display), and an error in a table cell did the same."""
    refused = b"-NOPERM [/] this user has no [bold]permissions[/bold]\r\n"
    failing = b"-ERR [link=https://evil.example]click[/link] [/]\r\n"
    with fake_server(CONFIG_GET=refused) as one, fake_server(INFO=failing) as two:
        run = run_cli("collect", one.url, two.url, "-o", str(tmp_path / "ds"),
                      "--instance", "[bold]one[/]", "--instance", "two[/]",
                      "--count", "2", "--interval", "200ms")  # fmt: skip
    assert run.returncode == 3, run.stderr  # partial: one server captured, the other not
    assert "Traceback" not in run.stderr and "MarkupError" not in run.stderr
    warning = (
        "[bold]one[/]: CONFIG GET refused by the server (NOPERM [/] this user has no "
        "[bold]permissions[/bold]); collecting without it"
    )
    assert warning in " ".join(run.stderr.split())
    assert "other: ERR [link=https://evil.example]" in run.stderr  # the live state cell
    assert "[bold]one[/]" in run.stdout and "two[/]" in run.stdout  # the end table
    assert "\x1b]8;" not in run.stderr + run.stdout  # no terminal hyperlink was made
    rows = rows_of(tmp_path / "ds")
    assert rows.height == 4 and set(rows["instance"]) == {"[bold]one[/]", "two[/]"}


def test_quiet_warnings_show_control_characters_as_escapes(tmp_path: Path) -> None:
    with fake_server(CONFIG_GET=b"-NOPERM \x1b[2J\x1b]0;owned\x07 [/]\r\n") as srv:
        run = run_cli("collect", srv.url, "-o", str(tmp_path / "ds"), "--count", "1",
                      "--interval", "200ms", "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stderr and "\x07" not in run.stderr
    assert "(NOPERM \\x1b[2J\\x1b]0;owned\\x07 [/])" in run.stderr


# ------------------------------------------------------------ the reader, fuzzed

_TOKENS = [b"*", b"$", b":", b"+", b"-", b"\r\n", b"\r", b"\n", b"-1", b"-5", b"0", b"1", b"2",
           b"4294967296", b"2147483648", b"1099511627776", b"99999999999999999999", b"1_0",
           b" 1", b"OK", b"%2", b"_", b"*1\r\n" * 20]  # fmt: skip
RESP_ISH = st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=8)), max_size=80).map(
    b"".join
)
LIMITS = ReplyLimits(max_bytes=64 * 1024)


def feeding(data: bytes, cuts: list[int]) -> Callable[[memoryview], int]:
    """A `recv_into` giving `data` in pieces of the sizes in `cuts` (in turn), then 0 for good."""
    state = {"at": 0, "turn": 0}

    def recv_into(view: memoryview) -> int:
        assert 0 < len(view) <= 4 * 1024 * 1024  # never what a header declared
        size = min(len(view), cuts[state["turn"] % len(cuts)])
        state["turn"] += 1
        piece = data[state["at"] : state["at"] + size]
        view[: len(piece)] = piece
        state["at"] += len(piece)
        return len(piece)

    return recv_into


@settings(max_examples=1500, deadline=timedelta(milliseconds=500))
@given(
    data=st.one_of(st.binary(max_size=4096), RESP_ISH),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=6),
)
def test_the_resp_reader_raises_only_its_own_errors(data: bytes, cuts: list[int]) -> None:
    """Arbitrary bytes: replies, error replies, or ProtocolError / ConnectionClosed, in bounded
    memory; never ValueError, RecursionError, MemoryError or a hang."""
    reader = RespReader(feeding(data, cuts), LIMITS)
    tracemalloc.start()
    try:
        for _ in range(len(data) + 1):  # each reply takes at least one byte
            try:
                reader.read()
            except RespError:
                continue
            except (ProtocolError, ConnectionClosed):
                break
        else:
            pytest.fail("the reader read more replies than there were bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * LIMITS.max_bytes


REPLIES = st.recursive(
    st.one_of(st.binary(max_size=64), st.integers(-(2**63), 2**63 - 1), st.none()),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=40,
)


def encoded(reply: Reply) -> bytes:
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return bulk(reply)
    return b"*%d\r\n" % len(reply) + b"".join(encoded(r) for r in reply)


@settings(max_examples=500, deadline=timedelta(milliseconds=500))
@given(reply=REPLIES, cuts=st.lists(st.integers(1, 64), min_size=1, max_size=6), data=st.data())
def test_a_reply_reads_back_as_sent_and_a_cut_one_never_reads(
    reply: Reply, cuts: list[int], data: st.DataObject
) -> None:
    wire = encoded(reply)
    limits = ReplyLimits(max_depth=64)
    assert RespReader(feeding(wire, cuts), limits).read() == reply
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(ConnectionClosed):
        RespReader(feeding(wire[:cut], cuts), limits).read()
