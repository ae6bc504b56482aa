"""`kill_script`: CLIENT KILL ID commands for clients matching a filter — for review, never run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from clientscope.analysis._common import (
    DatasetLike,
    ResultMixin,
    as_tables,
    pick_captures,
    snapshot_clients,
    timeline,
)
from clientscope.errors import ConfigError
from clientscope.escape import printable

PROTECTED_ROLES = ("collector", "replica", "master", "monitor")


@dataclass(frozen=True)
class KillScript(ResultMixin):
    """The matching clients of one capture and the commands that would disconnect them."""

    instance: str | None
    run_id: str | None
    capture_ts: datetime | None
    clients: pl.DataFrame  # id, addr, group, role, name, idle, age, cmd
    commands: tuple[str, ...]
    protected_skipped: int  # matched but left out: replicas, masters, MONITOR, the collector

    def text(self) -> str:
        """A redis-cli script with a header that says what it is and when it stops being valid."""
        head = [
            "# clientscope kill-script: REVIEW BEFORE RUNNING. Nothing has been executed.",
            f"# instance {printable(self.instance)}, capture {self.capture_ts}, "
            f"server run_id {printable(self.run_id)}",
            "# ids are only valid for this run_id: check `INFO server` run_id first.",
            f"# {len(self.commands)} client(s); run with: redis-cli -h HOST -p PORT < this-file",
        ]
        return "\n".join([*head, *self.commands]) + "\n"


def kill_script(
    ds: DatasetLike,
    *,
    idle_over: int | None = 600,
    group: str | None = None,
    ip: str | None = None,
    name: str | None = None,
    lib: str | None = None,
    user: str | None = None,
    role: str | None = None,
    at: datetime | str | None = None,
    instance: str | None = None,
    include_protected: bool = False,
) -> KillScript:
    """Clients at the latest capture (or `at`) matching every filter given; one CLIENT KILL ID each."""
    tables = as_tables(ds)
    caps = pick_captures(timeline(tables, instance), at)
    if caps.height > 1:  # client ids are per server: never guess which one
        names = ", ".join(sorted(caps["instance"].cast(pl.String).to_list()))
        raise ConfigError(
            f"the dataset holds {caps.height} instances ({names}) and CLIENT KILL ids are only "
            "valid on their own server: choose one with --instance"
        )
    cap = caps.row(0, named=True)
    rows = snapshot_clients(tables, [cap["capture_id"]]).collect()
    cond = pl.lit(True)
    for column, value in (("group", group), ("ip", ip), ("name", name), ("lib_name", lib),
                          ("user", user), ("role", role)):  # fmt: skip
        if value is not None:
            cond = cond & (pl.col(column) == value)
    if idle_over is not None:
        cond = cond & (pl.col("idle") > idle_over)
    matched = rows.filter(cond & pl.col("id").is_not_null())
    protected = pl.col("role").is_in(PROTECTED_ROLES)
    skipped = 0 if include_protected else int(matched.select(protected.sum()).item())
    chosen = matched if include_protected else matched.filter(~protected)
    chosen = chosen.sort(["idle", "id"], descending=[True, False], nulls_last=True).select(
        "id", "addr", "group", "role", "name", "idle", "age", "cmd"
    )
    commands = tuple(f"CLIENT KILL ID {i}" for i in chosen["id"].to_list())
    return KillScript(cap["instance"], cap["run_id"], cap["ts"], chosen, commands, skipped)
