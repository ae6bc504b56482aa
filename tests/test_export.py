"""`export`: derived low-cardinality series, checked by a real OpenMetrics parser (and by
promtool and Prometheus where they are installed)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from typer.testing import CliRunner

import clientscope as cs
from clientscope.analysis.alerts import DEFAULT_RULES
from clientscope.analysis.timeline import timeline
from clientscope.cli import app
from clientscope.errors import ConfigError

SERVER_GAUGES = {
    "clientscope_connected_clients",
    "clientscope_maxclients",
    "clientscope_utilization_ratio",
    "clientscope_blocked_clients",
}
# a counter's family is its name without _total (OpenMetrics); the samples keep _total
COUNTERS = {"connections_received": "total_connections_received",
            "rejected_connections": "rejected_connections", "evicted_clients": "evicted_clients"}  # fmt: skip
SERVER_COUNTERS = {f"clientscope_{c}" for c in COUNTERS}
SERVER_METRICS = SERVER_GAUGES | SERVER_COUNTERS
GROUP_METRICS = {
    f"clientscope_{kind}_by_{dim}"
    for kind in ("clients", "idle_clients")
    for dim in ("name", "lib", "ip")
}
REDIS_EXPORTER_METRICS = {
    "redis_connected_clients",
    "redis_config_maxclients",
    "redis_blocked_clients",
    "clientscope_utilization_ratio",
    *(f"redis_{c}" for c in COUNTERS),
}
PROMTOOL = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not on PATH"
)


def parsed(text: str) -> dict[str, Any]:
    assert text.endswith("# EOF\n")
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> cs.Dataset:
    path = tmp_path_factory.mktemp("export") / "incident.cs"
    cs.simulate("incident", path, seed=11, captures=80, clients=120)
    return cs.open_dataset(path)


@pytest.fixture(scope="module")
def families(incident: cs.Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("om") / "incident.om"
    cs.export(incident, out, format="openmetrics", top=5)
    return parsed(out.read_text())


def test_openmetrics_parses_and_has_every_series(families: dict[str, object]) -> None:
    assert set(families) == SERVER_METRICS | GROUP_METRICS
    for name, family in families.items():
        kind = "counter" if name in SERVER_COUNTERS else "gauge"
        assert family.type == kind  # type: ignore[attr-defined]
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
    assert set(frame["metric"].unique()) == {
        *SERVER_GAUGES,
        *(f"{c}_total" for c in SERVER_COUNTERS),
        *GROUP_METRICS,
    }
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


@PROMTOOL
def test_promtool_backfills_the_export(incident: cs.Dataset, tmp_path: Path) -> None:
    out = tmp_path / "incident.om"
    result = cs.export(incident, out)
    assert promtool_samples(out, tmp_path / "tsdb") == result.samples


# ------------------------------------------------------------------ CSV injection (issue 13)
HOSTILE_NAMES = [
    '=HYPERLINK("http://evil.example","x")',
    "+1+2",
    "-2+3",
    "@SUM(1+1)*cmd|'/Ccalc'!A0",
]


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


# ------------------------------------------------------------------ Prometheus conventions (issue 11)
def by_ms(samples: list[Any]) -> dict[int, float]:
    return {round(float(s.timestamp) * 1000): s.value for s in samples}


def column_by_ms(frame: pl.DataFrame | pl.LazyFrame, column: str) -> dict[int, float]:
    rows = frame.lazy().drop_nulls(column).select(pl.col("ts").dt.epoch("ms"), column).collect()
    return {int(t): float(v) for t, v in rows.iter_rows()}


def test_connection_counters_are_the_servers_info_counters(
    incident: cs.Dataset, families: dict[str, Any]
) -> None:
    info = incident.info.select("ts", *COUNTERS.values()).collect()
    for family, column in COUNTERS.items():
        samples = families[f"clientscope_{family}"].samples
        assert {s.name for s in samples} == {f"clientscope_{family}_total"}
        assert by_ms(samples) == column_by_ms(info, column)
    rejected = [s.value for s in families["clientscope_rejected_connections"].samples]
    assert rejected == sorted(rejected) and rejected[-1] > rejected[0]  # rate() sees the incident


def test_redis_exporter_names(incident: cs.Dataset, tmp_path: Path) -> None:
    out = tmp_path / "exporter.om"
    result = cs.export(incident, out, names="redis_exporter", top=5)
    families = parsed(out.read_text())
    assert set(families) == REDIS_EXPORTER_METRICS | GROUP_METRICS
    assert result.names == "redis_exporter"
    assert families["redis_connections_received"].type == "counter"
    tl = timeline(incident)
    connected = by_ms(families["redis_connected_clients"].samples)
    assert connected == column_by_ms(tl, "connected_clients")  # INFO's, as the exporter reports it
    for name in ("redis_connected_clients", "redis_config_maxclients", "redis_blocked_clients"):
        assert {frozenset(s.labels.items()) for s in families[name].samples} == {
            frozenset({("instance", "redis-master-0")})
        }  # the same labels on both sides of `/`: the runbook's ratio pairs one to one


def test_the_runbooks_rules_read_only_series_the_exporter_naming_writes(
    incident: cs.Dataset, tmp_path: Path
) -> None:
    out = tmp_path / "exporter.om"
    result = cs.export(incident, out, names="redis_exporter")
    read = {m for rule in DEFAULT_RULES for m in re.findall(r"redis_\w+", rule.promql or "")}
    assert read == {"redis_connected_clients", "redis_config_maxclients", "redis_blocked_clients",
                    "redis_rejected_connections_total"}  # fmt: skip
    assert read <= set(result.metrics)


def test_labels_go_on_every_series_escaped(incident: cs.Dataset, tmp_path: Path) -> None:
    out = tmp_path / "labelled.om"
    hostile = 'eu "1"\\\nx'
    cs.export(incident, out, labels={"job": "redis", "cluster": hostile}, top=3)
    for family in parsed(out.read_text()).values():
        for sample in family.samples:
            assert sample.labels["job"] == "redis"
            assert sample.labels["cluster"] == hostile
    csv = tmp_path / "labelled.csv"
    cs.export(incident, csv, format="csv", labels={"job": "=cmd"}, top=3)
    frame = pl.read_csv(csv)
    assert frame.columns[4:7] == ["idle_over_seconds", "job", "ts"]
    assert set(frame["job"]) == {"'=cmd"}  # a spreadsheet does not run it


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        (["job"], "--label 'job' has no '='; write it as name=value, e.g. job=redis"),
        (["9job=x"], "label name '9job' is not a Prometheus label name: letters, digits and _"),
        (["k-8=x"], "label name 'k-8' is not a Prometheus label name"),
        (["__name__=x"], "label name '__name__' starts with '__', which Prometheus reserves"),
        (["instance=x"], "label 'instance' is one export writes itself"),
        (["name=x"], "label 'name' is one export writes itself"),
        (
            ["job="],
            "label job has an empty value (''); Prometheus treats an empty label as no label",
        ),
        (["job=a", "job=b"], "--label job is given twice ('a' and 'b'); give it once"),
    ],
)
def test_labels_are_checked(labels: list[str], said: str) -> None:
    from clientscope.reporting.export import parse_labels

    with pytest.raises(ConfigError, match=re.escape(said)):
        parse_labels(labels)


def test_unknown_names_names_the_choices(incident: cs.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose one of: clientscope, redis_exporter"):
        cs.export(incident, tmp_path / "x.om", names="prometheus")


def test_cli_names_and_labels(incident: cs.Dataset, tmp_path: Path) -> None:
    out = tmp_path / "cli.om"
    args = ["export", str(incident.root), "-o", str(out), "--names", "redis_exporter",
            "--label", "job=redis", "-l", "cluster=eu-1", "--json"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["names"] == "redis_exporter"
    sample = parsed(out.read_text())["redis_connected_clients"].samples[0]
    assert sample.labels == {"instance": "redis-master-0", "job": "redis", "cluster": "eu-1"}
    bad = CliRunner().invoke(app, ["export", str(incident.root), "-o", str(out), "-l", "a b=c"])
    assert isinstance(bad.exception, ConfigError)  # main() makes it one line on stderr, exit 1
    assert "label name 'a b' is not a Prometheus label name" in str(bad.exception)


# ------------------------------------------------------------------ one sample per series per ms
AT = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
LINE = "id={i} addr=10.0.0.{i}:500{i} laddr=10.0.0.99:6379 fd={i} name={name} age=5 idle=1 flags=N db=0 cmd=get\n"


@pytest.fixture(scope="module")
def same_ms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two captures of one instance 300 µs apart: 1 client (api), then 2 (api, worker)."""
    root = tmp_path_factory.mktemp("same-ms")
    first, second = root / "first.txt", root / "second.txt"
    first.write_text(LINE.format(i=1, name="api"))
    second.write_text(LINE.format(i=1, name="api") + LINE.format(i=2, name="worker"))
    ds = root / "same.cs"
    cs.import_dumps([first], ds, at=AT)
    cs.import_dumps([second], ds, at=AT + timedelta(microseconds=300))
    return ds


def test_captures_in_one_millisecond_give_one_sample_the_latest(
    same_ms: Path, tmp_path: Path
) -> None:
    out = tmp_path / "same.om"
    result = cs.export(same_ms, out)
    families = parsed(out.read_text())
    keys = [
        (f.name, frozenset(s.labels.items()), float(s.timestamp))
        for f in families.values()
        for s in f.samples
    ]
    assert len(keys) == len(set(keys)) == result.samples
    by_name = {s.labels["name"]: s.value for s in families["clientscope_clients_by_name"].samples}
    assert by_name == {
        "api": 1,
        "worker": 1,
    }  # the later capture's counts, not a sum or the earlier
    assert [s.value for s in families["clientscope_connected_clients"].samples] == [2]
    assert result.same_millisecond == result.samples  # every series had the two captures
    frame = cs.export(same_ms, tmp_path / "same.parquet", format="parquet")
    assert frame.samples == result.samples


@PROMTOOL
def test_promtool_keeps_every_sample_of_captures_in_one_millisecond(
    same_ms: Path, tmp_path: Path
) -> None:
    out = tmp_path / "same.om"
    result = cs.export(same_ms, out)
    assert promtool_samples(out, tmp_path / "tsdb") == result.samples


def promtool_samples(om: Path, tsdb: Path) -> int:
    run = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return sum(int(line.split()[-4]) for line in run.stdout.splitlines()[1:] if line.strip())


# ------------------------------------------------------------------ a real Prometheus on the backfill
@pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus and promtool (Debian package prometheus) not on PATH",
)
def test_prometheus_runs_the_runbooks_rules_on_the_backfill(
    incident: cs.Dataset, tmp_path: Path
) -> None:
    """The runbook's expressions, unchanged, over the backfilled blocks in a real Prometheus."""
    out = tmp_path / "incident.om"
    cs.export(incident, out, names="redis_exporter", labels={"job": "redis"})
    promtool_samples(out, tmp_path / "data")
    tl = timeline(incident)
    end = tl["ts"].max().timestamp()  # type: ignore[union-attr]
    with PrometheusServer(tmp_path / "data") as query:
        ratio = query(
            "max_over_time((redis_connected_clients / redis_config_maxclients)[1h:])", end
        )
        assert ratio == [({"instance": "redis-master-0", "job": "redis"}, pytest.approx(
            tl.select((pl.col("connected_clients") / pl.col("maxclients")).max()).item()))]  # fmt: skip
        exhausted = next(
            r.promql for r in DEFAULT_RULES if r.name == "RedisConnectionPoolExhausted"
        )
        assert query(f"max_over_time(({exhausted})[1h:])", end)  # the rule's condition held
        rejected = query("increase(redis_rejected_connections_total[1h])", end)
        assert rejected and rejected[0][1] > 0  # rate()/increase() read the counter


class PrometheusServer:
    """A Prometheus server on a TSDB folder (blocks from promtool), for instant queries."""

    def __init__(self, data: Path) -> None:
        self.data = data

    def __enter__(self) -> Any:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = self.data.parent / "prometheus.yml"
        config.write_text("global: {}\n")
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={self.data}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self.query
            except OSError:
                time.sleep(0.2)
        raise AssertionError("prometheus did not become ready in 30 s")

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        args = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{args}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return [(x["metric"], float(x["value"][1])) for x in body["data"]["result"]]

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# ------------------------------------------------------------------ docs/prometheus.md
DOC = Path(__file__).resolve().parents[1] / "docs" / "prometheus.md"
RECIPE = "<!-- prometheus-recipe"


def recipe() -> list[str]:
    block = re.search(re.escape(RECIPE) + r".*?-->\s*```bash\n(.*?)```", DOC.read_text(), re.S)
    assert block, f"docs/prometheus.md lost its {RECIPE} block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_doc_names_every_series_both_namings_write() -> None:
    from clientscope.reporting.export import SERVER

    text = DOC.read_text()
    for series in SERVER:
        for name in (series.clientscope, series.redis_exporter):
            assert name is None or f"`{name}`" in text, name


@PROMTOOL
def test_the_docs_backfill_recipe_runs(tmp_path: Path) -> None:
    lines = recipe()
    assert [line.split()[:2] for line in lines] == [["clientscope", "simulate"], ["clientscope", "export"],
                                                    ["promtool", "tsdb"], ["promtool", "tsdb"]]  # fmt: skip
    outputs = []
    for line in lines:
        argv = shlex.split(line)
        if argv[0] == "clientscope":
            argv = [sys.executable, "-c", "from clientscope.cli import main; main()", *argv[1:]]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    written = int(re.search(r"wrote ([\d,]+) samples", outputs[1]).group(1).replace(",", ""))  # type: ignore[union-attr]
    listed = outputs[3].splitlines()[1:]
    assert listed and sum(int(row.split()[-4]) for row in listed) == written
    families = parsed((tmp_path / "incident.om").read_text())
    assert set(families) >= REDIS_EXPORTER_METRICS
    sample = families["redis_connected_clients"].samples[0]
    assert sample.labels == {"instance": "redis-master-0", "job": "redis", "cluster": "eu-1"}
