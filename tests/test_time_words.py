"""One time vocabulary: one duration grammar (Prometheus': 500ms, 90s, 1h30m, 2d, 1w) for every
option and rule file, and one window, `--since` / `--until`, on every analysis command and
`report`, taking ISO 8601 with or without a zone or a `T`, epoch seconds, and times relative to
the data's end (`-2h`); the old spellings stay as hidden aliases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import clientscope as cs
from clientscope.capture import parse_duration
from clientscope.cli import app
from clientscope.config import Where, duration, moment
from clientscope.errors import ConfigError
from clientscope.simulation import SimulationResult


@pytest.fixture(scope="module")
def leak(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    return cs.simulate("leak", tmp_path_factory.mktemp("time") / "leak.cs", seed=5)


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def last_ts(path: Path) -> datetime:
    value = cs.open_dataset(path).captures.select(pl.col("ts").max()).collect().item()
    assert isinstance(value, datetime)
    return value


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("90s", 90), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), ("300", 300),
     ("1.5m", 90), ("1m30s", 90)],
)  # fmt: skip
def test_one_duration_grammar_everywhere(text: str, seconds: float) -> None:
    assert duration(text, Where.option("--x"), high=1e9) == seconds
    assert parse_duration(text, option="--interval") == seconds  # the collector's options too


@pytest.mark.parametrize("text", ["5m1h", "1m1m", "abc", "-5m", "nan", "1e400", "5 minutes"])
def test_a_duration_that_is_not_one_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--interval .* is (not a duration|out of range)"):
        parse_duration(text, option="--interval")


def test_times_in_every_spelling() -> None:
    where = Where.option("--since")
    want = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    for text in ("2026-11-26T09:30:00Z", "2026-11-26 09:30", "2026-11-26T09:30", "2026-11-26 10:30+01:00",
                 str(int(want.timestamp()))):  # fmt: skip
        assert moment(text, where) == want, text
    assert moment("2026-11-26T09:30:00.5Z", where) == want + timedelta(milliseconds=500)
    assert moment("-2h", where) == -timedelta(hours=2)
    assert moment("-1h30m", where) == -timedelta(minutes=90)
    with pytest.raises(ConfigError, match=r"^--since 'yesterday' is not a time: write it in ISO 8601"):
        moment("yesterday", where)


COMMANDS = ["summary", "top", "idle", "leaks", "forecast", "alerts", "plan", "diagnose"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_analysis_command_takes_the_window(leak: SimulationResult, command: str) -> None:
    path = leak.path
    end = last_ts(path)
    out = cli(command, str(path), "--since", "-10m", "--json")
    assert json.loads(out) is not None
    # and an absolute window that holds no capture is an error naming it, not a silent answer
    late = (end + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    result = CliRunner().invoke(app, [command, str(path), "--since", late, "--json"])
    assert result.exit_code != 0


def test_the_window_is_the_data_the_analysis_reads(leak: SimulationResult) -> None:
    path = leak.path
    end = last_ts(path)
    d = json.loads(cli("diagnose", str(path), "--since", "-10m", "--json"))
    start = datetime.fromisoformat(d["window_start"])
    assert end - timedelta(minutes=10) <= start <= end - timedelta(minutes=9)
    f = json.loads(cli("forecast", str(path), "--since", "-10m", "--json"))[0]
    assert f["window_s"] <= 600
    epoch = f"{(end - timedelta(minutes=10)).timestamp():.6f}"  # epoch seconds, with a fraction
    assert json.loads(cli("diagnose", str(path), "--since", epoch, "--json"))["captures"] == d["captures"]
    s = json.loads(cli("summary", str(path), "--until", "-20m", "--json"))
    assert datetime.fromisoformat(s["last"]) <= end - timedelta(minutes=20)


def test_old_spellings_stay_as_hidden_aliases(leak: SimulationResult, tmp_path: Path) -> None:
    path = leak.path
    end = last_ts(path)
    since = (end - timedelta(minutes=10)).isoformat()
    report = json.loads(cli("report", str(path), "--out", str(tmp_path / "r"), "--from", since, "--json"))
    assert report["html"]
    by_window = json.loads(cli("forecast", str(path), "--window", "10m", "--json"))[0]
    by_since = json.loads(cli("forecast", str(path), "--since", "-10m", "--json"))[0]
    assert by_window == by_since
    help_text = cli("report", "--help")
    assert "--since" in help_text and "--from" not in help_text


def test_idle_timeouts_are_durations(leak: SimulationResult) -> None:
    out = json.loads(cli("idle", str(leak.path), "--timeout", "5m", "--timeout", "1h", "--json"))
    assert {row["timeout"] for row in out["timeouts"]} >= {300, 3600}


def test_export_takes_the_window_too(leak: SimulationResult, tmp_path: Path) -> None:
    path = leak.path
    whole = json.loads(cli("export", str(path), "--out", str(tmp_path / "a.om"), "--json"))
    last = json.loads(cli("export", str(path), "--out", str(tmp_path / "b.om"), "--since", "-10m", "--json"))
    old = json.loads(cli("export", str(path), "--out", str(tmp_path / "c.om"), "--from",
                         (last_ts(path) - timedelta(minutes=10)).isoformat(), "--json"))  # fmt: skip
    assert 0 < last["samples"] < whole["samples"]
    assert old["samples"] == last["samples"]


def test_collect_read_timeout_is_a_duration_and_the_old_spelling_stays(tmp_path: Path) -> None:
    """`--timeout` meant a read timeout in `collect` and the server's idle timeout in `idle`:
    collect's is `--read-timeout` now (a duration); `--timeout` stays as a hidden alias."""
    from servers import valkey_server

    with valkey_server() as srv:
        for option in ("--read-timeout", "--timeout"):
            result = CliRunner().invoke(app, [
                "collect", srv.url, "--out", str(tmp_path / option.strip("-")), "--count", "1",
                option, "1m30s", "--connect-timeout", "2s", "--quiet",
            ])  # fmt: skip
            assert result.exit_code == 0, result.output
    help_text = cli("collect", "--help")
    assert "--read-timeout" in help_text and "--timeout " not in help_text
