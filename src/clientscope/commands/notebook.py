"""`clientscope notebook`: a copy of the three notebooks set to read one dataset.

Each notebook has a code cell tagged `parameters` (papermill's convention) that sets
`dataset = ""` (simulate into a temporary folder). The copy keeps that cell as it is
and gets a cell after it, tagged `injected-parameters` as papermill writes it, that
sets `dataset` to the dataset's absolute path. The path is written with `repr`, a
Python string literal, never as code. papermill can run a copy with other values:
it replaces the injected cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from clientscope.commands.output import DATASET
from clientscope.errors import ClientscopeError, InputError

NOTEBOOKS = ("01-explore.ipynb", "02-postmortem.ipynb", "03-capacity-planning.ipynb")
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
_HELP = (
    "Write a copy of the three notebooks (explore, postmortem, capacity planning) into the --out "
    "folder, set to read the dataset. Each copy keeps its `parameters` cell and gets the cell "
    "papermill would inject after it (tagged `injected-parameters`): `dataset = '<the dataset's "
    "absolute path>'`, a Python string literal. Open them with `jupyter lab OUT`, or run them "
    "with `papermill OUT/01-explore.ipynb result.ipynb` (papermill `-p dataset PATH` replaces the "
    "cell)."
)


def notebooks_folder() -> Path:
    """Where the notebooks are: in the installed package, else the source checkout's notebooks/."""
    here = Path(__file__).resolve()
    for folder in (here.parents[1] / "notebooks", here.parents[3] / "notebooks"):
        if all((folder / name).is_file() for name in NOTEBOOKS):
            return folder
    raise ClientscopeError(
        f"the notebooks ({', '.join(NOTEBOOKS)}) are not installed with clientscope "
        f"(looked in {here.parents[1] / 'notebooks'} and {here.parents[3] / 'notebooks'}); "
        "take them from the source repository's notebooks/ folder."
    )


def parameters_cell(dataset: Path) -> dict[str, Any]:
    """The cell that sets `dataset`, as papermill injects it; the path is a string literal."""
    source = f"# Parameters written by `clientscope notebook`\ndataset = {os.fspath(dataset)!r}\n"
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": INJECTED_TAG,
        "metadata": {"tags": [INJECTED_TAG]},
        "outputs": [],
        "source": source.splitlines(keepends=True),
    }


def set_to(book: dict[str, Any], dataset: Path, name: str) -> dict[str, Any]:
    """`book` with the injected cell after its `parameters` cell (an older injected one goes)."""
    cells = [c for c in book["cells"] if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    tagged = [i for i, c in enumerate(cells) if PARAMETERS_TAG in c["metadata"].get("tags", [])]
    if len(tagged) != 1:
        raise ClientscopeError(f"{name}: {len(tagged)} cells tagged 'parameters', expected one")
    cells.insert(tagged[0] + 1, parameters_cell(dataset))
    return {**book, "cells": cells}


def write_notebooks(dataset: Path | str, out: Path | str, *, force: bool = False) -> list[Path]:
    """Write the three notebooks into `out`, set to read `dataset`; returns the files written.

    Refuses (`InputError`, nothing written) when a file is there already, unless `force`.
    """
    from clientscope.dataset import open_dataset

    root = Path(dataset).absolute()
    open_dataset(root)  # a DatasetError names what is wrong and the mend
    out = Path(out)
    targets = [out / name for name in NOTEBOOKS]
    there = [t for t in targets if t.exists()]
    if there and not force:
        raise InputError(
            f"{', '.join(map(str, there))} already exist(s); nothing was written. "
            "Pass --force to overwrite, or choose another --out."
        )
    source = notebooks_folder()
    for target in targets:
        book = json.loads((source / target.name).read_text(encoding="utf-8"))
        text = json.dumps(set_to(book, root, target.name), indent=1, ensure_ascii=False)
        try:
            out.mkdir(parents=True, exist_ok=True)
            target.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise InputError(
                f"cannot write {target}: {exc.strerror}; choose another --out"
            ) from exc
    return targets


def register(app: typer.Typer) -> None:
    """Add the `notebook` command."""

    @app.command("notebook", help=_HELP)
    def notebook_command(
        dataset: Path = DATASET,
        out: Path = typer.Option(..., "--out", "-o", help="Folder to write the notebooks into."),
        force: bool = typer.Option(False, "--force", help="Overwrite notebooks already in the --out folder."),
    ) -> None:
        from clientscope.escape import printable

        for path in write_notebooks(dataset, out, force=force):
            typer.echo(printable(path))
