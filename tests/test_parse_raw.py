"""parse_raw: raw captures -> captures / clients / info / info_fields / rejects."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from clientscope.dataset import conform_raw, empty_raw
from clientscope.parse import parse_raw
from clientscope.schema import (
    CAPTURES_SCHEMA,
    CLIENTS_SCHEMA,
    INFO_FIELDS_SCHEMA,
    INFO_SCHEMA,
    REJECTS_SCHEMA,
    TABLES,
)
from servers import Server

TS = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
LINE = (
    "id={id} addr=10.0.0.{id}:5000 laddr=10.0.0.1:6379 fd=8 name=app age=100 idle=10 flags=N "
    "db=0 sub=0 psub=0 multi=-1 qbuf=0 qbuf-free=0 obl=0 oll=0 omem=0 events=r cmd=get"
)
INFO = b"# Server\r\nredis_version:7.0.15\r\nrun_id:r1\r\n\r\n# Clients\r\nconnected_clients:2\r\nmaxclients:64\r\n"
SCHEMAS = {
    "captures": CAPTURES_SCHEMA,
    "clients": CLIENTS_SCHEMA,
    "info": INFO_SCHEMA,
    "info_fields": INFO_FIELDS_SCHEMA,
    "rejects": REJECTS_SCHEMA,
}


def raw(**columns: list[object]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    base: dict[str, list[object]] = {
        "capture_id": [f"c{i}" for i in range(n)],
        "instance": ["cache-1"] * n,
        "ts": [TS] * n,
        "source": ["collect"] * n,
        "ok": [True] * n,
    }
    return conform_raw(pl.DataFrame({**base, **columns}, strict=False))


def test_empty_raw_gives_every_table_empty_with_its_schema() -> None:
    tables = parse_raw(empty_raw())
    assert tuple(tables) == TABLES
    for name, frame in tables.items():
        assert frame.height == 0
        assert dict(frame.schema) == SCHEMAS[name], name


def test_a_capture_with_clients_info_and_config() -> None:
    listing = f"{LINE.format(id=1)}\n{LINE.format(id=2)}\nnot a client line\n".encode()
    config = json.dumps({"maxclients": "100", "timeout": "300", "tcp-keepalive": "60",
                         "tcp-backlog": "511", "client-output-buffer-limit": "normal 0 0 0"})  # fmt: skip
    tables = parse_raw(raw(client_list=[listing], info=[INFO], config=[config]))
    for name, frame in tables.items():
        assert dict(frame.schema) == SCHEMAS[name], name
    cap = tables["captures"].row(0, named=True)
    assert (cap["n_clients"], cap["n_rejects"], cap["run_id"]) == (2, 1, "r1")
    assert (cap["maxclients"], cap["maxclients_source"]) == (100, "config")
    assert (cap["timeout"], cap["tcp_keepalive"], cap["tcp_backlog"]) == (300, 60, 511)
    assert cap["client_output_buffer_limit"] == "normal 0 0 0"
    clients = tables["clients"]
    assert clients.select("capture_id", "line_no", "id", "run_id").rows() == [
        ("c0", 1, 1, "r1"),
        ("c0", 2, 2, "r1"),
    ]
    assert tables["rejects"].select("table", "line_no", "raw_line").rows() == [
        ("clients", 3, "not a client line")
    ]
    assert tables["info"]["connected_clients"].to_list() == [2]
    assert tables["info_fields"].filter(pl.col("key") == "maxclients")["value"].to_list() == ["64"]


def test_maxclients_falls_back_to_info_then_to_the_user() -> None:
    tables = parse_raw(
        raw(
            client_list=[b"", b"", None],
            info=[INFO, None, None],
            config=[None, None, None],
            notes=[None, json.dumps({"maxclients": 50}), None],
            ok=[True, True, False],
        )
    )
    caps = tables["captures"].sort("capture_id")
    assert caps.select("maxclients", "maxclients_source").rows() == [
        (64, "info"),
        (50, "user"),
        (None, None),
    ]
    assert caps["n_clients"].to_list() == [0, 0, None]  # a failed capture has no count


def test_info_lines_that_cannot_be_read_are_rejects() -> None:
    tables = parse_raw(raw(client_list=[b""], info=[INFO + b"what is this\r\n"]))
    assert tables["rejects"].select("table", "line_no", "raw_line").rows() == [
        ("info", 8, "what is this\r")
    ]


def test_non_utf8_bytes_are_decoded_per_capture_and_rejected_per_line() -> None:
    listing = LINE.format(id=1).encode() + b"\n\xff\xfe broken\n"
    tables = parse_raw(raw(client_list=[listing]))
    assert tables["clients"].height == 1
    assert tables["rejects"]["reason"].to_list()[0].startswith("binary garbage")


def test_live_capture_of_a_real_server(valkey: Server) -> None:
    r = valkey.client(name="app")
    r.set("a", "1")
    admin = valkey.client(name="test-admin")
    conn = admin.connection_pool.get_connection()
    try:
        conn.send_command("CLIENT", "LIST")
        listing = conn.read_response(disable_decoding=True)
        conn.send_command("INFO", "everything")
        info = conn.read_response(disable_decoding=True)
    finally:
        admin.connection_pool.release(conn)
    tables = parse_raw(raw(client_list=[listing], info=[info]))
    cap = tables["captures"].row(0, named=True)
    assert cap["n_clients"] == tables["clients"].height >= 2
    assert cap["n_rejects"] == 0
    assert cap["maxclients_source"] == "info" and cap["maxclients"] == 10000
    assert set(tables["clients"]["name"].drop_nulls()) >= {"app", "test-admin"}


def test_lines_kept_out_of_a_reply_are_rejects_in_their_place() -> None:
    """An import keeps a line over its length limit out of the text (an empty line holds its
    place) and notes it; the parsed rejects say why, with the line's head, and count it."""
    listing = f"{LINE.format(id=1)}\n\n{LINE.format(id=3)}\n".encode()
    cut = {
        "table": "clients",
        "line_no": 2,
        "reason": "line of 5,000,000 bytes ...",
        "raw_line": "id=2 addr",
    }
    notes = [
        json.dumps({"files": ["a.txt"], "rejects": [cut]}),
        json.dumps({"rejects": "junk"}),
        '{"rejects": [oops',
    ]
    tables = parse_raw(raw(client_list=[listing] * 3, notes=notes))
    rejects = tables["rejects"].sort("capture_id")
    assert rejects.select("capture_id", "line_no", "reason", "raw_line").rows() == [
        ("c0", 2, "line of 5,000,000 bytes ...", "id=2 addr"),  # the noted reason, not "blank line"
        ("c1", 2, "blank line", ""),  # a note that does not read as one is passed over
        ("c2", 2, "blank line", ""),
    ]
    assert dict(rejects.schema) == REJECTS_SCHEMA
    caps = tables["captures"].sort("capture_id")
    assert caps.select("n_clients", "n_rejects").rows() == [(2, 1)] * 3
