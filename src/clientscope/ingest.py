"""Import the text dumps people already have into a capture dataset.

Handles what incident responders actually save:

* one `redis-cli client list > clients-0930.txt` per file, with or without a
  matching `redis-cli info > info-0930.txt`;
* the output of a loop (`while true; do date; redis-cli client list; sleep 5; done`)
  where `date` lines separate the captures;
* `redis-cli config get maxclients` output (name and value on alternate lines);
* stray lines (a `kubectl` warning, a truncated last line): kept, counted and
  reported with their file line numbers, never dropped.

Files are untrusted: a dump is read (and decompressed, in a stream) up to
`max_file_size` bytes of text; a line longer than `max_line_length` is kept out
of the capture's text and goes to `rejects`, cut, with its line number; runs of
blank lines are counted, not kept; a file with no line of Redis output in it (a
README, a script, a log) is skipped and listed, never a capture.

Each capture's time comes, in order of preference, from `--at`, a `date` line
that precedes it, a timestamp in the file name, or the file's mtime (standard
input, `-`: the time it is read); the result says which was used for every file.
"""

from __future__ import annotations

import bz2
import contextlib
import fnmatch
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from clientscope import __version__
from clientscope.capture.snapshot import CONFIG_NAMES as COLLECTED_CONFIG
from clientscope.dataset import (
    append_raw,
    conform_raw,
    io_reason,
    known_content_hashes,
    mend,
    prepare,
)
from clientscope.errors import ConfigError, DatasetWriteError, InputError, TimestampError
from clientscope.escape import printable
from clientscope.staging import Spill, Stored, read_ahead

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_LINE_BYTES",
    "Dump",
    "FileReport",
    "ImportResult",
    "LineReject",
    "Segment",
    "import_dumps",
    "read_dump",
    "split_dump",
    "timestamp_from_name",
]

MAX_FILE_BYTES = 2 << 30  # text of one dump, once decompressed (--max-file-size)
MAX_LINE_BYTES = 1 << 20  # one line (--max-line-length); a real CLIENT LIST line is ~300 bytes
KEPT_LINE_BYTES = 1024  # what `rejects` keeps of a line over the limit

CONFIG_NAMES = frozenset(COLLECTED_CONFIG)  # the names the collector asks CONFIG GET for
_CLIENT_LINE = re.compile(rb"^\s*(id|addr)=")
_ANY_CLIENT_LINE = re.compile(rb"(?m)^\s*(?:id|addr)=")
_INFO_HEADER = re.compile(rb"^# [A-Za-z]")
_CONFIG_KEYS = frozenset(name.encode() for name in CONFIG_NAMES)
# a line only Redis / Valkey or redis-cli prints: a file without one is not a dump
_REDIS_OUTPUT = re.compile(
    rb"^\s*(?:id=\d+\s+addr=|addr=\S+\s+fd=)"  # CLIENT LIST (addr first before Redis 2.8.12)
    rb"|^# (?:Server|Clients|Memory|Persistence|Stats|Replication|CPU|Modules|Errorstats|Cluster"
    rb"|Keyspace|Commandstats|Latencystats|Keysizes|Threads)\r?$"  # INFO
    rb"|^(?:redis_version|valkey_version|run_id|connected_clients|blocked_clients|maxclients):"
    rb"|^\s*(?:maxclients|timeout|tcp-keepalive|tcp-backlog|client-output-buffer-limit)\s*$"  # CONFIG
    rb"|^(?:\(error\) |Could not connect to (?:Redis|Valkey) at "  # redis-cli, when it failed
    rb"|(?:ERR|NOAUTH|WRONGPASS|NOPERM|LOADING|MASTERDOWN) )"
)
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

# `date` (C locale): "Thu Nov 26 09:30:00 UTC 2026"; tz may be missing, an abbreviation or +hhmm
_DATE_C = re.compile(
    r"^(?:[A-Z][a-z]{2},? +)?(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) +(?P<time>\d{2}:\d{2}:\d{2})"
    r"(?: +(?P<tz>[A-Z]{1,5}|[+-]\d{4}))? +(?P<year>\d{4})$"
)
# `date -R`: "Thu, 26 Nov 2026 09:30:00 +0000"
_DATE_R = re.compile(
    r"^(?:[A-Z][a-z]{2}, +)?(?P<day>\d{1,2}) +(?P<mon>[A-Z][a-z]{2}) +(?P<year>\d{4}) +"
    r"(?P<time>\d{2}:\d{2}:\d{2}) *(?P<tz>[A-Z]{1,5}|[+-]\d{4})?$"
)
_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)"
    r" ?(?P<tz>Z|UTC|[+-]\d{2}:?\d{2})?$"
)
_OFFSET = re.compile(r"^[+-](?P<h>\d{2}):?(?P<m>\d{2})$")
_EPOCH = re.compile(r"^(?P<s>\d{10})(?:\.(?P<frac>\d+))?$|^(?P<ms>\d{13})$")
_DECORATION = re.compile(r"^[\s=#*:>\-\[\]]+|[\s=#*:<\-\[\]]+$")

# timestamps inside file names
_NAME_PATTERNS = (
    re.compile(
        r"(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})[T_\-\s]?(?P<H>\d{2})[:\-]?(?P<M>\d{2})[:\-]?(?P<S>\d{2})"
        r"(?:[.,]\d+)?(?P<tz>Z|[+-]\d{2}:?\d{2})?"
    ),
    re.compile(r"(?<!\d)(?P<ms>1\d{12})(?!\d)"),
    re.compile(r"(?<!\d)(?P<s>1\d{9})(?!\d)"),
)


@dataclass(frozen=True)
class LineReject:
    """A line kept out of a capture's text because it is longer than the line limit."""

    line: int  # 1-based line of the file
    table: str  # clients | info: the part of the capture it was in
    part_line: int  # its line within that part, where an empty line holds its place
    reason: str
    head: str  # its first KEPT_LINE_BYTES bytes, decoded


@dataclass(frozen=True)
class Segment:
    """One capture found in a dump: the bytes of each part and the file lines they came from."""

    client_list: bytes | None
    info: bytes | None
    config: dict[str, str] | None
    client_lines: tuple[int, ...]  # 1-based file line number of each client-list line
    info_lines: tuple[int, ...]
    ts: datetime | None  # from a date line, if one preceded it
    first_line: int
    last_line: int
    config_lines: tuple[int, ...] = ()  # the name and value lines of CONFIG GET output
    date_line: int | None = None  # the date line it follows
    rejected: tuple[LineReject, ...] = ()  # over-long lines (their place in a part is empty)


@dataclass(frozen=True)
class Dump:
    """What `read_dump` found in a file: every line is in a segment, a date line or a blank run."""

    segments: tuple[Segment, ...]
    lines: int
    blank_lines: int  # blank lines dropped: runs, and those outside INFO text (INFO keeps one)
    date_lines: tuple[int, ...]
    redis_output: bool  # some line only Redis or redis-cli prints: the file is a dump


@dataclass(frozen=True)
class FileReport:
    """What happened to one input file."""

    path: Path
    captures: int
    ts_source: str  # explicit | date_line | filename | mtime | read (standard input)
    first_ts: datetime | None
    skipped: bool = False  # every capture in it was already in the dataset
    rejected_lines: tuple[tuple[int, str], ...] = ()  # (file line, reason)
    blank_lines: int = 0  # counted, not kept (see Dump.blank_lines)


@dataclass(frozen=True)
class ImportResult:
    """What `import_dumps` did."""

    dataset: Path
    instance: str
    files: tuple[FileReport, ...]
    captures_written: int
    batch: str  # the first of `batches` (one per IMPORT_BATCH_BYTES of text written)
    batches: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    not_dumps: tuple[Path, ...] = ()  # files with no Redis output in them: skipped, not captures

    @property
    def rejected_lines(self) -> int:
        return sum(len(f.rejected_lines) for f in self.files)

    @property
    def blank_lines(self) -> int:
        return sum(f.blank_lines for f in self.files)

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": str(self.dataset),
            "instance": self.instance,
            "captures_written": self.captures_written,
            "rejected_lines": self.rejected_lines,
            "blank_lines": self.blank_lines,
            "not_dumps": [str(p) for p in self.not_dumps],
            "batch": self.batch,
            "batches": list(self.batches),
            "notes": list(self.notes),
            "files": [
                {
                    "path": str(f.path),
                    "captures": f.captures,
                    "ts_source": f.ts_source,
                    "first_ts": f.first_ts.isoformat() if f.first_ts else None,
                    "skipped": f.skipped,
                    "rejected_lines": [{"line": n, "reason": r} for n, r in f.rejected_lines],
                    "blank_lines": f.blank_lines,
                }
                for f in self.files
            ],
        }


# ------------------------------------------------------------------ timestamps
def _zone(tz: str | None, default: tzinfo, where: str) -> tzinfo:
    if tz is None:
        return default
    if tz in ("Z", "UTC", "GMT", "UT"):
        return UTC
    if m := _OFFSET.match(tz):
        hours, minutes = int(m["h"]), int(m["m"])
        if hours > 23 or minutes > 59:
            raise TimestampError(
                f"{printable(where, 1000)}: time zone offset {tz!r} is not one (hours 00-23, "
                "minutes 00-59). Give the zone as +hh:mm, or set --tz."
            )
        offset = timedelta(hours=hours, minutes=minutes)
        return _fixed(-offset if tz[0] == "-" else offset)
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name too long
        raise TimestampError(
            f"{printable(where, 1000)}: time zone {printable(tz)!r} is ambiguous or unknown. Re-run "
            "with --tz set to the zone the dump was taken in (e.g. --tz Europe/Berlin), or take "
            "dumps with `date -u`."
        ) from exc


def _fixed(offset: timedelta) -> tzinfo:
    from datetime import timezone

    return timezone(offset)


def parse_date_line(text: str, *, default_tz: tzinfo = UTC, where: str = "") -> datetime | None:
    """The time a `date`-like line states, or None when the line is not a timestamp.

    A line shaped like a date that names no real time (Feb 30, month 13, 25:00, an offset of
    +99:99) is a `TimestampError` naming `where` and the line: it would cut the dump wrongly.
    """
    text = _DECORATION.sub("", text.strip())
    if not text or len(text) > 64:
        return None
    try:
        return _date_of(text, default_tz, where)
    except (ValueError, OverflowError) as exc:
        raise TimestampError(
            f"{printable(where, 1000)}: {printable(text)!r} reads as a `date` line but is not a "
            f"real time ({exc}). Correct the line in the file, or delete it and give the "
            "capture's time with --at."
        ) from exc


def _date_of(text: str, default_tz: tzinfo, where: str) -> datetime | None:
    if m := _EPOCH.match(text):
        if m["ms"]:
            return datetime.fromtimestamp(int(m["ms"]) / 1000, UTC)
        return datetime.fromtimestamp(float(f"{m['s']}.{m['frac'] or 0}"), UTC)
    if m := _ISO.match(text):
        clock = m["time"].replace(":", "").replace(",", ".")
        clock = f"{clock[:2]}:{clock[2:4]}:{clock[4:] or '00'}"
        naive = datetime.fromisoformat(f"{m['date']}T{clock}")
        return naive.replace(tzinfo=_zone(m["tz"], default_tz, where)).astimezone(UTC)
    for pattern in (_DATE_C, _DATE_R):
        if (m := pattern.match(text)) and m["mon"] in _MONTHS:
            hour, minute, second = (int(x) for x in m["time"].split(":"))
            month = _MONTHS.index(m["mon"]) + 1
            naive = datetime(int(m["year"]), month, int(m["day"]), hour, minute, second)
            return naive.replace(tzinfo=_zone(m["tz"], default_tz, where)).astimezone(UTC)
    return None


def timestamp_from_name(name: str, *, default_tz: tzinfo = UTC) -> datetime | None:
    """A capture time written in a file name: ISO 8601, YYYYmmdd-HHMMSS, unix s or ms."""
    for pattern in _NAME_PATTERNS:
        m = pattern.search(name)
        if not m:
            continue
        groups = m.groupdict()
        if groups.get("ms"):
            return datetime.fromtimestamp(int(groups["ms"]) / 1000, UTC)
        if groups.get("s"):
            return datetime.fromtimestamp(int(groups["s"]), UTC)
        try:  # digits that name no real time are not a timestamp: the next source is used
            y, mo, d, hh, mm, ss = (int(m[k]) for k in ("y", "m", "d", "H", "M", "S"))
            naive = datetime(y, mo, d, hh, mm, ss)
            return naive.replace(tzinfo=_zone(m["tz"], default_tz, name)).astimezone(UTC)
        except (ValueError, OverflowError, TimestampError):
            continue
    return None


# ------------------------------------------------------------------ splitting
# The whole buffer is cut by `re`, in C: a run of CLIENT LIST lines (nearly all of a dump) or of
# blank lines is one slice; only the other lines (date, INFO, CONFIG GET, stray) are one by one.
_CLIENT_START = re.compile(rb"[ \t\r\f\v]*(?:id|addr)=")  # _CLIENT_LINE, at a line's start
_NOT_CLIENT_NEXT = re.compile(rb"\n(?![ \t\r\f\v]*(?:id|addr)=)")  # where a run of them ends
_BLANK_RUN = re.compile(rb"(?:[ \t\r\f\v]*\n)+")
_CLIENT_OUTPUT = re.compile(  # the CLIENT LIST part of _REDIS_OUTPUT, on any line of a run
    rb"(?m)^[ \t\r\f\v]*(?:id=\d+[ \t\r\f\v]+addr=|addr=[^ \t\n\r\f\v]+[ \t\r\f\v]+fd=)"
)

# (file line, bytes, n): n > 0 is a run of n client lines within the limit, "\n"-joined;
# n < 0 a run of -n blank lines (b""); 0 one other line
_Item = tuple[int, bytes, int]


def _items(data: bytes, max_line: int) -> Iterator[_Item]:
    """The lines of a dump in order, runs of client lines and of blank lines taken whole."""
    no, pos, size = 1, 0, len(data)
    while pos < size:
        if _CLIENT_START.match(data, pos):
            found = _NOT_CLIENT_NEXT.search(data, pos)
            end = found.start() if found else size
            run = data[pos:end]
            n = run.count(b"\n") + 1
            if len(run) > max_line and max(map(len, run.split(b"\n"))) > max_line:
                for i, line in enumerate(run.split(b"\n")):  # one by one: some are too long
                    yield no + i, line, 0
            else:
                yield no, run, n
        elif blanks := _BLANK_RUN.match(data, pos):
            end = blanks.end() - 1
            n = data.count(b"\n", pos, blanks.end())
            yield no, b"", -n
        else:
            end = data.find(b"\n", pos)
            end, n = (size if end < 0 else end), 1
            yield no, data[pos:end], 0
        no, pos = no + abs(n), end + 1


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@dataclass
class _Block:
    """The lines between two date lines. A run of blank lines is held as one empty line."""

    lines: list[_Item] = field(default_factory=list)
    ts: datetime | None = None
    date_line: int | None = None
    has_capture: bool = False  # a client line or an INFO header: a date line after it cuts
    has_info: bool = False

    def add(self, no: int, line: bytes) -> None:
        self.lines.append((no, line, 0))
        if _CLIENT_LINE.match(line):
            self.has_capture = True
        elif _INFO_HEADER.match(line):
            self.has_capture = self.has_info = True

    def add_run(self, no: int, run: bytes, n: int) -> None:
        self.lines.append((no, run, n))
        self.has_capture = True

    def add_blank(self, no: int) -> int:
        """1 when the blank line is dropped (it continues a run), else 0."""
        if self.lines and not self.lines[-1][1]:
            return 1
        self.lines.append((no, b"", 0))
        return 0


@dataclass
class _Part:
    """The text of one part of a capture, and the file line each of its lines came from."""

    texts: list[bytes] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def add(self, no: int, text: bytes, n: int = 0) -> None:
        self.texts.append(text)
        if n:
            self.lines.extend(range(no, no + n))
        else:
            self.lines.append(no)

    def text(self) -> bytes | None:
        return b"\n".join(self.texts) + b"\n" if self.texts else None


@dataclass
class _Parts:
    """A block's lines sorted into the parts of a capture."""

    has_info: bool
    max_line: int
    clients: _Part = field(default_factory=_Part)
    info: _Part = field(default_factory=_Part)
    config: dict[str, str] = field(default_factory=dict)
    config_lines: list[int] = field(default_factory=list)
    rejected: list[LineReject] = field(default_factory=list)

    def add(self, no: int, line: bytes, n: int) -> int:
        """Sort one line (or a run of client lines) into its part; 1 when it is a blank line
        that is dropped."""
        if n:
            self.clients.add(no, line, n)
            return 0
        # in an INFO dump, a stray line (kubectl's "Defaulted container ...") is the INFO
        # parser's to reject, so the dump still pairs with the client list of its time
        is_info = self.has_info and not _CLIENT_LINE.match(line)
        part = self.info if is_info else self.clients
        if not line and not is_info:
            return 1  # INFO keeps one blank line between sections; a client list none
        if len(line) > self.max_line:
            part.add(no, b"")  # holds its place: the parts' line numbers still map to the file
            table = "info" if is_info else "clients"
            self.rejected.append(_too_long(no, line, table, len(part.lines), self.max_line))
        else:
            part.add(no, line.rstrip(b"\r") if is_info else line)
        return 0

    def add_config(self, name: _Item, value: _Item) -> None:
        key = name[1].strip().decode("utf-8", "replace")
        self.config[key] = value[1].strip().decode("utf-8", "replace")
        self.config_lines += [name[0], value[0]]


def _too_long(no: int, line: bytes, table: str, part_line: int, limit: int) -> LineReject:
    reason = (
        f"line of {len(line):,} bytes is longer than the line limit ({limit:,} bytes, "
        f"--max-line-length): kept cut to its first {KEPT_LINE_BYTES:,} bytes"
    )
    head = line[:KEPT_LINE_BYTES].decode("utf-8", "replace")
    return LineReject(no, table, part_line, reason, head)


def _is_config(lines: list[_Item], i: int, end: int, max_line: int) -> bool:
    """`lines[i]` names a CONFIG GET setting and the next line is its value."""
    if i + 1 >= end or lines[i][2] or lines[i][1].strip() not in _CONFIG_KEYS:
        return False
    _, value, n = lines[i + 1]
    return not n and bool(value) and len(value) <= max_line and not _CLIENT_LINE.match(value)


def _segment(block: _Block, max_line: int) -> tuple[Segment | None, int]:
    """The capture a block holds (None when it is blank), and the blank lines it dropped."""
    lines = block.lines
    start, end = 0, len(lines)
    while start < end and not lines[start][1]:
        start += 1
    while end > start and not lines[end - 1][1]:
        end -= 1
    dropped = start + len(lines) - end
    if start == end:
        return None, dropped
    parts = _Parts(block.has_info, max_line)
    i = start
    while i < end:
        if _is_config(lines, i, end, max_line):
            parts.add_config(lines[i], lines[i + 1])
            i += 2
            continue
        dropped += parts.add(*lines[i])
        i += 1
    last_no, _, last_n = lines[end - 1]
    segment = Segment(
        client_list=parts.clients.text(),
        info=parts.info.text(),
        config=parts.config or None,
        client_lines=tuple(parts.clients.lines),
        info_lines=tuple(parts.info.lines),
        ts=block.ts,
        first_line=lines[start][0],
        last_line=last_no + max(last_n - 1, 0),
        config_lines=tuple(parts.config_lines),
        date_line=block.date_line,
        rejected=tuple(parts.rejected),
    )
    return segment, dropped


def read_dump(
    data: bytes,
    *,
    default_tz: tzinfo = UTC,
    where: str = "",
    max_line_length: int = MAX_LINE_BYTES,
) -> Dump:
    """Cut a dump into captures at `date` lines; account for every line.

    Each line ends in a segment (a client, INFO or CONFIG line, or the empty place of a line
    over `max_line_length`, which is in the segment's `rejected`), is a date line, or is a
    blank line counted in `blank_lines`. Time and memory are linear in the size of `data`.
    """
    segments: list[Segment] = []
    date_lines: list[int] = []
    blank = 0
    redis_output = False
    block = _Block()
    for no, line, n in _items(data, max_line_length):
        if n > 0:
            redis_output = redis_output or bool(_CLIENT_OUTPUT.search(line))
            block.add_run(no, line, n)
            continue
        if n < 0 or not line or line.isspace():
            blank += block.add_blank(no) + max(-n - 1, 0)  # the rest of a run continue it
            continue
        stamp = None
        if len(line) <= 80 and not _CLIENT_LINE.match(line):
            text = line.decode("utf-8", "replace")
            stamp = parse_date_line(text, default_tz=default_tz, where=f"{where}:{no}")
        if stamp is None:
            redis_output = redis_output or bool(_REDIS_OUTPUT.match(line))
            block.add(no, line)
            continue
        date_lines.append(no)
        if block.ts is not None or block.has_capture:
            seg, dropped = _segment(block, max_line_length)
            segments += [seg] if seg is not None else []
            blank += dropped
            block = _Block()
        # lines before the first date line that are not a capture (a warning) join the first one
        block.ts, block.date_line = stamp, no
    seg, dropped = _segment(block, max_line_length)
    segments += [seg] if seg is not None else []
    return Dump(
        segments=tuple(segments),
        lines=_line_count(data),
        blank_lines=blank + dropped,
        date_lines=tuple(date_lines),
        redis_output=redis_output or bool(date_lines),
    )


def split_dump(
    data: bytes,
    *,
    default_tz: tzinfo = UTC,
    where: str = "",
    max_line_length: int = MAX_LINE_BYTES,
) -> list[Segment]:
    """Cut a dump into captures at `date` lines; keep every other line in some capture."""
    dump = read_dump(data, default_tz=default_tz, where=where, max_line_length=max_line_length)
    return list(dump.segments)


# ------------------------------------------------------------------ importing
STDIN = Path("<stdin>")  # what `-` among the inputs stands for


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, globs and directories (recursively), in a stable order; hidden files skipped.

    `-` is standard input (`redis-cli client list | clientscope import - ...`). A path that
    exists is taken as it is, even when its name holds `*`, `?` or `[` (`clients[1].txt`, a
    file named `*`); only a name that does not exist is read as a glob, and what a glob or a
    folder yields is never expanded again.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if str(item) == "-" or path == STDIN:
            found.append(STDIN)
        elif path.is_dir():
            found.extend(_walk(path))
        elif path.is_file():
            found.append(path)
        elif any(ch in str(item) for ch in "*?["):
            found.extend(_glob(str(item)))
        else:
            raise InputError(
                f"{_shown(item)}: no such file or directory. Give dump files, globs or folders."
            )
    unique = list(dict.fromkeys(p if p == STDIN else p.resolve() for p in found))
    return unique


def _walk(folder: Path) -> list[Path]:
    """The files below a folder, none hidden nor in a hidden folder (`.git`, `.DS_Store`)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _glob(pattern: str) -> list[Path]:
    """The files a glob matches; like a shell's, a wildcard does not match a leading dot."""
    path = Path(pattern)
    anchor = Path(path.anchor or ".")
    relative = str(path.relative_to(anchor)) if path.is_absolute() else pattern
    dotted = [part for part in Path(relative).parts if part.startswith(".")]  # `.h*`, `.git`

    def shown(match: Path) -> bool:
        hidden = [p for p in match.relative_to(anchor).parts if p.startswith(".")]
        return all(any(fnmatch.fnmatchcase(p, d) for d in dotted) for p in hidden)

    matches = sorted(p for p in anchor.glob(relative) if p.is_file() and shown(p))
    if not matches:
        raise InputError(
            f"{_shown(pattern)}: the pattern matched no file. Check the path and quoting."
        )
    return matches


def _shown(path: object) -> str:
    """A file name in a message: control characters (an escape sequence) shown, not sent."""
    return printable(str(path), 1000)


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


_SIZE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def _size_of(value: int | str, option: str) -> int:
    """A size in bytes from `4096`, `64K`, `500M`, `2G` or `2GiB` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = _SIZE.match(str(value))
        if m is None:
            raise ConfigError(
                f"{option}: {printable(value)!r} is not a size. Give bytes, or a number with "
                "K, M or G (e.g. 500M, 2G)."
            )
        size = int(float(m["n"]) * 1024 ** " KMGT".index(m["unit"].upper() or " "))
    if size < 1:
        raise ConfigError(f"{option}: {printable(value)!r} must be at least 1 byte.")
    return size


def _in_bytes(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class _Reading:
    """How dump files are read: the zone of times that name none, and the limits."""

    tz: tzinfo
    max_file_size: int = MAX_FILE_BYTES
    max_line_length: int = MAX_LINE_BYTES


# compressed dumps, told by their first bytes (not their names); each read as a stream
_PACKED: dict[bytes, tuple[str, Callable[[BinaryIO], io.BufferedIOBase]]] = {
    b"\x1f\x8b": ("gzip", lambda f: gzip.GzipFile(fileobj=f)),
    b"BZh": ("bzip2", bz2.BZ2File),
    b"\xfd7zXZ\x00": ("xz", lzma.LZMAFile),
}
_CHUNK = 1 << 20


def _too_big(path: Path, limit: int, kind: str | None) -> InputError:
    packed = f", once decompressed from {kind}" if kind else ""
    return InputError(
        f"{_shown(path)}: holds more than {_in_bytes(limit)} of text{packed} (--max-file-size). "
        "Check it is a dump (an archive can expand without end); if it is, raise "
        "--max-file-size or split the file."
    )


def _read_capped(
    stream: BinaryIO | io.BufferedIOBase, limit: int, path: Path, kind: str | None
) -> bytes:
    text = io.BytesIO()  # grows in place, and getvalue() hands its buffer over: no second copy
    while chunk := stream.read(_CHUNK):
        if text.tell() + len(chunk) > limit:
            raise _too_big(path, limit, kind)
        text.write(chunk)
    return text.getvalue()


def _open(path: Path, limit: int) -> BinaryIO:
    """The bytes of an input: the file, or what was piped in (read here, up to `limit`)."""
    if path != STDIN:
        return path.open("rb")
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError(
            "-: standard input is a terminal; pipe a dump in, e.g. "
            "redis-cli client list | clientscope import - --out DATASET"
        )
    data = _read_capped(sys.stdin.buffer, limit, path, None)
    if not data or data.isspace():
        raise InputError("-: standard input was empty: nothing to import")
    return io.BytesIO(data)


def _read(path: Path, limit: int) -> tuple[bytes, str | None]:
    """The text of a dump, never more than `limit` bytes of it, and how it was packed.

    A compressed dump is decompressed as a stream that stops at the limit, so an archive that
    expands without end (a gzip bomb) costs `limit` bytes of memory, not what it expands to.
    """
    with _open(path, limit) as stream:
        head = stream.read(6)
        stream.seek(0)
        kind, unpack = next((v for m, v in _PACKED.items() if head.startswith(m)), (None, None))
        if unpack is None:
            if isinstance(stream, io.BytesIO):
                return stream.getvalue(), None
            if os.fstat(stream.fileno()).st_size > limit:
                raise _too_big(path, limit, None)
            data = stream.read()  # one buffer the size of the file
            if len(data) > limit:  # it grew while read
                raise _too_big(path, limit, None)
            return data, None
        try:
            with unpack(stream) as text:
                return _read_capped(text, limit, path, kind), kind
        except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
            raise InputError(
                f"{_shown(path)}: starts like {kind} data but does not decompress ({exc}). "
                "Is it complete? Try decompressing it by hand to see."
            ) from exc


IMPORT_BATCH_BYTES = 64 << 20  # dump text written per append: memory stays bounded, any input
PARSE_BYTES = 16 << 20  # of it parsed at once (the parse takes several times the text)
PARSE_AHEAD = 1  # chunks parsed by worker threads while a batch is written (2: no faster, measured)
READ_AHEAD_BYTES = 16 << 20  # files read ahead of the one being planned, by size on disk


@dataclass
class _Pending:
    """One capture found in a file. Its text and line numbers wait in the spill from planning
    until its batch is written (`_with_text`): each file is read once, and a large import
    holds only one batch of text in memory at a time."""

    path: Path
    index: int  # of the segment in its file
    segment: Segment
    ts: datetime
    ts_source: str
    content: str
    file_hash: str
    has_clients: bool
    has_info: bool
    size: int  # bytes of text
    stored: Stored  # where its text and line numbers are in the spill


FileStamp = tuple[int, int, int]  # size, mtime (ns) and inode of a file before it was read


@dataclass(frozen=True)
class _Loaded:
    """One input file, read and split."""

    file_hash: str  # of the text: a dump imported plain and gzipped is one dump
    dump: Dump
    packed: str | None  # gzip | bzip2 | xz
    size: int  # bytes of text
    stamp: FileStamp | None  # None for standard input


def _stamp(path: Path) -> FileStamp | None:
    if path == STDIN:
        return None
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _segments(path: Path, reading: _Reading) -> _Loaded:
    """One input file, read within the limits and cut into captures."""
    try:
        stamp = _stamp(path)  # before reading: a change made while it is read is seen too
        data, packed = _read(path, reading.max_file_size)
    except OSError as exc:
        raise InputError(
            f"{_shown(path)}: cannot read it ({exc.strerror}). Check the path and permissions."
        ) from exc
    dump = read_dump(data, default_tz=reading.tz, where=str(path),
                     max_line_length=reading.max_line_length)  # fmt: skip
    return _Loaded(_hash(data), dump, packed, len(data), stamp)


@dataclass(frozen=True)
class _Planned:
    """A file's captures (without their text), where their times come from, and the file."""

    pending: list[_Pending]
    ts_source: str
    is_dump: bool  # it holds some Redis output: see Dump.redis_output
    blank_lines: int
    packed: str | None
    size: int  # bytes of text
    stamp: FileStamp | None  # the file as it was read: see `_unchanged`


def _plan_file(
    path: Path, loaded: _Loaded, at: datetime | None, reading: _Reading, spill: Spill
) -> _Planned:
    """The file's plan; the text of its captures goes to the spill."""
    dump = loaded.dump

    def planned(pending: list[_Pending], ts_source: str) -> _Planned:
        facts = (dump.redis_output, dump.blank_lines, loaded.packed, loaded.size, loaded.stamp)
        return _Planned(pending, ts_source, *facts)

    if not dump.redis_output:  # a README, a script, a log: not a capture, not a gap
        return planned([], "not a dump")
    if at is not None:
        if len(dump.segments) > 1:
            raise TimestampError(
                f"{_shown(path)}: holds {len(dump.segments)} captures separated by date lines, "
                "but --at gives one time for all. Drop --at to use the date lines."
            )
        base, source = at, "explicit"
    elif path == STDIN:
        base, source = datetime.now(UTC), "read"
    elif (named := timestamp_from_name(path.name, default_tz=reading.tz)) is not None:
        base, source = named, "filename"
    else:
        base, source = datetime.fromtimestamp(path.stat().st_mtime, UTC), "mtime"
    pending = []
    for index, seg in enumerate(dump.segments):
        ts, seg_source = (
            (seg.ts, "date_line") if seg.ts is not None and at is None else (base, source)
        )
        content = _hash(loaded.file_hash.encode(), str(index).encode())
        size = len(seg.client_list or b"") + len(seg.info or b"")
        light = replace(seg, client_list=None, info=None, client_lines=(), info_lines=())
        has_clients = bool(seg.client_list and _ANY_CLIENT_LINE.search(seg.client_list))
        pending.append(_Pending(path, index, light, ts, seg_source, content, loaded.file_hash,
                                has_clients, seg.info is not None, size, _spilled(seg, spill, path)))  # fmt: skip
    sources = {p.ts_source for p in pending} or {source}
    return planned(pending, "+".join(sorted(sources)))


def _batches(groups: list[list[_Pending]], budget: int) -> Iterator[list[list[_Pending]]]:
    batch: list[list[_Pending]] = []
    size = 0
    for group in groups:
        batch.append(group)
        size += sum(p.size for p in group)
        if size >= budget:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _spilled(segment: Segment, spill: Spill, path: Path) -> Stored:
    lines = (array("Q", segment.client_lines).tobytes(), array("Q", segment.info_lines).tobytes())
    try:
        return spill.put((segment.client_list or b"", segment.info or b"", *lines))
    except OSError as exc:
        raise _spill_failed(spill, f"set the text of {_shown(path)} aside", exc) from exc


def _spill_failed(spill: Spill, what: str, exc: OSError) -> DatasetWriteError:
    return DatasetWriteError(
        f"could not {what} in {spill.folder} until it is written: "
        f"{io_reason(exc, spill.folder)}. Captures written before are kept; free disk space "
        "and run again."
    )


def _unspilled(p: _Pending, spill: Spill) -> _Pending:
    """`p` with the text and line numbers of its segment again, from the spill."""
    try:
        client_list, info, client_lines, info_lines = spill.get(p.stored)
    except OSError as exc:  # not expected: the spill is this process's own file
        raise _spill_failed(spill, f"read back the text of {_shown(p.path)}", exc) from exc
    segment = replace(
        p.segment,
        client_list=client_list or None,  # a part with lines ends in a newline: never b""
        info=info or None,
        client_lines=tuple(array("Q", client_lines)),
        info_lines=tuple(array("Q", info_lines)),
    )
    return replace(p, segment=segment)


def _with_text(
    batch: list[list[_Pending]], spill: Spill, plans: dict[Path, _Planned]
) -> list[list[_Pending]]:
    """The batch's captures with their text again. Their files are not read again, but a file
    that changed since it was read (a loop still writing to it) is an error, as it was when
    files were read twice: what is imported is what the file held."""
    for path in dict.fromkeys(p.path for group in batch for p in group):
        _unchanged(path, plans[path].stamp)
    return [[_unspilled(p, spill) for p in group] for group in batch]


def _unchanged(path: Path, stamp: FileStamp | None) -> None:
    if stamp is None:
        return
    try:
        now = _stamp(path)
    except OSError:
        now = None
    if now != stamp:
        raise InputError(
            f"{_shown(path)}: changed while it was being imported; import it again "
            "once nothing writes to it (what was written before is kept)"
        )


def _merge_pairs(pending: list[_Pending], window: timedelta) -> list[list[_Pending]]:
    """Group an INFO-only or CONFIG-only capture with the client list taken at the same time."""
    lists = [p for p in pending if p.has_clients]
    # INFO / CONFIG without client lines pair with the client list of their time; a capture
    # with nothing readable stays on its own (a gap), never joined to a real one
    extras = [p for p in pending if not p.has_clients and (p.has_info or p.segment.config)]
    alone = [p for p in pending if not (p.has_clients or p.has_info or p.segment.config)]
    groups = [[p] for p in lists]
    for extra in extras:
        best = min(
            (g for g in groups if abs(g[0].ts - extra.ts) <= window and len(g) < 3),
            key=lambda g: abs(g[0].ts - extra.ts),
            default=None,
        )
        if best is None:
            groups.append([extra])
        else:
            best.append(extra)
    return groups + [[p] for p in alone]


def _noted_rejects(segment: Segment | None, table: str) -> list[dict[str, object]]:
    """The over-long lines of one part, as `parse_raw` reads them from `notes`."""
    if segment is None:
        return []
    return [
        {"table": r.table, "line_no": r.part_line, "reason": r.reason, "raw_line": r.head}
        for r in segment.rejected
        if r.table == table
    ]


def _raw_row(group: list[_Pending], instance: str, maxclients: int | None) -> dict[str, object]:
    main = group[0]
    lister = next((p.segment for p in group if p.segment.client_list), None)
    informer = next((p.segment for p in group if p.segment.info), None)
    client_list = lister.client_list if lister else None
    info = informer.info if informer else None
    config: dict[str, str] = {}
    for p in group:
        config.update(p.segment.config or {})
    origin = "; ".join(f"file:{p.path}:{p.segment.first_line}-{p.segment.last_line}" for p in group)
    notes: dict[str, object] = {"files": [str(p.path) for p in group]}
    if maxclients is not None:
        notes["maxclients"] = maxclients
    if noted := _noted_rejects(lister, "clients") + _noted_rejects(informer, "info"):
        notes["rejects"] = noted  # lines kept out of the text: parse_raw puts them in rejects
    readable = info or config or any(p.has_clients for p in group)  # known since planning
    return {
        "capture_id": main.content[:32],
        "instance": instance,
        "ts": main.ts,
        "ts_source": main.ts_source,
        "collector_time": None,
        "source": "import",
        "origin": origin,
        # nothing readable is a gap, not a server with 0 clients; its lines stay in rejects
        "ok": bool(readable),
        "error_kind": None if readable else "unreadable",
        "error_message": None
        if readable
        else "no CLIENT LIST line, INFO or CONFIG GET output in it",
        "client_list": client_list,
        "info": info,
        "config": json.dumps(config, sort_keys=True) if config else None,
        "content_sha256": " ".join(p.content for p in group),
        "notes": json.dumps(notes, sort_keys=True),
        "collector_version": f"clientscope {__version__}",
    }


def import_dumps(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    instance: str = "imported",
    at: datetime | None = None,
    tz: str = "UTC",
    maxclients: int | None = None,
    pair_window: timedelta = timedelta(seconds=5),
    max_file_size: int | str = MAX_FILE_BYTES,
    max_line_length: int | str = MAX_LINE_BYTES,
    progress: Callable[[Path], None] | None = None,
    written: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Import text dumps (`redis-cli client list`, `info`, `config get`, loops with `date`).

    Appends to the dataset at `out` (created if missing); captures already in it
    (same file content) are skipped, so running an import twice is safe. `progress`
    is called after each file is read, `written(done, total)` after each batch of
    captures is written.

    A file holding more than `max_file_size` bytes of text (once decompressed) is an
    error; a line longer than `max_line_length` goes to `rejects`, cut (both take bytes
    or a size such as "500M"). A file with no Redis output in it is skipped and listed
    in `not_dumps`.
    """
    reading = _Reading(
        _zone(tz, UTC, "--tz"),
        _size_of(max_file_size, "--max-file-size"),
        _size_of(max_line_length, "--max-line-length"),
    )
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=reading.tz)
    root = prepare(out)
    mend(root)  # captures a killed writer left unparsed
    files = expand_inputs(inputs)
    known = known_content_hashes(root)
    with _spill(root) as spill:
        plans = _plan_files(files, at, reading, spill, progress)
        return _write(plans, known, root, spill, instance, maxclients, pair_window, written)


def _spill(root: Path) -> Spill:
    try:
        return Spill(root)
    except OSError as exc:
        raise DatasetWriteError(
            f"cannot make a file in {root} to hold the text of the dumps until it is written: "
            f"{io_reason(exc, root)}. Free disk space or fix permissions and run again."
        ) from exc


def _write(
    plans: dict[Path, _Planned],
    known: set[str],
    root: Path,
    spill: Spill,
    instance: str,
    maxclients: int | None,
    pair_window: timedelta,
    written: Callable[[int, int], None] | None,
) -> ImportResult:
    """Write the planned captures new to the dataset, one batch of text per append."""
    pending = [p for plan in plans.values() for p in plan.pending]
    fresh = []
    for p in pending:  # new to the dataset, and the first of copies given in this run
        if p.content not in known:
            fresh.append(p)
            known.add(p.content)
    groups = _merge_pairs(fresh, pair_window)
    rejects: dict[Path, list[tuple[int, str]]] = {}
    batches: list[str] = []
    done = written_count = 0

    def prepared(chunk: tuple[int, list[list[_Pending]]]) -> _Prepared:
        return _prepare(chunk[1], spill, plans, instance, maxclients)

    # a batch is parsed in chunks (the parse's working memory follows a chunk), by a worker
    # thread that works on the next chunk while a batch is written
    chunks = [(i, chunk) for i, batch in enumerate(_batches(groups, IMPORT_BATCH_BYTES))
              for chunk in _batches(batch, PARSE_BYTES)]  # fmt: skip
    ready = read_ahead(chunks, prepared, weight=lambda _: 1, budget=PARSE_AHEAD, workers=PARSE_AHEAD)
    with contextlib.closing(ready):
        for (loaded, raw, parsed), batch in _joined(ready):
            result = append_raw(root, raw, parsed=parsed)
            written_count += result.captures  # another import may have committed some meanwhile
            if result.batch:
                batches.append(result.batch)
            for path, lines in _rejects_by_file(loaded, result.rejects).items():
                rejects.setdefault(path, []).extend(lines)
            done += len(batch)
            if written is not None:
                written(done, len(groups))
    notes = []
    if instance == "imported":
        notes.append("no --instance given: captures are tagged 'imported'")
    written_here = {(p.path, p.index) for p in fresh}
    return ImportResult(
        dataset=root,
        instance=instance,
        files=tuple(
            _report(path, plan, written_here, rejects.get(path, []))
            for path, plan in plans.items()
            if plan.is_dump
        ),
        captures_written=written_count,
        batch=batches[0] if batches else "",
        batches=tuple(batches),
        notes=tuple(notes),
        not_dumps=tuple(path for path, plan in plans.items() if not plan.is_dump),
    )


_Prepared = tuple[list[list[_Pending]], pl.DataFrame, dict[str, pl.DataFrame]]


def _joined(
    chunks: Iterator[tuple[tuple[int, list[list[_Pending]]], _Prepared]],
) -> Iterator[tuple[_Prepared, list[list[_Pending]]]]:
    """The chunks of each batch put together again, with the batch's groups."""
    parts: list[_Prepared] = []
    groups: list[list[_Pending]] = []
    current = -1
    for (index, chunk), prepared in chunks:
        if index != current and parts:
            yield _concat(parts), groups
            parts, groups = [], []
        current = index
        parts.append(prepared)
        groups += chunk
    if parts:
        yield _concat(parts), groups


def _concat(parts: list[_Prepared]) -> _Prepared:
    if len(parts) == 1:
        return parts[0]
    loaded = [group for part in parts for group in part[0]]
    raw = pl.concat([part[1] for part in parts])
    parsed = {name: pl.concat([part[2][name] for part in parts]) for name in parts[0][2]}
    return loaded, raw, parsed


def _prepare(
    batch: list[list[_Pending]],
    spill: Spill,
    plans: dict[Path, _Planned],
    instance: str,
    maxclients: int | None,
) -> _Prepared:
    """A batch's captures with their file line numbers (their text is in the raw rows now),
    their raw rows, and those rows parsed."""
    from clientscope.parse import parse_raw

    loaded = _with_text(batch, spill, plans)
    rows = [_raw_row(g, instance, maxclients) for g in loaded]
    raw = conform_raw(pl.DataFrame(rows, schema_overrides=_ROW_TYPES))
    textless = [
        [replace(p, segment=replace(p.segment, client_list=None, info=None)) for p in group]
        for group in loaded
    ]
    return textless, raw, parse_raw(raw)


def _plan_files(
    files: list[Path],
    at: datetime | None,
    reading: _Reading,
    spill: Spill,
    progress: Callable[[Path], None] | None,
) -> dict[Path, _Planned]:
    """Each file's plan. Files are read and split by worker threads a few files ahead (reading,
    hashing and decompressing release the GIL); their text goes to the spill."""
    plans: dict[Path, _Planned] = {}
    read = read_ahead(files, lambda path: _segments(path, reading),
                      weight=_size_on_disk, budget=READ_AHEAD_BYTES)  # fmt: skip
    with contextlib.closing(read):
        for path, loaded in read:
            plans[path] = _plan_file(path, loaded, at, reading, spill)
            if progress is not None:
                progress(path)
    return plans


def _size_on_disk(path: Path) -> int:
    try:
        return 0 if path == STDIN else path.stat().st_size
    except OSError:
        return 0


def _report(
    path: Path, plan: _Planned, written: set[tuple[Path, int]], rejects: list[tuple[int, str]]
) -> FileReport:
    new = [p for p in plan.pending if (p.path, p.index) in written]
    return FileReport(
        path=path,
        captures=len(new),
        ts_source=plan.ts_source,
        first_ts=min((p.ts for p in plan.pending), default=None),
        skipped=bool(plan.pending) and not new,
        rejected_lines=tuple(sorted(rejects)),
        blank_lines=plan.blank_lines,
    )


_ROW_TYPES = {
    "ts": pl.Datetime("us", "UTC"),
    "collector_time": pl.Datetime("us", "UTC"),
    "client_list": pl.Binary(),
    "info": pl.Binary(),
    "config": pl.String(),
    "error_kind": pl.String(),
    "error_message": pl.String(),
}


def _rejects_by_file(
    groups: Iterable[list[_Pending]], rejects: pl.DataFrame | None
) -> dict[Path, list[tuple[int, str]]]:
    """Map parser rejects (capture, table, line within its part) back to file lines."""
    out: dict[Path, list[tuple[int, str]]] = {}
    if rejects is None or rejects.is_empty():
        return out
    by_capture = {g[0].content[:32]: g for g in groups}
    for capture_id, table, line_no, reason in rejects.select(
        "capture_id", "table", "line_no", "reason"
    ).iter_rows():
        group = by_capture.get(capture_id)
        if group is None:
            continue
        for p in group:
            lines = p.segment.client_lines if table == "clients" else p.segment.info_lines
            if 0 < line_no <= len(lines):  # the first of the group with that part
                out.setdefault(p.path, []).append((lines[line_no - 1], str(reason)))
                break
    return out
