"""`--cluster`: every primary and replica of a Redis / Valkey Cluster, from CLUSTER NODES."""

from __future__ import annotations

from dataclasses import replace

from clientscope.capture.channel import CommandError, DirectChannel, Timeouts
from clientscope.capture.resp import ReplyLimits
from clientscope.capture.targets import Target
from clientscope.errors import CaptureError, ConfigError

__all__ = ["discover_cluster", "parse_cluster_nodes"]

_SKIP_FLAGS = {"noaddr", "handshake"}


def discover_cluster(
    seed: Target, timeouts: Timeouts, *, limits: ReplyLimits | None = None
) -> list[Target]:
    """The seed's cluster members (primaries and replicas), each a target like the seed.

    `collect` asks again every `rediscover` seconds to follow nodes that join later, and
    follows at most `max_nodes` of them.
    """
    if seed.via is not None or seed.scheme == "unix":
        raise ConfigError(
            f"--cluster needs redis:// or rediss:// targets; {seed.origin} cannot list cluster nodes"
        )
    channel = DirectChannel(seed, timeouts, limits=limits)
    try:
        reply = channel.command("CLUSTER", "NODES")
    except CommandError as exc:
        raise CaptureError(
            f"--cluster: CLUSTER NODES on {seed.origin} failed ({exc.kind}): {exc}. "
            "Is it a cluster node, and may this user run CLUSTER NODES?",
            kind=exc.kind,
        ) from exc
    finally:
        channel.close()
    if not isinstance(reply, bytes):
        raise CaptureError(
            f"--cluster: CLUSTER NODES on {seed.origin} did not answer text", kind="protocol"
        )
    members = parse_cluster_nodes(reply.decode("utf-8", "replace"), default_host=seed.host or "")
    return [
        replace(seed, instance=f"{host}:{port}", host=host, port=port) for host, port, _ in members
    ]


def parse_cluster_nodes(text: str, *, default_host: str) -> list[tuple[str, int, str]]:
    """(host, port, role) per reachable primary / replica line of a CLUSTER NODES reply."""
    members = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        flags = set(fields[2].split(","))
        if flags & _SKIP_FLAGS or not flags & {"master", "slave"}:
            continue
        address = fields[1].split("@", 1)[0].split(",", 1)[0]
        host, _, port = address.rpartition(":")
        if not port.isdigit() or port == "0":
            continue
        members.append(
            (
                host.strip("[]") or default_host,
                int(port),
                "primary" if "master" in flags else "replica",
            )
        )
    return members
