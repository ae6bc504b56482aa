"""`collect` exit codes: a run where a target captured nothing fails, by cause, saying why.

Before, `clientscope collect redis://127.0.0.1:1 --out c.cs --count 1 --quiet` printed
nothing and exited 0, so a CronJob that never reached its server looked healthy. Real
servers for the happy path and a wrong password; a closed loopback port for unreachable;
a loopback socket that accepts and never answers for a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from clientscope.capture import CollectResult, TargetSummary
from clientscope.capture.collector import OUTCOMES
from clientscope.cli import app
from clientscope.commands.collect import EXIT_CODES, EXIT_MEANINGS, failure_line
from servers import redis_server, valkey_server

CLIENTSCOPE = [sys.executable, "-c", "from clientscope.cli import main; main()"]
DOC = Path(__file__).parents[1] / "docs" / "kubernetes.md"
REFUSED = "127.0.0.1:1"  # nothing listens on port 1 on loopback
T0 = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)


def collect_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`clientscope collect ...` in a child, as cron runs it."""
    return subprocess.run(
        [*CLIENTSCOPE, "collect", *args, "--interval", "200ms"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "REDISCLI_AUTH": "", **(env or {})},
    )  # fmt: skip


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers, until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


# ------------------------------------------------------------ the CLI, end to end


def test_a_healthy_run_exits_0_and_says_nothing_when_quiet(tmp_path: Path) -> None:
    with valkey_server() as srv:
        done = collect_cli(srv.url, "-o", str(tmp_path / "ds"), "--count", "2", "--quiet")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize("mode", ["--quiet", "--json"])
def test_an_unreachable_server_exits_4_with_one_line(tmp_path: Path, mode: str) -> None:
    """The issue's command: before, no output and exit 0."""
    done = collect_cli(f"redis://{REFUSED}", "--out", str(tmp_path / "c.cs"), "--count", "1", mode)
    assert done.returncode == 4, done.stderr
    assert one_line(done.stderr) == (
        "clientscope: error: nothing captured (unreachable): 1 of 1 target(s) captured nothing "
        f"({REFUSED}); 1 failed capture(s): connection_refused 1; last: {REFUSED}: "
        f"connection_refused: Connection refused (connecting to {REFUSED}); check the address "
        "and that the server is up (exit 4)"
    )
    if mode == "--quiet":
        assert done.stdout == ""
        return
    summary = json.loads(done.stdout)  # --json stays complete
    assert (summary["outcome"], summary["captures"], summary["failed"]) == ("unreachable", 1, 1)
    (target,) = summary["targets"]
    assert target["errors"] == {"connection_refused": 1}
    assert target["last_error_kind"] == "connection_refused"
    assert target["last_error_message"] == f"Connection refused (connecting to {REFUSED})"
    assert datetime.fromisoformat(target["last_error_at"]).tzinfo is not None


def test_a_wrong_password_exits_5_without_showing_it(tmp_path: Path) -> None:
    with redis_server(password="s3cret") as srv:
        url = f"redis://:wrong-pass-9@127.0.0.1:{srv.port}"
        done = collect_cli(url, "-o", str(tmp_path / "ds"), "--count", "2", "--quiet")
    assert done.returncode == 5, done.stderr
    line = one_line(done.stderr)
    assert line.startswith(
        "clientscope: error: nothing captured (auth): 1 of 1 target(s) captured nothing "
        f"(127.0.0.1:{srv.port}); 2 failed capture(s): auth 2; last: 127.0.0.1:{srv.port}: auth: "
    )
    assert line.endswith(
        "check the password (REDISCLI_AUTH, --askpass) and the ACL user (--user) (exit 5)"
    )
    assert "wrong-pass-9" not in done.stderr + done.stdout
    assert done.stdout == ""


def test_a_server_that_never_answers_exits_6(tmp_path: Path) -> None:
    with silent_server() as port:
        done = collect_cli(f"redis://127.0.0.1:{port}", "-o", str(tmp_path / "ds"), "--count", "1",
                           "--read-timeout", "0.5", "--connect-timeout", "0.5", "--quiet")  # fmt: skip
    assert done.returncode == 6, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("clientscope: error: nothing captured (timeout): 1 of 1 target(s) ")
    assert "1 failed capture(s): timeout 1; last: " in line
    assert "no complete reply within 0.5s (--read-timeout)" in line
    assert line.endswith("or raise --connect-timeout / --read-timeout (exit 6)")


def test_some_targets_failing_exits_3_and_json_stays_complete(tmp_path: Path) -> None:
    with valkey_server() as srv:
        done = collect_cli(srv.url, f"redis://{REFUSED}", "-o", str(tmp_path / "ds"),
                           "--count", "2", "--json")  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert one_line(done.stderr).startswith(
        f"clientscope: error: partial capture: 1 of 2 target(s) captured nothing ({REFUSED}); "
        f"2 failed capture(s): connection_refused 2; last: {REFUSED}: connection_refused: "
    )
    summary = json.loads(done.stdout)
    assert (summary["outcome"], summary["captures"], summary["failed"]) == ("partial", 4, 2)
    by_name = {t["instance"]: t for t in summary["targets"]}
    assert by_name[f"127.0.0.1:{srv.port}"]["ok"] == 2
    assert by_name[f"127.0.0.1:{srv.port}"]["last_error_kind"] is None
    assert by_name[REFUSED]["errors"] == {"connection_refused": 2}


def test_the_line_is_a_line_of_its_own_after_the_live_display(tmp_path: Path) -> None:
    done = collect_cli(f"redis://{REFUSED}", "-o", str(tmp_path / "ds"), "--count", "1")
    assert done.returncode == 4
    *display, last = done.stderr.splitlines()
    assert display and display[-1].endswith("┘")  # the live table's last frame
    assert last.startswith("clientscope: error: nothing captured (unreachable): ")
    assert f"{REFUSED}" in done.stdout  # the end table


def test_the_line_shows_names_as_escapes(tmp_path: Path) -> None:
    name = "evil\x1b[2J\x1b]0;owned\x07[/]"
    done = collect_cli(f"redis://{REFUSED}", "-o", str(tmp_path / "ds"), "--count", "1",
                       "--instance", name, "--quiet")  # fmt: skip
    assert done.returncode == 4
    line = one_line(done.stderr)
    assert "\x1b" not in line and "\x07" not in line
    assert "(evil\\x1b[2J\\x1b]0;owned\\x07[/]); " in line


# ------------------------------------------------------------ the outcome, from the summary


def target(
    name: str, ok: int, errors: dict[str, int], *, at: int = 0, stopped: str | None = None
) -> TargetSummary:
    last = max(errors, default=None)
    return TargetSummary(
        name, f"redis://{name}", ok + sum(errors.values()), ok, sum(errors.values()), errors,
        0, 0, 0, (), None, None, (), stopped,
        last_error_kind=last, last_error_message=f"{last} happened" if last else None,
        last_error_at=T0 + timedelta(seconds=at) if last else None,
    )  # fmt: skip


def result_of(*targets: TargetSummary) -> CollectResult:
    return CollectResult(
        out=Path("ds"), started=T0, finished=T0, stopped_by="count", captures_written=0,
        targets=targets,
    )  # fmt: skip


OUTCOME_CASES = {
    "all captured": ([target("a", 3, {}), target("b", 1, {})], "ok", 0),
    "transient failures are data": ([target("a", 1, {"timeout": 5})], "ok", 0),
    "not asked before a signal": ([target("a", 0, {})], "ok", 0),
    "one of two silent": ([target("a", 2, {}), target("b", 0, {"auth": 2})], "partial", 3),
    "refused": ([target("a", 0, {"connection_refused": 1})], "unreachable", 4),
    "reset or via failing": ([target("a", 0, {"io": 2})], "unreachable", 4),
    "wrong password": ([target("a", 0, {"auth": 1})], "auth", 5),
    "silent": ([target("a", 0, {"timeout": 1})], "timeout", 6),
    "server full": ([target("a", 0, {"max_clients": 3})], "failed", 7),
    "bad replies": ([target("a", 0, {"protocol": 1, "other": 1})], "failed", 7),
    "most failures decide": (
        [target("a", 0, {"auth": 1}), target("b", 0, {"connection_refused": 3})],
        "unreachable", 4,
    ),
    "a tie goes to the first": ([target("a", 0, {"timeout": 2, "auth": 2})], "auth", 5),
    "a stopped worker first": (
        [target("a", 0, {"timeout": 1}), target("b", 1, {}, stopped="RuntimeError: x")],
        "stopped", 1,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", OUTCOME_CASES, ids=list(OUTCOME_CASES))
def test_outcome_and_exit_code(case: str) -> None:
    targets, outcome, code = OUTCOME_CASES[case]
    result = result_of(*targets)
    assert (result.outcome, EXIT_CODES[result.outcome]) == (outcome, code)
    assert result.to_dict()["outcome"] == outcome


def test_a_stopped_worker_still_exits_1(tmp_path: Path) -> None:
    from clientscope.commands.collect import _exit_unless_captured, _fail_if_stopped
    from clientscope.errors import CaptureError

    result = result_of(target("a", 0, {"timeout": 1}), target("b", 1, {}, stopped="Boom: x"))
    with pytest.raises(CaptureError):  # the CLI's one place turns it into exit 1
        _fail_if_stopped(result)
    _exit_unless_captured(result_of(target("a", 1, {})))  # ok: returns, no exit


def test_the_line_names_a_few_targets_and_the_latest_error() -> None:
    silent = [target(f"n{i}", 0, {"connection_refused": 2}, at=i) for i in range(5)]
    silent[2] = target("n2", 0, {"timeout": 1}, at=9)
    assert failure_line(result_of(target("up", 4, {}), *silent)) == (
        "partial capture: 5 of 6 target(s) captured nothing (n0, n1, n2 and 2 more); "
        "9 failed capture(s): connection_refused 8, timeout 1; last: n2: timeout: timeout "
        "happened; check the network path, or raise --connect-timeout / --read-timeout (exit 3)"
    )
    assert (
        failure_line(result_of(target("a", 1, {}))) == "no target failed every capture (ok, exit 0)"
    )


# ------------------------------------------------------------ documented where cron users look


def test_every_outcome_has_a_code() -> None:
    assert set(EXIT_CODES) == set(OUTCOMES)
    assert sorted(EXIT_CODES.values()) == sorted(c for c, _ in EXIT_MEANINGS if c != 2)


def test_help_tells_the_exit_codes() -> None:
    res = CliRunner().invoke(app, ["collect", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    shown = " ".join(res.output.replace("│", " ").split())
    assert "Exit codes (a non-zero one also prints one line on stderr, even with --quiet)" in shown
    for code, meaning in EXIT_MEANINGS:
        assert f"{code}: {meaning}" in shown


def test_the_kubernetes_doc_tells_the_same_codes() -> None:
    doc = DOC.read_text()
    rows = dict(re.findall(r"^\| (\d) \| (.+?) \|$", doc, flags=re.MULTILINE))
    assert rows == {str(code): meaning for code, meaning in EXIT_MEANINGS}


def test_the_kubernetes_doc_yaml_is_valid_and_alerts_on_failure() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    kinds = [d["kind"] for block in blocks for d in yaml.safe_load_all(block) if d]
    assert kinds.count("CronJob") == 1
    expr = doc_alert_rule()["spec"]["groups"][0]["rules"][0]["expr"]  # type: ignore[index]
    assert 'cronjob="clientscope-audit"' in expr


def doc_alert_rule() -> dict[str, object]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    docs = [d for block in blocks for d in yaml.safe_load_all(block) if d]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return rule  # type: ignore[no-any-return]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_doc_alert_fires_when_no_run_succeeded_for_two_schedules(tmp_path: Path) -> None:
    spec = doc_alert_rule()["spec"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(spec))
    (alert,) = spec["groups"][0]["rules"]  # type: ignore[index]
    labels = {"namespace": "redis", "cronjob": "clientscope-audit"}
    firing = [
        {"exp_labels": {**labels, **alert["labels"]}, "exp_annotations": alert["annotations"]}
    ]
    series = '{namespace="redis", cronjob="clientscope-audit"}'
    cases = {  # the last success at t=0 and never again; a CronJob that never succeeded
        "kube_cronjob_status_last_successful_time": "0x60",
        "kube_cronjob_created": "0x60",
    }
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": f"{name}{series}", "values": values}
                             for name, values in cases.items() if name in kept],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": alert["alert"], "exp_alerts": []},
                {"eval_time": "40m", "alertname": alert["alert"], "exp_alerts": firing},
            ],
        }
        for kept in (set(cases), {"kube_cronjob_created"})
    ]  # fmt: skip
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests})
    )
    done = subprocess.run(
        ["promtool", "test", "rules", "test.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
