"""`clientscope collect`: thin Typer layer over clientscope.capture.

Instance names, warnings and error texts come from servers and are shown through
`clientscope.escape` only: table cells as `rich_text`, markup strings with
`for_rich`, plain lines with `printable`.

`collect` exits with a code per `CollectResult.outcome` (EXIT_CODES, told in its --help
and in docs/kubernetes.md), and a non-zero exit says why on one line of stderr, even
with --quiet: a CronJob that never reaches its server fails.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from clientscope.capture import CaptureEvent, CollectResult, Target
    from clientscope.capture.collector import TargetSummary

# collect's exit code per CollectResult.outcome; 2 is left to usage errors (unknown option)
EXIT_CODES = {
    "ok": 0,
    "stopped": 1,
    "partial": 3,
    "unreachable": 4,
    "auth": 5,
    "timeout": 6,
    "failed": 7,
}
EXIT_MEANINGS = (  # (code, what it means): --help and docs/kubernetes.md say these
    (0, "every target captured at least once"),
    (1, "an error: a bad option value, an unwritable --out, a collector worker that stopped"),
    (2, "a usage error: an unknown option, a missing --out"),
    (3, "partial: some targets captured, others captured nothing"),
    (4, "nothing captured: unreachable (refused, reset, no route, a --via command failing)"),
    (5, "nothing captured: authentication refused (password, ACL user)"),
    (6, "nothing captured: timed out (connect or reply)"),
    (7, "nothing captured: another failure (server full, loading, protocol)"),
)
EXIT_HELP = (
    "**Exit codes** (a non-zero one also prints one line on stderr, even with --quiet):\n\n"
    + "\n".join(f"* {code}: {meaning}" for code, meaning in EXIT_MEANINGS)
)
# what to do about the last error, by its kind
_MENDS = {
    "connection_refused": "check the address and that the server is up",
    "io": "check the address, the network and, with --via, the command",
    "auth": "check the password (REDISCLI_AUTH, --askpass) and the ACL user (--user)",
    "timeout": "check the network path, or raise --connect-timeout / --read-timeout",
    "max_clients": "the server is full: start the collector before it fills up",
    "loading": "the server is loading its data set; try again when it is done",
}


def register(app: typer.Typer) -> None:
    """Add `collect` to the app."""

    @app.command(epilog=EXIT_HELP)
    def collect(
        targets: list[str] | None = typer.Argument(
            None,
            help="Servers as redis://[user[:password]@]host:port[/db], rediss://... (TLS) or "
            "unix:///path. Leave the password out and use REDISCLI_AUTH or --askpass.",
            show_default=False,
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Dataset directory to append captures to."
        ),
        interval: str = typer.Option(
            "10s", help="Time between captures of one server: 500ms, 10s, 2m."
        ),
        duration: str | None = typer.Option(None, help="Stop after this long (e.g. 30m)."),
        count: int | None = typer.Option(
            None, help="Stop after this many captures per server (failed attempts count too)."
        ),
        instance: list[str] | None = typer.Option(
            None,
            "--instance",
            help="Name of a target, once per target in order (URLs first, then --via). "
            "Default: host:port.",
        ),
        via: list[str] | None = typer.Option(
            None,
            "--via",
            help="Reach a server through a command; the Redis command is appended, e.g. "
            "--via 'kubectl exec -n redis redis-master-0 -- redis-cli'. Repeatable.",
        ),
        cluster: bool = typer.Option(
            False, "--cluster", help="Discover every primary and replica with CLUSTER NODES."
        ),
        rediscover: str = typer.Option(
            "30s",
            "--rediscover",
            help="With --cluster: list the nodes again this often and collect those that "
            "joined (failover, scale-out); 0 lists them once, at start.",
        ),
        user: str | None = typer.Option(None, "--user", help="ACL user name (if not in the URL)."),
        askpass: bool = typer.Option(
            False, "--askpass", help="Prompt for the password (input is not echoed)."
        ),
        tls_ca: Path | None = typer.Option(
            None, "--tls-ca", help="CA certificate (PEM) for rediss://."
        ),
        tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Client certificate (PEM)."),
        tls_key: Path | None = typer.Option(None, "--tls-key", help="Client private key (PEM)."),
        tls_insecure: bool = typer.Option(
            False, "--tls-insecure", help="Do not verify the server certificate."
        ),
        info_sections: str = typer.Option(
            "everything",
            "--info-sections",
            help="INFO sections, comma-separated (e.g. clients,stats).",
        ),
        maxclients: int | None = typer.Option(
            None,
            "--maxclients",
            help="maxclients as configured, for servers that hide CONFIG (kept beside what the "
            "server enforces).",
        ),
        connect_timeout: str = typer.Option(
            "3s",
            "--connect-timeout",
            help="How long to wait for a connection (a duration: 3, 3s, 500ms).",
        ),
        read_timeout: str = typer.Option(
            "5s",
            "--read-timeout",
            help="How long to wait for one whole reply, not one read (a duration: 5, 5s, 1m): a "
            "server that sends slower than that is a failed capture.",
        ),
        old_timeout: str | None = typer.Option(
            None, "--timeout", hidden=True, help="Old spelling of --read-timeout."
        ),
        max_reply_bytes: str = typer.Option(
            "256MiB",
            "--max-reply-bytes",
            help="Largest reply taken (e.g. 64MiB, 1GiB); a larger one is a failed capture "
            "(protocol). A CLIENT LIST of 100,000 clients is about 40 MB.",
        ),
        max_nodes: int = typer.Option(
            1000,
            "--max-nodes",
            help="With --cluster: follow at most this many nodes (a larger list at start is an "
            "error; nodes beyond it that join later are not collected).",
        ),
        slow_fraction: float = typer.Option(
            0.1, help="Warn when CLIENT LIST takes more than this share of the interval."
        ),
        no_compact: bool = typer.Option(
            False, "--no-compact", help="Do not compact files at exit."
        ),
        compact_every: str = typer.Option(
            "1h",
            "--compact-every",
            help="Compact the dataset this often while collecting (0: only at exit), so a "
            "long run's small files do not pile up.",
        ),
        quiet: bool = typer.Option(
            False, "--quiet", "-q", help="No live display (cron, systemd, Jobs)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary at the end."),
    ) -> None:
        """Capture CLIENT LIST, INFO, CONFIG and TIME from live servers into a dataset.

        Gentle (one named connection per server), concurrent (one schedule per server) and
        safe (each capture is flushed at once; Ctrl-C stops after the capture in flight).
        """
        from clientscope.capture import Timeouts, collect, parse_duration, parse_size

        secret = typer.prompt("Password", hide_input=True) if askpass else None
        chosen = _targets(
            targets or [],
            via or [],
            instance or [],
            user,
            secret,
            _tls(tls_ca, tls_cert, tls_key, tls_insecure),
        )
        seconds = parse_duration(interval)
        display = None if quiet or as_json else _LiveDisplay([t.instance for t in chosen])
        with display.running() if display else _nothing():
            result = collect(
                chosen,
                out,
                interval=seconds,
                duration=parse_duration(duration, option="--duration") if duration else None,
                count=count,
                cluster=cluster,
                rediscover=_rediscover(rediscover),
                info_sections=[s.strip() for s in info_sections.split(",") if s.strip()],
                maxclients=maxclients,
                timeouts=Timeouts(
                    connect=parse_duration(connect_timeout, option="--connect-timeout"),
                    read=parse_duration(old_timeout or read_timeout, option="--read-timeout"),
                ),
                slow_fraction=slow_fraction,
                compact_on_exit=not no_compact,
                compact_every=(
                    None
                    if compact_every.strip() == "0"
                    else parse_duration(compact_every, option="--compact-every")
                ),
                on_event=display.update if display else _print_warnings,
                max_reply_bytes=parse_size(max_reply_bytes, option="--max-reply-bytes"),
                max_nodes=max_nodes,
            )
        _render_result(result, as_json=as_json, quiet=quiet)
        _fail_if_stopped(result)
        _exit_unless_captured(result)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _tls(ca: Path | None, cert: Path | None, key: Path | None, insecure: bool) -> Any:
    from clientscope.capture import TlsOptions

    return TlsOptions(ca_cert=ca, cert=cert, key=key, insecure=insecure)


def _targets(
    urls: list[str],
    vias: list[str],
    names: list[str],
    user: str | None,
    secret: str | None,
    tls: Any,
) -> list[Target]:
    from clientscope.capture import parse_target, via_target
    from clientscope.errors import ConfigError

    total = len(urls) + len(vias)
    if total == 0:
        raise ConfigError("no target: give a redis:// URL or --via 'kubectl exec ... -- redis-cli'")
    if len(names) > total:
        raise ConfigError(f"{len(names)} --instance names for {total} targets; give one per target")
    padded: list[str | None] = [*names, *([None] * (total - len(names)))]
    env = dict(os.environ)
    chosen = [
        parse_target(u, instance=n, username=user, password=secret, tls=tls, env=env)
        for u, n in zip(urls, padded, strict=False)
    ]
    chosen += [
        via_target(c, instance=n, password=secret, env=env)
        for c, n in zip(vias, padded[len(urls) :], strict=False)
    ]
    return chosen


_OFF = re.compile(r"off|(?:0+\.?0*|\.0+)\s*(?:ms|s|m|h|d)?")  # --rediscover 0, 0s, off


def _rediscover(text: str) -> float | None:
    from clientscope.capture import parse_duration

    if _OFF.fullmatch(text.strip().lower()):
        return None
    return parse_duration(text, option="--rediscover")


def _print_warnings(event: CaptureEvent) -> None:
    from clientscope.escape import printable

    for warning in event.new_warnings:
        typer.secho(
            f"clientscope: {printable(event.instance)}: {printable(warning)}", err=True, fg="yellow"
        )


def _fail_if_stopped(result: CollectResult) -> None:
    """A target whose worker stopped before the end makes the run fail (exit 1), after the summary."""
    from clientscope.errors import CaptureError
    from clientscope.escape import printable

    stopped = result.stopped
    if stopped:
        which = "; ".join(f"{printable(t.instance)} ({printable(t.stopped)})" for t in stopped)
        raise CaptureError(
            f"{len(stopped)} of {len(result.targets)} target(s) stopped collecting before the end: "
            f"{which}. The captures taken before are kept."
        )


def _exit_unless_captured(result: CollectResult) -> None:
    """A run where a target captured nothing says so on one line of stderr and exits non-zero."""
    code = EXIT_CODES[result.outcome]
    if code:
        typer.secho(f"clientscope: error: {failure_line(result)}", err=True, fg="red")
        raise typer.Exit(code)


def failure_line(result: CollectResult) -> str:
    """What failed, how often, the last error and the mend, on one line (printable only)."""
    from collections import Counter

    from clientscope.escape import printable

    failed, outcome = result.failed_targets, result.outcome
    if not failed:
        return f"no target failed every capture ({outcome}, exit {EXIT_CODES[outcome]})"
    kinds: Counter[str] = Counter()
    for t in failed:
        kinds.update(t.errors)
    last = max(failed, key=lambda t: t.last_error_at or result.started)
    what = "partial capture" if outcome == "partial" else f"nothing captured ({outcome})"
    return (
        f"{what}: {len(failed)} of {len(result.targets)} target(s) captured nothing "
        f"({_names(failed)}); {sum(kinds.values())} failed capture(s): "
        + ", ".join(f"{printable(k)} {n}" for k, n in sorted(kinds.items(), key=_most_first))
        + f"; last: {printable(last.instance)}: {printable(last.last_error_kind)}: "
        f"{printable(last.last_error_message)}; "
        f"{_MENDS.get(str(last.last_error_kind), 'see error_message in the dataset')} "
        f"(exit {EXIT_CODES[outcome]})"
    )


def _most_first(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _names(targets: tuple[TargetSummary, ...], shown: int = 3) -> str:
    from clientscope.escape import printable

    names = ", ".join(printable(t.instance, limit=80) for t in targets[:shown])
    return names + (f" and {len(targets) - shown} more" if len(targets) > shown else "")


def _render_result(result: CollectResult, *, as_json: bool, quiet: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.to_dict(), default=str))
        return
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    from clientscope.escape import for_rich, printable, rich_text

    table = Table(title=f"collected into {for_rich(result.out)} (stopped by {result.stopped_by})")
    widest = max((len(printable(t.instance)) for t in result.targets), default=8)
    table.add_column("instance", no_wrap=True, min_width=widest)
    for col in ("captures", "ok", "failed", "errors", "missed", "restarts", "clients/max"):
        table.add_column(col, justify="left" if col == "errors" else "right")
    for t in sorted(result.targets, key=lambda t: t.instance):
        errors = ", ".join(f"{k} {v}" for k, v in sorted(t.errors.items())) or "-"
        if t.stopped is not None:
            errors = f"worker stopped; {errors}"
        table.add_row(
            rich_text(t.instance), str(t.attempts), str(t.ok), str(t.failed), rich_text(errors),
            str(t.missed), str(t.restarts), f"{_n(t.last_clients)}/{_n(t.maxclients)}",
        )  # fmt: skip
    console = Console()
    console.print(table)
    for t in result.stopped:
        console.print(f"{for_rich(t.instance)}: stopped collecting: {for_rich(t.stopped)}")
    for change in result.cluster_changes:
        console.print(f"cluster: {for_rich(change)}")
    if result.compacted:
        from clientscope.commands.storage import compact_line

        console.print(for_rich(compact_line(result.compacted)))
    if result.left_unparsed:
        console.print(
            f"{result.left_unparsed} captures not parsed yet"
            + (f" ({for_rich(result.parse_error)})" if result.parse_error else "")
            + "; the next command that writes to the dataset parses them"
        )


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


class _LiveDisplay:
    """Per instance: last capture, clients / maxclients, errors; warnings printed above it."""

    def __init__(self, instances: list[str]) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {
            name: {"last": "-", "clients": "-", "ok": 0, "errors": 0, "state": "waiting"}
            for name in instances
        }
        self.live: Any = None

    def running(self) -> Any:
        """A context that stops the display (started on the first capture, so start-up errors stay alone)."""
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            if self.live is not None:
                self.live.stop()
                if not self.console.is_terminal:  # Rich ends the last frame there without one
                    self.console.line()

    def update(self, event: CaptureEvent) -> None:
        from clientscope.escape import for_rich

        with self.lock:
            if self.live is None:
                from rich.live import Live

                self.live = Live(self._table(), console=self.console, refresh_per_second=4)
                self.live.start()
            row = self.rows.setdefault(event.instance, {"ok": 0, "errors": 0})
            row["last"] = event.ts.strftime("%H:%M:%S")
            if event.ok:
                row["ok"] += 1
                row["clients"] = f"{_n(event.clients)}/{_n(event.maxclients)}"
                row["state"] = f"ok {event.total_ms:.0f} ms"
            else:
                row["errors"] += 1
                row["state"] = f"{event.error_kind}: {(event.error_message or '')[:60]}"
            for warning in event.new_warnings:
                self.console.print(f"[yellow]{for_rich(event.instance)}: {for_rich(warning)}[/]")
            if self.live is not None:
                self.live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table

        from clientscope.escape import rich_text

        table = Table(title="clientscope collect (Ctrl-C stops after the capture in flight)")
        for col in ("instance", "last capture", "clients/max", "ok", "errors"):
            table.add_column(col, no_wrap=True)
        table.add_column("state", no_wrap=True, overflow="ellipsis", max_width=48)
        for name, row in self.rows.items():
            table.add_row(rich_text(name), row.get("last", "-"), row.get("clients", "-"),
                          str(row["ok"]), str(row["errors"] or "-"),  # "-" for none, as the summary
                          rich_text(row.get("state", "")))  # fmt: skip
        return table
