"""The CLI as a whole: fast start, help on every command and option, one error style."""

from __future__ import annotations

import subprocess
import sys

import typer.core
import typer.main

import clientscope
from clientscope.cli import app


def test_help_does_not_import_heavy_libraries() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, clientscope.cli; "
            "heavy = {'polars', 'matplotlib', 'redis', 'pandas', 'numpy', 'pyarrow'} & set(sys.modules); "
            "print(sorted(heavy))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_command_and_option_has_help() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert "import" in group.commands
    missing = []
    for name, command in group.commands.items():
        if not (command.help or "").strip():
            missing.append(name)
        for param in command.params:
            if not (getattr(param, "help", "") or "").strip():
                missing.append(f"{name} {param.name}")
    assert missing == []


def test_public_names_resolve() -> None:
    for name in clientscope.__all__:
        assert getattr(clientscope, name) is not None, name


def test_the_public_api_is_exactly_the_documented_one() -> None:
    assert set(clientscope.__all__) == {
        "__version__",
        "parse_client_list", "parse_info", "parse_raw",
        "open_dataset", "Dataset", "DatasetWarning", "import_dumps", "ImportResult",
        "collect", "CollectResult", "compact", "CompactResult",
        "summary", "top", "idle", "leaks", "forecast", "plan", "alerts", "diagnose",
        "kill_script", "Finding", "simulate", "SimulationResult",
        "build_model", "leaks_from", "diagnose_from", "plan_from", "replay_alerts", "replay_from",
        "summary_from", "top_from", "idle_from",
        "Summary", "IdleReport", "LeakReport", "Forecast", "CapacityPlan", "AlertReplay",
        "Diagnosis", "KillScript", "Model",
        "report", "ReportResult", "export", "ExportResult", "charts",
        "ClientscopeError", "InputError", "ParseError", "TimestampError", "DatasetError",
        "DatasetWriteError", "CaptureError", "ConfigError", "AnalysisError", "MissingExtraError",
    }  # fmt: skip
