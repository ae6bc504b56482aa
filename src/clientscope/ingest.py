"""Import the text dumps people already have into a capture dataset.

Handles what incident responders actually save:

* one `redis-cli client list > clients-0930.txt` per file, with or without a
  matching `redis-cli info > info-0930.txt`;
* the output of a loop (`while true; do date; redis-cli client list; sleep 5; done`)
  where `date` lines separate the captures;
* `redis-cli config get maxclients` output (name and value on alternate lines);
* stray lines (a `kubectl` warning, a truncated last line): kept, counted and
  reported with their file line numbers, never dropped.

Each capture's time comes, in order of preference, from `--at`, a `date` line
that precedes it, a timestamp in the file name, or the file's mtime (standard
input, `-`: the time it is read); the result says which was used for every file.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from clientscope import __version__
from clientscope.dataset import append_raw, check_writable, known_content_hashes
from clientscope.errors import InputError, TimestampError

__all__ = [
    "FileReport",
    "ImportResult",
    "Segment",
    "import_dumps",
    "split_dump",
    "timestamp_from_name",
]

CONFIG_NAMES = frozenset(
    {"maxclients", "timeout", "tcp-keepalive", "tcp-backlog", "client-output-buffer-limit"}
)
_CLIENT_LINE = re.compile(rb"^\s*(id|addr)=")
_ANY_CLIENT_LINE = re.compile(rb"(?m)^\s*(?:id|addr)=")
_INFO_HEADER = re.compile(rb"^# [A-Za-z]")
_INFO_FIELD = re.compile(rb"^[A-Za-z][A-Za-z0-9_.-]*:")
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


@dataclass(frozen=True)
class FileReport:
    """What happened to one input file."""

    path: Path
    captures: int
    ts_source: str  # explicit | date_line | filename | mtime | read (standard input)
    first_ts: datetime | None
    skipped: bool = False  # every capture in it was already in the dataset
    rejected_lines: tuple[tuple[int, str], ...] = ()  # (file line, reason)


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

    @property
    def rejected_lines(self) -> int:
        return sum(len(f.rejected_lines) for f in self.files)

    def to_dict(self) -> dict[str, object]:
        return {
            "dataset": str(self.dataset),
            "instance": self.instance,
            "captures_written": self.captures_written,
            "rejected_lines": self.rejected_lines,
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
    if tz[0] in "+-":
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]))
        return _fixed(-offset if tz[0] == "-" else offset)
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TimestampError(
            f"{where}: time zone {tz!r} is ambiguous or unknown. Re-run with --tz set to the zone the "
            "dump was taken in (e.g. --tz Europe/Berlin), or take dumps with `date -u`."
        ) from exc


def _fixed(offset: timedelta) -> tzinfo:
    from datetime import timezone

    return timezone(offset)


def parse_date_line(text: str, *, default_tz: tzinfo = UTC, where: str = "") -> datetime | None:
    """The time a `date`-like line states, or None when the line is not a timestamp."""
    text = _DECORATION.sub("", text.strip())
    if not text or len(text) > 64:
        return None
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
        try:
            y, mo, d, hh, mm, ss = (int(m[k]) for k in ("y", "m", "d", "H", "M", "S"))
            naive = datetime(y, mo, d, hh, mm, ss)
        except ValueError:
            continue
        return naive.replace(tzinfo=_zone(m["tz"], default_tz, name)).astimezone(UTC)
    return None


# ------------------------------------------------------------------ splitting
def _join(lines: list[bytes]) -> bytes | None:
    return b"\n".join(lines) + b"\n" if lines else None


def _segment(block: list[tuple[int, bytes]], ts: datetime | None) -> Segment | None:
    while block and not block[0][1].strip():
        block = block[1:]
    while block and not block[-1][1].strip():
        block = block[:-1]
    if not block:
        return None
    has_info = any(_INFO_HEADER.match(line) for _, line in block)
    clients: list[tuple[int, bytes]] = []
    info: list[tuple[int, bytes]] = []
    config: dict[str, str] = {}
    i = 0
    while i < len(block):
        no, line = block[i]
        name = line.strip().decode("utf-8", "replace")
        if name in CONFIG_NAMES and i + 1 < len(block) and not _CLIENT_LINE.match(block[i + 1][1]):
            config[name] = block[i + 1][1].strip().decode("utf-8", "replace")
            i += 2
            continue
        # in an INFO dump, a stray line (kubectl's "Defaulted container ...") is the INFO
        # parser's to reject, so the dump still pairs with the client list of its time
        is_info = has_info and not _CLIENT_LINE.match(line)
        (info if is_info else clients).append((no, line))
        i += 1
    return Segment(
        client_list=_join([line for _, line in clients]),
        info=_join([line.rstrip(b"\r") for _, line in info]),
        config=config or None,
        client_lines=tuple(no for no, _ in clients),
        info_lines=tuple(no for no, _ in info),
        ts=ts,
        first_line=block[0][0],
        last_line=block[-1][0],
    )


def split_dump(data: bytes, *, default_tz: tzinfo = UTC, where: str = "") -> list[Segment]:
    """Cut a dump into captures at `date` lines; keep every other line in some capture."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    segments: list[Segment] = []
    block: list[tuple[int, bytes]] = []
    block_ts: datetime | None = None
    for no, line in enumerate(lines, start=1):
        stamp = None
        if not _CLIENT_LINE.match(line) and len(line) <= 80:
            stamp = parse_date_line(
                line.decode("utf-8", "replace"), default_tz=default_tz, where=f"{where}:{no}"
            )
        if stamp is None:
            block.append((no, line))
            continue
        has_capture = any(_CLIENT_LINE.match(b) or _INFO_HEADER.match(b) for _, b in block)
        if block_ts is not None or has_capture:
            if (seg := _segment(block, block_ts)) is not None:
                segments.append(seg)
            block = []
        # lines before the first date line that are not a capture (a warning) join the first one
        block_ts = stamp
    if (seg := _segment(block, block_ts)) is not None:
        segments.append(seg)
    return segments


# ------------------------------------------------------------------ importing
STDIN = Path("<stdin>")  # what `-` among the inputs stands for


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, globs and directories (recursively), in a stable order; hidden files skipped.

    `-` is standard input (`redis-cli client list | clientscope import - ...`).
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if str(item) == "-" or path == STDIN:
            found.append(STDIN)
        elif any(ch in str(item) for ch in "*?["):
            anchor = Path(path.anchor or ".")
            pattern = str(path.relative_to(anchor)) if path.is_absolute() else str(item)
            matches = sorted(p for p in anchor.glob(pattern) if p.is_file())
            if not matches:
                raise InputError(
                    f"{item}: the pattern matched no file. Check the path and quoting."
                )
            found.extend(matches)
        elif path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(
                f"{item}: no such file or directory. Give dump files, globs or folders."
            )
    unique = list(dict.fromkeys(p if p == STDIN else p.resolve() for p in found))
    return unique


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


_COMPRESSED: dict[bytes, tuple[str, Callable[[bytes], bytes]]] = {  # by their first bytes
    b"\x1f\x8b": ("gzip", gzip.decompress),
    b"BZh": ("bzip2", bz2.decompress),
    b"\xfd7zXZ\x00": ("xz", lzma.decompress),
}


def _decompressed(path: Path, data: bytes) -> bytes:
    """The text of a gzip / bzip2 / xz dump (told by its first bytes, not its name)."""
    for magic, (kind, decompress) in _COMPRESSED.items():
        if data.startswith(magic):
            try:
                return decompress(data)
            except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                raise InputError(
                    f"{path}: starts like {kind} data but does not decompress ({exc}). "
                    "Is it complete? Try decompressing it by hand to see."
                ) from exc
    return data


IMPORT_BATCH_BYTES = 64 << 20  # dump text written per append: memory stays bounded, any input


@dataclass
class _Pending:
    """One capture found in a file. Its text is dropped after planning and read again to write
    it (`_with_text`), so a large import holds only one batch of text at a time."""

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


def _read(path: Path) -> bytes:
    if path == STDIN:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError(
                "-: standard input is a terminal; pipe a dump in, e.g. "
                "redis-cli client list | clientscope import - --out DATASET"
            )
        data = sys.stdin.buffer.read()
        if not data.strip():
            raise InputError("-: standard input was empty: nothing to import")
        return data
    return path.read_bytes()


def _segments(path: Path, default_tz: tzinfo) -> tuple[str, list[Segment]]:
    """(hash of the text, its captures) of one input file."""
    try:
        data = _read(path)
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read it ({exc.strerror}). Check the path and permissions."
        ) from exc
    data = _decompressed(path, data)
    # the hash is of the text: a dump imported plain and gzipped is one dump
    return _hash(data), split_dump(data, default_tz=default_tz, where=str(path))


def _plan_file(
    path: Path, at: datetime | None, default_tz: tzinfo
) -> tuple[list[_Pending], str, list[Segment]]:
    """The file's captures (without their text), its time source, and the segments with it."""
    file_hash, segments = _segments(path, default_tz)
    if at is not None:
        if len(segments) > 1:
            raise TimestampError(
                f"{path}: holds {len(segments)} captures separated by date lines, but --at gives one "
                "time for all. Drop --at to use the date lines."
            )
        base, source = at, "explicit"
    elif path == STDIN:
        base, source = datetime.now(UTC), "read"
    elif (named := timestamp_from_name(path.name, default_tz=default_tz)) is not None:
        base, source = named, "filename"
    else:
        base, source = datetime.fromtimestamp(path.stat().st_mtime, UTC), "mtime"
    pending = []
    for index, seg in enumerate(segments):
        ts, seg_source = (
            (seg.ts, "date_line") if seg.ts is not None and at is None else (base, source)
        )
        content = _hash(file_hash.encode(), str(index).encode())
        size = len(seg.client_list or b"") + len(seg.info or b"")
        light = replace(seg, client_list=None, info=None, client_lines=(), info_lines=())
        has_clients = bool(seg.client_list and _ANY_CLIENT_LINE.search(seg.client_list))
        pending.append(_Pending(path, index, light, ts, seg_source, content, file_hash,
                                has_clients, seg.info is not None, size))  # fmt: skip
    sources = {p.ts_source for p in pending} or {source}
    return pending, "+".join(sorted(sources)), segments


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


def _with_text(
    batch: list[list[_Pending]], default_tz: tzinfo, read: dict[Path, list[Segment]]
) -> list[list[_Pending]]:
    """The batch's captures with their text again, their files read anew. `read` holds the
    files read so far: those the batch does not use are dropped (a pipe, read once, stays),
    so a long loop dump that spans batches is read once, not once per batch."""
    used = {p.path for group in batch for p in group}
    for path in [p for p in read if p not in used and p != STDIN]:
        del read[path]
    out = []
    for group in batch:
        full = []
        for p in group:
            if p.path not in read:
                file_hash, read[p.path] = _segments(p.path, default_tz)
                if file_hash != p.file_hash:
                    raise InputError(
                        f"{p.path}: changed while it was being imported; import it again "
                        "once nothing writes to it (what was written before is kept)"
                    )
            full.append(replace(p, segment=read[p.path][p.index]))
        out.append(full)
    return out


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


def _raw_row(group: list[_Pending], instance: str, maxclients: int | None) -> dict[str, object]:
    main = group[0]
    client_list = next((p.segment.client_list for p in group if p.segment.client_list), None)
    info = next((p.segment.info for p in group if p.segment.info), None)
    config: dict[str, str] = {}
    for p in group:
        config.update(p.segment.config or {})
    origin = "; ".join(f"file:{p.path}:{p.segment.first_line}-{p.segment.last_line}" for p in group)
    notes: dict[str, object] = {"files": [str(p.path) for p in group]}
    if maxclients is not None:
        notes["maxclients"] = maxclients
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
        "error_message": None if readable else "no CLIENT LIST line, INFO or CONFIG GET output in it",
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
    progress: Callable[[Path], None] | None = None,
    written: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Import text dumps (`redis-cli client list`, `info`, `config get`, loops with `date`).

    Appends to the dataset at `out` (created if missing); captures already in it
    (same file content) are skipped, so running an import twice is safe. `progress`
    is called after each file is read, `written(done, total)` after each batch of
    captures is written.
    """
    default_tz = _zone(tz, UTC, "--tz")
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=default_tz)
    root = Path(out)
    check_writable(root)
    files = expand_inputs(inputs)
    known = known_content_hashes(root)
    pending: list[_Pending] = []
    sources: dict[Path, str] = {}
    read: dict[Path, list[Segment]] = {}  # standard input cannot be read twice: kept here
    for path in files:
        planned, sources[path], segments = _plan_file(path, at, default_tz)
        pending.extend(planned)
        if path == STDIN:
            read[path] = segments
        if progress is not None:
            progress(path)
    fresh = []
    for p in pending:  # new to the dataset, and the first of copies given in this run
        if p.content not in known:
            fresh.append(p)
            known.add(p.content)
    written_here = {(p.path, p.index) for p in fresh}
    groups = _merge_pairs(fresh, pair_window)
    rejects: dict[Path, list[tuple[int, str]]] = {}
    batches: list[str] = []
    done = 0
    for batch in _batches(groups, IMPORT_BATCH_BYTES):
        loaded = _with_text(batch, default_tz, read)
        rows = [_raw_row(g, instance, maxclients) for g in loaded]
        result = append_raw(root, pl.DataFrame(rows, schema_overrides=_ROW_TYPES))
        batches.append(result.batch)
        for path, lines in _rejects_by_file(loaded, result.rejects).items():
            rejects.setdefault(path, []).extend(lines)
        done += len(batch)
        if written is not None:
            written(done, len(groups))
    by_file: dict[Path, list[_Pending]] = {}
    for p in pending:
        by_file.setdefault(p.path, []).append(p)
    reports = []
    for path in files:
        mine = by_file.get(path, [])
        new = [p for p in mine if (p.path, p.index) in written_here]
        reports.append(
            FileReport(
                path=path,
                captures=len(new),
                ts_source=sources[path],
                first_ts=min((p.ts for p in mine), default=None),
                skipped=bool(mine) and not new,
                rejected_lines=tuple(sorted(rejects.get(path, []))),
            )
        )
    notes = []
    if instance == "imported":
        notes.append("no --instance given: captures are tagged 'imported'")
    return ImportResult(
        dataset=root,
        instance=instance,
        files=tuple(reports),
        captures_written=len(groups),
        batch=batches[0] if batches else "",
        batches=tuple(batches),
        notes=tuple(notes),
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
            part = p.segment.client_list if table == "clients" else p.segment.info
            if part is not None and 0 < line_no <= len(lines):
                out.setdefault(p.path, []).append((lines[line_no - 1], str(reason)))
                break
    return out
