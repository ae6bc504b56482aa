"""Raw captures (schema.RAW_SCHEMA) -> the parsed tables of the dataset."""

from __future__ import annotations

import json

import polars as pl

from clientscope.parse.client_list import parse_client_list
from clientscope.parse.info import parse_info
from clientscope.schema import (
    CAPTURES_SCHEMA,
    CLIENTS_SCHEMA,
    INFO_FIELDS_SCHEMA,
    INFO_SCHEMA,
    REJECTS_SCHEMA,
)

__all__ = ["parse_raw"]

_CONTEXT = ("capture_id", "instance", "ts")
_CONFIG_INTS = {
    "timeout": "timeout",
    "tcp_keepalive": "tcp-keepalive",
    "tcp_backlog": "tcp-backlog",
}


def _config(name: str) -> pl.Expr:
    return pl.col("config").str.json_path_match(f"$['{name}']")


def _collect(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return frame.select(pl.col(c).cast(t) for c, t in schema.items())


def _clients(raw: pl.DataFrame, run_ids: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    parsed = _collect(parse_client_list(raw.select(*_CONTEXT, "client_list")))
    bad = pl.col("parse_error").is_not_null()
    good = parsed.filter(~bad).join(run_ids, on="capture_id", how="left")
    rejects = parsed.filter(bad).select(
        *_CONTEXT,
        pl.lit("clients").alias("table"),
        "line_no",
        pl.col("parse_error").alias("reason"),
        "raw_line",
    )
    return _conform(good, CLIENTS_SCHEMA), _conform(rejects, REJECTS_SCHEMA)


def _info(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    with_info = raw.select(*_CONTEXT, "info").filter(pl.col("info").is_not_null())
    wide = _conform(_collect(parse_info(with_info)), INFO_SCHEMA)
    long = _collect(parse_info(with_info, form="long"))
    bad = pl.col("parse_error").is_not_null()
    rejects = long.filter(bad).select(
        *_CONTEXT,
        pl.lit("info").alias("table"),
        "line_no",
        pl.col("parse_error").alias("reason"),
        "raw_line",
    )
    return wide, _conform(long.filter(~bad), INFO_FIELDS_SCHEMA), _conform(rejects, REJECTS_SCHEMA)


def _noted(raw: pl.DataFrame, rejects: pl.DataFrame) -> pl.DataFrame:
    """`rejects` with the lines a writer kept out of a reply (`notes.rejects`: a line over the
    import's length limit). Each held its place in the reply as an empty line; the parser's
    reject for that line gives way to the noted one, which says why and keeps the line's head.
    A note that does not read as such is passed over: it never stops a batch being parsed."""
    if "notes" not in raw.columns:
        return rejects
    listed = raw.filter(pl.col("notes").str.contains('"rejects"', literal=True))
    rows = [
        {"capture_id": capture_id, "instance": instance, "ts": ts, **entry}
        for capture_id, instance, ts, notes in listed.select(*_CONTEXT, "notes").iter_rows()
        for entry in _noted_lines(notes)
    ]
    if not rows:
        return rejects
    noted = pl.DataFrame(rows, schema=REJECTS_SCHEMA)
    kept = rejects.join(noted, on=["capture_id", "table", "line_no"], how="anti")
    return pl.concat([kept, noted]).sort("capture_id", "table", "line_no", maintain_order=True)


def _noted_lines(notes: str) -> list[dict[str, object]]:
    try:
        listed = json.loads(notes).get("rejects")
    except (ValueError, AttributeError):
        return []
    return [
        {
            "table": r["table"],
            "line_no": r["line_no"],
            "reason": str(r.get("reason")),
            "raw_line": str(r.get("raw_line")),
        }
        for r in (listed if isinstance(listed, list) else [])
        if isinstance(r, dict)
        and r.get("table") in ("clients", "info")
        and _whole(r.get("line_no"))
    ]


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**62


def _captures(
    raw: pl.DataFrame, clients: pl.DataFrame, rejects: pl.DataFrame, info: pl.DataFrame
) -> pl.DataFrame:
    n_clients = clients.group_by("capture_id").agg(pl.len().cast(pl.Int64).alias("n_clients"))
    n_rejects = (
        rejects.filter(pl.col("table") == "clients")
        .group_by("capture_id")
        .agg(pl.len().cast(pl.Int64).alias("n_rejects"))
    )
    info_cols = info.select("capture_id", "run_id", pl.col("maxclients").alias("_info_maxclients"))
    has_list = pl.col("client_list").is_not_null()
    config_max = _config("maxclients").str.to_integer(strict=False)
    user_max = pl.col("notes").str.json_path_match("$.maxclients").str.to_integer(strict=False)
    frame = (
        raw.join(n_clients, on="capture_id", how="left")
        .join(n_rejects, on="capture_id", how="left")
        .join(info_cols, on="capture_id", how="left")
        .with_columns(
            pl.when(has_list).then(pl.col("n_clients").fill_null(0)).alias("n_clients"),
            pl.when(has_list).then(pl.col("n_rejects").fill_null(0)).alias("n_rejects"),
            pl.coalesce(config_max, pl.col("_info_maxclients"), user_max).alias("maxclients"),
            pl.when(config_max.is_not_null())
            .then(pl.lit("config"))
            .when(pl.col("_info_maxclients").is_not_null())
            .then(pl.lit("info"))
            .when(user_max.is_not_null())
            .then(pl.lit("user"))
            .alias("maxclients_source"),
            *(
                _config(key).str.to_integer(strict=False).alias(col)
                for col, key in _CONFIG_INTS.items()
            ),
            _config("client-output-buffer-limit").alias("client_output_buffer_limit"),
        )
    )
    return _conform(frame, CAPTURES_SCHEMA)


def parse_raw(raw: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Parse raw captures into the `captures`, `clients`, `info`, `info_fields`, `rejects` tables.

    Every table has its full schema (schema.py) even when `raw` is empty.
    """
    info, info_fields, info_rejects = _info(raw)
    clients, client_rejects = _clients(raw, info.select("capture_id", "run_id"))
    rejects = _noted(raw, pl.concat([client_rejects, info_rejects]))
    return {
        "captures": _captures(raw, clients, rejects, info),
        "clients": clients,
        "info": info,
        "info_fields": info_fields,
        "rejects": rejects,
    }
