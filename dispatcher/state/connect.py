"""The one place that builds Redis clients, sync and asyncio, for an address of
`dispatcher.redis_address`: a plain server (`redis.Redis`), the master a set of Sentinels
names (`Sentinel.master_for`: its pool asks the Sentinels for the master's address on
every new connection, so a reconnect after a failover reaches the new master), or a Redis
Cluster (`RedisCluster`: each command goes to the primary of its key's slot, MOVED and ASK
followed). Every store, the API, the CLI and the reports connect through here.

The sync cluster client reads the topology when it is built; `sync_client` is therefore
called where a failure may surface as `StateUnavailable` (the stores build it on first use).

Behind Sentinels every connection also asks them, at most every MASTER_CHECK_S, whether they
still name the master it is open to (`CheckedSentinelConnection`): a connection made while
they still named a master that had stalled stays open to it when it resumes, and the old
master takes writes until they demote it, up to 10 s later; all of them are lost then.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
import redis.asyncio.sentinel as asentinel
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import SSLConnection
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from dispatcher.redis_address import CLUSTER, SENTINEL, RedisAddress, parse_address

SyncClient = redis.Redis | RedisCluster
AsyncClient = aredis.Redis | acluster.RedisCluster

# How often a connection behind Sentinels asks them which master they name (one round trip
# to a Sentinel, before a command): the longest a split brain lasts for this client.
MASTER_CHECK_S = 1.0
# A check that took this long failed on timeouts (no Sentinel reachable): the next waits
# MASTER_CHECK_FAILED_S, so a SIP worker does not wait out the timeouts every second.
MASTER_CHECK_SLOW_S = 0.1
MASTER_CHECK_FAILED_S = 30.0


def _checked(conn: Any, started: float, address: tuple[str, int] | None) -> bool:
    """Note on `conn` when its next master check is due, after one that started at
    `started` and found `address` (None: no Sentinel answered, or none named a master);
    whether that is another master than the one `conn` is open to."""
    now = time.monotonic()
    slow = address is None and now - started >= MASTER_CHECK_SLOW_S
    conn._next_check = now + (MASTER_CHECK_FAILED_S if slow else MASTER_CHECK_S)
    return address is not None and (conn.host, conn.port) != tuple(address)


class CheckedSentinelConnection(SentinelManagedConnection):
    """A connection to the master the Sentinels name that leaves it when they name another.

    redis-py leaves a master only when it refuses a write (READONLY, after its demotion).
    When a master stalls (SIGSTOP, a frozen VM) for longer than the Sentinels' down-after,
    they fail it over; a connection made just as it resumed, before they promoted its
    replica, is open to the old master, which goes on taking writes until they look at it
    again and demote it (every 10 s): a split brain, its writes lost. Measured with
    `bench/chaos.py`'s redis_sigstop: nearly every FCALL of 10 s ran on the old master.
    So before a command, at most every MASTER_CHECK_S, the connection asks the Sentinels
    which master they name, and reconnects to it when it is another. A check that finds no
    Sentinel, or no master named (mid-failover), keeps the connection.

    `check_on_send` False leaves the check to the owner (`master_moved`), for connections
    that have pipelined replies still due, which a reconnect would lose.
    """

    check_on_send = True
    _next_check = 0.0

    def connect_to(self, address: tuple[str, int]) -> None:
        super().connect_to(address)
        self._next_check = time.monotonic() + MASTER_CHECK_S

    def master_moved(self) -> bool:
        """True (and disconnected) when the Sentinels name another master than the one this
        connection is open to; asks them only when a check is due."""
        now = time.monotonic()
        if self._sock is None or now < self._next_check:
            return False
        try:
            address = self.connection_pool.get_master_address()
        except redis.ConnectionError:
            address = None
        if not _checked(self, now, address):
            return False
        self.disconnect()
        return True

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self.check_on_send and self.master_moved():
            self.connect()  # asks the Sentinels (the send would reconnect to host and port)
        super().send_packed_command(command, check_health)


class CheckedSentinelSSLConnection(CheckedSentinelConnection, SSLConnection):
    """`CheckedSentinelConnection` over TLS."""


class AsyncCheckedSentinelConnection(asentinel.SentinelManagedConnection):
    """The asyncio twin of `CheckedSentinelConnection` (checked before every command)."""

    _next_check = 0.0

    async def connect_to(self, address: tuple[str, int]) -> None:
        await super().connect_to(address)
        self._next_check = time.monotonic() + MASTER_CHECK_S

    async def master_moved(self) -> bool:
        """As `CheckedSentinelConnection.master_moved`."""
        now = time.monotonic()
        if not self.is_connected or now < self._next_check:
            return False
        try:
            address = await self.connection_pool.get_master_address()
        except redis.ConnectionError:
            address = None
        if not _checked(self, now, address):
            return False
        await self.disconnect()
        return True

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if await self.master_moved():
            await self.connect()  # asks the Sentinels, as the sync one
        await super().send_packed_command(command, check_health)


class AsyncCheckedSentinelSSLConnection(AsyncCheckedSentinelConnection, AsyncSSLConnection):
    """`AsyncCheckedSentinelConnection` over TLS."""


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


# The connection class of a client of the master the Sentinels name, by (asyncio, TLS).
_CHECKED_CLASSES: dict[tuple[bool, bool], type] = {
    (False, False): CheckedSentinelConnection,
    (False, True): CheckedSentinelSSLConnection,
    (True, False): AsyncCheckedSentinelConnection,
    (True, True): AsyncCheckedSentinelSSLConnection,
}


def _master_options(address: RedisAddress, asyncio: bool = False) -> dict[str, Any]:
    """What a client of the master the Sentinels name needs besides `_node_options`: the
    connection class that follows them (`CheckedSentinelConnection`)."""
    return {"connection_class": _CHECKED_CLASSES[asyncio, address.tls]}


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
        return sentinels.master_for(
            where.service,
            db=where.db,
            **_node_options(where),
            **_master_options(where),
            **options,
        )
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
            where.service,
            redis_class=aredis.Redis,
            db=where.db,
            **_node_options(where),
            **_master_options(where, asyncio=True),
            **options,
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
                **_master_options(where, asyncio=True),
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
