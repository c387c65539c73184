"""The admin API's Redis access: redis.asyncio calling the same FUNCTION library as the
workers' `StateStore`, with the KEYS, ARGV and error mapping of `dispatcher.state.store`.

One `AsyncRedis` per API process holds the connection pool and loads the library (FUNCTION
LOAD REPLACE on first use, again when Redis answers that it is gone, as after a restart);
`AsyncStateStore` is a cheap per-request view of one tenant. Redis failures raise
`StateUnavailable` / `StateError` like the sync store and are counted in
dispatcher_redis_errors_total{component="api"}.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import redis
import redis.asyncio as aredis

from dispatcher.state.errors import StateError
from dispatcher.state.keys import TENANTS_KEY, TenantKeys
from dispatcher.state.live import (
    AgentLive,
    CallsState,
    LiveState,
    parse_agent,
    parse_calls,
    parse_live,
    queue_agent_reads,
    queue_calls_reads,
    queue_live_reads,
)
from dispatcher.state.store import (
    DEFAULT_EVENTS_MAXLEN,
    LIBRARY_SOURCE,
    AgentLimits,
    Audit,
    GroupRecord,
    client_options,
    config_put_request,
    is_missing_function,
    parse_config_reply,
    parse_events_reply,
    parse_tenants_reply,
    parse_tokens_reply,
    set_state_args,
    token_set_request,
    translate_errors,
)
from dispatcher.telemetry import count_redis_error


class AsyncRedis:
    """The API process's Redis: one asyncio connection pool shared by every tenant."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._redis = aredis.Redis.from_url(url, **client_options(timeout, timeout))
        self._loaded = False

    @property
    def client(self) -> aredis.Redis:
        """The raw client, for the few reads that have no helper here."""
        return self._redis

    async def close(self) -> None:
        """Close the pool's connections."""
        await self._redis.aclose()

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Map redis-py errors to StateErrors (counted as Redis failures)."""
        try:
            with translate_errors(self.url, self.timeout, self.timeout):
                yield
        except StateError as exc:
            count_redis_error("api", exc)
            raise

    async def ping(self) -> None:
        """One PING; StateUnavailable when Redis does not answer."""
        async with self.guard():
            await self._redis.ping()

    async def fcall(self, function: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """FCALL `function`, loading the library first if needed (1 round trip usually)."""
        async with self.guard():
            if not self._loaded:
                await self._redis.function_load(LIBRARY_SOURCE, replace=True)
                self._loaded = True
            try:
                return await self._redis.fcall(function, len(keys), *keys, *args)
            except redis.ResponseError as exc:
                if not is_missing_function(exc):
                    raise
            await self._redis.function_load(LIBRARY_SOURCE, replace=True)
            return await self._redis.fcall(function, len(keys), *keys, *args)

    async def registered_tenants(self) -> list[str]:
        """Every tenant that has had a config put, sorted (1 round trip)."""
        async with self.guard():
            return parse_tenants_reply(await self._redis.smembers(TENANTS_KEY))

    def tenant(self, tenant: str) -> AsyncStateStore:
        """A view of one tenant's state (no I/O)."""
        return AsyncStateStore(self, tenant)


class AsyncStateStore:
    """One tenant's state through `AsyncRedis`: what the admin API reads and changes."""

    def __init__(self, client: AsyncRedis, tenant: str) -> None:
        self.client = client
        self.tenant = tenant
        self.keys = TenantKeys(tenant)

    async def config(self) -> tuple[int, bytes | None]:
        """(version, doc) read together, (0, None) when none (1 round trip)."""
        async with self.client.guard():
            return parse_config_reply(
                await self.client.client.hmget(self.keys.config, ["version", "doc"])
            )

    async def put_config(
        self,
        doc_json: bytes,
        agents: Sequence[AgentLimits],
        groups: Sequence[GroupRecord],
        *,
        expected_version: int,
        old_groups: Sequence[str],
        events_maxlen: int = DEFAULT_EVENTS_MAXLEN,
        audit: Audit | None = None,
    ) -> int:
        """Replace the config if it is still at `expected_version` (ConfigConflict else);
        `old_groups` are that version's group ids. Returns the new version. Also adds the
        tenant to the tenant list. Cost: 2 round trips (SADD, FCALL)."""
        keys, args = config_put_request(
            self.keys,
            doc_json,
            agents,
            groups,
            expected_version=expected_version,
            old_groups=old_groups,
            events_maxlen=events_maxlen,
            audit=audit,
        )
        async with self.client.guard():
            await self.client.client.sadd(TENANTS_KEY, self.tenant)
        return int(await self.client.fcall("disp_config_put", keys, args))

    async def set_state(
        self, agent: str, status: int, reason: str = "", audit: Audit | None = None
    ) -> int:
        """Login/pause/logout through disp_set_state; the previous status (1 FCALL)."""
        args = set_state_args(agent, status, reason, audit)
        return int(await self.client.fcall("disp_set_state", self.keys.base, args))

    async def set_token(self, token_id: str, record: bytes | None, audit: Audit | None) -> bool:
        """Store or (record None) revoke a token; True if something changed (1 FCALL)."""
        keys, args = token_set_request(self.keys, token_id, record, audit)
        return bool(await self.client.fcall("disp_token_set", keys, args))

    async def token(self, token_id: str) -> bytes | None:
        """One token's record, None if unknown (1 round trip)."""
        async with self.client.guard():
            return cast("bytes | None", await self.client.client.hget(self.keys.tokens, token_id))

    async def tokens(self) -> dict[str, bytes]:
        """Every token record by id (1 round trip)."""
        async with self.client.guard():
            return parse_tokens_reply(await self.client.client.hgetall(self.keys.tokens))

    async def live(self) -> LiveState:
        """Config and live counters at one instant (1 round trip, MULTI/EXEC)."""
        async with self.client.guard(), self.client.client.pipeline(transaction=True) as pipe:
            queue_live_reads(pipe, self.keys)
            return parse_live(await pipe.execute())

    async def calls(self) -> CallsState:
        """Calls ringing and in progress at one instant, with what the newest events tell
        about them (1 round trip, MULTI/EXEC; see `queue_calls_reads`)."""
        async with self.client.guard(), self.client.client.pipeline(transaction=True) as pipe:
            queue_calls_reads(pipe, self.keys)
            return parse_calls(await pipe.execute())

    async def agent(self, agent: str) -> tuple[int, AgentLive | None]:
        """(Redis time ms, one agent's counters or None if not configured); 1 round trip."""
        async with self.client.guard(), self.client.client.pipeline(transaction=True) as pipe:
            queue_agent_reads(pipe, self.keys, agent)
            return parse_agent(await pipe.execute())

    async def events_after(self, last_id: str, count: int) -> list[tuple[str, dict[bytes, bytes]]]:
        """Up to `count` events after id `last_id` ("0-0" from the start), oldest first
        (1 round trip, XRANGE)."""
        async with self.client.guard():
            reply = await self.client.client.xrange(
                self.keys.events, min=f"({last_id}", max="+", count=count
            )
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", reply)
        return [(entry_id.decode(), fields) for entry_id, fields in entries]

    async def last_event_id(self) -> str:
        """Id of the newest event, "0-0" when there is none (1 round trip)."""
        async with self.client.guard():
            reply = await self.client.client.xrevrange(self.keys.events, count=1)
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", reply)
        return entries[0][0].decode() if entries else "0-0"

    async def recent_events(self, count: int) -> list[dict[str, str]]:
        """The last `count` events, oldest first, each with its "id" (1 round trip)."""
        async with self.client.guard():
            return parse_events_reply(
                await self.client.client.xrevrange(self.keys.events, count=count)
            )
