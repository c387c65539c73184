"""What tests read from a whole Redis, one server or every primary of a Cluster (`make
test`'s cluster pass): a plain client sends per-server commands (INFO, FUNCTION LIST) to
one node of a Cluster only."""

from __future__ import annotations

from typing import Any

from redis.cluster import RedisCluster

from dispatcher.state.connect import SyncClient


def per_primary(client: SyncClient, command: str, *args: Any) -> list[Any]:
    """The reply of client method `command` from each primary (the server's alone)."""
    if isinstance(client, RedisCluster):
        nodes = client.get_primaries()
        return [getattr(client.get_redis_connection(node), command)(*args) for node in nodes]
    return [getattr(client, command)(*args)]


def command_calls(client: SyncClient, command: str) -> int:
    """How often Redis ran `command` (INFO commandstats), summed over the primaries."""
    return sum(
        int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
        for stats in per_primary(client, "info", "commandstats")
    )


def library_names(client: SyncClient) -> list[list[bytes]]:
    """The function libraries each primary holds."""
    return [
        [dict(zip(lib[::2], lib[1::2], strict=True))[b"library_name"] for lib in libraries]
        for libraries in per_primary(client, "function_list")
    ]
