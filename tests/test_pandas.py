"""pandas with nullable dtypes: counts stay integers, nulls stay <NA>, in every table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

import clientscope as cs
from clientscope.dataset import Dataset, append_raw, open_dataset, pandas_frame
from clientscope.schema import TABLES

T0 = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
LINES = (
    b"id=3 addr=10.0.0.1:5000 laddr=10.0.0.9:6379 fd=8 name=api age=60 idle=2 flags=N db=0 cmd=get\n"
    b"id=x addr= this is not a client line\n"  # -> rejects
)
INFO = b"# Server\r\nredis_version:7.2.4\r\nrun_id:abc123\r\n\r\n# Clients\r\nconnected_clients:2\r\nmaxclients:100\r\n"
# Polars dtype -> the pandas dtype it must become
EXPECTED = {pl.Int64: "Int64", pl.Float64: "Float64", pl.Boolean: "boolean", pl.String: "string"}


def _with_nulls(root: Path) -> Dataset:
    """Two captures: one with a client, a rejected line and INFO; one failed (every count null)."""
    append_raw(
        root,
        pl.DataFrame(
            {
                "capture_id": ["c0", "c1"],
                "instance": ["cache-1", "cache-1"],
                "ts": [T0, T0 + timedelta(seconds=10)],
                "ts_source": ["server_time", "server_time"],
                "source": ["collect", "collect"],
                "ok": [True, False],
                "error_kind": [None, "max_clients"],
                "error_message": [None, "ERR max number of clients reached"],
                "client_list": [LINES, None],
                "info": [INFO, None],
                "config": [json.dumps({"maxclients": "100", "timeout": "0"}), None],
                "content_sha256": ["h0", None],
            },
            schema_overrides={
                "ts": pl.Datetime("us", "UTC"),
                "client_list": pl.Binary,
                "info": pl.Binary,
            },
        ),
    )
    return open_dataset(root)


@pytest.mark.parametrize("table", ["raw", *TABLES])
def test_every_table_keeps_integers_and_nulls(table: str, tmp_path: Path) -> None:
    ds = _with_nulls(tmp_path)
    polars_frame = ds.scan(table).collect()  # type: ignore[arg-type]
    frame = ds.to_pandas(table)  # type: ignore[arg-type]
    assert len(frame) == polars_frame.height > 0
    assert list(frame.columns) == polars_frame.columns
    for name, dtype in polars_frame.schema.items():
        column = frame[name]
        want = EXPECTED.get(dtype.base_type())
        if want is not None:
            assert str(column.dtype) == want, (table, name, column.dtype)
        assert int(column.isna().sum()) == polars_frame[name].null_count(), (table, name)
        if want is not None and polars_frame[name].null_count():
            assert all(v is pd.NA for v in column[column.isna()].array), (table, name)
    assert "float64" not in {str(t) for t in frame.dtypes}  # numpy's float64: a count turned float
    assert "object" not in {str(frame[c].dtype) for c in polars_frame.columns
                            if polars_frame[c].dtype in (pl.Boolean, pl.String)}  # fmt: skip


def test_a_failed_capture_has_na_counts_not_nan(tmp_path: Path) -> None:
    captures = _with_nulls(tmp_path).to_pandas("captures").set_index("capture_id")
    assert captures.loc["c0", "maxclients"] == 100
    assert captures.loc["c0", "n_clients"] == 1
    assert captures.loc["c0", "timeout"] == 0
    for column in ("maxclients", "n_clients", "timeout"):
        assert str(captures[column].dtype) == "Int64"
        assert captures.loc["c1", column] is pd.NA
    assert captures.loc["c1", "error_message"] == "ERR max number of clients reached"
    assert captures.loc["c0", "error_kind"] is pd.NA


def test_notebook_01s_captures_cell_shows_integers_and_na(tmp_path: Path) -> None:
    """The last cell of notebook 01 printed `258.0` and `NaN` for counts."""
    sim = cs.simulate("incident", tmp_path / "incident.cs", seed=1, captures=120, clients=150)
    frame = cs.open_dataset(sim.path).to_pandas("captures")
    shown = frame[["ts", "ok", "error_kind", "n_clients", "maxclients"]]
    head, tail = shown.head().to_string(), shown.tail().to_string()
    assert "<NA>" in tail  # the server refused the capture: no count
    assert "NaN" not in head + tail
    assert ".0 " not in head + tail and not any(line.endswith(".0") for line in head.splitlines())
    assert frame["maxclients"].dropna().map(type).eq(int).all()


def test_pandas_frame_converts_an_analysis_result() -> None:
    """Analyses return Polars frames; `pandas_frame` gives them the same dtypes."""
    result = pl.DataFrame(
        {"name": ["api", None], "clients": [3, None], "idle": [True, None], "rate": [0.5, None]}
    )
    frame = pandas_frame(result)
    assert [str(t) for t in frame.dtypes] == ["string", "Int64", "boolean", "Float64"]
    assert frame["clients"].tolist() == [3, pd.NA]
    assert frame.iloc[1].isna().all()
