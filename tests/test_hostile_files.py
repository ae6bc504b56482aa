"""Hostile files given to `import`: each case ends in a clear error or a kept, counted reject, in
bounded time and memory, and the dataset still reads afterwards (issue 13, "Hostile files and
input").

Memory is measured in a child process: its own peak RSS (VmHWM) against a child that imports one
ordinary dump, so the numbers hold whatever the test process has loaded.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clientscope import open_dataset
from clientscope.errors import ConfigError, InputError, TimestampError
from clientscope.ingest import expand_inputs, import_dumps, read_dump

CLI = [sys.executable, "-m", "clientscope.cli"]
CLIENT = "id={n} addr=10.0.0.1:{port} laddr=10.0.0.9:6379 fd={n} name=app age=9 idle=1 flags=N db=0"
CHILD = """
import json, sys, time
from clientscope.errors import ClientscopeError
from clientscope.ingest import import_dumps

args = json.loads(sys.argv[1])
start = time.perf_counter()
try:
    out = {"result": import_dumps(args["inputs"], args["out"], **args["options"]).to_dict()}
except ClientscopeError as exc:
    out = {"error": type(exc).__name__, "message": str(exc)}
out["seconds"] = time.perf_counter() - start
status = open("/proc/self/status").read()
out["peak_mib"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(out))
"""


def clients(*ids: int) -> bytes:
    return b"".join(CLIENT.format(n=n, port=5000 + n).encode() + b"\n" for n in ids)


def import_in_child(inputs: list[Path], out: Path, **options: object) -> dict[str, Any]:
    """`import_dumps` in a fresh interpreter: its result (or error), seconds and peak RSS."""
    args = {"inputs": [str(p) for p in inputs], "out": str(out), "options": options}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


@pytest.fixture(scope="module")
def baseline_mib(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Peak RSS of a child that imports one ordinary dump: the interpreter, polars, a write."""
    folder = tmp_path_factory.mktemp("baseline")
    dump = folder / "clients-20261126-093000.txt"
    dump.write_bytes(clients(1, 2, 3))
    peak: float = import_in_child([dump], folder / "ds")["peak_mib"]
    return peak


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`clientscope ARGS` on a terminal wide enough that no path is folded."""
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=120, env=env)


# ------------------------------------------------------------------ archives that expand without end
def bomb(path: Path, compress: Callable[[bytes], bytes]) -> Path:
    """1 GiB of NUL bytes once decompressed: 64 members of 16 MiB (gzip, bzip2 and xz read
    concatenated members as one stream)."""
    path.write_bytes(compress(b"\0" * (16 << 20)) * 64)
    return path


PACKERS = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}


@pytest.mark.parametrize("kind", PACKERS)
def test_an_archive_bomb_stops_at_max_file_size_in_bounded_memory(
    tmp_path: Path, kind: str, baseline_mib: float
) -> None:
    packed = bomb(tmp_path / "clients.txt.z", PACKERS[kind])
    out = import_in_child([packed], tmp_path / "ds", max_file_size="8M")
    assert out["error"] == "InputError"
    assert out["message"] == (
        f"{packed}: holds more than 8 MiB of text, once decompressed from {kind} "
        "(--max-file-size). Check it is a dump (an archive can expand without end); if it is, "
        "raise --max-file-size or split the file."
    )
    assert out["peak_mib"] < baseline_mib + 64, out  # was 4.2 GiB for 1 GiB, then a Polars abort
    assert out["seconds"] < 10, out
    assert not (tmp_path / "ds" / "raw").exists()  # nothing written


def test_a_bomb_on_the_command_line_or_a_pipe_is_one_line_of_error(tmp_path: Path) -> None:
    packed = bomb(tmp_path / "clients.gz", PACKERS["gzip"])
    for args, stdin in (([str(packed)], None), (["-"], packed.read_bytes())):
        done = run_cli("import", *args, "-o", str(tmp_path / "ds"), "--max-file-size", "8M",
                       stdin=stdin)  # fmt: skip
        err = done.stderr.decode()
        assert done.returncode == 1 and "Traceback" not in err, err
        assert err.startswith("clientscope: error: ") and err.count("\n") == 1, err
        assert "holds more than 8 MiB of text, once decompressed from gzip (--max-file-size)" in err


def test_max_file_size_bounds_plain_files_too_and_takes_sizes(tmp_path: Path) -> None:
    dump = tmp_path / "clients.txt"
    dump.write_bytes(clients(*range(1, 20_000)))  # ~1.8 MB
    with pytest.raises(
        InputError, match=r"clients\.txt: holds more than 1 MiB of text \(--max-file-size\)"
    ):
        import_dumps([dump], tmp_path / "ds", max_file_size="1M")
    assert import_dumps([dump], tmp_path / "ds", max_file_size=2 << 20).captures_written == 1
    for bad in ("lots", "0", "-5M", "1X"):
        with pytest.raises(ConfigError, match=r"--max-file-size: .* (is not a size|at least 1)"):
            import_dumps([dump], tmp_path / "ds", max_file_size=bad)


def test_a_compressed_dump_is_decompressed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clientscope.ingest as ingest

    packed = tmp_path / "clients-20261126-093000.txt.gz"
    packed.write_bytes(gzip.compress(clients(1, 2, 3)))
    reads: list[Path] = []
    real = ingest._read
    monkeypatch.setattr(
        ingest, "_read", lambda path, limit: reads.append(path) or real(path, limit)
    )
    result = import_dumps([packed], tmp_path / "ds", instance="r0")
    assert result.captures_written == 1 and reads == [packed.resolve()]  # was read twice
    assert open_dataset(tmp_path / "ds").clients.collect().height == 3


# ------------------------------------------------------------------ huge lines, blank floods
def test_a_line_over_max_line_length_is_kept_cut_in_rejects(
    tmp_path: Path, baseline_mib: float
) -> None:
    dump = tmp_path / "clients-20261126-093000.txt"
    huge = b"id=2 addr=10.0.0.1:5002 fd=2 name=" + b"x" * (4 << 20)
    dump.write_bytes(clients(1) + huge + b"\n" + clients(3))
    out = import_in_child([dump], tmp_path / "ds", instance="r0", max_line_length="64K")
    (report,) = out["result"]["files"]
    assert report["captures"] == 1 and report["rejected_lines"] == [{
        "line": 2,
        "reason": f"line of {len(huge):,} bytes is longer than the line limit (65,536 bytes, "
        "--max-line-length): kept cut to its first 1,024 bytes",
    }]  # fmt: skip
    assert out["peak_mib"] < baseline_mib + 100, out  # a 200 MB line took 3.2 GB
    assert out["seconds"] < 10, out
    ds = open_dataset(tmp_path / "ds")  # reads, and every later command does
    assert ds.clients.collect()["id"].to_list() == [1, 3]
    (reject,) = ds.rejects.collect().rows(named=True)
    assert (reject["table"], reject["line_no"]) == ("clients", 2)
    assert reject["raw_line"] == huge[:1024].decode()  # kept, cut
    assert ds.captures.collect().select("n_clients", "n_rejects").row(0) == (2, 1)


def test_the_default_line_limit_is_far_above_a_real_line() -> None:
    long_name = clients(1).replace(b"name=app", b"name=" + b"n" * 100_000)
    assert read_dump(long_name).segments[0].rejected == ()  # a 100 KB name is still a line
    (seg,) = read_dump(b"id=1 addr=a:1 fd=1 name=" + b"x" * (2 << 20) + b"\n").segments
    assert [r.line for r in seg.rejected] == [1] and seg.client_list == b"\n"


def test_a_line_over_the_limit_in_info_text_is_a_reject_of_the_info(tmp_path: Path) -> None:
    dump = tmp_path / "info-20261126-093000.txt"
    dump.write_bytes(b"# Clients\r\nconnected_clients:2\r\nmaxclients:64\r\nbig:" + b"v" * 5000
                     + b"\r\n")  # fmt: skip
    result = import_dumps([dump], tmp_path / "ds", instance="r0", max_line_length=1000)
    assert [line for line, _ in result.files[0].rejected_lines] == [4]
    ds = open_dataset(tmp_path / "ds")
    assert ds.rejects.collect().select("table", "line_no").rows() == [("info", 4)]
    assert ds.captures.collect()["maxclients"].to_list() == [64]  # the rest of the INFO is read


def test_a_blank_line_flood_is_counted_not_a_reject_per_line(
    tmp_path: Path, baseline_mib: float
) -> None:
    dump = tmp_path / "clients-20261126-093000.txt"
    dump.write_bytes(clients(1) + b"\n" * 1_000_000 + clients(2))  # 1 MB
    out = import_in_child([dump], tmp_path / "ds", instance="r0")
    (report,) = out["result"]["files"]
    assert (report["captures"], report["blank_lines"], report["rejected_lines"]) == (
        1,
        1_000_000,
        [],
    )
    assert out["result"]["blank_lines"] == 1_000_000
    assert out["peak_mib"] < baseline_mib + 100, out  # was 1.2 GB: a reject row per blank line
    assert out["seconds"] < 10, out
    ds = open_dataset(tmp_path / "ds")
    assert ds.rejects.collect().is_empty() and ds.clients.collect().height == 2


def test_newline_floods_take_linear_time(tmp_path: Path) -> None:
    start = time.perf_counter()
    dump = read_dump(b"\n" * (4 << 20))  # ran over 600 s
    assert (dump.segments, dump.blank_lines, dump.redis_output) == ((), 4 << 20, False)
    trailing = tmp_path / "clients-20261126-093000.txt"
    trailing.write_bytes(clients(1) + b"\n" * 150_000)  # took 45 s
    result = import_dumps([trailing], tmp_path / "ds", instance="r0")
    assert (result.captures_written, result.files[0].blank_lines) == (1, 150_000)
    assert time.perf_counter() - start < 10


def test_four_megabytes_of_newlines_import_in_seconds(tmp_path: Path) -> None:
    flood = tmp_path / "clients-20261126-093000.txt"
    flood.write_bytes(b"\n" * (4 << 20))
    out = import_in_child([flood], tmp_path / "ds")
    assert out["seconds"] < 10, out
    assert out["result"]["not_dumps"] == [str(flood)] and out["result"]["captures_written"] == 0


def test_info_keeps_one_blank_line_between_sections() -> None:
    (seg,) = read_dump(
        b"# Server\r\nrun_id:x\r\n\r\n\r\n\r\n# Clients\r\nconnected_clients:1\r\n"
    ).segments
    assert seg.info == b"# Server\nrun_id:x\n\n# Clients\nconnected_clients:1\n"
    assert seg.info_lines == (1, 2, 3, 6, 7)
    assert read_dump(b"# Server\r\nrun_id:x\r\n\r\n\r\n\r\n").blank_lines == 3


# ------------------------------------------------------------------ date lines that name no time
BAD_DATES = [
    "Mon Feb 30 09:30:00 UTC 2026",
    "Thu Nov 26 24:61:00 UTC 2026",
    "2026-13-01T09:30:00Z",
    "2026-02-30 09:30:00",
    "0000-01-01 00:00:00",
    "9999-12-31T23:59:59-01:00",  # past the last time there is, in UTC
]


@pytest.mark.parametrize("line", BAD_DATES)
def test_a_date_line_that_names_no_time_is_an_error_naming_file_line_and_value(
    tmp_path: Path, line: str
) -> None:
    dump = tmp_path / "loop.txt"
    dump.write_bytes(
        b"Thu Nov 26 09:30:00 UTC 2026\n" + clients(1) + line.encode() + b"\n" + clients(2)
    )
    with pytest.raises(TimestampError) as caught:
        import_dumps([dump], tmp_path / "ds")
    message = str(caught.value)
    assert message.startswith(f"{dump}:3: {line!r} reads as a `date` line but is not a real time (")
    assert message.endswith(
        "Correct the line in the file, or delete it and give the capture's time with --at."
    )
    assert not (tmp_path / "ds" / "raw").exists()  # planned before anything is written


@pytest.mark.parametrize("offset", ["+99:99", "+2400", "-12:60"])
def test_an_offset_that_is_not_one_is_an_error_naming_file_and_line(
    tmp_path: Path, offset: str
) -> None:
    dump = tmp_path / "loop.txt"
    dump.write_bytes(clients(1) + f"2026-11-26T09:30:00{offset}\n".encode() + clients(2))
    with pytest.raises(
        TimestampError, match=rf"loop\.txt:2: time zone offset '{re.escape(offset)}' is not one"
    ):
        import_dumps([dump], tmp_path / "ds")


def test_bad_dates_on_the_command_line_are_one_line_each(tmp_path: Path) -> None:
    for n, line in enumerate(["Mon Feb 30 09:30:00 UTC 2026", "Thu, 26 Nov 2026 09:30:00 +9999"]):
        dump = tmp_path / f"loop-{n}.txt"
        dump.write_bytes(line.encode() + b"\n" + clients(1))
        done = run_cli("import", str(dump), "-o", str(tmp_path / "ds"))
        err = done.stderr.decode()
        assert done.returncode == 1 and "Traceback" not in err and f"loop-{n}.txt:1: " in err, err
    with pytest.raises(TimestampError, match=r"--tz: time zone offset '\+99:99' is not one"):
        import_dumps([dump], tmp_path / "ds", tz="+99:99")


@pytest.mark.parametrize("tz", ["", "+", "+1", "-:", "a" * 300, "\x00", "../../etc/passwd"])
def test_a_tz_that_is_not_a_zone_is_an_error_that_says_so(tmp_path: Path, tz: str) -> None:
    dump = tmp_path / "clients.txt"
    dump.write_bytes(clients(1))
    with pytest.raises(TimestampError, match=r"^--tz: time zone .* is ambiguous or unknown"):
        import_dumps([dump], tmp_path / "ds", tz=tz)  # was IndexError / ValueError / OSError


def test_a_file_name_with_an_impossible_time_falls_back_to_mtime(tmp_path: Path) -> None:
    dump = tmp_path / "clients-20261126T093000+99:99.txt"
    dump.write_bytes(clients(1))
    (report,) = import_dumps([dump], tmp_path / "ds").files
    assert report.ts_source == "mtime"


# ------------------------------------------------------------------ names that look like globs
def test_names_with_glob_characters_are_files_and_hidden_files_stay_hidden(tmp_path: Path) -> None:
    folder = tmp_path / "dumps"
    (folder / ".git").mkdir(parents=True)
    (folder / "clients[1].txt").write_bytes(clients(1))
    (folder / "*").write_bytes(clients(2))
    (folder / ".hidden-20261126-093000.txt").write_bytes(clients(3))
    (folder / ".git" / "HEAD").write_bytes(clients(4))
    wanted = [folder / "*", folder / "clients[1].txt"]
    assert expand_inputs([folder]) == wanted
    assert expand_inputs([str(folder / "clients[1].txt")]) == [folder / "clients[1].txt"]
    assert expand_inputs(wanted) == wanted  # walked paths are never globbed again
    assert expand_inputs([str(folder / "c*")]) == [folder / "clients[1].txt"]
    assert expand_inputs([str(folder / ".h*")]) == [folder / ".hidden-20261126-093000.txt"]
    done = run_cli("import", str(folder), "-o", str(tmp_path / "ds"), "--json")
    assert done.returncode == 0, done.stderr
    shown = [Path(f["path"]).name for f in json.loads(done.stdout)["files"]]
    assert shown == ["*", "clients[1].txt"]  # the folder failed; `*` imported the hidden files
    assert sorted(open_dataset(tmp_path / "ds").clients.collect()["id"].to_list()) == [1, 2]


def test_a_glob_star_does_not_match_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(clients(1))
    (tmp_path / ".b.txt").write_bytes(clients(2))
    assert expand_inputs([str(tmp_path / "*.txt")]) == [tmp_path / "a.txt"]


# ------------------------------------------------------------------ a folder is not all dumps
def incident_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "incident"
    (folder / "scripts").mkdir(parents=True)
    (folder / "clients-20261126-093000.txt").write_bytes(clients(1, 2))
    (folder / "info-20261126-093000.txt").write_bytes(
        b"# Server\r\nredis_version:7.2.4\r\nrun_id:abc\r\n\r\n# Clients\r\nconnected_clients:2\r\n"
        b"maxclients:100\r\n"
    )
    (folder / "README.md").write_text(
        "# Incident INC-1\n\nThe cache refused connections at 09:30.\n"
    )
    (folder / "notes.json").write_text('{"ticket": "INC-1", "owner": "ops"}\n')
    (folder / "scripts" / "collect.py").write_text(
        "import redis\n\nprint(redis.Redis().client_list())\n"
    )
    (folder / "scripts" / "loop.sh").write_text(
        "while true; do date; redis-cli client list; done\n"
    )
    (folder / "redis-server.log").write_text(
        "1:M 26 Nov 2026 09:29:58.000 * Ready to accept connections tcp\n"
        "1:M 26 Nov 2026 09:30:00.000 # max number of clients reached\n"
    )
    (folder / "loop.txt").write_text(  # a dump that was meant to be one and failed: a gap
        "Thu Nov 26 09:31:00 UTC 2026\nCould not connect to Redis at 10.0.0.1:6379: Connection refused\n"
    )
    return folder


NOT_DUMPS = ["README.md", "notes.json", "redis-server.log", "collect.py", "loop.sh"]


def test_files_that_are_not_dumps_are_skipped_and_listed_never_captures(tmp_path: Path) -> None:
    folder = incident_folder(tmp_path)
    result = import_dumps([folder], tmp_path / "ds", instance="r0")
    assert sorted(p.name for p in result.not_dumps) == sorted(NOT_DUMPS)
    assert sorted(f.path.name for f in result.files) == [
        "clients-20261126-093000.txt", "info-20261126-093000.txt", "loop.txt"
    ]  # fmt: skip
    caps = open_dataset(tmp_path / "ds").captures.sort("ts").collect()
    assert caps.select("ok", "error_kind", "ts_source").rows() == [
        (True, None, "filename"),  # the client list with its INFO
        (False, "unreadable", "date_line"),  # the loop that could not connect: a gap
    ]  # no capture dated by a stray file's mtime
    assert caps["maxclients"][0] == 100


def test_the_command_line_says_which_files_are_not_dumps(tmp_path: Path) -> None:
    folder = incident_folder(tmp_path)
    done = run_cli("import", str(folder), "-o", str(tmp_path / "ds"), "-i", "r0")
    shown = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    assert (
        "skipped 5 files that are not dumps (no CLIENT LIST, INFO or CONFIG GET output):" in shown
    )
    for name in NOT_DUMPS:
        assert name in shown
    as_json = run_cli("import", str(folder), "-o", str(tmp_path / "ds2"), "--json")
    assert sorted(Path(p).name for p in json.loads(as_json.stdout)["not_dumps"]) == sorted(
        NOT_DUMPS
    )


# ------------------------------------------------------------------ untrusted text on the terminal
def test_file_names_and_reject_reasons_are_shown_not_run(tmp_path: Path) -> None:
    dump = tmp_path / "clients-\x1b[31mred\x1b[0m-20261126-093000.txt"
    dump.write_bytes(clients(1) + b"id=[/] addr=[bold]x fd=[link=https://evil.example]y\n")
    done = run_cli("import", str(dump), "-o", str(tmp_path / "ds"), "-i", "[bold]r0[/]")
    shown = done.stdout.decode()
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr  # MarkupError
    assert "\x1b" not in shown  # the escape sequence is shown, never sent
    assert "\\x1b[31mred\\x1b[0m" in shown
    assert "field id is not an integer: [/]" in shown and "[bold]r0[/]" in shown
    missing = run_cli(
        "import", str(tmp_path / "gone-\x1b]0;pwned\x07.txt"), "-o", str(tmp_path / "ds")
    )
    assert missing.returncode == 1 and b"\x1b" not in missing.stderr
    assert b"gone-\\x1b]0;pwned\\x07.txt: no such file" in missing.stderr


# ------------------------------------------------------------------ fuzzing the dump splitter
LINES = [
    *(line.decode() for line in clients(1, 2).splitlines()),
    "addr=10.0.0.1:5000 fd=8 name=old age=1 idle=1 flags=N db=0",
    "# Clients\r",
    "connected_clients:5\r",
    "maxclients:10000\r",
    "maxclients",
    "10000",
    "timeout",
    "Thu Nov 26 09:30:00 UTC 2026",
    "Thu, 26 Nov 2026 09:30:05 +0000",
    "2026-11-26T09:30:10Z",
    "1795685400",
    "=== 2026-11-26T09:30:00Z ===",
    "Mon Feb 30 09:30:00 UTC 2026",
    "2026-11-26T09:30:00+99:99",
    'Defaulted container "redis" out of: redis, metrics (init)',
    "Could not connect to Redis at 127.0.0.1:6379: Connection refused",
]
chunks = st.one_of(
    st.sampled_from(LINES).map(str.encode),
    st.sampled_from([b"", b"\r", b"   ", b"\t"]),
    st.integers(1, 50_000).map(lambda n: b"\n" * n),  # a blank run: the old splitter was quadratic
    st.binary(max_size=80),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(65, 300).map(lambda n: b"id=9 addr=x name=" + b"z" * n),  # over the limit below
)


@settings(max_examples=300, deadline=timedelta(seconds=5),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(st.lists(chunks, max_size=40), st.booleans())
def test_the_splitter_accounts_for_every_line_or_says_why_not(
    parts: list[bytes], end_nl: bool
) -> None:
    data = b"\n".join(parts) + (b"\n" if end_nl else b"")
    try:
        dump = read_dump(data, max_line_length=64, where="fuzz")
    except InputError as exc:  # only a date line naming no time, and it says which
        assert isinstance(exc, TimestampError) and str(exc).startswith("fuzz:"), exc
        return
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    assert dump.lines == len(lines)
    placed = [n for s in dump.segments for n in (*s.client_lines, *s.info_lines, *s.config_lines)]
    assert len(placed) == len(set(placed)) and not set(placed) & set(dump.date_lines)
    assert len(placed) + len(dump.date_lines) + dump.blank_lines == len(lines)  # none lost
    blank = {n for n, line in enumerate(lines, 1) if not line.strip()}
    assert set(range(1, len(lines) + 1)) - blank <= set(placed) | set(dump.date_lines)
    for seg in dump.segments:
        cut = {r.line for r in seg.rejected}
        assert all(len(lines[n - 1]) > 64 for n in cut) and cut <= set(placed)
        kept = (seg.client_list or b"").split(b"\n")[:-1]
        assert kept == [b"" if n in cut else lines[n - 1] for n in seg.client_lines]
        info = (seg.info or b"").split(b"\n")[:-1]
        assert info == [b"" if n in cut or not lines[n - 1].strip() else lines[n - 1].rstrip(b"\r")
                        for n in seg.info_lines]  # fmt: skip


def test_every_kind_of_line_imports_and_reads_back(tmp_path: Path) -> None:
    """One import of every kind of line the fuzzer mixes, with a long one: the dataset reads."""
    dump = tmp_path / "everything.txt"
    dump.write_bytes("\n".join(line for line in LINES if "+99" not in line and "Feb 30" not in line)
                     .encode() + b"\n" + b"y" * 200 + b"\n\n\n")  # fmt: skip
    result = import_dumps([dump], tmp_path / "ds", max_line_length=100)
    ds = open_dataset(tmp_path / "ds")
    assert ds.captures.collect().height == result.captures_written > 0
    assert (
        ds.rejects.filter(pl.col("reason").str.contains("--max-line-length")).collect().height == 1
    )
    assert datetime(2026, 11, 26, 9, 30, tzinfo=UTC) in ds.captures.collect()["ts"].to_list()
