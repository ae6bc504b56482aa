"""The data contract between layers: table names, columns and their types.

Raw layer (append-only, lossless) -- one row per capture attempt:
    RAW_SCHEMA. `client_list` and `info` hold the exact bytes the server sent.

Parsed layer (derived, can always be rebuilt from raw):
    captures      one row per capture attempt (CAPTURES_SCHEMA)
    clients       one row per client per capture (CLIENT_* below; unknown fields in `extra`)
    info          one row per capture, typed INFO fields that matter (INFO_FIELDS)
    info_fields   long form of every INFO field: (capture_id, instance, ts, section, key, value)
    rejects       every line that could not be read, kept with its line number and reason

Every table carries `capture_id`, `instance` and `ts` (UTC, microseconds).
"""

from __future__ import annotations

import polars as pl

from clientscope.vocabulary import ErrorKind

TS = pl.Datetime("us", "UTC")

# ---------------------------------------------------------------- raw layer
RAW_SCHEMA: dict[str, pl.DataType] = {
    "capture_id": pl.String(),  # unique per capture attempt
    "instance": pl.String(),  # user-facing name of the server, e.g. "cache-1" or "127.0.0.1:6379"
    "ts": TS,  # the time analyses use (server TIME when known)
    "ts_source": pl.String(),  # server_time | collector_clock | explicit | filename | date_line | mtime | simulated
    "server_time": TS,  # from TIME, null for imports
    "collector_time": TS,  # collector's UTC clock at capture start
    "source": pl.String(),  # collect | import | simulate
    "origin": pl.String(),  # redis://host:port (never a password) or file path with line range
    "ok": pl.Boolean(),
    "error_kind": pl.String(),  # see ERROR_KINDS; null when ok
    "error_message": pl.String(),
    "client_list": pl.Binary(),  # exact CLIENT LIST reply bytes
    "info": pl.Binary(),  # exact INFO reply bytes
    "config": pl.String(),  # JSON object of CONFIG GET name -> value, as the server sent them
    "time_ms": pl.Float64(),
    "client_list_ms": pl.Float64(),
    "info_ms": pl.Float64(),
    "config_ms": pl.Float64(),
    "total_ms": pl.Float64(),
    "content_sha256": pl.String(),  # hash(es) of the captured bytes, space-separated; imports skip known ones
    "notes": pl.String(),  # JSON: warnings, denied commands, user-given --maxclients ...
    "collector_version": pl.String(),
}

ERROR_KINDS = tuple(ErrorKind)  # the values, in vocabulary.ErrorKind

# ------------------------------------------------------------ parsed: captures
CAPTURES_SCHEMA: dict[str, pl.DataType] = {
    "capture_id": pl.String(),
    "instance": pl.String(),
    "ts": TS,
    "ts_source": pl.String(),
    "server_time": TS,
    "collector_time": TS,
    "source": pl.String(),
    "origin": pl.String(),
    "ok": pl.Boolean(),
    "error_kind": pl.String(),
    "error_message": pl.String(),
    "total_ms": pl.Float64(),
    "client_list_ms": pl.Float64(),
    "n_clients": pl.Int64(),  # CLIENT LIST lines parsed
    "n_rejects": pl.Int64(),  # CLIENT LIST lines kept in `rejects`
    "run_id": pl.String(),  # INFO run_id; null when no INFO
    "maxclients": pl.Int64(),  # effective: CONFIG GET, else INFO, else user-given
    "maxclients_source": pl.String(),  # config | info | user | null
    "timeout": pl.Int64(),
    "tcp_keepalive": pl.Int64(),
    "tcp_backlog": pl.Int64(),
    "client_output_buffer_limit": pl.String(),
    "config": pl.String(),
}

# ------------------------------------------------------------- parsed: clients
# CLIENT LIST fields, snake_case, by type. Field names the parser does not know are
# kept in `extra` (List[Struct{key, value}]).
CLIENT_INT_FIELDS = (
    "id", "fd", "age", "idle", "db", "sub", "psub", "ssub", "multi", "watch",
    "qbuf", "qbuf_free", "argv_mem", "multi_mem", "rbs", "rbp", "obl", "oll", "omem",
    "tot_mem", "redir", "resp", "io_thread", "tot_net_in", "tot_net_out", "tot_cmds",
)  # fmt: skip
CLIENT_STR_FIELDS = (
    "addr", "laddr", "name", "flags", "events", "cmd", "user", "lib_name", "lib_ver", "capa",
)  # fmt: skip
# addr / laddr split
CLIENT_ADDR_FIELDS = {
    "ip": pl.String(), "port": pl.Int64(), "family": pl.String(),  # family: ipv4 | ipv6 | unix
    "laddr_ip": pl.String(), "laddr_port": pl.Int64(), "laddr_family": pl.String(),
}  # fmt: skip
# flags letter -> boolean column (https://redis.io/docs/latest/commands/client-list/)
CLIENT_FLAGS = {
    "A": "is_close_asap",
    "b": "is_blocked",
    "B": "is_bcast",
    "c": "is_close_after_reply",
    "d": "is_dirty_cas",
    "e": "is_no_evict",
    "I": "is_import_source",
    "M": "is_master",
    "O": "is_monitor",
    "P": "is_pubsub",
    "r": "is_readonly",
    "R": "is_tracking_broken",
    "S": "is_replica",
    "t": "is_tracking",
    "T": "is_no_touch",
    "u": "is_unblocked",
    "U": "is_unix_socket",
    "x": "is_multi",
}
CLIENT_CONTEXT_COLUMNS = ("capture_id", "instance", "ts", "line_no")
CLIENT_DERIVED = {"created_at": TS, "last_active": TS}  # ts - age, ts - idle
CLIENT_EXTRA_DTYPE = pl.List(pl.Struct({"key": pl.String(), "value": pl.String()}))


def client_fields_schema(*, with_ts: bool = True) -> dict[str, pl.DataType]:
    """Columns the CLIENT LIST parser adds to each line, in order.

    `created_at` / `last_active` only exist when the input has a `ts` column.
    """
    schema: dict[str, pl.DataType] = {"line_no": pl.Int64()}
    schema.update({name: pl.Int64() for name in CLIENT_INT_FIELDS})
    schema.update({name: pl.String() for name in CLIENT_STR_FIELDS})
    schema.update(CLIENT_ADDR_FIELDS)
    schema.update({name: pl.Boolean() for name in CLIENT_FLAGS.values()})
    if with_ts:
        schema.update(CLIENT_DERIVED)
    schema["extra"] = CLIENT_EXTRA_DTYPE
    return schema


def conform(frame: pl.DataFrame, schema: pl.Schema | dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with exactly the columns of `schema`, in its order and dtypes: a column the
    frame lacks is all null."""
    return frame.select(
        pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t).alias(c)
        for c, t in schema.items()
    )


CLIENTS_SCHEMA: dict[str, pl.DataType] = {
    "capture_id": pl.String(),
    "instance": pl.String(),
    "ts": TS,
    "line_no": pl.Int64(),
    "run_id": pl.String(),
    **{k: v for k, v in client_fields_schema().items() if k != "line_no"},
}
COLLECTOR_CLIENT_NAME = "clientscope-collector"
UNNAMED = "(unnamed)"
"""How a client without a name is spelt everywhere: alone for the name, and as the prefix of
its group, `(unnamed) lib@ip` or `(unnamed) ip` (see `unnamed_group`)."""


def unnamed_group(lib: str | None, source: str) -> str:
    """The group of a client that set no name: attributed to its library and source."""
    return f"{UNNAMED} {lib}@{source}" if lib else f"{UNNAMED} {source}"

# ---------------------------------------------------------------- parsed: info
# Typed INFO fields kept in the wide `info` table (anything else: `info_fields`).
INFO_INT_FIELDS = (
    "uptime_in_seconds", "process_id", "tcp_port", "connected_clients", "cluster_connections",
    "maxclients", "blocked_clients", "tracking_clients", "pubsub_clients", "watching_clients",
    "clients_in_timeout_table", "total_watched_keys", "total_blocking_keys",
    "total_blocking_keys_on_nokey", "client_recent_max_input_buffer",
    "client_recent_max_output_buffer", "total_connections_received", "rejected_connections",
    "evicted_clients", "connected_slaves", "total_commands_processed", "instantaneous_ops_per_sec",
    "used_memory", "maxmemory", "mem_clients_normal", "mem_clients_slaves", "keyspace_hits",
    "keyspace_misses", "expired_keys", "evicted_keys", "total_net_input_bytes",
    "total_net_output_bytes", "client_query_buffer_limit_disconnections",
    "client_output_buffer_limit_disconnections", "io_threads_active",
    "loading", "async_loading", "loading_eta_seconds",
)  # fmt: skip
INFO_STR_FIELDS = (
    "redis_version", "valkey_version", "server_name", "redis_mode", "os", "run_id", "role",
    "executable", "config_file",
)  # fmt: skip
INFO_SCHEMA: dict[str, pl.DataType] = {
    "capture_id": pl.String(),
    "instance": pl.String(),
    "ts": TS,
    **{name: pl.Int64() for name in INFO_INT_FIELDS},
    **{name: pl.String() for name in INFO_STR_FIELDS},
}
INFO_FIELDS_SCHEMA: dict[str, pl.DataType] = {
    "capture_id": pl.String(),
    "instance": pl.String(),
    "ts": TS,
    "section": pl.String(),  # as written after '# ', lower-cased: server, clients, keyspace, ...
    "key": pl.String(),
    "value": pl.String(),
}

# ------------------------------------------------------------- parsed: rejects
REJECTS_SCHEMA: dict[str, pl.DataType] = {
    "capture_id": pl.String(),
    "instance": pl.String(),
    "ts": TS,
    "table": pl.String(),  # clients | info
    "line_no": pl.Int64(),  # 1-based within the capture's reply
    "reason": pl.String(),
    "raw_line": pl.String(),
}

TABLES = ("captures", "clients", "info", "info_fields", "rejects")
