"""A dataset narrowed to a time window and one instance: the one window of every analysis command,
`report` and `export` (`--since` / `--until`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from clientscope.config import Where, moment, resolve_moment
from clientscope.dataset import Dataset, TableName, open_dataset
from clientscope.errors import ConfigError

__all__ = ["DatasetView", "parse_time", "select", "window_words"]


class DatasetView(Dataset):
    """The same tables as `Dataset`, every scan filtered to [start, end] and an instance.

    Analyses take it wherever they take a Dataset, so every number in a report
    comes from the same rows.
    """

    start: datetime | None
    end: datetime | None
    instance: str | None

    def __init__(
        self, base: Dataset, *, start: datetime | None, end: datetime | None, instance: str | None
    ) -> None:
        super().__init__(base.root, base.tables, unparsed=base.unparsed)
        # the whole dataset's scans, shared: its files are listed and checked once for all views
        self.whole: Dataset = base.whole if isinstance(base, DatasetView) else base
        if isinstance(base, DatasetView):  # narrowing a view keeps its own limits
            start = max((t for t in (start, base.start) if t is not None), default=None)
            end = min((t for t in (end, base.end) if t is not None), default=None)
            instance = instance or base.instance
        self.start, self.end, self.instance = start, end, instance

    def scan(self, table: TableName) -> pl.LazyFrame:
        frame = self.whole.scan(table)
        if self.start is not None:
            frame = frame.filter(pl.col("ts") >= self.start)
        if self.end is not None:
            frame = frame.filter(pl.col("ts") <= self.end)
        if self.instance is not None:
            frame = frame.filter(pl.col("instance") == self.instance)
        return frame

    def __repr__(self) -> str:
        return f"<clientscope DatasetView {self.root} {self.start}..{self.end} instance={self.instance}>"


def parse_time(
    value: str | datetime, option: str = "--since", end: datetime | None = None
) -> datetime:
    """A time as every option takes it (`config.moment`: ISO 8601, epoch seconds, or `-2h`
    counting back from `end`, the data's last capture)."""
    where = Where.option(option)
    return resolve_moment(moment(value, where), end, where)


def _relative(value: str | datetime | None) -> bool:
    return isinstance(value, str) and value.strip().startswith("-")


def _last_capture(ds: Dataset) -> datetime | None:
    last = ds.captures.select(pl.col("ts").max()).collect().item()
    return last if isinstance(last, datetime) else None


def select(
    ds_or_path: Dataset | Path | str,
    *,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    instance: str | None = None,
) -> Dataset:
    """Open a dataset (or take one) and narrow it; checks the window and the instance exist."""
    ds = ds_or_path if isinstance(ds_or_path, Dataset) else open_dataset(ds_or_path)
    last = _last_capture(ds) if _relative(start) or _relative(end) else None
    t0 = None if start is None else parse_time(start, "--since", last)
    t1 = None if end is None else parse_time(end, "--until", last)
    if t0 is not None and t1 is not None and t1 < t0:
        raise ConfigError(
            f"--until {t1:%Y-%m-%d %H:%M:%S} UTC is before --since {t0:%Y-%m-%d %H:%M:%S} UTC"
        )
    if instance is not None:
        known = ds.instances()
        if instance not in known:
            raise ConfigError(
                f"instance {instance!r} is not in {ds.root}; it has: {', '.join(known) or 'no captures'}"
            )
    if t0 is None and t1 is None and instance is None:
        return ds
    view = DatasetView(ds, start=t0, end=t1, instance=instance)
    if t0 is not None or t1 is not None:
        _holds_captures(view, ds, t0, t1)
    return view


def _holds_captures(view: Dataset, ds: Dataset, t0: datetime | None, t1: datetime | None) -> None:
    """An empty window is an error that says so and where the captures are, not an analysis's
    "needs 3 captures, the dataset has 0"."""
    if view.captures.select(pl.len()).collect().item():
        return
    span = ds.captures.select(lo=pl.col("ts").min(), hi=pl.col("ts").max()).collect().row(0)
    if span[0] is None:
        return  # an empty dataset: each analysis says how to fill it
    raise ConfigError(
        f"no capture in the window {window_words(t0, t1)}; the captures of {ds.root} run from "
        f"{span[0]:%Y-%m-%d %H:%M:%S} to {span[1]:%Y-%m-%d %H:%M:%S} UTC. "
        "Give a window that overlaps them."
    )


def window_words(start: datetime | None, end: datetime | None) -> str:
    """`--since 2026-11-25 08:03:00 UTC and --until ...`: a window as its options give it, for
    the errors that name it."""
    return " and ".join(
        f"{option} {t:%Y-%m-%d %H:%M:%S} UTC"
        for option, t in (("--since", start), ("--until", end))
        if t is not None
    )
