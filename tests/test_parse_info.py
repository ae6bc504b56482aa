"""INFO parsing: wide and long forms, on live INFO from real servers and on edge cases."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
import redis
from redis._parsers.helpers import parse_info as redis_py_parse_info

from clientscope.errors import InputError
from clientscope.parse import parse_info
from clientscope.schema import INFO_INT_FIELDS, INFO_STR_FIELDS
from servers import Server

SAMPLE = (
    "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:9.1.2\r\n"
    "run_id:abc123\r\nconfig_file:\r\nos:Linux 6.8.0 x86_64\r\n\r\n"
    "# Clients\r\nconnected_clients:12\r\nmaxclients:10000\r\nblocked_clients:2\r\n\r\n"
    "# Modules\r\nmodule:name=search,ver=20803,api=1,filters=0,usedby=[],using=[],options=[]\r\n\r\n"
    "# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\ndb3:keys=10,expires=2,avg_ttl=5\r\n"
)


def frame_of(data: object, **kwargs: object) -> pl.DataFrame:
    out = parse_info(data, **kwargs)  # type: ignore[arg-type]
    assert isinstance(out, pl.DataFrame)
    return out


def long_map(frame: pl.DataFrame) -> dict[str, str]:
    good = frame.filter(pl.col("parse_error").is_null())
    return dict(zip(good["key"].to_list(), good["value"].to_list(), strict=True))


def test_wide_form_types_and_keeps_both_versions() -> None:
    row = frame_of(SAMPLE).row(0, named=True)
    assert (row["connected_clients"], row["maxclients"], row["blocked_clients"]) == (12, 10000, 2)
    assert (row["redis_version"], row["valkey_version"], row["server_name"]) == (
        "7.2.4",
        "9.1.2",
        "valkey",
    )
    assert row["config_file"] is None and row["evicted_clients"] is None
    assert row["os"] == "Linux 6.8.0 x86_64"


def test_wide_form_schema_is_fixed() -> None:
    frame = frame_of("")
    assert frame.columns == [*INFO_INT_FIELDS, *INFO_STR_FIELDS]
    assert frame.row(0) == (None,) * len(frame.columns)


def test_long_form_expands_keyspace_and_modules() -> None:
    values = long_map(frame_of(SAMPLE, form="long"))
    assert values["db0.keys"] == "1" and values["db3.avg_ttl"] == "5"
    assert values["module.search.ver"] == "20803"
    assert values["module.search.usedby"] == "[]"
    assert values["os"] == "Linux 6.8.0 x86_64"


def test_long_form_sections_are_lower_case_and_follow_headers() -> None:
    frame = frame_of(SAMPLE, form="long")
    sections = dict(zip(frame["key"].to_list(), frame["section"].to_list(), strict=True))
    assert sections["redis_version"] == "server"
    assert sections["connected_clients"] == "clients"
    assert sections["db3.keys"] == "keyspace"
    assert frame["line_no"].to_list()[0] == 2


def test_unreadable_lines_are_kept_with_line_numbers() -> None:
    text = "# Clients\nconnected_clients:1\nWarning: something odd\n garbage\nmaxclients:5\n"
    frame = frame_of(text, form="long")
    bad = frame.filter(pl.col("parse_error").is_not_null())
    assert bad.select("line_no", "raw_line").rows() == [
        (3, "Warning: something odd"),
        (4, " garbage"),
    ]
    assert long_map(frame)["maxclients"] == "5"


def test_frame_input_carries_columns_in_both_forms() -> None:
    ts = datetime(2026, 11, 26, tzinfo=UTC)
    source = pl.DataFrame(
        {
            "capture_id": ["a", "b"],
            "ts": [ts, ts],
            "info": [SAMPLE.encode(), b"# Clients\r\nmaxclients:7\r\n"],
        }
    )
    wide = frame_of(source)
    assert wide.select("capture_id", "maxclients").rows() == [("a", 10000), ("b", 7)]
    long = frame_of(source, form="long")
    assert long.filter(pl.col("key") == "maxclients").select("capture_id", "value").rows() == [
        ("a", "10000"),
        ("b", "7"),
    ]
    lazy = parse_info(source.lazy(), form="long")
    assert isinstance(lazy, pl.LazyFrame)
    assert lazy.collect().equals(long)


def test_bad_form_is_refused() -> None:
    with pytest.raises(InputError, match="form must be 'wide' or 'long'"):
        parse_info(SAMPLE, form="tall")  # type: ignore[arg-type]


# ------------------------------------------------------------------ real servers
def _info_bytes(srv: Server) -> bytes:
    r = srv.client(name="info-reader")
    r.set("k", "v")
    r.expire("k", 100)
    r.get("k")
    with pytest.raises(redis.ResponseError):
        r.lpush("k", "x")  # an errorstat
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("INFO", "everything")
        reply = conn.read_response(disable_decoding=True)
    finally:
        r.connection_pool.release(conn)
    assert isinstance(reply, bytes)
    return reply


def _scalar(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@pytest.mark.parametrize("kind", ["valkey", "redis7"])
def test_live_info_matches_redis_py(kind: str, request: pytest.FixtureRequest) -> None:
    srv: Server = request.getfixturevalue(kind)
    reply = _info_bytes(srv)
    long = frame_of(reply, form="long")
    assert long["parse_error"].null_count() == long.height
    mine = long_map(long)
    expected = redis_py_parse_info(reply)
    checked = 0
    for key, value in expected.items():
        if key in ("modules", "__raw__") or isinstance(value, list):
            continue
        if isinstance(value, dict):
            for sub, sub_value in value.items():
                assert _scalar(mine[f"{key}.{sub}"]) == sub_value, (key, sub)
                checked += 1
        else:
            assert _scalar(mine[key]) == value, key
            checked += 1
    assert checked > 100
    assert {
        "server",
        "clients",
        "stats",
        "keyspace",
        "commandstats",
        "errorstats",
        "latencystats",
    } <= set(long["section"])
    assert (
        "db0.keys" in mine and "cmdstat_get.calls" in mine and "errorstat_WRONGTYPE.count" in mine
    )
    wide = frame_of(reply).row(0, named=True)
    for name in INFO_INT_FIELDS:
        assert wide[name] == expected.get(name), name
    for name in INFO_STR_FIELDS:
        want = expected.get(name)
        assert wide[name] == (str(want) if want not in (None, "") else None), name


def test_a_typed_field_that_is_not_a_number_is_a_reject_not_a_silent_null() -> None:
    text = b"# Clients\r\nconnected_clients:5\r\nblocked_clients:oops\r\n"
    wide = parse_info(text)
    assert isinstance(wide, pl.DataFrame) and wide["blocked_clients"][0] is None
    long = parse_info(text, form="long")
    assert isinstance(long, pl.DataFrame)
    bad = long.filter(pl.col("parse_error").is_not_null())
    assert bad.select("key", "parse_error", "raw_line").rows() == [
        ("blocked_clients", "field blocked_clients is not an integer: oops", "blocked_clients:oops\r")
    ]
