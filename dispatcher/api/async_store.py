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

from dispatcher.state.connect import AsyncClient, aclose_client, async_client
from dispatcher.state.errors import StateError
from dispatcher.state.keys import TENANTS_KEY, TenantKeys, validate_id
from dispatcher.state.live import (
    AgentLive,
    BoardState,
    CallsState,
    LiveState,
    parse_agent,
    parse_board,
    parse_calls,
    parse_live,
    queue_agent_reads,
    queue_board_reads,
    queue_calls_reads,
    queue_live_reads,
)
from dispatcher.state.messages import (
    Voicemail,
    parse_voicemail,
    parse_voicemails,
    prompt_put_request,
    voicemail_update_request,
)
from dispatcher.state.store import (
    DEFAULT_EVENTS_MAXLEN,
    LIBRARY_SOURCE,
    TENANT_DELETE_BATCH,
    AgentLimits,
    Audit,
    GroupRecord,
    config_put_request,
    credential_put_request,
    is_missing_function,
    names_put_request,
    parse_config_reply,
    parse_events_reply,
    parse_tenants_reply,
    parse_tokens_reply,
    set_state_args,
    tenant_key_pattern,
    token_set_request,
    translate_errors,
)
from dispatcher.telemetry import count_redis_error


class AsyncRedis:
    """The API process's Redis: one asyncio connection pool shared by every tenant (a
    server, the master Sentinels name, or a Cluster: `dispatcher.state.connect`)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._redis = async_client(url, timeout, timeout)
        self._loaded = False

    @property
    def client(self) -> AsyncClient:
        """The raw client, for the few reads that have no helper here."""
        return self._redis

    async def close(self) -> None:
        """Close the pool's connections."""
        await aclose_client(self._redis)

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
        """FCALL `function`, loading the library first if needed (1 round trip usually).
        FUNCTION LOAD goes to every primary of a Cluster; a node that answers that the
        function is missing (restarted empty, new) has it loaded again with the others."""
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
        self,
        agent: str,
        status: int,
        reason: str = "",
        audit: Audit | None = None,
        expected: Sequence[int] = (),
    ) -> int:
        """Login/pause/logout through disp_set_state (compare and set with `expected`, as
        `StateStore.set_state`); the previous status (1 FCALL)."""
        args = set_state_args(agent, status, reason, audit, expected)
        return int(await self.client.fcall("disp_set_state", self.keys.base, args))

    async def put_names(self, domains: Sequence[str], dids: Sequence[str]) -> None:
        """The tenant's domains and DIDs in the carrier-wide index (`StateStore.put_names`);
        NameTaken when another tenant holds one. 1 FCALL."""
        keys, args = names_put_request(self.tenant, domains, dids)
        await self.client.fcall("disp_names_put", keys, args)

    async def delete_tenant(self, force: bool) -> int:
        """Delete the tenant, keys, names and listing (`StateStore.delete_tenant`); TenantBusy
        while it has calls, unless `force`."""
        if not force:
            await self.client.fcall("disp_tenant_delete", list(self.keys.base), [0])
        await self.put_names((), ())
        pattern = tenant_key_pattern(self.keys)
        async with self.client.guard():
            names = [k async for k in self.client.client.scan_iter(match=pattern, count=1000)]
        deleted = 0
        for start in range(0, len(names), TENANT_DELETE_BATCH):
            batch = [
                k.decode() if isinstance(k, bytes) else k
                for k in names[start : start + TENANT_DELETE_BATCH]
            ]
            deleted += int(
                await self.client.fcall("disp_tenant_delete", [*self.keys.base, *batch], [1])
            )
        async with self.client.guard():
            await self.client.client.srem(TENANTS_KEY, self.tenant)
        return deleted

    async def counts(self) -> dict[str, str]:
        """The tenant's event counters (`{t:T}:counts`, 1 round trip)."""
        async with self.client.guard():
            raw = await self.client.client.hgetall(self.keys.counts)
        return {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }

    async def credential_put(self, user: str, record: bytes | None, audit: Audit | None) -> bool:
        """Set or remove (None) a SIP user's credentials (`StateStore.credential_put`)."""
        keys, args = credential_put_request(self.keys, user, record, audit)
        return bool(await self.client.fcall("disp_credential_put", keys, args))

    async def credential_users(self) -> list[str]:
        """The SIP users that have credentials, sorted (1 round trip)."""
        async with self.client.guard():
            users = await self.client.client.hkeys(self.keys.credentials)
        return sorted(u.decode() if isinstance(u, bytes) else u for u in users)

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

    async def board(self) -> BoardState:
        """The live state with every queued caller and the agents' phone registrations, at
        one instant (1 round trip, MULTI/EXEC; see `dispatcher.state.live.queue_board_reads`)."""
        async with self.client.guard(), self.client.client.pipeline(transaction=True) as pipe:
            queue_board_reads(pipe, self.keys)
            return parse_board(await pipe.execute())

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

    # -- voicemail and uploaded prompts (state.messages) ----------------------------------

    async def voicemail(self, message_id: str) -> Voicemail | None:
        """One message, None if there is none (1 round trip, HGET)."""
        validate_id(message_id, "message id")
        async with self.client.guard():
            raw = await self.client.client.hget(self.keys.voicemail, message_id)
        return parse_voicemail(cast("bytes | None", raw))

    async def voicemails(self) -> list[Voicemail]:
        """Every message of the tenant, newest first (1 round trip, MULTI/EXEC; O(messages))."""
        async with self.client.guard(), self.client.client.pipeline(transaction=True) as pipe:
            pipe.zrevrange(self.keys.voicemail_index, 0, -1)
            pipe.hgetall(self.keys.voicemail)
            ids, records = await pipe.execute()
        return parse_voicemails([records.get(i) for i in ids])

    async def voicemail_update(
        self, message_id: str, record: Voicemail | None, audit: Audit | None = None
    ) -> Voicemail | None:
        """Replace a message's record (marked heard or new), or delete it (None); the record
        before, None if there was no such message (nothing changed then). 1 FCALL."""
        keys, args = voicemail_update_request(self.keys, message_id, record, audit)
        return parse_voicemail(await self.client.fcall("disp_voicemail_update", keys, args))

    async def prompt_put(
        self, prompt_id: str, audio: bytes | None, audit: Audit | None = None
    ) -> str | None:
        """Store a prompt's audio (None deletes it); the previous digest, None if there was
        none. ValueError for audio that is empty or over MAX_PROMPT_BYTES. 1 FCALL."""
        keys, args = prompt_put_request(self.keys, prompt_id, audio, audit)
        previous = await self.client.fcall("disp_prompt_put", keys, args)
        return previous.decode() if previous else None

    async def prompt_sizes(self) -> dict[str, tuple[str, int]]:
        """Every uploaded prompt's id -> (digest, bytes of its audio).

        Cost: 2 round trips (HGETALL, then HSTRLEN per prompt in one MULTI/EXEC), each again
        when a prompt changed in between (WATCH), so digest and size always belong together.
        """
        async with self.client.guard(), self.client.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.keys.prompts)
                    raw = cast("dict[bytes, bytes]", await pipe.hgetall(self.keys.prompts))
                    digests = {k.decode(): v.decode() for k, v in sorted(raw.items())}
                    pipe.multi()
                    for digest in digests.values():
                        pipe.hstrlen(self.keys.prompt_data, digest)
                    sizes = await pipe.execute()
                except redis.WatchError:
                    continue
                return {
                    prompt_id: (digest, int(size))
                    for (prompt_id, digest), size in zip(digests.items(), sizes, strict=True)
                }

    async def prompt_digest(self, prompt_id: str) -> str | None:
        """The digest of one prompt's audio, None if there is no such prompt (1 round trip)."""
        validate_id(prompt_id, "prompt id")
        async with self.client.guard():
            raw = cast("bytes | None", await self.client.client.hget(self.keys.prompts, prompt_id))
        return raw.decode() if raw is not None else None

    async def prompt_audio(self, prompt_id: str) -> tuple[str, bytes] | None:
        """(digest, audio) of one prompt read together, None if there is no such prompt.

        Cost: 1-2 round trips (HGET, then HGET of the audio under WATCH, again if the prompt
        was replaced in between).
        """
        validate_id(prompt_id, "prompt id")
        async with self.client.guard(), self.client.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.keys.prompts)
                    raw = await pipe.hget(self.keys.prompts, prompt_id)
                    if raw is None:
                        return None
                    digest = cast("bytes", raw).decode()
                    pipe.multi()
                    pipe.hget(self.keys.prompt_data, digest)
                    (audio,) = await pipe.execute()
                except redis.WatchError:
                    continue
                return (digest, audio) if audio is not None else None
