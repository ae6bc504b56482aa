"""Every notebook in notebooks/ runs top to bottom on the public API without an error."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from typer.testing import CliRunner, Result

import clientscope as cs
from clientscope.cli import app
from clientscope.commands import notebook
from clientscope.errors import DatasetError, InputError

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


# ------------------------------------------------ parameters: point a notebook at a dataset
def _tagged(book: nbformat.NotebookNode, tag: str) -> list[int]:
    return [i for i, c in enumerate(book.cells) if tag in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_a_papermill_parameters_cell(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    [at] = _tagged(book, "parameters")
    cell = book.cells[at]
    assert cell.cell_type == "code"
    values = {
        node.targets[0].id: ast.literal_eval(node.value)  # type: ignore[attr-defined]
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign)
    }
    assert values["dataset"] == "", "empty: simulate into a temporary folder"
    assert all(isinstance(node, ast.Assign) for node in ast.parse(cell.source).body)
    reads = [i for i, c in enumerate(book.cells) if "open_dataset(" in c.source]
    assert reads and at < min(reads), "the parameters cell comes before the dataset is read"
    assert "open_dataset(dataset)" in book.cells[reads[0]].source


HOSTILE_PATHS = [
    "my data/it's here.cs",
    "q\"uote's\\back slash.cs",
    '"); import os; os.system("echo pwned") #',
    "new\nline.cs",
    "ü-cache/\u202edata.cs",
    "caf\udce9.cs",  # a name that is not UTF-8 (surrogate-escaped byte)
]


@pytest.mark.parametrize("name", HOSTILE_PATHS)
def test_the_dataset_path_is_written_as_a_string_literal(name: str) -> None:
    path = Path("/srv") / name
    cell = notebook.parameters_cell(path)
    [assign] = ast.parse("".join(cell["source"])).body
    assert isinstance(assign, ast.Assign) and isinstance(assign.value, ast.Constant)
    assert assign.value.value == str(path)
    assert cell["metadata"]["tags"] == ["injected-parameters"]


def _run_cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["notebook", *args])


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small incident, in a folder whose name needs quoting, under an instance name of its own."""
    root = tmp_path_factory.mktemp("nb") / 'it\'s a "quoted" dir' / "my data.cs"
    cs.simulate("incident", root, seed=4, captures=60, clients=60, instance="nb-instance-7")
    return root


def test_notebook_writes_the_three_notebooks_set_to_the_dataset(
    small_dataset: Path, tmp_path: Path
) -> None:
    result = _run_cli(str(small_dataset), "--out", str(tmp_path / "nb"))
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "nb").glob("*.ipynb"))
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    assert result.output.splitlines() == [str(p) for p in written]
    for path in written:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        [params] = _tagged(book, "parameters")
        assert _tagged(book, "injected-parameters") == [params + 1]
        scope: dict[str, object] = {}
        exec(book.cells[params + 1].source, scope)  # the cell only assigns a literal
        assert scope["dataset"] == str(small_dataset.absolute())


def test_notebook_refuses_to_overwrite_unless_forced(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "nb"
    assert _run_cli(str(small_dataset), "--out", str(out)).exit_code == 0
    (out / "02-postmortem.ipynb").write_text("mine")
    again = _run_cli(str(small_dataset), "--out", str(out))
    assert again.exit_code == 1
    assert isinstance(again.exception, InputError)
    assert str(out / "02-postmortem.ipynb") in str(again.exception)
    assert "--force" in str(again.exception)
    assert (out / "02-postmortem.ipynb").read_text() == "mine"
    forced = _run_cli(str(small_dataset), "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert "injected-parameters" in (out / "02-postmortem.ipynb").read_text()


def test_notebook_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    result = _run_cli(str(tmp_path), "--out", str(tmp_path / "nb"))
    assert isinstance(result.exception, DatasetError)
    assert "not a clientscope dataset" in str(result.exception)
    assert not (tmp_path / "nb").exists()


def test_notebook_help_says_how_the_dataset_is_set() -> None:
    result = CliRunner().invoke(app, ["notebook", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "injected-parameters" in text and "--force" in text and "papermill" in text


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_written_notebook_runs_on_that_dataset(
    name: str, small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "nb"
    notebook.write_notebooks(small_dataset, out)
    book = nbformat.read(out / name, as_version=4)
    NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(out)}}
    ).execute()
    outputs = [o for c in book.cells for o in c.get("outputs", [])]
    assert [o for o in outputs if o.get("output_type") == "error"] == []
    text = json.dumps(outputs)
    assert "nb-instance-7" in text, "the notebook read the dataset it was pointed at"
    assert "redis-master-0" not in text, "nothing was simulated"


def test_notebook_says_when_it_cannot_write(small_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = _run_cli(str(small_dataset), "--out", str(tmp_path / "a-file"))
    assert isinstance(result.exception, InputError)
    assert f"cannot write {tmp_path / 'a-file'}" in str(result.exception)
    assert "choose another --out" in str(result.exception)
