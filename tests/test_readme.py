"""The README's commands are run as written, so the docs cannot drift from the tool."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- readme-commands -->"


def readme_commands() -> list[str]:
    text = README.read_text()
    block = re.search(re.escape(MARKER) + r"\s*```bash\n(.*?)```", text, re.S)
    assert block, f"README.md lost its {MARKER} block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_the_two_make_commands() -> None:
    quick = README.read_text().split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, re.M)
    assert commands == ["make demo", "make test"]


@pytest.mark.slow
def test_readme_commands_run(tmp_path: Path) -> None:
    for line in readme_commands():
        argv = shlex.split(line)
        assert argv[0] == "clientscope", line
        done = subprocess.run(
            [sys.executable, "-m", "clientscope.cli", *argv[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
        assert done.stdout.strip() or (tmp_path / argv[-1]).exists(), line
    assert (tmp_path / "incident-report" / "report.html").stat().st_size > 10_000
    assert (tmp_path / "incident.om").read_text().rstrip().endswith("# EOF")


def test_python_example_names_exist() -> None:
    import clientscope as cs

    code = README.read_text().split("## In Python / Jupyter", 1)[1].split("```python", 1)[1]
    for name in re.findall(r"\bcs\.([a-z_]+)(?:\.([a-z_]+))?", code.split("```", 1)[0]):
        obj = getattr(cs, name[0])
        if name[1]:
            assert hasattr(obj, name[1]), ".".join(name)
