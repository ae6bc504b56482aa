"""`clientscope demo`: real embedded Valkey, a real leaking worker, findings that name it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _assert_server_gone(dataset: Path) -> None:
    """The demo's own Valkey (its port is in the captures' origin) no longer accepts connections."""
    import socket

    import polars as pl

    import clientscope as cs

    origin = cs.open_dataset(dataset).captures.select(pl.col("origin").first()).collect().item()
    port = int(str(origin).rsplit(":", 1)[1].split("/")[0])
    time.sleep(0.3)
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.settimeout(2)
        s.connect(("127.0.0.1", port))


@pytest.mark.slow
def test_demo_finds_the_leaking_worker_and_cleans_up(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "clientscope.cli", "demo", "--seconds", "12", "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    leak = [f for f in result["findings"] if f["group"] == "leaky-worker"]
    assert leak and leak[0]["severity"] in ("critical", "warning"), result["findings"]
    assert not any(
        f["group"] in ("api", "queue-consumer") and f["severity"] == "critical"
        for f in result["findings"]
    )
    report = Path(result["report"])
    assert report.is_file() and "leaky-worker" in report.read_text()
    assert result["captures"] >= 5
    assert result["load"]["leaked"] >= 8 and result["load"]["jobs_consumed"] > 0
    _assert_server_gone(tmp_path / "dataset")


def test_demo_refuses_a_too_short_run(tmp_path: Path) -> None:
    from clientscope.demo import run_demo
    from clientscope.errors import ConfigError

    with pytest.raises(ConfigError, match="too short"):
        run_demo(seconds=3, out=tmp_path)


@pytest.mark.slow
def test_ctrl_c_stops_early_and_still_cleans_up(tmp_path: Path) -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "clientscope.cli", "demo", "--seconds", "60", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (tmp_path / "dataset").exists():
            time.sleep(0.2)
        time.sleep(7)  # a few captures
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Stopped early" in out
    assert (tmp_path / "report" / "report.html").is_file()
    assert f"Dataset: {(tmp_path / 'dataset').resolve()}" in out  # so the runbook commands can follow
    _assert_server_gone(tmp_path / "dataset")
