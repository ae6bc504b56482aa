"""`export`: derived low-cardinality series, checked by a real OpenMetrics parser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from typer.testing import CliRunner

import clientscope as cs
from clientscope.cli import app
from clientscope.errors import ConfigError

SERVER_METRICS = {
    "clientscope_connected_clients",
    "clientscope_maxclients",
    "clientscope_utilization_ratio",
    "clientscope_blocked_clients",
    "clientscope_new_connections_per_second",
    "clientscope_rejected_connections_per_second",
}
GROUP_METRICS = {
    f"clientscope_{kind}_by_{dim}"
    for kind in ("clients", "idle_clients")
    for dim in ("name", "lib", "ip")
}


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> cs.Dataset:
    path = tmp_path_factory.mktemp("export") / "incident.cs"
    cs.simulate("incident", path, seed=11, captures=80, clients=120)
    return cs.open_dataset(path)


@pytest.fixture(scope="module")
def families(incident: cs.Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("om") / "incident.om"
    cs.export(incident, out, format="openmetrics", top=5)
    text = out.read_text()
    assert text.endswith("# EOF\n")
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_openmetrics_parses_and_has_every_series(families: dict[str, object]) -> None:
    assert set(families) == SERVER_METRICS | GROUP_METRICS
    for family in families.values():
        assert family.type == "gauge"  # type: ignore[attr-defined]
        assert family.documentation  # type: ignore[attr-defined]
        assert all(s.timestamp is not None for s in family.samples)  # type: ignore[attr-defined]


def test_utilization_uses_the_effective_maxclients(
    incident: cs.Dataset, families: dict[str, object]
) -> None:
    limit = incident.captures.select(pl.col("maxclients").drop_nulls().max()).collect().item()
    connected = {
        float(s.timestamp): s.value for s in families["clientscope_connected_clients"].samples
    }  # type: ignore[attr-defined]
    ratio = families["clientscope_utilization_ratio"]
    assert ratio.unit == "ratio"  # type: ignore[attr-defined]
    for sample in ratio.samples:  # type: ignore[attr-defined]
        assert sample.value == pytest.approx(connected[float(sample.timestamp)] / limit)
    assert max(s.value for s in ratio.samples) > 0.95  # type: ignore[attr-defined]  # the incident filled the server


def test_group_labels_stay_bounded_and_sum_to_the_rows(
    incident: cs.Dataset, families: dict[str, object]
) -> None:
    by_name = families["clientscope_clients_by_name"].samples  # type: ignore[attr-defined]
    names = {s.labels["name"] for s in by_name}
    assert len(names) <= 6  # top 5 + (other)
    rows = incident.clients.group_by("ts").len().collect()
    per_capture: dict[float, float] = {}
    for s in by_name:
        per_capture[float(s.timestamp)] = per_capture.get(float(s.timestamp), 0.0) + s.value
    assert len(per_capture) == rows.height
    assert sorted(per_capture.values()) == sorted(float(v) for v in rows["len"])


def test_idle_series_count_clients_idle_longer_than_the_threshold(
    incident: cs.Dataset, families: dict[str, object]
) -> None:
    idle = families["clientscope_idle_clients_by_name"].samples  # type: ignore[attr-defined]
    assert {s.labels["idle_over_seconds"] for s in idle} == {"300", "600"}
    expected = incident.clients.select((pl.col("idle") > 600).sum()).collect().item()
    got = sum(s.value for s in idle if s.labels["idle_over_seconds"] == "600")
    assert got == expected > 0


def test_samples_of_a_series_are_in_time_order(families: dict[str, object]) -> None:
    for family in families.values():
        last: dict[tuple[tuple[str, str], ...], float] = {}
        for s in family.samples:  # type: ignore[attr-defined]
            key = tuple(sorted(s.labels.items()))
            assert float(s.timestamp) > last.get(key, float("-inf"))
            last[key] = float(s.timestamp)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tabular_formats_hold_the_same_samples(
    incident: cs.Dataset, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"series.{fmt}"
    result = cs.export(incident, out, format=fmt)
    frame = pl.read_csv(out, try_parse_dates=True) if fmt == "csv" else pl.read_parquet(out)
    assert frame.height == result.samples > 0
    assert set(frame["metric"].unique()) == SERVER_METRICS | GROUP_METRICS
    assert frame.columns == [
        "metric",
        "instance",
        "dimension",
        "group",
        "idle_over_seconds",
        "ts",
        "value",
    ]


def test_label_values_are_escaped(tmp_path: Path) -> None:
    from clientscope.reporting.export import LONG_SCHEMA, to_openmetrics

    row = {"metric": "clientscope_clients_by_name", "instance": 'a"b', "dimension": "name",
           "group": 'x\\y"\nz', "idle_over_seconds": None, "ts": None, "value": 3.0}  # fmt: skip
    frame = pl.DataFrame([row], schema=LONG_SCHEMA).with_columns(
        pl.lit(0).cast(pl.Datetime("us", "UTC")).alias("ts")
    )
    [family] = text_string_to_metric_families(to_openmetrics(frame))
    assert family.samples[0].labels == {"instance": 'a"b', "name": 'x\\y"\nz'}


def test_unknown_format_names_the_choices(incident: cs.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose one of: openmetrics, csv, parquet"):
        cs.export(incident, tmp_path / "x", format="json")


def test_cli_export_window_and_json(incident: cs.Dataset, tmp_path: Path) -> None:
    first = incident.captures.select(pl.col("ts").min()).collect().item()
    end = (
        first + (incident.captures.select(pl.col("ts").max()).collect().item() - first) / 2
    ).isoformat()
    out = tmp_path / "half.om"
    res = CliRunner().invoke(
        app, ["export", str(incident.root), "--out", str(out), "--to", end, "--json"]
    )
    assert res.exit_code == 0, res.output
    stamps = {
        float(s.timestamp)
        for f in text_string_to_metric_families(out.read_text())
        for s in f.samples
    }
    assert (
        max(float(t) for t in stamps)
        <= pl.Series([end]).str.to_datetime().dt.epoch("ms").item() / 1000
    )
    assert '"samples"' in res.output


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not on PATH"
)
def test_promtool_backfills_the_export(incident: cs.Dataset, tmp_path: Path) -> None:
    out = tmp_path / "incident.om"
    result = cs.export(incident, out)
    run = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(out), str(tmp_path / "tsdb")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    samples = sum(int(line.split()[-4]) for line in run.stdout.splitlines()[1:] if line.strip())
    assert samples == result.samples


# ------------------------------------------------------------------ CSV injection (issue 13)
HOSTILE_NAMES = ['=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3", "@SUM(1+1)*cmd|'/Ccalc'!A0"]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path: Path) -> None:
    dump = tmp_path / "clients.txt"
    dump.write_text(
        "".join(
            f"id={i} addr=10.0.0.{i}:5{i} laddr=10.0.0.99:6379 fd={i} name={name} age=5 idle=700 "
            "flags=N db=0 cmd=get\n"
            for i, name in enumerate([*HOSTILE_NAMES, "plain"], 1)
        )
    )
    ds = tmp_path / "hostile.cs"
    cs.import_dumps([dump], ds, instance="=cmd")
    out = tmp_path / "series.csv"
    cs.export(ds, out, format="csv")
    frame = pl.read_csv(out)
    groups = set(frame.filter(pl.col("dimension") == "name")["group"])
    assert groups == {"'" + name for name in HOSTILE_NAMES} | {"plain"}
    assert set(frame["instance"]) == {"'=cmd"}
    assert frame["value"].dtype == pl.Float64  # numbers are left alone
    parquet = tmp_path / "series.parquet"  # a typed format keeps the names as they are
    cs.export(ds, parquet, format="parquet")
    assert set(HOSTILE_NAMES) <= set(pl.read_parquet(parquet)["group"])


def test_spreadsheet_safe_touches_text_columns_only() -> None:
    from clientscope.reporting.export import spreadsheet_safe

    frame = pl.DataFrame(
        {"text": ["=1", "+1", "-1", "@a", "\tx", "\rx", "a=b", "", None, "'=x"], "n": [-1.5] * 10}
    )
    safe = spreadsheet_safe(frame)
    assert safe["text"].to_list() == [
        "'=1", "'+1", "'-1", "'@a", "'\tx", "'\rx", "a=b", "", None, "'=x",
    ]  # fmt: skip
    assert safe["n"].to_list() == [-1.5] * 10
