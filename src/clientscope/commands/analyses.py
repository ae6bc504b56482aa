"""Analysis commands: summary, top, idle, leaks, forecast, plan, alerts, diagnose, kill-script.

Each parses its options, calls the library function of the same name and renders
the result: Rich tables for people, `--json` for machines. Nothing here decides
anything the library does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from clientscope.commands.output import (
    AT_HELP,
    DATASET,
    INSTANCE_HELP,
    JSON_HELP,
    SINCE,
    UNTIL,
    fmt,
    print_json,
    screen,
    table,
    window,
)


def _print_forecast(f: Any) -> None:
    from clientscope.analysis._common import signed
    from clientscope.escape import for_rich

    console = screen()
    console.print(
        f"[bold]{for_rich(f.instance)}[/]: {f.used_now:.0f} / {f.maxclients} used at {fmt(f.now)} "
        f"over {f.samples} captures -> [bold]{f.verdict}[/]"
    )
    console.print(for_rich(f.note or "", limit=2000))
    if f.drivers:
        console.print(
            f"  steady part at its peak: {f.steady_peak:.0f}; growing: "
            + "; ".join(
                f"{for_rich(d.group)} {signed(d.rate_per_hour)}/h ({d.verdict}, "
                f"{d.connections_now} now)"
                for d in f.drivers
            )
        )
    if (
        f.verdict == "will_exhaust" and f.eta_maxclients is not None
    ):  # exhausted: the note says when
        low, high = fmt(f.eta_maxclients_low), fmt(f.eta_maxclients_high)
        band = "within the same second" if low == high != "-" else f"{low} .. {high}"
        crossed = "already passed" if f.threshold_passed else f"at {fmt(f.eta_threshold)}"
        console.print(
            f"  maxclients at {fmt(f.eta_maxclients)} (95%: {band}); {f.threshold:.0%} {crossed}"
        )
    eta = (f"maxclients at {fmt(f.prometheus_eta_maxclients)}" if f.prometheus_eta_maxclients
           else "never maxclients (not rising)")  # fmt: skip
    console.print(
        f"  naive, for comparison: a line through the whole count {signed(f.total_slope_per_hour)}/h "
        f"(R² {f.r2:.2f}); Prometheus predict_linear(connected_clients) says {eta}, "
        f"{f.prometheus_predicted_1h:.0f} in 1 h",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add the analysis commands."""
    _register_views(app)
    _register_trends(app)
    _register_actions(app)


# ------------------------------------------------------------------ summary, top, idle
def _register_views(app: typer.Typer) -> None:
    @app.command("summary")
    def summary_command(
        dataset: Path = DATASET,
        at: str | None = typer.Option(None, help=AT_HELP),
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        limit: int = typer.Option(10, help="Rows per top table."),
        per_capture: bool = typer.Option(False, "--per-capture", help="Also list every capture."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """First look: clients vs maxclients, top IPs / names / libraries / users / commands, idle, blocked."""
        from clientscope.analysis import summary

        result = summary(window(dataset, since, until), at=at, instance=instance, limit=limit)
        if as_json:
            print_json(result)
            return
        from clientscope.escape import for_rich

        console = screen()
        console.print(
            f"{result.captures} captures ({result.failed_captures} failed), {fmt(result.first)} .. "
            f"{fmt(result.last)} UTC"
        )
        for row in result.snapshot.iter_rows(named=True):
            util = row["utilization"]
            color = "red" if util and util >= 0.8 else "green"
            v = {k: fmt(x) for k, x in row.items()}  # "-" where the capture had no INFO / CONFIG
            parts = (
                f"= clients {v['connected_clients']} + replicas {row['connected_slaves'] or 0} + "
                f"cluster links {row['cluster_connections'] or 0}"
                if row["connected_clients"] is not None
                else "(listed clients: no INFO in this capture)"
            )
            limit_text = (
                f"maxclients from {row['maxclients_source']}"
                if row["maxclients"] is not None
                else "maxclients unknown (no CONFIG/INFO: give --maxclients when importing)"
            )
            console.print(
                f"[bold]{for_rich(row['instance'])}[/] at {v['ts']}: [{color}]{v['used']} / "
                f"{v['maxclients']} connections ({fmt(util and util * 100)}%)[/] {parts}; {limit_text}; "
                f"blocked {v['blocked_clients']}; idle >300 s {v['idle_over_300']}, "
                f">600 s {v['idle_over_600']}; timeout {v['timeout']}, tcp-keepalive {v['tcp_keepalive']}",
                highlight=False,
            )
            if row["loading"]:
                console.print(
                    f"[yellow]{for_rich(row['instance'])} was loading its dataset from disk (INFO loading:1): "
                    "applications get -LOADING until it is done[/]"
                )
        for dim, frame in result.tops.items():
            table(frame, f"top {dim}", ["instance", "value", "clients", "share", "share_of_maxclients",
                                         "idle_over_300"])  # fmt: skip
        if per_capture:
            table(result.timeline, "captures", limit=10_000)

    @app.command("top")
    def top_command(
        dataset: Path = DATASET,
        by: str = typer.Option(
            "ip",
            help="Group by: ip, name, lib, lib_name, lib_ver, user, cmd, db, flags, flag (each letter), role, "
            "group, "
            "addr, laddr; combine with commas (ip,name).",
        ),
        at: str | None = typer.Option(None, help=AT_HELP),
        since: str | None = typer.Option(
            None, help="Window start: aggregate every capture from then on (a time as for --at)."
        ),
        until: str | None = typer.Option(None, help="Window end (a time as for --at)."),
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        limit: int = typer.Option(20, help="Rows per instance."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Who holds the connections: counts, share of maxclients and idle stats per group."""
        from clientscope.analysis import top

        frame = top(dataset, by, at=at, since=since, until=until, instance=instance, limit=limit)
        if as_json:
            print_json(frame)
            return
        table(frame.drop("maxclients", strict=False), f"clients by {by}")

    @app.command("idle")
    def idle_command(
        dataset: Path = DATASET,
        by: str = typer.Option("group", help="Group by (as for `top`); group = name, or lib@ip."),
        at: str | None = typer.Option(None, help=AT_HELP),
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        timeout: list[str] = typer.Option(
            ["300", "600"],
            "--timeout",
            help="Server `timeout` settings to evaluate (a duration: 300, 5m, 1h30m); repeat the option.",
        ),
        histogram: bool = typer.Option(False, help="Also print the log-binned histogram."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Idle-time distribution per group and what `CONFIG SET timeout N` would close."""
        from clientscope.analysis import idle
        from clientscope.config import Where, duration

        seconds = [int(duration(t, Where.option("--timeout"), high=7 * 86400.0)) for t in timeout]
        result = idle(window(dataset, since, until), by, at=at, instance=instance, timeouts=seconds)
        if as_json:
            print_json(result)
            return
        table(result.groups, f"idle time by {by} at {fmt(result.at)} (normal clients)")
        if histogram:
            table(result.histogram, "idle histogram", limit=500)
        table(result.timeouts, "what a server timeout would close")
        table(result.excluded, "not judged (replicas, pub/sub, blocked, monitor, collector)")
        gap = result.longest_reuse_gap_s
        screen().print(
            f"suggested: [bold]CONFIG SET timeout {result.suggested_timeout}[/] "
            + (f"(longest gap after which a connection was still reused: {fmt(gap)} s)" if gap is not None
               else "(no connection was seen used again after an idle stretch: the 300 s floor)")
        )  # fmt: skip


# ------------------------------------------------------------------ leaks, forecast, alerts
def _register_trends(app: typer.Typer) -> None:
    @app.command("leaks")
    def leaks_command(
        dataset: Path = DATASET,
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        min_rate: float = typer.Option(
            10.0, help="Smallest growth (connections/hour) to call a leak."
        ),
        alpha: float = typer.Option(
            0.01, help="Significance level of the Mann-Kendall trend test."
        ),
        show_all: bool = typer.Option(
            False, "--all", help="Show every group (stable and excluded ones too), not only those "
            "that grow or shrink."
        ),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Find leaking groups: trend (OLS, Theil-Sen, Mann-Kendall) + connection lifecycles."""
        import polars as pl

        from clientscope.analysis import leaks

        report = leaks(window(dataset, since, until), instance=instance, min_rate_per_hour=min_rate,
                       alpha=alpha)  # fmt: skip
        if as_json:
            print_json(report)
            return
        groups = report.groups
        if not show_all:
            groups = groups.filter(pl.col("verdict").is_in(["leak", "growth", "shrinking"]))
        if report.captures or not report.left_out:  # else nothing was judged: the reason below
            table(groups, f"groups over {report.captures} captures, {fmt(report.window_start)} .. "
                  f"{fmt(report.window_end)}", [
                      "instance", "group", "verdict", "slope_theil_sen_per_h", "first", "last",
                      "survivors", "confidence", "role", "slope_ols_per_h", "r2", "mk_p", "births",
                      "deaths", "survivors_idle_share", "growth_idle_share", "top_ips"])  # fmt: skip
        n = report.leaking.height
        screen().print(f"[bold {'red' if n else 'green'}]{n} leaking group(s)[/]")
        for why, count in report.left_out:  # what the trends did not read, and why
            screen().print(f"[dim]left out: {count} capture(s) {why}[/]")
        if report.judged_at_limit:
            screen().print(
                f"[yellow]{report.judged_at_limit} of the {report.captures} captures judged were at "
                "maxclients (too few came before it to leave them out): the limit caps the growth, "
                "so a leak reads slower, or not at all. Widen --since to before the limit.[/]"
            )

    @app.command("forecast")
    def forecast_command(
        dataset: Path = DATASET,
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        old_window: str | None = typer.Option(
            None, "--window", hidden=True, help="Old spelling: --window 1h is --since -1h."
        ),
        threshold: float = typer.Option(0.8, help="Alert threshold as a share of maxclients."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """When connections reach maxclients: the steady part plus the groups that keep growing,
        each at its own rate; predict_linear beside it as the naive comparison.

        Without --instance, every instance of the dataset, most urgent first (--json: a list;
        with --instance: one object)."""
        from clientscope.analysis.model import build_model
        from clientscope.errors import AnalysisError
        from clientscope.escape import for_rich

        if old_window is not None and since is None:
            since = f"-{old_window}"
        model = build_model(window(dataset, since, until), instance=instance, threshold=threshold)
        if instance is not None:  # the shape follows the question: --instance -> an object
            one = model.server(instance).require_forecast()
            print_json(one) if as_json else _print_forecast(one)
            return
        found = [s.forecast for s in model.servers if s.forecast is not None]  # most urgent first
        skipped = [(s.instance, s.forecast_error) for s in model.servers if s.forecast is None]
        if as_json:
            print_json(
                [*(f.to_dict() for f in found), *({"instance": n, "error": e} for n, e in skipped)]
            )
            return
        if not found:  # nothing to forecast anywhere: the reason is the answer
            raise AnalysisError(skipped[0][1] or "nothing to forecast")
        for f in found:
            _print_forecast(f)
            screen().print("")
        for name, why in skipped:
            screen().print(f"[bold]{for_rich(name)}[/]: {for_rich(why)}")


# ------------------------------------------------------------------ plan, diagnose, kill-script
def _register_actions(app: typer.Typer) -> None:
    @app.command("diagnose")
    def diagnose_command(
        dataset: Path = DATASET,
        instance: str | None = typer.Option(None, help=INSTANCE_HELP),
        since: str | None = SINCE,
        until: str | None = UNTIL,
        markdown: bool = typer.Option(False, "--markdown", help="Print the findings as Markdown."),
        as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    ) -> None:
        """Every finding (leak, no pooling, oversized pools, blocking, timeout, exhaustion...) with remediation."""
        from clientscope.analysis import diagnose

        d = diagnose(window(dataset, since, until), instance=instance)
        if as_json:
            print_json(d)
            return
        if markdown:
            typer.echo(d.to_markdown(dataset))
            return
        _render_diagnosis(d, dataset)


def _render_diagnosis(d: Any, dataset: Path | None = None) -> None:
    from clientscope.escape import for_rich
    from clientscope.vocabulary import Severity

    console = screen()
    util = d.peak_utilization
    console.print(
        f"{d.captures} captures ({d.failed_captures} failed) of {for_rich(', '.join(d.instances))}, "
        f"{fmt(d.window_start)} .. {fmt(d.window_end)} UTC; peak {fmt(d.peak_used)} / {fmt(d.maxclients)} "
        f"({fmt(util and util * 100)}%)"
    )
    if not d.findings:
        console.print("[green]no findings: connections look healthy[/]")
    fleet = len(d.instances) > 1
    for f in d.findings:
        where = f" on {f.instance}" if fleet and f.instance else ""
        console.print(f"\n[bold {Severity(f.severity).color}]\\[{f.severity}][/] "
                      f"[bold]{for_rich(f.title, limit=500)}[/]"
                      f"  [dim]({f.kind}{for_rich(where)}, confidence {f.confidence:.2f})[/]")  # fmt: skip
        console.print(f"  {for_rich(f.summary, limit=2000)}", highlight=False)
        for step in f.steps(dataset):  # the commands name this dataset, ready to paste
            console.print(f"  -> {for_rich(step, limit=2000)}", highlight=False)
