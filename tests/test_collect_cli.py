"""The `collect` command: options, prompt, errors as one line, `--via` as the Kubernetes doc shows it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from clientscope.cli import app
from clientscope.dataset import open_dataset
from servers import Server, redis_server

CLIENTSCOPE = [sys.executable, "-c", "from clientscope.cli import main; main()"]


def test_askpass_prompts_without_echo(tmp_path: Path) -> None:
    secret = "prompted-Secret-77"
    with redis_server(password=secret) as srv:
        url = f"redis://127.0.0.1:{srv.port}"
        args = ["collect", url, "-o", str(tmp_path / "ds"), "--interval", "200ms", "--count", "2"]
        res = CliRunner().invoke(
            app, [*args, "--askpass", "--json"], input=f"{secret}\n", env={"REDISCLI_AUTH": ""}
        )
    assert res.exit_code == 0, res.output
    assert secret not in res.output
    summary = json.loads(res.output[res.output.index("{") :])
    assert summary["failed"] == 0 and summary["captures_written"] == 2


def test_instance_names_and_quiet(valkey: Server, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["collect", valkey.url, "-o", str(tmp_path / "ds"), "--interval", "0.2s", "--count", "2",
         "--instance", "cache-main", "--quiet"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.output == ""
    assert open_dataset(tmp_path / "ds").instances() == ["cache-main"]


def test_summary_table_is_printed(valkey: Server, tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLIENTSCOPE, "collect", valkey.url, "-o", str(tmp_path / "ds"), "--interval", "200ms", "--count", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{valkey.port}" in done.stdout
    merged = re.search(r"compacted 6 tables: (\d+) -> 5 files", done.stdout)  # rejects: none
    assert merged and int(merged[1]) > 5, done.stdout


def test_unwritable_out_is_one_line_not_a_traceback(valkey: Server, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run(
        [*CLIENTSCOPE, "collect", valkey.url, "-o", str(blocker / "ds"), "--count", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.startswith("clientscope: error: dataset directory") and "--out" in done.stderr
    )


def test_bad_interval_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLIENTSCOPE, "collect", "redis://127.0.0.1:1", "-o", str(tmp_path / "ds"), "--interval", "fast"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "--interval 'fast' is not a duration" in done.stderr


def test_rediscover_option_is_read_and_checked(tmp_path: Path) -> None:
    from clientscope.commands.collect import _rediscover

    assert _rediscover("0") is None and _rediscover("0s") is None and _rediscover("off") is None
    assert _rediscover("2m") == 120.0
    args = ["collect", "redis://127.0.0.1:1", "-o", str(tmp_path / "ds"), "--cluster"]
    res = CliRunner().invoke(app, [*args, "--rediscover", "5ms"])
    assert res.exit_code == 1 and "--rediscover 0.005s is below the minimum" in str(res.exception)
    res = CliRunner().invoke(app, [*args, "--rediscover", "soon"])
    assert res.exit_code == 1 and "--rediscover 'soon' is not a duration" in str(res.exception)


def test_no_target_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["collect", "-o", str(tmp_path / "ds")])
    assert res.exit_code == 1 and "no target" in str(res.exception)


def test_via_in_pod_shell_pattern_from_the_kubernetes_doc(tmp_path: Path) -> None:
    """`sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli "$@"' redis-cli` with `sh` for `kubectl exec`."""
    secret = "pod-side-Secret-5"
    with redis_server(password=secret) as srv:
        via = (
            f'sh -c \'REDISCLI_AUTH="$REDIS_PASSWORD" exec redis-cli -p {srv.port} "$@"\' redis-cli'
        )
        done = subprocess.run(
            [*CLIENTSCOPE, "collect", "--via", via, "--instance", "redis-master-0", "-o", str(tmp_path / "ds"),
             "--interval", "300ms", "--count", "2", "--json"],
            env={**os.environ, "REDIS_PASSWORD": secret, "REDISCLI_AUTH": ""},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["failed"] == 0 and summary["targets"][0]["instance"] == "redis-master-0"
    rows = open_dataset(tmp_path / "ds").raw.collect()
    assert rows["ok"].all() and rows.height == 2
    assert rows.select(pl.col("client_list").bin.starts_with(b"id=")).to_series().all()
