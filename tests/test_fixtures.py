"""One test per fixture file: the parsers against hand-checked sidecars.

Every `fixtures/client_list/*.txt`, `fixtures/info/*.txt` and `fixtures/dumps/*.txt` has a
`<same stem>.expected.json` next to it (see fixtures/README.md for where each file comes from).
The sidecar values were checked by hand or come from what scripts/capture_fixtures.py knows
about the clients it opened (CLIENT ID, socket ports, names it set), never from the parser under
test. Adding a fixture file adds a test; a fixture without a sidecar fails.

CLIENT LIST sidecar: {"source", "lines", "rejects", ["reject_lines"], "clients": [{"line_no", <column>:
<value>, ["extra": {key: value}]}], ["counts": {column: {value: n}}]}. A value of null means the
field is absent or empty on that line.
INFO sidecar: {"source", "fields": {wide column: value}, "long_keys": ["section.key", ...]}.
Each `fixtures/config/<server>-<version>.json` is parsed together with that server's real CLIENT
LIST and INFO as one raw capture (`parse_raw`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import clientscope
from clientscope.schema import RAW_SCHEMA

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _is_info(path: Path) -> bool:
    return path.parent.name == "info" or path.name.startswith("info-")


def _fixture_files() -> list[Path]:
    folders = ("client_list", "info", "dumps")
    return sorted(p for folder in folders for p in (FIXTURES / folder).glob("*.txt"))


CLIENT_FILES = [p for p in _fixture_files() if not _is_info(p)]
CONFIG_FILES = sorted((FIXTURES / "config").glob("*.json"))
INFO_FILES = [p for p in _fixture_files() if _is_info(p)]


def _label(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_name(path.name.removesuffix(".txt") + ".expected.json")
    if not side.exists():
        pytest.fail(
            f"{_label(path)} has no sidecar {side.name}: write one (see fixtures/README.md)"
        )
    data: dict[str, Any] = json.loads(side.read_text())
    return data


def _lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8", "replace").splitlines()


def _extra_map(value: Any) -> dict[str, str]:
    """`extra` as {key: value}; keys compared in snake_case (`tot-read-calls` == `tot_read_calls`)."""
    pairs = value or []
    return {str(p["key"]).replace("-", "_"): p["value"] for p in pairs}


def _client_mismatches(row: dict[str, Any], want: dict[str, Any], raw: str) -> list[str]:
    found: list[str] = []
    if row.get("parse_error") is not None:
        found.append(f"parse_error {row['parse_error']!r}")
    if row.get("raw_line") not in (None, raw):
        found.append(f"raw_line {row['raw_line']!r} is not the file's line {raw!r}")
    for key, value in want.items():
        if key == "line_no":
            continue
        if key == "extra":
            extra = _extra_map(row.get("extra"))
            for ekey, evalue in value.items():
                got = extra.get(ekey.replace("-", "_"))
                if got != evalue:
                    found.append(f"extra[{ekey}] = {got!r}, expected {evalue!r}")
            continue
        got = row.get(key)  # a column the parser does not produce counts as null
        if got != value or type(got) is not type(value):
            found.append(f"{key} = {got!r}, expected {value!r}")
    return found


@pytest.mark.parametrize("path", CLIENT_FILES, ids=_label)
def test_client_list_fixture(path: Path) -> None:
    expected = _sidecar(path)
    frame = clientscope.parse_client_list(path.read_bytes())
    assert isinstance(frame, pl.DataFrame)
    problems: list[str] = []
    if frame.height != expected["lines"]:
        problems.append(f"{frame.height} rows, expected one per line: {expected['lines']}")
    rejects = frame.filter(pl.col("parse_error").is_not_null())
    if rejects.height != expected["rejects"]:
        shown = rejects.select("line_no", "parse_error").rows()
        problems.append(f"{rejects.height} rejects {shown}, expected {expected['rejects']}")
    if "reject_lines" in expected and sorted(rejects["line_no"]) != expected["reject_lines"]:
        problems.append(
            f"reject lines {sorted(rejects['line_no'])}, expected {expected['reject_lines']}"
        )
    rows = {row["line_no"]: row for row in frame.to_dicts()}
    lines = _lines(path)
    for want in expected["clients"]:
        no = want["line_no"]
        if no not in rows:
            problems.append(f"line {no}: no row")
            continue
        problems += [f"line {no}: {m}" for m in _client_mismatches(rows[no], want, lines[no - 1])]
    for column, groups in expected.get("counts", {}).items():
        for value, n in groups.items():
            got = frame.filter(pl.col(column) == value).height if column in frame.columns else 0
            if got != n:
                problems.append(f"count of {column} == {value!r}: {got}, expected {n}")
    assert not problems, f"{_label(path)}:\n  " + "\n  ".join(problems)


def _long_key_present(keys: set[str], wanted: str) -> bool:
    """`keyspace.db0.keys` is there as itself; `replication.slave0` also as `replication.slave0.ip`."""
    return wanted in keys or any(k.startswith(wanted + ".") for k in keys)


@pytest.mark.parametrize("path", INFO_FILES, ids=_label)
def test_info_fixture(path: Path) -> None:
    expected = _sidecar(path)
    data = path.read_bytes()
    wide = clientscope.parse_info(data, form="wide")
    assert isinstance(wide, pl.DataFrame)
    assert wide.height == 1, f"{_label(path)}: {wide.height} wide rows for one INFO reply"
    row = wide.row(0, named=True)
    problems = [
        f"{key} = {row.get(key)!r}, expected {value!r}"
        for key, value in expected["fields"].items()
        if row.get(key) != value or type(row.get(key)) is not type(value)
    ]
    long = clientscope.parse_info(data, form="long")
    assert isinstance(long, pl.DataFrame)
    keys = {f"{section}.{key}" for section, key in long.select("section", "key").rows()}
    problems += [
        f"long form has no {k}" for k in expected["long_keys"] if not _long_key_present(keys, k)
    ]
    bad = long.filter(pl.col("parse_error").is_not_null())
    if bad.height:
        problems.append(f"unreadable INFO lines: {bad.select('line_no', 'parse_error').rows()}")
    assert not problems, f"{_label(path)}:\n  " + "\n  ".join(problems)


def _client_list_of(stem: str) -> Path:
    """`<stem>-mix.txt` for a server's main capture, `<stem>.txt` for a scenario's own."""
    mix = FIXTURES / "client_list" / f"{stem}-mix.txt"
    return mix if mix.exists() else FIXTURES / "client_list" / f"{stem}.txt"


def _raw_capture(stem: str) -> pl.DataFrame:
    """One raw capture row (schema.RAW_SCHEMA) made of a real server's three fixture files."""
    config = (FIXTURES / "config" / f"{stem}.json").read_text()
    row: dict[str, object] = dict.fromkeys(RAW_SCHEMA)
    row.update(
        capture_id=f"fixture-{stem}",
        instance=stem,
        ts=datetime(2026, 11, 26, 9, 30, tzinfo=UTC),
        ts_source="explicit",
        source="import",
        origin=f"fixtures/*/{stem}",
        ok=True,
        client_list=_client_list_of(stem).read_bytes(),
        info=(FIXTURES / "info" / f"{stem}.txt").read_bytes(),
        config=config,
    )
    return pl.DataFrame([row], schema=RAW_SCHEMA)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_label)
def test_config_fixture_through_parse_raw(path: Path) -> None:
    """A real server's CLIENT LIST + INFO + CONFIG GET fixtures, as one capture, parse end to end."""
    stem = path.name.removesuffix(".json")
    config = json.loads(path.read_text())
    clients = _sidecar(_client_list_of(stem))
    info = _sidecar(FIXTURES / "info" / f"{stem}.txt")["fields"]
    tables = clientscope.parse_raw(_raw_capture(stem))
    capture = tables["captures"].row(0, named=True)
    assert capture["n_clients"] == clients["lines"]
    assert capture["n_rejects"] == 0
    assert capture["maxclients"] == int(config["maxclients"]) == info["maxclients"]
    assert capture["maxclients_source"] == "config"
    assert capture["timeout"] == int(config["timeout"])
    assert capture["tcp_keepalive"] == int(config["tcp-keepalive"])
    assert capture["tcp_backlog"] == int(config["tcp-backlog"])
    assert capture["client_output_buffer_limit"] == config["client-output-buffer-limit"]
    if "run_id" in info:
        assert capture["run_id"] == info["run_id"]
    assert tables["clients"].height == clients["lines"]
    assert tables["info"]["connected_clients"].to_list() == [info["connected_clients"]]


def test_every_fixture_is_collected() -> None:
    """The folders are globbed: a misplaced or misnamed fixture would silently drop its test."""
    sidecars = sorted(FIXTURES.glob("*/*.expected.json"))
    texts = {p.with_name(p.name.removesuffix(".expected.json") + ".txt") for p in sidecars}
    assert texts == set(CLIENT_FILES) | set(INFO_FILES)
    assert len(CLIENT_FILES) >= 20 and len(INFO_FILES) >= 4
    assert {p.name.removesuffix(".json") for p in CONFIG_FILES} == {
        p.name.removesuffix(".txt") for p in (FIXTURES / "info").glob("*.txt")
    }
