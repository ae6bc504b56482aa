"""--cluster against a real Valkey cluster on loopback: three primaries and a replica."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from clientscope.capture import collect, parse_target
from clientscope.dataset import open_dataset
from clientscope.errors import CaptureError
from servers import Server, free_port, valkey_server


@contextlib.contextmanager
def valkey_cluster() -> Iterator[list[Server]]:
    """Three primaries (slots split in three) and one replica of the first."""
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(valkey_server(cluster_enabled="yes", cluster_port=free_port()))
            for _ in range(4)
        ]
        admin = [n.client() for n in nodes]
        for node in nodes[1:]:
            admin[0].execute_command(
                "CLUSTER", "MEET", "127.0.0.1", node.port, node.config["cluster_port"]
            )
        for i, (first, last) in enumerate([(0, 5460), (5461, 10922), (10923, 16383)]):
            admin[i].execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        _wait(lambda: all(len(_known(a)) == 4 for a in admin), "nodes to meet")
        primary_id = admin[0].execute_command("CLUSTER", "MYID")
        admin[3].execute_command("CLUSTER", "REPLICATE", primary_id)
        _wait(lambda: "slave" in _known(admin[0]).get(nodes[3].port, ""), "the replica to show")
        for a in admin:
            a.close()
        yield nodes


def _known(admin: object) -> dict[int, str]:
    text = admin.execute_command("CLUSTER", "NODES")  # type: ignore[attr-defined]
    text = text.decode() if isinstance(text, bytes) else text
    known = {}
    for line in text.splitlines():
        fields = line.split()
        if "handshake" not in fields[2] and ":" in fields[1]:
            known[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = fields[2]
    return known


def _wait(ready: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_cluster_discovery_collects_every_primary_and_replica(tmp_path: Path) -> None:
    with valkey_cluster() as nodes:
        result = collect([nodes[2].url], tmp_path / "ds", cluster=True, interval=0.25, count=2)
    expected = sorted(f"127.0.0.1:{n.port}" for n in nodes)
    assert sorted(t.instance for t in result.targets) == expected
    assert all(t.ok == 2 for t in result.targets)
    info = open_dataset(tmp_path / "ds").info.select("instance", "role").unique().collect()
    roles = dict(zip(info["instance"], info["role"], strict=True))
    assert sorted(roles.values()) == ["master", "master", "master", "slave"]
    assert roles[f"127.0.0.1:{nodes[3].port}"] == "slave"
    raw = open_dataset(tmp_path / "ds").raw.collect()
    assert raw.select(pl.col("info").bin.contains(b"cluster_enabled:1")).to_series().all()
    per = open_dataset(tmp_path / "ds").captures.group_by("instance").agg(pl.len()).collect()
    assert per["len"].to_list() == [2, 2, 2, 2]


def test_cluster_on_a_standalone_server_is_a_clear_error(valkey: Server, tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"CLUSTER NODES .* failed"):
        collect([parse_target(valkey.url)], tmp_path / "ds", cluster=True, interval=0.2, count=1)
