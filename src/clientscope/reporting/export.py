"""Derived, low-cardinality series for Prometheus backfill and dashboards.

    clientscope export incident.cs --names redis_exporter --label job=redis --out incident.om
    promtool tsdb create-blocks-from openmetrics incident.om ./data

Server series, one sample per capture (timestamps are the capture times), under
clientscope's names or, with `names="redis_exporter"`, the exporter's:

    clientscope_connected_clients            -                     used: INFO connected_clients
                                                                   + replicas + cluster links, else CLIENT LIST lines
    -                                        redis_connected_clients            INFO connected_clients
    clientscope_maxclients                   redis_config_maxclients            effective limit (CONFIG GET, else INFO)
    clientscope_utilization_ratio            (same)                             used / that limit
    clientscope_blocked_clients              redis_blocked_clients              INFO blocked_clients
    clientscope_connections_received_total   redis_connections_received_total   counter, INFO total_connections_received
    clientscope_rejected_connections_total   redis_rejected_connections_total   counter, INFO rejected_connections
    clientscope_evicted_clients_total        redis_evicted_clients_total        counter, INFO evicted_clients

Counters are the server's own INFO counters (OpenMetrics `# TYPE ... counter`), so
`rate()` and `increase()` work and a restart is a counter reset, as Prometheus expects.
Every series carries `instance` (the dataset's instance name, the label Prometheus puts
on a scraped exporter) and any `labels` given (`job`, `cluster`...).

Group series (both namings):

    clientscope_clients_by_<dim>{instance,<dim>}            dim = name | lib | ip
    clientscope_idle_clients_by_<dim>{instance,<dim>,idle_over_seconds}   idle > 300 s, > 600 s

Groups are the `top` largest of each dimension per instance; the rest are summed
into "(other)", so the label cardinality stays bounded whatever the fleet.

One sample per series per millisecond (OpenMetrics timestamps are milliseconds, and
Prometheus keeps one sample per timestamp): when captures of an instance fall in the same
millisecond, the latest one's value is kept (latest `ts`, then the highest capture id);
`ExportResult.same_millisecond` counts the samples left out.

In CSV, a text cell that a spreadsheet would run as a formula (it starts with `=`,
`+`, `-`, `@`, a tab or a carriage return: client names, libraries and instances are
written by whoever connects) gets a leading `'`, as OWASP advises; numbers stay numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import polars as pl

from clientscope.analysis.timeline import timeline
from clientscope.dataset import Dataset
from clientscope.errors import ConfigError, DatasetWriteError
from clientscope.reporting import series as S
from clientscope.schema import TS
from clientscope.window import select

__all__ = [
    "FORMATS",
    "NAMINGS",
    "ExportResult",
    "check_labels",
    "export",
    "export_series",
    "parse_labels",
    "spreadsheet_safe",
    "to_openmetrics",
]

Format = Literal["openmetrics", "csv", "parquet"]
Naming = Literal["clientscope", "redis_exporter"]
FORMATS: tuple[str, ...] = ("openmetrics", "csv", "parquet")
NAMINGS: tuple[str, ...] = ("clientscope", "redis_exporter")
DIMENSIONS = {"name": "name", "lib": "lib_name", "ip": "ip"}
IDLE_THRESHOLDS = (300, 600)
PREFIX = "clientscope_"

LONG_SCHEMA: dict[str, pl.DataType] = {
    "metric": pl.String(),
    "instance": pl.String(),
    "dimension": pl.String(),  # name | lib | ip, null for server-wide series
    "group": pl.String(),
    "idle_over_seconds": pl.Int64(),
    "ts": TS,
    "value": pl.Float64(),
}
SERIES_KEY = ["metric", "instance", "dimension", "group", "idle_over_seconds"]


@dataclass(frozen=True)
class _Server:
    """A server-wide series: the capture-series column it reads and its name in each naming."""

    column: str
    clientscope: str | None
    redis_exporter: str | None
    help: str
    kind: Literal["gauge", "counter"] = "gauge"
    unit: str | None = None

    def name(self, names: str) -> str | None:
        return self.clientscope if names == "clientscope" else self.redis_exporter


SERVER = (
    _Server("used", "clientscope_connected_clients", None,
            "Connections counted against maxclients (INFO connected_clients + replicas + cluster "
            "links, else CLIENT LIST lines)."),
    _Server("connected_clients", None, "redis_connected_clients", "INFO connected_clients."),
    _Server("maxclients", "clientscope_maxclients", "redis_config_maxclients",
            "Effective maxclients (CONFIG GET, else INFO)."),
    _Server("utilization", "clientscope_utilization_ratio", "clientscope_utilization_ratio",
            "Connections / effective maxclients.", unit="ratio"),
    _Server("blocked_clients", "clientscope_blocked_clients", "redis_blocked_clients",
            "Clients blocked by BLPOP/BRPOP/XREAD/WAIT... (INFO blocked_clients)."),
    _Server("total_connections_received", "clientscope_connections_received_total",
            "redis_connections_received_total",
            "Connections accepted since the server started (INFO total_connections_received).",
            kind="counter"),
    _Server("rejected_connections", "clientscope_rejected_connections_total",
            "redis_rejected_connections_total",
            "Connections rejected at maxclients since the server started (INFO "
            "rejected_connections).", kind="counter"),
    _Server("evicted_clients", "clientscope_evicted_clients_total", "redis_evicted_clients_total",
            "Clients evicted by maxmemory-clients since the server started (INFO evicted_clients).",
            kind="counter"),
)  # fmt: skip
_BY_NAME = {name: s for s in SERVER for name in (s.clientscope, s.redis_exporter) if name}


@dataclass(frozen=True)
class ExportResult:
    """What `export` wrote."""

    path: Path
    format: str
    series: int  # distinct (metric, labels)
    samples: int
    metrics: tuple[str, ...]
    names: str = "clientscope"
    same_millisecond: int = 0  # samples left out: a later capture of the instance in the same ms

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "format": self.format, "series": self.series,
                "samples": self.samples, "metrics": list(self.metrics), "names": self.names,
                "same_millisecond": self.same_millisecond}  # fmt: skip

    def _repr_html_(self) -> str:
        import html

        names = "".join(f"<li><code>{html.escape(m)}</code></li>" for m in self.metrics)
        return (
            f"<div><strong>clientscope export</strong> <code>{html.escape(str(self.path))}</code> "
            f"({html.escape(self.format)}): {self.samples:,} samples of {self.series:,} series"
            f"<ul>{names}</ul></div>"
        )


def export(
    ds: Dataset | Path | str,
    out: Path | str,
    format: Format | str = "openmetrics",
    *,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    instance: str | None = None,
    top: int = 20,
    names: Naming | str = "clientscope",
    labels: Mapping[str, str] | None = None,
) -> ExportResult:
    """Write the derived series of a dataset to `out` as OpenMetrics text, CSV or Parquet.

    `names="redis_exporter"` gives the server series redis_exporter's names (dashboards and
    alert rules written for it work on the backfilled data); `labels` ({"job": "redis"}) are
    added to every series (a column each in CSV and Parquet).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    if names not in NAMINGS:
        raise ConfigError(f"unknown --names {names!r}; choose one of: {', '.join(NAMINGS)}")
    extra = check_labels(labels or {})
    view = select(ds, start=start, end=end, instance=instance)
    every = export_series(view, top=top, names=names, labels=extra, deduplicate=False)
    long = _one_per_millisecond(every)
    out = Path(out)
    _write(long, out, str(format))
    return ExportResult(
        path=out, format=str(format), series=long.select(SERIES_KEY).n_unique() if long.height else 0,
        samples=long.height, metrics=tuple(sorted(long["metric"].unique().to_list())),
        names=str(names), same_millisecond=every.height - long.height,
    )  # fmt: skip


# ------------------------------------------------------------------ extra labels
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # Prometheus' label name rule
TAKEN = ("instance", *DIMENSIONS, "idle_over_seconds", *LONG_SCHEMA)


def parse_labels(texts: Iterable[str]) -> dict[str, str]:
    """`["job=redis", "cluster=eu-1"]` (the CLI's repeated `--label k=v`) as a checked mapping."""
    labels: dict[str, str] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep:
            raise ConfigError(
                f"--label {text!r} has no '='; write it as name=value, e.g. job=redis"
            )
        if name in labels:
            raise ConfigError(
                f"--label {name} is given twice ({labels[name]!r} and {value!r}); give it once"
            )
        labels[name] = value
    return check_labels(labels)


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """`labels` checked against Prometheus' label rules and the labels `export` writes itself."""
    for name, value in labels.items():
        if not isinstance(name, str) or not LABEL_NAME.fullmatch(name):
            raise ConfigError(
                f"label name {name!r} is not a Prometheus label name: letters, digits and _, "
                "not starting with a digit (e.g. job, cluster, k8s_namespace)"
            )
        if name.startswith("__"):
            raise ConfigError(
                f"label name {name!r} starts with '__', which Prometheus reserves; drop the leading '__'"
            )
        if name in TAKEN:
            raise ConfigError(
                f"label {name!r} is one export writes itself ({', '.join(dict.fromkeys(TAKEN))}); "
                "choose another name"
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"label {name} has an empty value ({value!r}); Prometheus treats an empty label as "
                "no label: give a value or leave the label out"
            )
    return dict(sorted(labels.items()))


def _write(long: pl.DataFrame, out: Path, format: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".tmp-{out.name}")
        if format == "openmetrics":
            tmp.write_text(to_openmetrics(long), encoding="utf-8")
        elif format == "csv":
            spreadsheet_safe(long).write_csv(tmp)
        else:
            long.write_parquet(tmp, compression="zstd")
        tmp.replace(out)
    except OSError as exc:
        raise DatasetWriteError(
            f"could not write {out}: {exc.strerror or exc}; choose another --out"
        ) from exc


FORMULA_START = r"^[=+\-@\t\r]"  # what makes Excel, LibreOffice or Sheets read a cell as a formula


def spreadsheet_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Text cells that a spreadsheet would read as a formula, prefixed with `'` (OWASP CSV
    injection); only String columns: a negative number stays a number."""
    strings = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(FORMULA_START))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name in strings
    )


def export_series(
    ds: S.Tables,
    *,
    top: int = 20,
    names: Naming | str = "clientscope",
    labels: Mapping[str, str] | None = None,
    deduplicate: bool = True,
) -> pl.DataFrame:
    """Every exported sample, long form (LONG_SCHEMA, then a column per extra label before
    `ts`), sorted by metric, labels, time; one per series per millisecond unless
    `deduplicate` is False (then a `capture_id` column tells the captures apart)."""
    if names not in NAMINGS:
        raise ConfigError(f"unknown --names {names!r}; choose one of: {', '.join(NAMINGS)}")
    extra = check_labels(labels or {})
    parts = [_server_series(timeline(ds), str(names))]
    for dim, column in DIMENSIONS.items():
        parts.append(_group_series(ds, dim, column, top))
    long = pl.concat(parts, how="vertical").sort(*SERIES_KEY, "ts", "capture_id", nulls_last=False)
    if deduplicate:
        long = _one_per_millisecond(long)
    at = long.columns.index("ts")
    return long.with_columns(pl.lit(v).alias(k) for k, v in extra.items()).select(
        *long.columns[:at], *extra, *long.columns[at:]
    )


def _one_per_millisecond(long: pl.DataFrame) -> pl.DataFrame:
    """The last sample (by ts, then capture id) of each series in each millisecond, without
    `capture_id`: OpenMetrics stamps milliseconds and Prometheus keeps one sample per stamp."""
    if "capture_id" not in long.columns:
        return long
    ms = pl.col("ts").dt.epoch("ms").alias("_ms")
    keys = [c for c in long.columns if c not in ("ts", "value", "capture_id")]
    return (
        long.with_columns(ms)
        .unique(subset=[*keys, "_ms"], keep="last")
        .drop("_ms", "capture_id")
        .sort(*SERIES_KEY, "ts", nulls_last=False)
    )


def _server_series(series: pl.DataFrame, names: str) -> pl.DataFrame:
    chosen = {s.column: name for s in SERVER if (name := s.name(names))}
    long = series.select("capture_id", "instance", "ts", *chosen).unpivot(
        on=list(chosen), index=["capture_id", "instance", "ts"], variable_name="column",
        value_name="value",
    )  # fmt: skip
    return long.filter(pl.col("value").cast(pl.Float64).is_finite()).select(
        pl.col("column").replace_strict(chosen, return_dtype=pl.String()).alias("metric"),
        "instance", pl.lit(None, pl.String()).alias("dimension"),
        pl.lit(None, pl.String()).alias("group"), pl.lit(None, pl.Int64()).alias("idle_over_seconds"),
        "ts", pl.col("value").cast(pl.Float64), "capture_id",
    )  # fmt: skip


def _group_series(ds: S.Tables, dim: str, column: str, top: int) -> pl.DataFrame:
    idle = [(pl.col("idle") > t).sum().cast(pl.Float64).alias(f"idle_{t}") for t in IDLE_THRESHOLDS]
    group = pl.col(column).fill_null(S.NO_VALUE).cast(pl.String).alias("group")
    counts = (
        ds.clients.group_by("instance", "capture_id", "ts", group)
        .agg(pl.len().cast(pl.Float64).alias("clients"), *idle)
        .collect(engine="streaming")
    )
    if counts.is_empty():
        return pl.DataFrame(schema={**LONG_SCHEMA, "capture_id": pl.String()})
    counts = _zero_filled(_lump(counts, top))
    metric = pl.lit(f"{PREFIX}clients_by_{dim}")
    frames = [counts.select(metric.alias("metric"), "instance", "group", pl.lit(None, pl.Int64()).alias("idle_over_seconds"),
                            "ts", pl.col("clients").alias("value"), "capture_id")]  # fmt: skip
    for t in IDLE_THRESHOLDS:
        frames.append(counts.select(pl.lit(f"{PREFIX}idle_clients_by_{dim}").alias("metric"), "instance", "group",
                                    pl.lit(t, pl.Int64()).alias("idle_over_seconds"), "ts",
                                    pl.col(f"idle_{t}").alias("value"), "capture_id"))  # fmt: skip
    return (
        pl.concat(frames)
        .with_columns(pl.lit(dim).alias("dimension"))
        .select(*LONG_SCHEMA, "capture_id")
    )


def _lump(counts: pl.DataFrame, top: int) -> pl.DataFrame:
    """Keep the `top` groups with the highest peak per instance; sum the rest as "(other)"."""
    rank = (
        counts.group_by("instance", "group").agg(pl.col("clients").max().alias("peak"))
        .with_columns(pl.col("peak").rank("ordinal", descending=True).over("instance").alias("rank"))
    )  # fmt: skip
    return (
        counts.join(rank, on=["instance", "group"])
        .with_columns(
            pl.when(pl.col("rank") <= top).then("group").otherwise(pl.lit(S.OTHER)).alias("group")
        )
        .group_by("instance", "capture_id", "ts", "group")
        .agg(pl.col("clients", *[f"idle_{t}" for t in IDLE_THRESHOLDS]).sum())
    )


def _zero_filled(counts: pl.DataFrame) -> pl.DataFrame:
    """A sample for every group at every capture of its instance (0 when it had no client)."""
    grid = (
        counts.select("instance", "capture_id", "ts")
        .unique()
        .join(counts.select("instance", "group").unique(), on="instance")
    )
    values = ["clients", *[f"idle_{t}" for t in IDLE_THRESHOLDS]]
    return grid.join(counts, on=["instance", "capture_id", "ts", "group"], how="left").with_columns(
        pl.col(values).fill_null(0.0)
    )


# ------------------------------------------------------------------ OpenMetrics text
def _escape(column: str) -> pl.Expr:
    return (
        pl.col(column).str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all('"', '\\"', literal=True)
        .str.replace_all("\n", "\\n", literal=True)
    )  # fmt: skip


def _label(name: str, value: pl.Expr) -> pl.Expr:
    return pl.concat_str(pl.lit(f'{name}="'), value, pl.lit('"'))


def _sample_lines(frame: pl.DataFrame) -> pl.Series:
    dim = str(frame["dimension"][0]) if frame["dimension"][0] is not None else None
    extra = [c for c in frame.columns if c not in LONG_SCHEMA and c != "capture_id"]
    labels = [_label(name, _escape(name)) for name in extra]
    labels.append(_label("instance", _escape("instance")))
    if dim is not None:
        labels.append(_label(dim, _escape("group")))
    if frame["idle_over_seconds"].is_not_null().any():
        labels.append(_label("idle_over_seconds", pl.col("idle_over_seconds").cast(pl.String)))
    ms = pl.col("ts").dt.epoch("ms")
    stamp = pl.concat_str(
        (ms // 1000).cast(pl.String), pl.lit("."), (ms % 1000).cast(pl.String).str.zfill(3)
    )
    line = pl.concat_str(
        pl.col("metric"), pl.lit("{"), pl.concat_str(labels, separator=","), pl.lit("} "),
        _value_text(), pl.lit(" "), stamp,
    )  # fmt: skip
    return frame.select(line.alias("line"))["line"]


def _value_text() -> pl.Expr:
    v = pl.col("value")
    return (
        pl.when(v == v.round(0)).then(v.cast(pl.Int64).cast(pl.String)).otherwise(v.cast(pl.String))
    )


def to_openmetrics(long: pl.DataFrame) -> str:
    """OpenMetrics text exposition of `export_series` output, `# EOF` terminated: a column
    beyond LONG_SCHEMA is a label on every sample."""
    out: list[str] = []
    for (metric,), family in long.partition_by("metric", as_dict=True, maintain_order=True).items():
        out.extend(_family_header(str(metric)))
        for part in family.partition_by("dimension", maintain_order=True):
            out.extend(_sample_lines(part).to_list())
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _family_header(metric: str) -> list[str]:
    """TYPE, UNIT and HELP of a metric; a counter's family is its name without `_total`."""
    kind, unit = "gauge", None
    short = metric.removeprefix(PREFIX)
    if metric in _BY_NAME:
        server = _BY_NAME[metric]
        text, kind, unit = server.help, server.kind, server.unit
    elif short.startswith("idle_clients_by_"):
        text = f"Clients idle longer than idle_over_seconds, per {short.rsplit('_', 1)[1]}."
    else:
        text = f"Connected clients per {short.rsplit('_', 1)[1]} (top groups, rest in (other))."
    family = metric.removesuffix("_total") if kind == "counter" else metric
    lines = [f"# TYPE {family} {kind}"]
    if unit:
        lines.append(f"# UNIT {family} {unit}")
    lines.append(f"# HELP {family} {text}")
    return lines
