"""Derived, low-cardinality series for Prometheus backfill and dashboards.

    clientscope export incident.cs --format openmetrics --out incident.om
    promtool tsdb create-blocks-from openmetrics incident.om ./data

Series, one sample per capture (timestamps are the capture times):

    clientscope_connected_clients{instance}                 INFO connected_clients
    clientscope_maxclients{instance}                        effective limit (CONFIG GET, else INFO)
    clientscope_utilization_ratio{instance}                 connected / that real maxclients
    clientscope_blocked_clients{instance}                   INFO blocked_clients
    clientscope_new_connections_per_second{instance}        growth of total_connections_received
    clientscope_rejected_connections_per_second{instance}   growth of rejected_connections
    clientscope_clients_by_<dim>{instance,<dim>}            dim = name | lib | ip
    clientscope_idle_clients_by_<dim>{instance,<dim>,idle_over_seconds}   idle > 300 s, > 600 s

Groups are the `top` largest of each dimension per instance; the rest are summed
into "(other)", so the label cardinality stays bounded whatever the fleet.

In CSV, a text cell that a spreadsheet would run as a formula (it starts with `=`,
`+`, `-`, `@`, a tab or a carriage return: client names, libraries and instances are
written by whoever connects) gets a leading `'`, as OWASP advises; numbers stay numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import polars as pl

from clientscope.dataset import Dataset
from clientscope.errors import ConfigError, DatasetWriteError
from clientscope.reporting import series as S
from clientscope.reporting.view import select
from clientscope.schema import TS

__all__ = [
    "FORMATS",
    "ExportResult",
    "export",
    "export_series",
    "spreadsheet_safe",
    "to_openmetrics",
]

Format = Literal["openmetrics", "csv", "parquet"]
FORMATS: tuple[str, ...] = ("openmetrics", "csv", "parquet")
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

HELP = {
    "connected_clients": (
        "Connected clients (INFO connected_clients, else CLIENT LIST lines).",
        None,
    ),
    "maxclients": ("Effective maxclients (CONFIG GET, else INFO).", None),
    "utilization_ratio": ("Connected clients / effective maxclients.", "ratio"),
    "blocked_clients": (
        "Clients blocked by BLPOP/BRPOP/XREAD/WAIT... (INFO blocked_clients).",
        None,
    ),
    "new_connections_per_second": ("Connections accepted per second between captures.", None),
    "rejected_connections_per_second": (
        "Connections rejected per second between captures (maxclients).",
        None,
    ),
}


@dataclass(frozen=True)
class ExportResult:
    """What `export` wrote."""

    path: Path
    format: str
    series: int  # distinct (metric, labels)
    samples: int
    metrics: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "format": self.format, "series": self.series,
                "samples": self.samples, "metrics": list(self.metrics)}  # fmt: skip

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
) -> ExportResult:
    """Write the derived series of a dataset to `out` as OpenMetrics text, CSV or Parquet."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    view = select(ds, start=start, end=end, instance=instance)
    long = export_series(view, top=top)
    out = Path(out)
    _write(long, out, str(format))
    labels = ["metric", "instance", "dimension", "group", "idle_over_seconds"]
    return ExportResult(
        path=out, format=str(format), series=long.select(labels).n_unique() if long.height else 0,
        samples=long.height, metrics=tuple(sorted(long["metric"].unique().to_list())),
    )  # fmt: skip


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


def export_series(ds: S.Tables, *, top: int = 20) -> pl.DataFrame:
    """Every exported sample, long form (LONG_SCHEMA), sorted by metric, labels, time."""
    parts = [_server_series(S.capture_series(ds))]
    for dim, column in DIMENSIONS.items():
        parts.append(_group_series(ds, dim, column, top))
    return pl.concat(parts, how="vertical").sort(
        "metric", "instance", "dimension", "group", "idle_over_seconds", "ts", nulls_last=False
    )


def _server_series(series: pl.DataFrame) -> pl.DataFrame:
    dt = pl.col("ts").diff().over("instance").dt.total_microseconds() / 1e6
    wide = series.sort("instance", "ts").with_columns(
        pl.when(dt > 0)
        .then(pl.col("new_rejections") / dt)
        .alias("rejected_connections_per_second"),
        pl.col("connected").alias("connected_clients"),
        pl.col("blocked").alias("blocked_clients"),
        pl.col("utilization").alias("utilization_ratio"),
        pl.col("new_conns_per_s").alias("new_connections_per_second"),
    )
    names = list(HELP)
    long = wide.unpivot(
        on=names, index=["instance", "ts"], variable_name="metric", value_name="value"
    )
    return long.filter(pl.col("value").cast(pl.Float64).is_finite()).select(
        (pl.lit(PREFIX) + pl.col("metric")).alias("metric"), "instance",
        pl.lit(None, pl.String()).alias("dimension"), pl.lit(None, pl.String()).alias("group"),
        pl.lit(None, pl.Int64()).alias("idle_over_seconds"), "ts", pl.col("value").cast(pl.Float64),
    )  # fmt: skip


def _group_series(ds: S.Tables, dim: str, column: str, top: int) -> pl.DataFrame:
    idle = [(pl.col("idle") > t).sum().cast(pl.Float64).alias(f"idle_{t}") for t in IDLE_THRESHOLDS]
    counts = (
        ds.clients.group_by(
            "instance", "ts", pl.col(column).fill_null(S.NO_VALUE).cast(pl.String).alias("group")
        )
        .agg(pl.len().cast(pl.Float64).alias("clients"), *idle)
        .collect(engine="streaming")
    )
    if counts.is_empty():
        return pl.DataFrame(schema=LONG_SCHEMA)
    counts = _zero_filled(_lump(counts, top))
    metric = pl.lit(f"{PREFIX}clients_by_{dim}")
    frames = [counts.select(metric.alias("metric"), "instance", "group", pl.lit(None, pl.Int64()).alias("idle_over_seconds"),
                            "ts", pl.col("clients").alias("value"))]  # fmt: skip
    for t in IDLE_THRESHOLDS:
        frames.append(counts.select(pl.lit(f"{PREFIX}idle_clients_by_{dim}").alias("metric"), "instance", "group",
                                    pl.lit(t, pl.Int64()).alias("idle_over_seconds"), "ts",
                                    pl.col(f"idle_{t}").alias("value")))  # fmt: skip
    return pl.concat(frames).with_columns(pl.lit(dim).alias("dimension")).select(list(LONG_SCHEMA))


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
        .group_by("instance", "ts", "group")
        .agg(pl.col("clients", *[f"idle_{t}" for t in IDLE_THRESHOLDS]).sum())
    )


def _zero_filled(counts: pl.DataFrame) -> pl.DataFrame:
    """A sample for every group at every capture of its instance (0 when it had no client)."""
    grid = (
        counts.select("instance", "ts")
        .unique()
        .join(counts.select("instance", "group").unique(), on="instance")
    )
    values = ["clients", *[f"idle_{t}" for t in IDLE_THRESHOLDS]]
    return grid.join(counts, on=["instance", "ts", "group"], how="left").with_columns(
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
    labels = [_label("instance", _escape("instance"))]
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
    """OpenMetrics text exposition of `export_series` output, `# EOF` terminated."""
    out: list[str] = []
    for (metric,), family in long.partition_by("metric", as_dict=True, maintain_order=True).items():
        out.extend(_family_header(str(metric)))
        for part in family.partition_by("dimension", maintain_order=True):
            out.extend(_sample_lines(part).to_list())
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _family_header(metric: str) -> list[str]:
    short = metric.removeprefix(PREFIX)
    if short in HELP:
        text, unit = HELP[short]
    elif short.startswith("idle_clients_by_"):
        text, unit = (
            f"Clients idle longer than idle_over_seconds, per {short.rsplit('_', 1)[1]}.",
            None,
        )
    else:
        text, unit = (
            f"Connected clients per {short.rsplit('_', 1)[1]} (top groups, rest in (other)).",
            None,
        )
    lines = [f"# TYPE {metric} gauge"]
    if unit:
        lines.append(f"# UNIT {metric} {unit}")
    lines.append(f"# HELP {metric} {text}")
    return lines
