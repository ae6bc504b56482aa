"""Every notebook in notebooks/ runs top to bottom on the public API without an error."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["01-explore", "02-postmortem", "03-capacity-planning"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_uses_only_the_public_api(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("clientscope"), node.module
            if isinstance(node, ast.Import):
                assert all(
                    a.name == "clientscope" or not a.name.startswith("clientscope")
                    for a in node.names
                )
        assert not cell.get("outputs"), f"{path.name}: commit notebooks without outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    began = time.monotonic()
    NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert time.monotonic() - began < 60, "keep each notebook under ~30 s"
    errors = [
        o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert errors == []
    rich = [o for c in book.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    images = [
        o for c in book.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert rich, "results render as HTML in Jupyter"
    assert images, "charts render inline"
