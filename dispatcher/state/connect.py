"""The one place that builds Redis clients, sync and asyncio, for an address of
`dispatcher.redis_address`: a plain server (`redis.Redis`), the master a set of Sentinels
names (`Sentinel.master_for`: its pool asks the Sentinels for the master's address on
every new connection, so a reconnect after a failover reaches the new master), or a Redis
Cluster (`RedisCluster`: each command goes to the primary of its key's slot, MOVED and ASK
followed). Every store, the API, the CLI and the reports connect through here.

The sync cluster client reads the topology when it is built; `sync_client` is therefore
called where a failure may surface as `StateUnavailable` (the stores build it on first use).
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
import redis.asyncio.sentinel as asentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from dispatcher.redis_address import CLUSTER, SENTINEL, RedisAddress, parse_address

SyncClient = redis.Redis | RedisCluster
AsyncClient = aredis.Redis | acluster.RedisCluster


def address_of(address: str | RedisAddress) -> RedisAddress:
    """`address` parsed (ValueError naming what is wrong), or as given."""
    return address if isinstance(address, RedisAddress) else parse_address(address)


def client_options(
    socket_timeout: float | None, connect_timeout: float | None, retry_class: type = Retry
) -> dict[str, Any]:
    """The timeouts of a client, and no retries at all (timeouts included): a SIP worker
    waits one timeout, not several. An asyncio client passes `redis.asyncio.retry.Retry`
    (redis-py 8 warns when it has to convert a sync one)."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": retry_class(NoBackoff(), 0),
    }


def _node_options(address: RedisAddress) -> dict[str, Any]:
    """What every data node's connection needs besides host and port."""
    options: dict[str, Any] = {"username": address.username, "password": address.password}
    if address.tls:
        options["ssl"] = True
    return options


def sync_client(
    address: str | RedisAddress,
    socket_timeout: float | None = None,
    connect_timeout: float | None = None,
    **extra: Any,
) -> SyncClient:
    """A sync client of `address` with `client_options` and `extra` (redis-py keyword
    arguments). No I/O for a plain server or Sentinels; a Cluster's topology is read now
    (`RedisClusterException` when no node answers)."""
    where = address_of(address)
    options = {**client_options(socket_timeout, connect_timeout), **extra}
    if where.mode == SENTINEL:
        sentinels = Sentinel(where.hosts, **client_options(socket_timeout, connect_timeout))
        return sentinels.master_for(where.service, db=where.db, **_node_options(where), **options)
    if where.mode == CLUSTER:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in where.hosts],
            **_node_options(where),
            **options,
        )
    return redis.Redis.from_url(where.url, **options)


def async_client(
    address: str | RedisAddress,
    socket_timeout: float | None = None,
    connect_timeout: float | None = None,
    **extra: Any,
) -> AsyncClient:
    """The asyncio twin of `sync_client`; no I/O until the first command (a Cluster's
    topology is read then)."""
    where = address_of(address)
    options = {**client_options(socket_timeout, connect_timeout, AsyncRetry), **extra}
    if where.mode == SENTINEL:
        sentinels = asentinel.Sentinel(
            where.hosts, **client_options(socket_timeout, connect_timeout, AsyncRetry)
        )
        return sentinels.master_for(
            where.service, redis_class=aredis.Redis, db=where.db, **_node_options(where), **options
        )
    if where.mode == CLUSTER:
        return acluster.RedisCluster(
            startup_nodes=[acluster.ClusterNode(host, port) for host, port in where.hosts],
            **_node_options(where),
            **options,
        )
    return aredis.Redis.from_url(where.url, **options)


def close_client(client: SyncClient) -> None:
    """Close a client of `sync_client`: its connections and, behind Sentinels, the ones
    to the Sentinels."""
    client.close()
    pool = None if isinstance(client, RedisCluster) else client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        pool.sentinel_manager.close()


async def aclose_client(client: AsyncClient) -> None:
    """Close a client of `async_client`, as `close_client` does."""
    await client.aclose()
    pool = None if isinstance(client, acluster.RedisCluster) else client.connection_pool
    if isinstance(pool, asentinel.SentinelConnectionPool):
        await pool.sentinel_manager.aclose()


async def async_key_client(
    shared: AsyncClient,
    address: str | RedisAddress,
    key: str,
    socket_timeout: float,
    connect_timeout: float,
    client_name: str,
) -> aredis.Redis:
    """A client of its own for long reads of `key` (XREAD BLOCK: one connection each):
    on the server itself, on the master the Sentinels name now (through `shared`'s
    Sentinels), or on the primary that serves `key`'s slot now (from `shared`'s topology;
    a later move ends the read with an error, and the reader reconnects). Costs no round
    trip but a Cluster's first topology read."""
    where = address_of(address)
    options = {
        **client_options(socket_timeout, connect_timeout, AsyncRetry),
        "client_name": client_name,
    }
    if where.mode == SENTINEL:
        pool = cast(asentinel.SentinelConnectionPool, cast(aredis.Redis, shared).connection_pool)
        return cast(
            aredis.Redis,
            pool.sentinel_manager.master_for(
                where.service,
                redis_class=aredis.Redis,
                db=where.db,
                **_node_options(where),
                **options,
            ),
        )
    if isinstance(shared, acluster.RedisCluster):
        await shared.initialize()  # at once when the topology is known already
        node = shared.get_node_from_key(key)
        if node is None:
            raise redis.exceptions.SlotNotCoveredError(f"no node serves {key!r}")
        return aredis.Redis(
            host=node.host,
            port=int(node.port),
            single_connection_client=True,
            **_node_options(where),
            **options,
        )
    return aredis.Redis.from_url(where.url, single_connection_client=True, **options)
