"""leaks and diagnose on real captures: a real server, a thread that leaks connections while
`clientscope.capture.collect` runs, and a healthy pool that keeps working beside it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from clientscope.analysis import diagnose, leaks
from clientscope.capture import collect
from servers import Server, redis_server, valkey_server

INTERVAL = 0.25
CAPTURES = 32


def leak_while_collecting(srv: Server, out: Path, leak_name: str | None) -> None:
    stop = threading.Event()
    held: list[redis.Redis] = []

    def leaker() -> None:  # opens a connection every 0.2 s, uses it once, never closes it
        deadline = time.monotonic() + INTERVAL * CAPTURES + 5
        while not stop.is_set() and time.monotonic() < deadline:
            r = srv.client(name=leak_name) if leak_name else srv.client()
            r.ping()
            held.append(r)
            stop.wait(0.2)

    def pool_user() -> None:  # a healthy pool: a few connections, busy all the time
        pool = redis.ConnectionPool(host=srv.host, port=srv.port, max_connections=4,
                                    client_name="api-pool")  # fmt: skip
        r = redis.Redis(connection_pool=pool)
        while not stop.is_set():
            r.set("k", "v")
            r.get("k")
            stop.wait(0.02)
        pool.disconnect()

    threads = [threading.Thread(target=leaker), threading.Thread(target=pool_user)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        result = collect([srv.url], out, interval=INTERVAL, count=CAPTURES, handle_signals=False)
        assert result.captures_written == CAPTURES
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        for r in held:
            r.close()


CASES = [
    pytest.param(valkey_server, "leaky-worker", "leaky-worker", id="valkey-named"),
    # Redis 7.0 has no CLIENT SETINFO, so an unnamed client has no lib-name either
    pytest.param(
        redis_server, None, "(unnamed) 127.0.0.1", id="redis-unnamed", marks=pytest.mark.redis
    ),
]


@pytest.mark.parametrize(("make", "leak_name", "group"), CASES)
def test_leaking_client_is_found(tmp_path: Path, make: Callable[[], object], leak_name: str | None,
                                 group: str) -> None:  # fmt: skip
    with make() as srv:  # type: ignore[attr-defined]
        leak_while_collecting(srv, tmp_path / "ds", leak_name)
    report = leaks(tmp_path / "ds")
    assert report.leaking["group"].to_list() == [group], report.groups
    row = report.leaking.row(0, named=True)
    assert row["slope_theil_sen_per_h"] > 600  # ~5/s opened; well above any threshold
    assert row["survivors"] >= 20
    healthy = report.groups.filter(report.groups["group"] == "api-pool")
    assert healthy.height == 1 and healthy["verdict"][0] != "leak"
    collector = report.groups.filter(report.groups["role"] == "collector")
    assert collector["verdict"].to_list() == ["excluded:collector"]
    diagnosis = diagnose(tmp_path / "ds")
    assert [f.group for f in diagnosis.findings if f.kind == "leak"] == [group]
