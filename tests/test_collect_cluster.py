"""--cluster against a real Valkey cluster on loopback: three primaries and a replica."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from clientscope.capture import CollectResult, collect, parse_target
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


def test_nodes_that_join_while_collecting_are_collected_even_with_the_seed_down(
    tmp_path: Path,
) -> None:
    result_box: list[object] = []
    with (
        valkey_cluster() as nodes,
        valkey_server(cluster_enabled="yes", cluster_port=free_port()) as late,
    ):
        seed = nodes[2]

        def run() -> None:
            result = collect(
                [seed.url],
                tmp_path / "ds",
                cluster=True,
                rediscover=0.3,
                interval=0.25,
                duration=7.0,
                handle_signals=False,
            )
            result_box.append(result)

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(1.5)
        seed.stop()  # the next refreshes must ask another member
        admin = nodes[0].client()
        admin.execute_command(
            "CLUSTER", "MEET", "127.0.0.1", late.port, late.config["cluster_port"]
        )
        _wait(lambda: late.port in _known(admin), "the late node to be met")
        admin.close()
        thread.join(30)
        assert not thread.is_alive()
    result = result_box[0]
    assert isinstance(result, CollectResult)
    by_instance = {t.instance: t for t in result.targets}
    joined = by_instance[f"127.0.0.1:{late.port}"]
    assert joined.ok >= 3
    assert any("joined the cluster" in w for w in joined.warnings)
    assert any(f"127.0.0.1:{late.port} joined the cluster" in c for c in result.cluster_changes)
    assert by_instance[f"127.0.0.1:{seed.port}"].failed >= 1  # the stopped seed: failures are rows
    per = dict(
        open_dataset(tmp_path / "ds")
        .captures.group_by("instance")
        .agg(pl.len())
        .collect()
        .iter_rows()
    )
    assert per[f"127.0.0.1:{late.port}"] == joined.attempts


def test_rediscover_zero_lists_the_nodes_once(tmp_path: Path) -> None:
    with (
        valkey_cluster() as nodes,
        valkey_server(cluster_enabled="yes", cluster_port=free_port()) as late,
    ):
        admin = nodes[0].client()

        def meet_soon() -> None:
            time.sleep(0.5)
            admin.execute_command(
                "CLUSTER", "MEET", "127.0.0.1", late.port, late.config["cluster_port"]
            )

        threading.Thread(target=meet_soon).start()
        result = collect([nodes[0].url], tmp_path / "ds", cluster=True, rediscover=None,
                         interval=0.25, duration=3.0)  # fmt: skip
        assert late.port in _known(admin)  # it did join, and was not followed
        admin.close()
    assert f"127.0.0.1:{late.port}" not in {t.instance for t in result.targets}
    assert result.cluster_changes == ()
