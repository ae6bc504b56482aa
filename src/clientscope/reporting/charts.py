"""The report's charts, each a function `(ds, ...) -> matplotlib.figure.Figure`.

    import clientscope as cs
    fig = cs.charts.clients_vs_maxclients(ds)      # shows inline in Jupyter
    fig.savefig("clients.png")

Every chart aggregates in Polars first (one point per capture or per time bucket,
one snapshot of a single capture), so the size of the dataset never reaches
matplotlib. Figures use the Agg backend, DejaVu Sans, UTC time axes, and are not
registered with pyplot (nothing to close, nothing leaks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import matplotlib.dates as mdates
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from clientscope.analysis._common import snapshot_clients
from clientscope.analysis.forecast import Forecast
from clientscope.analysis.groups import timeout_what_if
from clientscope.analysis.model import ServerModel, build_model
from clientscope.analysis.timeline import busiest, timeline
from clientscope.escape import for_figure
from clientscope.reporting import series as S
from clientscope.reporting.style import COLORS, PALETTE, figure, no_data, style, time_axis
from clientscope.schema import UNNAMED

__all__ = [
    "CHARTS",
    "Chart",
    "age_vs_idle",
    "blocked_clients",
    "churn",
    "clients_by_ip",
    "clients_by_source",
    "clients_vs_maxclients",
    "idle_distribution",
    "leak_trend",
]

MAX_POINTS = 1500
HEXBIN_ABOVE = 2000


# ------------------------------------------------------------------ helpers
def _downsample(frame: pl.DataFrame, points: int = MAX_POINTS) -> pl.DataFrame:
    """At most `points` rows per instance: numbers become their bucket max, flags any()."""
    if frame.height <= points:
        return frame
    every = S.bucket_every(frame["ts"].min(), frame["ts"].max(), points)  # type: ignore[arg-type]
    if every is None:
        return frame
    aggs = []
    for name, dtype in frame.schema.items():
        if name in ("instance", "ts"):
            continue
        if dtype == pl.Boolean:
            aggs.append(pl.col(name).any())
        elif dtype.is_numeric():
            aggs.append(pl.col(name).max())
        else:
            aggs.append(pl.col(name).last())
    return (
        frame.with_columns(pl.col("ts").dt.truncate(every))
        .group_by("instance", "ts", maintain_order=True)
        .agg(aggs)
        .sort("instance", "ts")
    )


def _t(frame: pl.DataFrame) -> np.ndarray:
    return frame["ts"].dt.replace_time_zone(None).to_numpy()


def _v(frame: pl.DataFrame, column: str) -> np.ndarray:
    return frame[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _pick(series: pl.DataFrame, instance: str | None) -> tuple[pl.DataFrame, str | None]:
    inst = instance or busiest(series)
    return series.filter(pl.col("instance") == inst), inst


def _mark_restarts(ax: Axes, frame: pl.DataFrame) -> None:
    restarts = frame.filter(pl.col("restart"))
    for i, t in enumerate(_t(restarts)):
        ax.axvline(
            t,
            color=COLORS["restart"],
            lw=1,
            ls=(0, (4, 3)),
            label="server restart" if i == 0 else None,
        )


def _legend(fig: Figure, ax: Axes, *, title: str | None = None, ncols: int = 4) -> None:
    """The legend below the plot, never on top of the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # labels name client groups: data, never mathtext
        fig.legend(handles, [for_figure(label) for label in labels], loc="outside lower center",
                   ncols=min(ncols, len(handles)), title=title and for_figure(title), title_fontsize=8.5)  # fmt: skip


def _title(ax: Axes, title: str, instance: str | None) -> None:
    ax.set_title(for_figure(f"{title} — {instance}" if instance else title, limit=300))


# ------------------------------------------------------------------ charts
def clients_vs_maxclients(
    ds: S.Tables, *, instance: str | None = None, threshold: float = 0.8,
    series: pl.DataFrame | None = None,
) -> Figure:
    """Connected clients against maxclients, the alert threshold, rejections and restarts.

    With several instances and no `instance`, draws one line per instance.
    """
    series = timeline(ds) if series is None else series  # the report passes the one it built
    with style():
        fig, ax = figure()
        if series.is_empty():
            no_data(ax, "no captures in this dataset")
            return fig
        instances = [instance] if instance else sorted(series["instance"].unique().to_list())
        for i, inst in enumerate(instances[: len(PALETTE)]):
            frame = _downsample(series.filter(pl.col("instance") == inst))
            single = len(instances) == 1
            _draw_limits(
                ax,
                frame,
                threshold,
                PALETTE[i] if not single else None,
                inst if not single else None,
            )
            _draw_rejections(ax, frame, first_label=i == 0)
            _mark_restarts(ax, frame)
        ax.set_ylabel("connections")
        ax.set_ylim(bottom=0, top=max(1.0, _top(series)) * 1.12)
        _annotate_peak(
            ax, series if instance is None else series.filter(pl.col("instance") == instance)
        )
        time_axis(ax)
        _title(ax, "Connected clients vs maxclients", instances[0] if len(instances) == 1 else None)
        _legend(fig, ax)
    return fig


def _top(series: pl.DataFrame) -> float:
    values = [_num(series["used"].max()), _num(series["maxclients"].max())]
    return max((v for v in values if v is not None), default=1.0)


def _x(ts: object) -> float:
    """A datetime as matplotlib's date number."""
    return float(mdates.date2num(ts))  # type: ignore[no-untyped-call]


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _draw_limits(
    ax: Axes, frame: pl.DataFrame, threshold: float, color: str | None, label: str | None
) -> None:
    seen = frame.filter(pl.col("used").is_not_null())
    ax.plot(_t(seen), _v(seen, "used"), color=color or COLORS["clients"],
            label=f"connected clients {label}" if label else "connected clients")  # fmt: skip
    t, limit = _t(frame), _v(frame, "maxclients")
    ax.step(t, limit, where="post", color=color or COLORS["limit"], lw=1.4, ls="--",
            label=f"maxclients {label}" if label else "maxclients")  # fmt: skip
    if label is None:
        ax.step(t, limit * threshold, where="post", color=COLORS["threshold"], lw=1.1, ls=":",
                label=f"alert threshold ({threshold:.0%} of maxclients)")  # fmt: skip


def _draw_rejections(ax: Axes, frame: pl.DataFrame, *, first_label: bool) -> None:
    """Shade the stretches in which connections were refused; mark where it began."""
    runs = S.episodes(frame, S.REJECTED)
    for i, row in enumerate(runs.iter_rows(named=True)):
        start, last = (_x(row[k]) for k in ("start", "last"))
        ax.axvspan(start, last, color=COLORS["reject"], alpha=0.13, lw=0,
                   label="connections rejected" if first_label and i == 0 else None)  # fmt: skip
    if not runs.is_empty():
        first = runs.row(0, named=True)["first"]
        ax.annotate(
            f"first rejection\n{first:%H:%M:%S} UTC", xy=(np.datetime64(first.replace(tzinfo=None)), 0),
            xytext=(4, 14), textcoords="offset points", fontsize=8.5, color=COLORS["reject"],
            xycoords=("data", "axes fraction"),
        )  # fmt: skip


def _annotate_peak(ax: Axes, series: pl.DataFrame) -> None:
    peak = S.peak_capture(series, None)
    if peak is None:
        return
    limit, connected, ts = _num(peak["maxclients"]), _num(peak["used"]) or 0.0, peak["ts"]
    pct = f" ({connected / limit:.0%} of {limit:.0f})" if limit else ""
    first, last = series["ts"].min(), series["ts"].max()
    left = False
    if isinstance(first, datetime) and isinstance(last, datetime) and isinstance(ts, datetime):
        span = (last - first).total_seconds()
        left = span > 0 and (ts - first).total_seconds() / span < 0.35  # label to the right
    low = connected < 0.5 * ax.get_ylim()[1]  # label above the point
    days = (
        isinstance(first, datetime) and isinstance(last, datetime) and first.date() != last.date()
    )
    stamp = f"{ts:%Y-%m-%d %H:%M}" if days else f"{ts:%H:%M:%S}"
    ax.annotate(
        f"peak {connected:.0f}{pct}\n{stamp} UTC",
        xy=(_x(ts), connected),
        xytext=(12 if left else -12, 18 if low else -34), textcoords="offset points", ha="left" if left else "right",
        fontsize=8.5,
        arrowprops={"arrowstyle": "-", "color": "#555555", "lw": 0.8},
        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "#CCCCCC", "lw": 0.6},
    )  # fmt: skip


def clients_by_source(
    ds: S.Tables, *, by: str = "name", instance: str | None = None, top: int = 6,
    series: pl.DataFrame | None = None,
) -> Figure:
    """Clients per group (client name, library, source IP, user, command) over time, stacked."""
    series = timeline(ds) if series is None else series  # the report passes the one it built
    inst = instance or busiest(series)
    groups = S.group_series(ds, by, instance=inst, top=top)
    with style():
        fig, ax = figure()
        if groups.is_empty():
            no_data(ax, "no client rows to group")
            return fig
        wide = (
            groups.pivot(on="group", index="ts", values="clients", sort_columns=False)
            .sort("ts")
            .fill_null(0)
        )
        order = _stack_order(groups)
        colors = [
            PALETTE[i % (len(PALETTE) - 1)] if g != S.OTHER else PALETTE[-1]
            for i, g in enumerate(order)
        ]
        ax.stackplot(
            _t(wide),
            *[wide[g].to_numpy() for g in order],
            labels=order,
            colors=colors,
            alpha=0.88,
            lw=0,
        )
        frame = _downsample(_pick(series, inst)[0])
        if not frame.is_empty() and frame["maxclients"].max() is not None:
            ax.step(_t(frame), _v(frame, "maxclients"), where="post", color=COLORS["limit"], ls="--",
                    lw=1.3, label="maxclients")  # fmt: skip
        ax.set_ylabel("connections")
        ax.set_ylim(bottom=0)
        time_axis(ax)
        _title(ax, f"Clients by {_BY_LABEL.get(by, by)} (top {top}, stacked)", inst)
        _legend(fig, ax, title=_BY_LABEL.get(by, by), ncols=5)
    return fig


def clients_by_ip(
    ds: S.Tables, *, instance: str | None = None, top: int = 6, series: pl.DataFrame | None = None
) -> Figure:
    """Clients per source IP over time, stacked (the runbook's `awk '{print $2}' | sort | uniq -c`)."""
    return clients_by_source(ds, by="ip", instance=instance, top=top, series=series)


_BY_LABEL = {
    "name": "client name",
    "lib": "library",
    "ip": "source IP",
    "user": "user",
    "cmd": "last command",
}


def _stack_order(groups: pl.DataFrame) -> list[str]:
    """Largest group at the bottom, "(other)" on top."""
    peaks = (
        groups.group_by("group")
        .agg(pl.col("clients").max())
        .sort(["clients", "group"], descending=[True, False])
    )
    names = [g for g in peaks["group"].to_list() if g != S.OTHER]
    return names + ([S.OTHER] if S.OTHER in peaks["group"].to_list() else [])


def leak_trend(
    ds: S.Tables, *, instance: str | None = None, model: ServerModel | None = None
) -> Figure:
    """Connections with the forecast to maxclients: the steady part at its peak plus the groups
    that keep growing at their own rates (`clientscope forecast`'s numbers), its 95 % band,
    and each of those groups' own counts."""
    server = model or build_model(ds, instance=instance).server(instance)
    frame, inst = _pick(server.timeline, server.instance)
    f = server.forecast
    with style():
        fig, ax = figure()
        shown = _downsample(frame.filter(pl.col("used").is_not_null()))
        if f is None or shown.is_empty():
            no_data(ax, server.forecast_error or "too few captures for a forecast")
            return fig
        ax.plot(_t(shown), _v(shown, "used"), color=COLORS["clients"], label="connected clients")
        _draw_drivers(ax, server)
        _draw_projection(ax, f, frame)
        if f.maxclients:
            ax.axhline(f.maxclients, color=COLORS["limit"], ls="--", lw=1.3,
                       label=f"maxclients {f.maxclients}")  # fmt: skip
        ax.text(0.99, 0.04, for_figure(_eta_text(f), limit=300), transform=ax.transAxes, ha="right",
                va="bottom", fontsize=9,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": COLORS["forecast"], "lw": 0.8})  # fmt: skip
        ax.set_ylabel("connections")
        ax.set_ylim(bottom=0)
        time_axis(ax)
        _title(ax, "Connection growth and forecast", inst)
        _legend(fig, ax, ncols=3)
    return fig


def _draw_projection(ax: Axes, f: Forecast, frame: pl.DataFrame) -> None:
    """steady peak + drivers, from the last capture to the crossing (or a quarter of the window
    on), with the band of the drivers' rates."""
    if not f.drivers or f.steady_peak is None or f.verdict == "exhausted":
        if f.steady_peak is not None:
            ax.axhline(f.steady_peak, color=COLORS["muted"], ls=":", lw=1.2,
                       label=f"steady part at its peak: {f.steady_peak:.0f}")  # fmt: skip
        return
    now = f.now.timestamp()
    first = frame["ts"].min()
    span = max(now - first.timestamp(), 60.0) if isinstance(first, datetime) else 60.0
    # to the crossing when it is in sight (up to 30 windows on), else a quarter of the window
    end = f.eta_maxclients.timestamp() + 0.05 * span if f.eta_maxclients else now + 0.25 * span
    end = min(end, now + 30 * span)
    grid = np.linspace(now, end, 100)
    start, _ = f.course
    spread = 1.96 * float(np.sqrt(sum(d.rate_se_per_hour**2 for d in f.drivers)))
    hours = (grid - now) / 3600
    when = (grid * 1e6).astype("datetime64[us]")
    ax.plot(when, start + f.slope_per_hour * hours, color=COLORS["forecast"], ls="--", lw=1.4,
            label=f"forecast: steady {f.steady_peak:.0f} + growing groups {f.slope_per_hour:+.0f}/h")  # fmt: skip
    ax.fill_between(when, start + (f.slope_per_hour - spread) * hours,
                    start + (f.slope_per_hour + spread) * hours, color=COLORS["forecast"],
                    alpha=0.15, lw=0, label="95 % interval")  # fmt: skip


def _eta_text(f: Forecast) -> str:
    if f.exhausted_at is not None:
        return f"limit reached {f.exhausted_at:%H:%M:%S} UTC"
    if f.verdict == "will_exhaust" and f.eta_maxclients is not None:
        return f"reaches maxclients ≈ {f.eta_maxclients:%Y-%m-%d %H:%M} UTC"
    return "not growing: no exhaustion forecast"


def _draw_drivers(ax: Axes, server: ServerModel) -> None:
    """Each group that drives the forecast, alone."""
    f = server.forecast
    if f is None:
        return
    ts = server.timeline.select("capture_id", "ts")
    for i, d in enumerate(f.drivers[:4]):
        g = (
            server.counts.filter((pl.col("group") == d.group) & (pl.col("role") == "normal"))
            .join(ts, on="capture_id")
            .sort("ts")
        )
        ax.plot(_t(g), g["n"].cast(pl.Float64).to_numpy(), lw=1.1,
                color=PALETTE[(i + 1) % len(PALETTE)], alpha=0.9, label=f"{d.group} ({d.verdict})")  # fmt: skip


IDLE_EDGES = np.array(
    [0, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 604800, 1e12]
)


def idle_distribution(
    ds: S.Tables, *, instance: str | None = None, timeout: int = 300, top: int = 5,
    series: pl.DataFrame | None = None,
) -> Figure:
    """How long the clients of the peak capture had been idle, stacked by client name.

    The `timeout` what-if is marked: how many of them a server `timeout` of that
    many seconds would have closed.
    """
    series = timeline(ds) if series is None else series  # the report passes the one it built
    frame, inst = _pick(series, instance)
    peak = S.peak_capture(frame, inst)
    with style():
        fig, ax = figure()
        if peak is None:
            no_data(ax, "no client rows")
            return fig
        snap = snapshot_clients(ds, [str(peak["capture_id"])]).select("idle", "name", "role").collect()
        _idle_bars(ax, snap, top)
        _mark_timeout(ax, snap, timeout, peak)
        ax.set_xlabel("idle time (seconds since the last command)")
        ax.set_ylabel("clients")
        _title(ax, f"Idle time at the peak ({peak['ts']:%Y-%m-%d %H:%M:%S} UTC)", inst)
        _legend(fig, ax, title="client name", ncols=5)
    return fig


def _idle_bars(ax: Axes, snap: pl.DataFrame, top: int) -> None:
    named = snap.with_columns(pl.col("name").fill_null(UNNAMED))
    ranked = named.group_by("name").len().sort(["len", "name"], descending=[True, False])
    keep = ranked["name"].head(top).to_list()
    named = named.with_columns(
        pl.when(pl.col("name").is_in(keep)).then("name").otherwise(pl.lit(S.OTHER))
    )
    labels = [*keep, *([S.OTHER] if ranked.height > top else [])]
    positions = np.arange(len(IDLE_EDGES) - 1)
    bottom = np.zeros(len(positions))
    for i, label in enumerate(labels):
        idle = named.filter(pl.col("name") == label)["idle"].drop_nulls().to_numpy()
        counts, _ = np.histogram(idle, bins=IDLE_EDGES)
        ax.bar(positions, counts, bottom=bottom, width=0.85, label=label,
               color=PALETTE[i % len(PALETTE)] if label != S.OTHER else PALETTE[-1])  # fmt: skip
        bottom += counts
    ax.set_xticks(positions - 0.5, [_dur(e) for e in IDLE_EDGES[:-1]])
    used = np.nonzero(bottom)[0]
    last = max(int(used[-1]) if used.size else 0, 9)  # always show up to 10 min
    ax.set_xlim(-0.6, last + 1.4)
    ax.grid(axis="x", visible=False)


def _dur(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _mark_timeout(ax: Axes, snap: pl.DataFrame, timeout: int, peak: dict[str, object]) -> None:
    closed, judged = timeout_what_if(snap, timeout)
    pos = float(np.interp(timeout, IDLE_EDGES[:-1], np.arange(len(IDLE_EDGES) - 1))) - 0.5
    share = closed / judged if judged else 0.0
    ax.axvline(pos, color=COLORS["limit"], ls="--", lw=1.4,
               label=f"what-if timeout {timeout} s: closes {closed} of {judged} normal clients ({share:.0%})")  # fmt: skip
    current = peak.get("timeout")
    if isinstance(current, int) and current > 0 and current != timeout:
        at = float(np.interp(current, IDLE_EDGES[:-1], np.arange(len(IDLE_EDGES) - 1))) - 0.5
        ax.axvline(
            at, color=COLORS["restart"], ls=":", lw=1.4, label=f"current timeout {current} s"
        )


def age_vs_idle(
    ds: S.Tables, *, instance: str | None = None, hexbin_above: int = HEXBIN_ABOVE,
    series: pl.DataFrame | None = None,
) -> Figure:
    """Connection age against idle time at the peak capture (log axes; hexbin when crowded).

    Points on the diagonal were never used after they connected: the leak signature.
    """
    series = timeline(ds) if series is None else series  # the report passes the one it built
    frame, inst = _pick(series, instance)
    peak = S.peak_capture(frame, inst)
    with style():
        fig, ax = figure((10.0, 4.6))
        if peak is None:
            no_data(ax, "no client rows")
            return fig
        snap = S.snapshot(ds, str(peak["capture_id"]), ("age", "idle", "name")).drop_nulls(
            ["age", "idle"]
        )
        age = np.maximum(snap["age"].to_numpy().astype(float), 1.0)
        idle = np.maximum(snap["idle"].to_numpy().astype(float), 1.0)
        if snap.height > hexbin_above:
            hb = ax.hexbin(
                age,
                idle,
                xscale="log",
                yscale="log",
                gridsize=45,
                mincnt=1,
                cmap="viridis",
                norm=LogNorm(),
            )
            fig.colorbar(hb, ax=ax, label="clients per cell")
        else:
            _scatter_by_name(ax, snap, age, idle)
            ax.set_xscale("log")
            ax.set_yscale("log")
        top = max(float(age.max()), float(idle.max()), 10.0) if snap.height else 10.0
        ax.plot(
            [1, top],
            [1, top],
            color=COLORS["muted"],
            ls=":",
            lw=1,
            label="idle = age (never used since connect)",
        )
        ax.xaxis.set_minor_locator(NullLocator())  # decades are enough; minor ticks cost seconds
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("connection age (s, log scale)")
        ax.set_ylabel("idle (s, log scale)")
        _title(
            ax, f"Age vs idle at the peak ({peak['ts']:%H:%M:%S} UTC, {snap.height} clients)", inst
        )
        _legend(fig, ax, ncols=5)
    return fig


def _scatter_by_name(ax: Axes, snap: pl.DataFrame, age: np.ndarray, idle: np.ndarray) -> None:
    names = snap["name"].fill_null(UNNAMED)
    ranked = names.value_counts(sort=True)["name"].head(len(PALETTE) - 1).to_list()
    for i, name in enumerate(ranked):
        mask = (names == name).to_numpy()
        ax.scatter(age[mask], idle[mask], s=14, alpha=0.7, color=PALETTE[i], label=name, lw=0)
    rest = (~names.is_in(ranked)).to_numpy()
    if rest.any():
        ax.scatter(age[rest], idle[rest], s=14, alpha=0.6, color=PALETTE[-1], label=S.OTHER, lw=0)


def blocked_clients(
    ds: S.Tables, *, instance: str | None = None, alert_at: int = 10,
    series: pl.DataFrame | None = None,
) -> Figure:
    """Clients blocked in BLPOP / BRPOP / XREAD... (INFO blocked_clients) over time."""
    series = timeline(ds) if series is None else series  # the report passes the one it built
    frame, inst = _pick(series, instance)
    with style():
        fig, ax = figure((10.0, 3.4))
        frame = _downsample(frame.filter(pl.col("blocked_clients").is_not_null()))
        if frame.is_empty():
            no_data(ax, "no INFO blocked_clients in these captures")
            return fig
        t, blocked = _t(frame), _v(frame, "blocked_clients")
        ax.fill_between(t, blocked, step="post", color=COLORS["blocked"], alpha=0.25, lw=0)
        ax.step(t, blocked, where="post", color=COLORS["blocked"], label="blocked clients")
        peak = float(np.nanmax(blocked))
        if peak == 0:
            ax.text(0.5, 0.55, "no client was blocked in this window", transform=ax.transAxes,
                    ha="center", color="#777777")  # fmt: skip
            ax.set_yticks([0, 1])
        if peak >= alert_at / 2:
            ax.axhline(
                alert_at,
                color=COLORS["threshold"],
                ls=":",
                lw=1.2,
                label=f"alert: blocked > {alert_at}",
            )
        _mark_restarts(ax, frame)
        ax.set_ylabel("clients")
        ax.set_ylim(bottom=0, top=max(peak, alert_at if peak >= alert_at / 2 else 1) * 1.2 + 0.5)
        time_axis(ax)
        _title(ax, f"Blocked clients (peak {peak:.0f})", inst)
        _legend(fig, ax)
    return fig


def churn(
    ds: S.Tables, *, instance: str | None = None, series: pl.DataFrame | None = None
) -> Figure:
    """New connections per second (from total_connections_received) and rejections per second."""
    series = timeline(ds) if series is None else series  # the report passes the one it built
    frame, inst = _pick(series, instance)
    with style():
        fig, ax = figure((10.0, 3.4))
        rates = _rates(frame)
        if rates.is_empty():
            no_data(ax, "no INFO counters in these captures")
            return fig
        shown = _downsample(rates)
        ax.plot(
            _t(shown),
            _v(shown, "new_conns_per_s"),
            color=COLORS["churn"],
            label="new connections / s",
        )
        rej = shown.filter(pl.col("rejected_per_s") > 0)
        if not rej.is_empty():
            ax.scatter(_t(rej), _v(rej, "rejected_per_s"), marker="x", s=24, color=COLORS["reject"],
                       label="rejected connections / s", zorder=5)  # fmt: skip
        _mark_restarts(ax, frame)
        ax.set_ylabel("connections per second")
        ax.set_ylim(bottom=0)
        time_axis(ax)
        mean = _num(rates["new_conns_per_s"].mean()) or 0.0
        _title(ax, f"Connection churn (mean {mean:.2f} new/s)", inst)
        _legend(fig, ax)
    return fig


def _rates(frame: pl.DataFrame) -> pl.DataFrame:
    dt = pl.col("ts").diff().dt.total_microseconds() / 1e6
    return (
        frame.sort("ts")
        .with_columns(
            pl.when(dt > 0)
            .then(pl.col("new_rejections").cast(pl.Float64) / dt)
            .alias("rejected_per_s")
        )
        .filter(pl.col("new_conns_per_s").is_not_null())
    )


@dataclass(frozen=True)
class Chart:
    """A chart of the report: file stem, function, title, caption."""

    name: str
    draw: Callable[..., Figure]
    title: str
    caption: str


CHARTS: tuple[Chart, ...] = (
    Chart("clients", clients_vs_maxclients, "Connected clients vs maxclients",
          "Connections the server counts against maxclients (INFO connected_clients + replicas + "
          "cluster links) per capture, against the effective maxclients, the alert threshold, "
          "rejected connections (INFO rejected_connections growth or captures refused with max_clients) "
          "and server restarts (run_id changes)."),
    Chart("by-name", clients_by_source, "Clients by client name",
          "Connections per client name (CLIENT SETNAME), largest groups stacked; the rest as (other)."),
    Chart("by-ip", clients_by_ip, "Clients by source IP",
          "Connections per source IP (pod or host), largest groups stacked; the rest as (other)."),
    Chart("leak-trend", leak_trend, "Connection growth and forecast",
          "Connections with the forecast of `clientscope forecast`: the steady part (every group that "
          "does not keep growing, at its peak) plus the groups that keep growing, each at its own rate, "
          "up to maxclients, with a 95 % interval; the growing groups are drawn alone."),
    Chart("idle", idle_distribution, "Idle time at the peak",
          "Idle time of every client at the peak capture, by client name, with what a server timeout "
          "would have closed."),
    Chart("age-idle", age_vs_idle, "Age vs idle at the peak",
          "Age against idle for every client at the peak capture. A client on the diagonal connected "
          "and never sent another command."),
    Chart("blocked", blocked_clients, "Blocked clients",
          "INFO blocked_clients: connections held by BLPOP, BRPOP, XREAD BLOCK, WAIT..."),
    Chart("churn", churn, "Connection churn",
          "New connections per second (growth of INFO total_connections_received between captures) "
          "and rejections per second."),
)  # fmt: skip
