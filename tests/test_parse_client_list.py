"""CLIENT LIST parsing: one test per known trap, inputs, rejects, and real servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from redis._parsers.helpers import parse_client_list as redis_py_parse

from clientscope.parse import parse_client_list, split_rejects
from clientscope.parse._client_fast import read_replies
from clientscope.parse._client_generic import KEY_START, read_lines
from clientscope.parse._text import to_lines
from clientscope.parse.client_list import clients_schema
from clientscope.schema import CLIENT_FLAGS, CLIENT_INT_FIELDS, CLIENT_STR_FIELDS
from servers import Server

REDIS72 = (
    "id=7 addr=10.1.2.3:52114 laddr=10.0.0.5:6379 fd=9 name=orders-api-1 age=120 idle=30 "
    "flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=20474 argv-mem=0 "
    "multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=22298 events=r cmd=get "
    "user=default redir=-1 resp=2 lib-name=redis-py lib-ver=5.0.1"
)
VALKEY9 = (
    "id=4 addr=127.0.0.1:55650 laddr=127.0.0.1:58219 fd=10 name=app age=0 idle=0 flags=N "
    "capa= db=0 sub=0 psub=0 ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=10 "
    "multi-mem=0 rbs=16392 rbp=16392 obl=0 oll=0 omem=0 tot-mem=17002 events=r "
    "cmd=client|list user=default redir=-1 resp=3 lib-name=redis-py lib-ver=8.1.0 "
    "tot-net-in=291 tot-net-out=294 tot-cmds=4"
)
REDIS28 = (
    "addr=127.0.0.1:52555 fd=5 name= age=855 idle=0 flags=N db=0 sub=0 psub=0 multi=-1 "
    "qbuf=0 qbuf-free=32768 obl=0 oll=0 omem=0 events=r cmd=client"
)
DRAGONFLY = (
    "id=2 addr=127.0.0.1:40100 laddr=127.0.0.1:6379 fd=20 name= tid=0 irqmatch=0 "
    "age=12 idle=1 phase=process db=0 flags=N"
)


def one(line: str) -> dict[str, object]:
    frame = parse_client_list(line + "\n")
    assert isinstance(frame, pl.DataFrame)
    assert frame.height == 1
    row = frame.row(0, named=True)
    assert row["parse_error"] is None, row["parse_error"]
    return row


def parsed(data: object, **kwargs: str) -> pl.DataFrame:
    frame = parse_client_list(data, **kwargs)  # type: ignore[arg-type]
    assert isinstance(frame, pl.DataFrame)
    return frame


# ------------------------------------------------------------------ traps
def test_value_with_equals_is_split_on_the_first_equals_only() -> None:
    row = one(REDIS72.replace("name=orders-api-1", "name=a=b"))
    assert row["name"] == "a=b"
    assert row["age"] == 120


def test_unix_socket_path_with_spaces_stays_in_addr() -> None:
    line = REDIS72.replace(
        "addr=10.1.2.3:52114 laddr=10.0.0.5:6379",
        "addr=/tmp/my redis.sock:0 laddr=/tmp/my redis.sock:0",
    )
    row = one(line.replace("flags=N", "flags=U"))
    assert (row["addr"], row["ip"], row["port"], row["family"]) == (
        "/tmp/my redis.sock:0",
        "/tmp/my redis.sock",
        0,
        "unix",
    )
    assert row["laddr_family"] == "unix"
    assert row["is_unix_socket"] is True
    assert row["fd"] == 9


def test_bare_ipv6_port_is_after_the_last_colon() -> None:
    row = one(REDIS72.replace("addr=10.1.2.3:52114", "addr=fd40::1a06:44426"))
    assert (row["ip"], row["port"], row["family"]) == ("fd40::1a06", 44426, "ipv6")


def test_bracketed_ipv6() -> None:
    row = one(REDIS72.replace("addr=10.1.2.3:52114", "addr=[::1]:6379"))
    assert (row["ip"], row["port"], row["family"]) == ("::1", 6379, "ipv6")


def test_valkey_bracketed_unix_socket() -> None:
    line = VALKEY9.replace(
        "addr=127.0.0.1:55650 laddr=127.0.0.1:58219",
        "addr=[/tmp/s.sock:0]:0 laddr=[/tmp/s.sock:0]:0",
    )
    row = one(line.replace("flags=N", "flags=U"))
    assert (row["ip"], row["port"], row["family"]) == ("/tmp/s.sock", 0, "unix")


def test_lib_name_with_parens_comma_and_dots() -> None:
    row = one(REDIS72.replace("lib-name=redis-py", "lib-name=go-redis(,go1.25.6)"))
    assert row["lib_name"] == "go-redis(,go1.25.6)"
    assert row["lib_ver"] == "5.0.1"


def test_pre_2_8_12_line_without_id_starting_with_addr() -> None:
    row = one(REDIS28)
    assert row["id"] is None
    assert (row["ip"], row["port"], row["qbuf_free"], row["cmd"]) == (
        "127.0.0.1",
        52555,
        32768,
        "client",
    )
    assert row["laddr"] is None and row["user"] is None


def test_container_subcommand_cmd() -> None:
    assert one(REDIS72.replace("cmd=get", "cmd=client|list"))["cmd"] == "client|list"


@pytest.mark.parametrize(("letter", "column"), sorted(CLIENT_FLAGS.items()))
def test_every_flag_letter_sets_its_boolean(letter: str, column: str) -> None:
    row = one(REDIS72.replace("flags=N", f"flags={letter}"))
    assert row[column] is True
    assert [c for c in CLIENT_FLAGS.values() if row[c]] == [column]


def test_unknown_flag_letters_are_kept_in_flags() -> None:
    row = one(REDIS72.replace("flags=N", "flags=bgoPZ"))
    assert row["flags"] == "bgoPZ"
    assert row["is_blocked"] and row["is_pubsub"]


def test_minus_one_multi_and_redir() -> None:
    row = one(REDIS72)
    assert (row["multi"], row["redir"]) == (-1, -1)


def test_redis8_and_valkey_fields() -> None:
    row = one(VALKEY9.replace("tot-cmds=4", "tot-cmds=4 io-thread=2"))
    assert (row["tot_net_in"], row["tot_net_out"], row["tot_cmds"], row["io_thread"]) == (
        291,
        294,
        4,
        2,
    )
    assert (row["watch"], row["capa"], row["cmd"]) == (0, None, "client|list")


def test_fields_a_server_omits_are_null_and_unknown_ones_go_to_extra() -> None:
    row = one(DRAGONFLY)
    assert row["qbuf"] is None and row["tot_mem"] is None and row["user"] is None
    assert row["extra"] == [
        {"key": "tid", "value": "0"},
        {"key": "irqmatch", "value": "0"},
        {"key": "phase", "value": "process"},
    ]


def test_empty_values_are_null() -> None:
    row = one(
        VALKEY9.replace("name=app", "name=").replace(
            "lib-name=redis-py lib-ver=8.1.0", "lib-name= lib-ver="
        )
    )
    assert (row["name"], row["capa"], row["lib_name"], row["lib_ver"]) == (None, None, None, None)


def test_unknown_fields_are_kept_with_snake_case_keys() -> None:
    row = one(REDIS72 + " read-events=12 new-field=a=b")
    assert row["extra"] == [
        {"key": "read_events", "value": "12"},
        {"key": "new_field", "value": "a=b"},
    ]


def test_field_order_may_differ_between_lines_of_one_input() -> None:
    reordered = " ".join(reversed(REDIS72.split(" ")))
    frame = parsed("\n".join([REDIS72, reordered, VALKEY9, REDIS28, REDIS72]) + "\n")
    assert frame["parse_error"].null_count() == 5
    assert frame["line_no"].to_list() == [1, 2, 3, 4, 5]
    assert frame["age"].to_list() == [120, 120, 0, 855, 120]
    assert frame["lib_name"].to_list() == ["redis-py", "redis-py", "redis-py", None, "redis-py"]
    assert frame.row(1)[1:] == frame.row(0)[1:]  # same values, other line number


# ------------------------------------------------------------------ rejects
def test_lines_that_are_not_client_lines_are_kept_with_line_numbers_and_reasons() -> None:
    text = "\n".join([
        REDIS72,
        "Warning: kubectl exec is deprecated",
        "",
        "\x00\x01\ufffdgarbage",
        REDIS72.replace("age=120", "age=abc"),
        REDIS72[:60],
    ])  # fmt: skip
    good, bad = split_rejects(parsed(text))
    assert good["line_no"].to_list() == [1]
    reasons = dict(zip(bad["line_no"].to_list(), bad["parse_error"].to_list(), strict=True))
    assert reasons[2].startswith("not a CLIENT LIST line")
    assert reasons[3] == "blank line"
    assert reasons[4].startswith("binary garbage")
    assert reasons[5] == "field age is not an integer: abc"
    assert reasons[6].startswith("truncated line")
    assert bad["raw_line"].to_list() == text.split("\n")[1:]
    assert good["raw_line"].null_count() == 1


def test_trailing_newline_is_not_a_line_and_a_complete_last_line_is_fine() -> None:
    assert parsed(REDIS72 + "\n").height == 1
    assert parsed(REDIS72)["parse_error"].to_list() == [None]


def test_binary_garbage_in_bytes_input_becomes_a_reject() -> None:
    frame = parsed(REDIS72.encode() + b"\n\xff\xfe\x00\x81\n")
    assert frame["parse_error"].to_list()[0] is None
    assert frame["parse_error"].to_list()[1].startswith("binary garbage")


def test_empty_input_has_the_full_schema() -> None:
    for data in ("", b"", pl.Series([], dtype=pl.String)):
        frame = parsed(data)
        assert frame.height == 0
        assert dict(frame.schema) == clients_schema({})


# ------------------------------------------------------------------ inputs
def test_str_bytes_and_series_inputs_agree() -> None:
    lines = [REDIS72, VALKEY9, REDIS28]
    from_str = parsed("\n".join(lines) + "\n")
    assert_frame_equal(from_str, parsed(("\n".join(lines) + "\n").encode()))
    assert_frame_equal(from_str, parsed(pl.Series(lines)))


def _frame(ts: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "capture_id": ["c1", "c2", "c3"],
            "instance": ["cache-1", "cache-1", "cache-2"],
            "ts": [ts, ts + timedelta(seconds=5), ts],
            "client_list": [f"{REDIS72}\n{VALKEY9}\n", None, f"{REDIS28}\n"],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def test_frame_input_carries_columns_and_derives_times() -> None:
    ts = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    frame = parsed(_frame(ts))
    assert frame.columns[:4] == ["capture_id", "instance", "ts", "line_no"]
    assert frame.select("capture_id", "line_no").rows() == [("c1", 1), ("c1", 2), ("c3", 1)]
    first = frame.row(0, named=True)
    assert first["created_at"] == ts - timedelta(seconds=120)
    assert first["last_active"] == ts - timedelta(seconds=30)
    assert dict(frame.schema) == clients_schema(_frame(ts).drop("client_list").schema)


def test_binary_column_and_custom_text_column() -> None:
    ts = datetime(2026, 11, 26, tzinfo=UTC)
    source = (
        _frame(ts).with_columns(pl.col("client_list").cast(pl.Binary)).rename({"client_list": "cl"})
    )
    assert_frame_equal(parsed(source, text_column="cl"), parsed(_frame(ts)))


def test_lazy_input_stays_lazy_and_streams() -> None:
    ts = datetime(2026, 11, 26, tzinfo=UTC)
    lazy = parse_client_list(_frame(ts).lazy())
    assert isinstance(lazy, pl.LazyFrame)
    streamed = (
        lazy.filter(pl.col("instance") == "cache-1")
        .select("capture_id", "name")
        .collect(engine="streaming")
    )
    assert streamed.rows() == [("c1", "orders-api-1"), ("c1", "app")]
    assert_frame_equal(lazy.collect(), parsed(_frame(ts)))


def test_missing_text_column_names_the_columns_there() -> None:
    from clientscope.errors import InputError

    with pytest.raises(InputError, match=r"no column 'client_list' \(it has a\)"):
        parse_client_list(pl.DataFrame({"a": ["x"]}))


def test_fast_and_general_readers_agree_on_mixed_input() -> None:
    lines = [
        REDIS72,
        VALKEY9,
        REDIS28,
        DRAGONFLY,
        "junk",
        "",
        REDIS72.replace("name=orders-api-1", "name=x=y"),
    ]
    text = ("\n".join(lines * 3) + "\n").encode()
    fast = read_replies([text]).drop("_rid")
    general = read_lines(to_lines(text, "t", count_first=KEY_START).frame).collect()
    assert_frame_equal(fast, general)


def test_replies_larger_than_a_chunk_keep_their_line_numbers() -> None:
    text = ("\n".join([REDIS72] * 40 + [VALKEY9] * 3 + ["oops"]) + "\n").encode()
    small = read_replies([text, text], chunk_bytes=1000)
    assert small["line_no"].to_list() == list(range(1, 45)) * 2
    assert_frame_equal(small, read_replies([text, text]))


# ------------------------------------------------------------------ real servers
def _client_list_bytes(srv: Server) -> bytes:
    admin = srv.client(name="test-admin")
    conn = admin.connection_pool.get_connection()
    try:
        conn.send_command("CLIENT", "LIST")
        reply = conn.read_response(disable_decoding=True)
    finally:
        admin.connection_pool.release(conn)
    assert isinstance(reply, bytes)
    return reply


def _open_clients(srv: Server) -> list[object]:
    import redis

    named = srv.client(name="orders=api")
    named.set("k", "v")
    unix = redis.Redis(unix_socket_path=str(srv.unix_socket), client_name="via-unix")
    unix.ping()
    pubsub = srv.client().pubsub()
    pubsub.subscribe("news")
    pubsub.get_message(timeout=1)
    return [named, unix, pubsub]


@pytest.mark.parametrize("kind", ["valkey", "redis7"])
def test_live_reply_matches_redis_py_field_by_field(
    kind: str, request: pytest.FixtureRequest
) -> None:
    srv: Server = request.getfixturevalue(kind)
    keep = _open_clients(srv)
    reply = _client_list_bytes(srv)
    frame = parsed(reply)
    expected = redis_py_parse(reply)
    assert frame.height == len(expected) >= 4
    assert frame["parse_error"].null_count() == frame.height
    for row, want in zip(frame.iter_rows(named=True), expected, strict=True):
        for key, value in want.items():
            column = key.replace("-", "_")
            if column in CLIENT_INT_FIELDS:
                assert row[column] == int(value), (key, value)
            elif column in CLIENT_STR_FIELDS:
                assert row[column] == (value or None), (key, value)
            else:
                assert {"key": column, "value": value} in row["extra"], key
    unix_rows = frame.filter(pl.col("name") == "via-unix")
    assert unix_rows["family"].to_list() == ["unix"]
    assert unix_rows["ip"].to_list() == [str(srv.unix_socket)]
    assert frame.filter(pl.col("name") == "orders=api").height == 1
    assert frame.filter(pl.col("is_pubsub")).height == 1
    del keep


def test_replies_of_different_servers_keep_their_order() -> None:
    replies = [f"{REDIS72}\n{REDIS72}\n", f"{REDIS28}\n", f"{VALKEY9}\n", f"{REDIS72}\n"]
    frame = parsed(pl.DataFrame({"capture_id": ["a", "b", "c", "d"], "client_list": replies}))
    assert frame.select("capture_id", "line_no").rows() == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("c", 1),
        ("d", 1),
    ]
    assert frame["age"].to_list() == [120, 120, 855, 0, 120]
