"""Names are data: client names and instance names chosen by an attacker never become Rich
markup, matplotlib mathtext, Markdown/HTML or shell code, in any command or report file.

One real Valkey server: clients named with markup, mathtext and HTML payloads, and a
leaking client whose name is a shell payload, collected under an instance name that
holds markup and a newline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from clientscope.analysis import diagnose
from clientscope.capture import collect
from clientscope.capture.targets import parse_target
from clientscope.cli import app
from clientscope.escape import for_figure, for_markdown, for_shell, printable, shell_line
from servers import valkey_server

SHELL = "x';touch${IFS}PWNED;'"  # pasted unquoted, this creates ./PWNED
MARKUP = ["[/]", "celery[worker]", "[pool]", "[bold]x", "[link=https://evil.example]x[/link]"]
MATH = r"$\frac{a}{$"
HTML = "<img/src=x/onerror=alert(1)>"
STATIC = [*MARKUP, MATH, HTML]
INSTANCE = "[/]prod\nFLUSHALL"
CAPTURES, INTERVAL = 30, 0.25
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A dataset from a real server whose clients carry hostile names."""
    out = tmp_path_factory.mktemp("hostile") / "ds"
    stop = threading.Event()
    held: list[redis.Redis] = []
    with valkey_server() as srv:
        for name in STATIC:
            for _ in range(2):
                r = srv.client(name=name)
                r.ping()
                held.append(r)

        def leaker() -> None:  # a new connection every 0.2 s, never closed
            while not stop.is_set():
                r = srv.client(name=SHELL)
                r.ping()
                held.append(r)
                stop.wait(0.2)

        thread = threading.Thread(target=leaker)
        thread.start()
        try:
            target = parse_target(srv.url, instance=INSTANCE)
            result = collect([target], out, interval=INTERVAL, count=CAPTURES, handle_signals=False)
            assert result.captures_written == CAPTURES
        finally:
            stop.set()
            thread.join(10)
            for r in held:
                r.close()
    yield out


def run(*args: str, color: bool = False) -> str:
    env = {"COLUMNS": "400", "NO_COLOR": "1"} if not color else {"COLUMNS": "400", "FORCE_COLOR": "1"}
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 0, result.output
    return result.output


COMMANDS = [
    ["summary"], ["top", "--by", "name"], ["idle"], ["leaks", "--all"], ["forecast"], ["plan"],
    ["alerts"], ["diagnose"], ["diagnose", "--markdown"], ["kill-script", "--idle-over", "0"],
]  # fmt: skip


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_every_command_runs_on_hostile_names(hostile: Path, args: list[str]) -> None:
    out = run(args[0], str(hostile), *args[1:])
    assert "MarkupError" not in out
    assert "\nFLUSHALL" not in out  # the instance's newline is shown as \n, never a line break


@pytest.mark.parametrize("args", [["top", "--by", "name"], ["summary"], ["idle"]], ids=str)
def test_names_are_shown_as_written(hostile: Path, args: list[str]) -> None:
    out = run(args[0], str(hostile), *args[1:])
    for name in MARKUP:  # celery[worker] is not 'celery', [pool] is not empty
        assert name in out, name
    assert printable(INSTANCE) in out or args[0] == "idle"


def test_a_name_is_never_a_terminal_link_or_style(hostile: Path) -> None:
    out = run("top", str(hostile), "--by", "name", color=True)
    assert "\x1b]8;" not in out  # OSC 8: a clickable link
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "[link=https://evil.example]x[/link]" in plain and "[bold]x" in plain


def test_pasted_remediation_runs_nothing_and_selects_the_group(hostile: Path, tmp_path: Path) -> None:
    d = diagnose(hostile)
    leak = next(f for f in d.findings if f.kind == "leak")
    assert leak.group == SHELL
    line = next(s for s in leak.steps(hostile) if s.startswith("clientscope kill-script"))
    command = line.split("   # ")[0]
    # pasted as the shell reads it: the words clientscope receives
    spy = subprocess.run(["bash", "-c", "clientscope() { printf '%s\\0' \"$@\"; }; " + command],
                         cwd=tmp_path, capture_output=True, timeout=30, check=True)  # fmt: skip
    words = spy.stdout.decode().split("\0")[:-1]
    assert words == ["kill-script", str(hostile), "--group", SHELL, "--leaked"]
    # and run for real
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"Chosen: --leaked --group {SHELL}, and leaks finds 1 leaking group(s)" in done.stderr  # the review
    # stdout: the commands only, and the young leak's connections are picked (idle over 600 s,
    # as it proposed before, picked none of a leak younger than ten minutes)
    assert done.stdout.count("CLIENT KILL ID ") >= 1, done.stderr
    assert not (tmp_path / "PWNED").exists()


def test_diagnose_screen_shows_the_quoted_command(hostile: Path) -> None:
    out = run("diagnose", str(hostile))
    assert for_shell(SHELL) in out
    assert f"--group '{SHELL}'" not in out  # the hand-quoted form the attacker broke out of


def test_kill_script_output_has_no_raw_newline(hostile: Path) -> None:
    result = CliRunner().invoke(app, ["kill-script", str(hostile), "--idle-over", "0"],
                                env={"COLUMNS": "400", "NO_COLOR": "1"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout and all(line.startswith("CLIENT KILL ID ") for line in result.stdout.splitlines())
    assert "FLUSHALL" not in [line.strip() for line in result.output.splitlines()]  # review included


def test_report_files_carry_names_as_text(hostile: Path, tmp_path: Path) -> None:
    run("report", str(hostile), "--out", str(tmp_path / "r"))
    md = (tmp_path / "r" / "report.md").read_text()
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<img/src" not in md and "<img/src" not in page
    assert "&lt;img/src=x/onerror=alert(1)&gt;" in md
    assert "[link=https://evil.example]" not in md  # a Markdown link would need the bare brackets
    assert for_markdown(SHELL) in md
    assert sorted(p.name for p in (tmp_path / "r" / "figures").glob("*.png"))
    assert not list(tmp_path.glob(".r.tmp-*"))  # the staging folder is gone


def test_a_failed_report_leaves_the_previous_one_whole(
    hostile: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report_module = sys.modules["clientscope.reporting.report"]

    out = tmp_path / "r"
    run("report", str(hostile), "--out", str(out))
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a chart failed half way")

    monkeypatch.setattr(report_module, "render_markdown", broken)
    with pytest.raises(RuntimeError):
        report_module.report(hostile, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert not list(tmp_path.glob(".r.tmp-*"))


def test_mathtext_names_draw_as_text() -> None:
    from io import BytesIO

    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label=for_figure(MATH))
    ax.set_title(for_figure("$x^$"))
    fig.legend()
    fig.savefig(BytesIO(), format="png")  # raw, MATH raises ValueError in the mathtext parser
    assert fig.legends[0].get_texts()[0].get_text() == r"\$\frac{a}{\$"
    raw = Figure()
    raw.subplots().set_title(MATH)
    with pytest.raises(ValueError):
        raw.savefig(BytesIO(), format="png")


# ------------------------------------------------------------------ the helper itself
SHELL_CASES = [SHELL, "a b", "it's", "$(id)", "`id`", "a\nb", "tab\there", "\x1b[31mred", "back\\slash",
               "--flag", "", "ü-cache", "a'b\"c", "\\'", "-", "*", "~root"]  # fmt: skip


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_shell_words_paste_back_exactly(tmp_path: Path) -> None:
    script = "; ".join(f"printf '%s\\0' {for_shell(s)}" for s in SHELL_CASES)
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, timeout=30,
                          check=True)  # fmt: skip
    assert done.stdout.decode().split("\0")[:-1] == SHELL_CASES
    assert not list(tmp_path.iterdir())
    assert shell_line("kill-script", "DATASET", "--group", SHELL).startswith("kill-script DATASET --group '")


def test_printable_is_one_bounded_line() -> None:
    huge = "[/]\n" * 5_000_000  # 20 MB
    began = time.perf_counter()
    shown = printable(huge)
    assert time.perf_counter() - began < 0.5
    assert "\n" not in shown and len(shown) <= 400 and shown.endswith("…")
    assert printable("a\x1b]8;;https://x\x07b") == "a\\x1b]8;;https://x\\x07b"
    assert printable("\u202eevil") == "\\u202eevil"


def test_markdown_cells_stay_cells() -> None:
    assert for_markdown("a|b") == "a\\|b"
    assert for_markdown("# not a heading") == "\\# not a heading"
    assert for_markdown("1. not a list") == "1\\. not a list"
    assert for_markdown("**x** `y` [z](u)") == "\\*\\*x\\*\\* \\`y\\` \\[z\\](u)"
    assert for_markdown("<b>&") == "&lt;b&gt;&amp;"


def test_json_keeps_names_exact(hostile: Path) -> None:
    rows = json.loads(run("top", str(hostile), "--by", "name", "--json"))
    names = {r["name"] for r in rows}
    assert set(MARKUP) | {MATH, HTML, SHELL} <= names


def test_a_client_named_like_the_placeholder_keeps_its_name() -> None:
    """The dataset path fills the placeholder alone: a group named DATASET (or holding it)
    stays itself, quoted whole."""
    from clientscope.analysis.diagnose import DATASET_WORD, Finding

    for name in ("DATASET", "x-DATASET-y", "'<the", "dataset>'"):
        line = shell_line("clientscope", "kill-script", DATASET_WORD, "--group", name)
        (step,) = Finding("leak", "warning", "t", "s", remediation=(line,)).steps("/data/my ds")
        assert step == shell_line("clientscope", "kill-script", "/data/my ds", "--group", name)
