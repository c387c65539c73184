"""`StateStore`: one tenant's shared state in Redis, through the FUNCTION library.

Every mutation is one FCALL into `library.lua` (library `dispatcher`), which keeps the
invariant live + reservations <= max_calls per agent however many workers and nodes call it.
The client is synchronous because Kamailio workers are; create the store in each worker
after fork (the connection opens on first use). The admin API's asyncio store
(`dispatcher.api.async_store`) calls the same functions with the KEYS and ARGV built by the
pure helpers at the end of this module (`config_put_request`, `set_state_args`,
`token_set_request`), connects through `dispatcher.state.connect` as this one does, reads
replies with the same `parse_*_reply` and maps errors with the same `translate_errors`.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from enum import StrEnum
from importlib.resources import files
from typing import Any, NoReturn, cast

import hiredis
import orjson
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)

from dispatcher.core import AVAILABLE, LOGGED_OUT, PAUSED
from dispatcher.redis_address import redacted

from .connect import (
    CheckedSentinelConnection,
    SyncClient,
    address_of,
    close_client,
    sync_client,
)
from .credentials import StoredCredential, parse_credential, validate_user
from .errors import LIBRARY_ERRORS, ConfigConflict, StateError, StateUnavailable
from .keys import (
    DIDS_KEY,
    DOMAINS_KEY,
    FIELD_SEPARATOR,
    NAMES_VERSION_KEY,
    NODES_KEY,
    TENANT_NAMES_KEY,
    TENANTS_KEY,
    TenantKeys,
    validate_call_id,
    validate_id,
)
from .live import (
    BoardState,
    LiveState,
    parse_board,
    parse_live,
    queue_board_reads,
    queue_live_reads,
    queue_time,
    time_ms,
)
from .messages import (
    Voicemail,
    parse_voicemail,
    parse_voicemails,
    prompt_put_request,
    voicemail_expire_request,
    voicemail_put_request,
    voicemail_update_request,
)
from .sticky import StickyDays

LIBRARY_SOURCE = files(__package__).joinpath("library.lua").read_text(encoding="utf-8")

# Replies are bytes (no decode_responses: the config doc is opaque bytes); the casts below
# narrow redis-py's types, which cover both reply modes.

FAILURE_REASONS = frozenset({"busy", "noanswer", "declined", "error", "cancelled", "unreachable"})
# How a whole call ended (`StateStore.release`'s outcome, the `ended` event's).
CALL_OUTCOMES = frozenset({"answered", "abandoned", "no_answer", "failed", "expired", "lost"})
# Why a caller leaves a queue (disp_queue_leave).
LEAVE_REASONS = frozenset({"answered", "abandoned", "timeout", "no_agents", "lost", "error"})
# How disp_claim chooses among candidate waves: the first with an eligible agent, or the one
# whose agent is least busy / longest idle on the current counts.
CLAIM_PICKS = frozenset({"first", "busy", "idle"})
DEFAULT_EVENTS_MAXLEN = 1_000_000
# Deferred FCALLs (answered_later, release_later) a store lets wait for their replies: a
# process that only sends those (a timer process releasing timed-out calls) reads them then.
MAX_DEFERRED = 32
DEFAULT_SWEEP_LIMIT = 1000
_PUT_ATTEMPTS = 5
# Redis' reply when the library is gone, typically after a restart with empty memory.
_MISSING_FUNCTION = "Function not found"
# What means "Redis cannot serve this now" (503 and retry later), not a wrong request: a
# lost or refused connection, a Cluster without a node for the slot or down, a slot that
# moves again while it is followed (AskError, MOVED included), keys split by a migration.
_UNREACHABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
    ClusterError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    AskError,
    TryAgainError,
)
# ASKING, sent before an FCALL redirected by a Cluster: needed after ASK (the slot is being
# imported there), ignored by a node that owns the slot (after MOVED).
_ASKING = hiredis.pack_command(("ASKING",))


def bulk_strings(items: Sequence[Any]) -> bytes:
    """`items` as the RESP bulk strings of a command's arguments, without its header."""
    packed = hiredis.pack_command(tuple(items))
    return packed[packed.index(b"\r\n") + 2 :]


def pack_fcall(
    function: str, keys: Sequence[str], args: Sequence[Any], base: tuple[str, ...], packed: bytes
) -> bytes:
    """FCALL `function` with `keys` and `args` in RESP, as hiredis.pack_command packs it.

    Every library function takes the tenant's 22 common keys first (`base`; `packed` is
    `bulk_strings(base)`, packed once per store): only the rest is packed per call, which
    is most of the packing cost of the routing's three FCALLs. Keys that do not start with
    `base` are packed whole.
    """
    n = len(base)
    if len(keys) < n or tuple(keys[:n]) != base:
        return hiredis.pack_command(("FCALL", function, len(keys), *keys, *args))
    name = function.encode()
    count = str(len(keys)).encode()
    head = b"*%d\r\n$5\r\nFCALL\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        3 + len(keys) + len(args),
        len(name),
        name,
        len(count),
        count,
    )
    return head + packed + bulk_strings((*keys[n:], *args))


# A Cluster's topology is read again after a connection failed, at most this often.
TOPOLOGY_REFRESH_S = 0.5

# A group in a config put: (id, members in canonical order[, queue max length, 0 = none]).
GroupRecord = tuple[str, Sequence[str]] | tuple[str, Sequence[str], int]

# Who changed what, appended as an `audit` event by the function that makes the change:
# keys actor, action, object, detail (see need_audit in library.lua).
Audit = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class AgentLimits:
    """One agent's entry in a config put. status/reason apply only to agents new to Redis."""

    id: str
    max_calls: int
    wrapup_s: int = 0
    auto_pause_after: int = 0
    status: int = LOGGED_OUT
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What `StateStore.claim` reserved, and the group's state as the claim found it.

    `rows` and `rr` are taken after the sweep and the withdrawals, before this claim's own
    reservations. `rows` is flat, 5 ints per member in canonical order (status, busy, max_calls,
    wrapup_until_ms, idle_since_ms): the layout of `dispatcher.core.LiveTable`; empty for a
    claim with pick "busy" or "idle", which made the strategy's pick on those counts itself.
    `sticky_agent` is the caller's agent of the day ("" if none); `is_sticky` says whether it
    was the one claimed. `queue_ahead`: the group's queue has callers waiting and this call
    is not one of them, so nothing was claimed: the call queues behind them.
    """

    version: int
    now_ms: int
    rr: int
    sticky_agent: str
    is_sticky: bool
    claimed: tuple[str, ...]
    rows: list[int]
    queue_ahead: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A group's state for planning: config version, Redis time, rr cursor, flat live rows."""

    version: int
    now_ms: int
    rr: int
    rows: list[int]


@dataclass(frozen=True, slots=True)
class QueueJoin:
    """`StateStore.queue_join`'s answer: status queued / waiting (back in its place) / full /
    no_agents, the caller's position (1 = next) and how many wait in the group."""

    status: str
    position: int
    waiting: int


@dataclass(frozen=True, slots=True)
class QueueEntryState:
    """One held call as `queue_keep` found it: state waiting / notified / ringing, or gone
    (not queued: swept after its lease lapsed, or removed)."""

    call: str
    state: str
    position: int
    waiting: int
    joined_ms: int
    group: str


@dataclass(frozen=True, slots=True)
class MemberLoad:
    """A queued group's member as the wait estimate sees it: status, lines, wrap-up seconds
    and end (ms), the start (ms) of each of its live calls (any group's)."""

    agent: str
    status: int
    max_calls: int
    wrapup_s: int
    wrapup_until_ms: int
    busy_since_ms: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class QueueGroupStats:
    """A queued group's inputs to the wait estimate: its members' loads and its recent
    handle times (ms, newest first)."""

    group: str
    members: tuple[MemberLoad, ...]
    handle_times_ms: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class QueueKeep:
    """`StateStore.queue_keep`'s answer, read at Redis' `now_ms`."""

    now_ms: int
    entries: tuple[QueueEntryState, ...]
    groups: tuple[QueueGroupStats, ...]


@dataclass(frozen=True, slots=True)
class FailResult:
    """`released`: the reservation still existed; `paused`: the miss auto-paused the agent."""

    released: bool
    paused: bool


class AnswerOutcome(StrEnum):
    """Outcome of `StateStore.answered` (see disp_answered in library.lua)."""

    OK = "ok"
    LATE = "late"
    OVER = "over"
    DUP = "dup"
    ENDED = "ended"


class _Channel:
    """One raw FCALL connection (`StateStore._send_fcall`) and the deferred FCALLs sent on
    it whose replies are not read yet, oldest first."""

    __slots__ = ("conn", "pending")

    def __init__(self, conn: redis.connection.ConnectionInterface) -> None:
        self.conn = conn
        self.pending: deque[_Deferred] = deque()
        if isinstance(conn, CheckedSentinelConnection):
            conn.check_on_send = False  # `_send_fcall` checks while no reply is due

    def left_master(self) -> bool:
        """Behind Sentinels, whether they name another master now (the connection is
        closed then; see `CheckedSentinelConnection`). Only while no reply is due."""
        conn = self.conn
        return (
            not self.pending and isinstance(conn, CheckedSentinelConnection) and conn.master_moved()
        )


class _Link:
    """What the stores of one worker's tenants share: the client (built on first use: a
    Cluster's is read from the cluster), whether the library is loaded, and the FCALLs'
    own connections: one to a server or a Sentinel master (`channel`), else one per
    Cluster primary (`channels` by node name), each opened on first use."""

    __slots__ = (
        "address",
        "channel",
        "channels",
        "client",
        "connect_timeout",
        "loaded",
        "next_refresh",
        "refresh",
        "socket_timeout",
    )

    def __init__(self, address: str, socket_timeout: float, connect_timeout: float) -> None:
        self.address = address_of(address)
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.client: SyncClient | None = None
        self.loaded = False
        self.channel: _Channel | None = None
        self.channels: dict[str, _Channel] = {}
        self.refresh = False  # a Cluster node failed: read the topology again
        self.next_refresh = 0.0

    @property
    def redis(self) -> SyncClient:
        if self.client is None:
            self.client = sync_client(self.address, self.socket_timeout, self.connect_timeout)
        return self.client

    def channel_for(self, key: str) -> _Channel:
        """The channel of the node that serves `key`: the one of a server or a Sentinel
        master, else the one of the Cluster primary of its slot (after reading the topology
        again if a node failed since)."""
        if self.channel is not None:
            return self.channel
        client = self.redis
        if not isinstance(client, RedisCluster):
            self.channel = _Channel(client.connection_pool.make_connection())
            return self.channel
        if self.refresh and time.monotonic() >= self.next_refresh:
            self.next_refresh = time.monotonic() + TOPOLOGY_REFRESH_S
            client.nodes_manager.initialize()
            self.refresh = False
        return self.node_channel(
            client, client.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        )

    def node_channel(self, client: RedisCluster, node: Any) -> _Channel:
        """The channel of Cluster node `node`, opened on first use."""
        channel = self.channels.get(node.name)
        if channel is None:
            pool = client.get_redis_connection(node).connection_pool
            channel = self.channels[node.name] = _Channel(pool.make_connection())
        return channel

    def every_channel(self) -> list[_Channel]:
        """The channels opened so far."""
        return [self.channel] if self.channel is not None else list(self.channels.values())

    def failed(self, channel: _Channel) -> None:
        """A Cluster channel whose connection failed: its node may be gone (a failover), so
        the next FCALL reads the topology first. (The channel stays: its connection object
        reconnects if the node comes back; a new one would count against the node's pool.)"""
        if channel is not self.channel:
            self.refresh = True


class StateStore:
    """One tenant's shared state in the Redis at `url` (any address of
    `dispatcher.redis_address`: a server, a Sentinel master, a Cluster).

    Calls fail fast rather than stall a SIP worker: no client retries, and a refused
    connection, a lost one or a reply slower than the timeouts raises `StateUnavailable`.
    The library is loaded (FUNCTION LOAD REPLACE) on first use and again, followed by one
    retry, when Redis answers that the function is missing, as after a restart.
    Errors the library replies with raise the `StateError` subclass of their code.
    One store per thread: the FCALLs share one connection (`_send_fcall`; in a Cluster one
    per primary, each FCALL on the one serving its keys' slot, MOVED and ASK followed).
    Behind Sentinels a failover costs the calls until they name the new master: a lost
    connection fails its call and the next connects to the master they name then; one still
    open to a master they no longer name moves before an FCALL (checked at most once a
    second while no deferred reply is due: `CheckedSentinelConnection`).

    `answered_later` and `release_later` send their FCALL and return without waiting: the
    reply is read just before the next FCALL's reply on the same connection (or by `flush`,
    or once MAX_DEFERRED are pending), and handed to their `done` callback; an error reply,
    or a connection lost before the reply came, goes to `deferred_error(function, exc)`
    (default: logged). Only these two are deferred: both are idempotent and disp_answered
    refuses a call whose release came first, so their order against other workers' calls
    does not matter. A deferred call that finds the library gone (Redis restarted empty)
    is reported, not retried: its call predates the restart.
    """

    def __init__(
        self,
        url: str,
        tenant: str,
        *,
        socket_timeout: float = 0.5,
        connect_timeout: float = 0.5,
    ) -> None:
        self.keys = TenantKeys(tenant)
        self._packed_base = bulk_strings(self.keys.base)
        self.tenant = tenant
        self.url = url
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self._link = _Link(url, socket_timeout, connect_timeout)
        self.deferred_error: Callable[[str, Exception], None] = _log_deferred_error
        # The node whose dialogs this store's answers are (DISPATCHER_NODE); "" records none.
        self.node = ""

    def for_tenant(self, tenant: str) -> StateStore:
        """A store of another tenant on this store's connections (a worker serves many
        tenants with one FCALL connection, its deferred replies in one order). Closing
        either closes both."""
        if tenant == self.tenant:
            return self
        sibling = object.__new__(StateStore)
        sibling.keys = TenantKeys(tenant)
        sibling._packed_base = bulk_strings(sibling.keys.base)
        sibling.tenant = tenant
        sibling.url = self.url
        sibling.socket_timeout = self.socket_timeout
        sibling.connect_timeout = self.connect_timeout
        sibling._link = self._link
        sibling.deferred_error = self.deferred_error
        sibling.node = self.node
        return sibling

    # The connections and the library's load state live in the link the siblings share.
    @property
    def _redis(self) -> SyncClient:
        return self._link.redis

    @property
    def _loaded(self) -> bool:
        return self._link.loaded

    @_loaded.setter
    def _loaded(self, value: bool) -> None:
        self._link.loaded = value

    def close(self) -> None:
        """Read the deferred replies still due (errors reported, never raised), then close
        the connections; the store reconnects if used again."""
        with suppress(StateError):
            self.flush()
        link = self._link
        for channel in link.every_channel():
            channel.conn.disconnect()
        link.channel, link.channels = None, {}
        if link.client is not None:
            close_client(link.client)
            link.client = None

    def flush(self) -> None:
        """Read the replies of every deferred FCALL now (see the class docstring)."""
        for channel in self._link.every_channel():
            if channel.pending:
                with self._reachable():
                    self._read_deferred(channel)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StateStore({redacted(self.url)!r}, {self.keys.tenant!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _reachable(self) -> AbstractContextManager[None]:
        return translate_errors(self.url, self.socket_timeout, self.connect_timeout)

    def load_library(self) -> None:
        """FUNCTION LOAD REPLACE the library (1 round trip); done on first use anyway."""
        with self._reachable():
            self._redis.function_load(LIBRARY_SOURCE, replace=True)
        self._loaded = True

    def _fcall(self, function: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if not self._loaded:
            self.load_library()
        with self._reachable():
            try:
                return self._send_fcall(function, keys, args)
            except redis.ResponseError as exc:
                if not is_missing_function(exc):
                    raise
            self._loaded = False
        self.load_library()
        with self._reachable():
            return self._send_fcall(function, keys, args)

    def _fcall_later(
        self,
        function: str,
        keys: Sequence[str],
        args: Sequence[Any],
        done: Callable[[Any], None] | None,
    ) -> None:
        if not self._loaded:
            self.load_library()
        with self._reachable():
            self._send_fcall(function, keys, args, _Deferred(function, done, keys, args))

    def _send_fcall(
        self,
        function: str,
        keys: Sequence[str],
        args: Sequence[Any],
        deferred: _Deferred | None = None,
        redirected: _Channel | None = None,
    ) -> Any:
        """One FCALL on the store's own connection, past the client's command layers; with
        `deferred` it returns at once and the reply is read later (`_read_deferred`).

        The routing makes three FCALLs per SIP call, and `Redis.execute_command` (pool
        checkout with a readiness poll, retry wrapper, response callbacks) costs about as
        much client CPU as sending and reading; FCALL needs none of it. The connection is
        one redis-py `Connection` of the client's pool class (same URL, timeouts, hiredis
        parser; behind Sentinels a `SentinelManagedConnection`, which asks them for the
        master whenever it connects), so this is what makes a StateStore one-thread-only.
        A connection that failed mid-command is dropped (deferred calls still due on it are
        reported), the next call opens a new one; an error reply leaves it usable.
        In a Cluster the connection is the one to the primary of the slot of `keys[0]` (all
        keys of a call share a hash tag); `redirected` is the channel a MOVED or ASK reply
        named, where the call goes once more after ASKING (`_redirected`).
        """
        link = self._link
        channel = redirected or link.channel or link.channel_for(keys[0])
        conn = channel.conn
        try:
            channel.left_master()  # then connect() reaches the master the Sentinels name
            if not conn.is_connected:  # connect() runs its retry wrapper even when connected
                conn.connect()
            if deferred is not None and channel.pending:
                # Replies are due: first read those that came, so the idle check below can
                # run. A deferred call sent into a connection the server closed (killed,
                # failed over) would be lost unseen - TCP takes a write after the peer closed -
                # and its agent stay busy; a call that waits sees the loss itself.
                try:
                    self._read_deferred(channel, ready_only=True)
                except redis.ConnectionError:  # the server is gone: the calls due are reported
                    conn.connect()
            if not channel.pending and _closed_while_idle(conn):
                # The server restarted or dropped idle clients. Nothing was sent on it, so
                # a new one is safe: the check redis-py's pool makes on checkout. (With
                # replies due, readable is what it should be.)
                conn.disconnect()
                conn.connect()
            # hiredis packs in C; the connection's packer walks the arguments in Python.
            command = pack_fcall(function, keys, args, self.keys.base, self._packed_base)
            conn.send_packed_command([_ASKING, command] if redirected else [command])
        except BaseException as exc:
            self._drop(channel, exc)
            raise
        if deferred is not None:
            channel.pending.append(deferred)
            if len(channel.pending) >= MAX_DEFERRED:
                self._read_deferred(channel)
            return None
        self._read_deferred(channel)
        try:
            if redirected:
                conn.read_response()  # ASKING's OK
            return conn.read_response()
        except AskError as exc:  # MovedError too
            if redirected:
                raise  # moved again while followed: StateUnavailable
            return self._send_fcall(function, keys, args, redirected=self._redirected(exc))
        except redis.ResponseError:
            raise
        except BaseException as exc:
            self._drop(channel, exc)
            raise

    def _redirected(self, exc: AskError) -> _Channel:
        """The channel of the Cluster node a MOVED or ASK reply names. MOVED: a resharding
        or a failover gave the slot to that node for good, so the slot map is updated too
        (the next calls go there directly); ASK: the slot is migrating and that node serves
        this call once, after ASKING. Redis ran nothing before either reply, so sending the
        call again is safe."""
        client = cast(RedisCluster, self._link.redis)
        nodes = client.nodes_manager
        if isinstance(exc, MovedError):
            nodes.move_slot(exc)
        node = nodes.get_node(host=exc.host, port=exc.port)
        if node is None:  # a node the topology does not know yet
            self._link.refresh = True
            raise exc
        return self._link.node_channel(client, node)

    def _read_deferred(self, channel: _Channel, ready_only: bool = False) -> None:
        """Read the due replies of deferred FCALLs, oldest first, into their callbacks;
        `ready_only`: only those that have arrived, without waiting."""
        conn = channel.conn
        while channel.pending:
            call = channel.pending[0]
            try:
                if ready_only and not conn.can_read():
                    return
                reply = conn.read_response()
            except AskError as exc:  # a Cluster slot moved: sent again where it is now
                channel.pending.popleft()
                self._redirect_deferred(call, exc)
                continue
            except redis.ResponseError as exc:
                channel.pending.popleft()
                try:
                    _raise_library_error(exc)
                except StateError as error:  # the StateError subclass of its code
                    self.deferred_error(call.function, error)
                continue
            except BaseException as exc:
                self._drop(channel, exc)
                raise
            channel.pending.popleft()
            if call.done is not None:
                call.done(reply)

    def _redirect_deferred(self, call: _Deferred, exc: AskError) -> None:
        """A deferred FCALL a Cluster redirected, sent again (and waited for) where the
        reply said; its reply or error goes where the first one's would have."""
        try:
            with self._reachable():
                reply = self._send_fcall(
                    call.function, call.keys, call.args, redirected=self._redirected(exc)
                )
        except StateError as error:
            self.deferred_error(call.function, error)
            return
        if call.done is not None:
            call.done(reply)

    def _drop(self, channel: _Channel, exc: BaseException) -> None:
        """Close a failed connection; the deferred calls still due on it are reported."""
        channel.conn.disconnect()
        self._link.failed(channel)
        lost, channel.pending = list(channel.pending), deque()
        error = unavailable(
            self.url,
            self.socket_timeout,
            self.connect_timeout,
            f"connection lost before the reply: {exc!r}",
        )
        for call in lost:
            self.deferred_error(call.function, error)

    # -- config ---------------------------------------------------------------------------

    def put_config(
        self,
        doc_json: bytes,
        agents: Sequence[AgentLimits],
        groups: Sequence[GroupRecord],
        *,
        expected_version: int | None = None,
        events_maxlen: int = DEFAULT_EVENTS_MAXLEN,
        audit: Audit | None = None,
    ) -> int:
        """Replace the tenant config atomically; return the new version.

        `groups` are (group id, members in canonical order); every member must be in `agents`.
        With `expected_version` the put fails with `ConfigConflict` unless the stored version
        is that one; without it the current version is read and the put retried a few times
        if another writer gets in between. `audit` adds an audit event in the same FCALL.
        The tenant is added to the tenant list (TENANTS_KEY). Cost: 2 round trips (pipelined
        SADD + HMGET, then FCALL) per attempt, O(agents + group members) in Redis.
        """
        attempt = 1
        while True:
            # The dropped groups' keys must be in KEYS; reading them with the version is safe
            # because the FCALL fails with CONFLICT if either changed in between.
            with self._reachable(), self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(TENANTS_KEY, self.tenant)
                pipe.hmget(self.keys.config, "version", "groups")
                _, reply = pipe.execute()
            raw_version, raw_groups = cast("list[bytes | None]", reply)
            current = int(raw_version or 0)
            keys, args = config_put_request(
                self.keys,
                doc_json,
                agents,
                groups,
                expected_version=current if expected_version is None else expected_version,
                old_groups=raw_groups.decode().split(",") if raw_groups else (),
                events_maxlen=events_maxlen,
                audit=audit,
            )
            try:
                return int(self._fcall("disp_config_put", keys, args))
            except ConfigConflict:
                if expected_version is not None or attempt == _PUT_ATTEMPTS:
                    raise
                attempt += 1

    def config(self) -> tuple[int, bytes | None]:
        """(version, doc) read together, (0, None) when none (1 round trip)."""
        with self._reachable():
            return parse_config_reply(self._redis.hmget(self.keys.config, "version", "doc"))

    def config_version(self) -> int:
        """The stored config version, 0 when none (1 round trip)."""
        with self._reachable():
            return int(self._redis.hget(self.keys.config, "version") or 0)

    def config_doc(self) -> bytes | None:
        """The stored config document as put, None when none (1 round trip)."""
        with self._reachable():
            return cast("bytes | None", self._redis.hget(self.keys.config, "doc"))

    # -- routing --------------------------------------------------------------------------

    def claim(
        self,
        call: str,
        gid: str,
        caller: str,
        wave: Sequence[str],
        ttl_ms: int,
        sticky: StickyDays | None = None,
        withdraw: Sequence[str] = (),
        then: Sequence[Sequence[str]] = (),
        arrival: bool = False,
        pick: str = "first",
    ) -> ClaimResult:
        """Reserve the eligible agents of `wave` in group `gid` for `call` until now + ttl_ms.

        When no agent of `wave` is eligible, the waves of `then` are tried in order and the
        first with an eligible agent is reserved instead; with `pick` "busy" or "idle" the
        wave whose first eligible agent is the least busy or longest idle on Redis' current
        counts is reserved (CLAIM_PICKS, see disp_claim). `arrival` marks the call's first
        claim in this group (an `arrived` event for reports). `withdraw` first releases this
        call's reservations of those agents (a choice made on a stale snapshot, corrected).
        On the call's first claim, with `caller` and `sticky` (`sticky_days` of the group's
        zone around the worker's clock; None for no sticky), the caller's agent of the day
        Redis' TIME falls in is claimed alone if it is eligible. The result carries the group's
        rows as the claim saw them, before its own reservations, so the worker can check its
        wave against them without another call.
        Cost: exactly 1 FCALL; O(members + wave) in Redis.
        """
        validate_call_id(call)
        candidates = [*wave]
        for later in then:
            candidates += ["", *later]  # '' separates candidate waves (ids are never empty)
        _check_agent_ids(candidates, withdraw)
        keys = [*self.keys.base, self.keys.group(gid), self.keys.call(call)]
        bounds = self._sticky_keys(keys, gid, caller, sticky)
        args = [
            call,
            gid,
            caller,
            _positive(ttl_ms),
            int(arrival),
            _claim_pick(pick),
            bounds,
            len(withdraw),
            *withdraw,
            *candidates,
        ]
        raw = self._fcall("disp_claim", keys, args)
        version, now_ms, rr, sticky_agent, is_sticky, claimed, rows, queue_ahead = raw
        return ClaimResult(
            version=int(version),
            now_ms=int(now_ms),
            rr=int(rr),
            sticky_agent=sticky_agent.decode(),
            is_sticky=bool(is_sticky),
            claimed=tuple(agent.decode() for agent in claimed),
            rows=rows,  # Lua numbers: hiredis hands over ints already
            queue_ahead=bool(queue_ahead),
        )

    def answered(
        self,
        call: str,
        gid: str,
        agent: str,
        caller: str = "",
        sticky: StickyDays | None = None,
    ) -> AnswerOutcome:
        """Turn `agent`'s reservation on `call` into a live call; release the call's others.

        With `caller` and `sticky` (`sticky_days` around the worker's clock), the caller
        sticks to `agent` until the end of the local day Redis' TIME falls in.
        Cost: exactly 1 FCALL.
        """
        keys, args = self._answered_request(call, gid, agent, caller, sticky)
        return AnswerOutcome(self._fcall("disp_answered", keys, args).decode())

    def answered_later(
        self,
        call: str,
        gid: str,
        agent: str,
        caller: str = "",
        sticky: StickyDays | None = None,
        done: Callable[[AnswerOutcome], None] | None = None,
    ) -> None:
        """`answered` without waiting for the reply; `done` gets the outcome when it is read
        (see the class docstring). Cost: 1 FCALL, no wait; StateUnavailable if not sent."""
        keys, args = self._answered_request(call, gid, agent, caller, sticky)
        self._fcall_later(
            "disp_answered",
            keys,
            args,
            None if done is None else (lambda reply: done(AnswerOutcome(reply.decode()))),
        )

    def _answered_request(
        self,
        call: str,
        gid: str,
        agent: str,
        caller: str,
        sticky: StickyDays | None,
    ) -> tuple[list[str], list[Any]]:
        validate_call_id(call)
        validate_id(agent, "agent id")
        keys = [*self.keys.base, self.keys.call(call), self.keys.ended(call)]
        bounds = self._sticky_keys(keys, validate_id(gid, "group id"), caller, sticky)
        return keys, [call, gid, agent, caller, bounds, self.node]

    def _sticky_keys(
        self, keys: list[str], gid: str, caller: str, sticky: StickyDays | None
    ) -> str:
        """Append the three days' sticky hashes to `keys`; return their bounds ARGV
        ("" and nothing appended without a caller or days: no sticky memory)."""
        if not (caller and sticky):
            return ""
        keys += [self.keys.sticky(gid, day) for day in sticky.days]
        return ",".join(map(str, sticky.bounds))

    def failed(self, call: str, agent: str, reason: str) -> FailResult:
        """An offer ended unanswered; busy/noanswer/declined/error count a miss.

        Repeating it is harmless. Cost: exactly 1 FCALL.
        """
        validate_call_id(call)
        validate_id(agent, "agent id")
        if reason not in FAILURE_REASONS:
            raise ValueError(f"invalid reason {reason!r}: one of {sorted(FAILURE_REASONS)}")
        released, paused = self._fcall("disp_failed", self.keys.base, [call, agent, reason])
        return FailResult(released=bool(released), paused=bool(paused))

    def release(self, call: str, agent: str | None = "", outcome: str = "") -> int:
        """The call ended (or `agent`'s leg of it): release its reservations, end live calls.

        `agent` "" or None: every agent offered on the call; then an `ended` event with
        `outcome` (one of CALL_OUTCOMES, "" unknown) is appended once per call, for reports.
        Returns the number of live calls ended; repeating it returns 0 and emits nothing.
        Cost: exactly 1 FCALL.
        """
        keys, args = self._release_request(call, agent, outcome)
        return int(self._fcall("disp_release", keys, args))

    def release_later(self, call: str, agent: str | None = "", outcome: str = "") -> None:
        """`release` without waiting for the reply (see the class docstring).
        Cost: 1 FCALL, no wait; StateUnavailable if not sent."""
        keys, args = self._release_request(call, agent, outcome)
        self._fcall_later("disp_release", keys, args, None)

    def _release_request(
        self, call: str, agent: str | None, outcome: str
    ) -> tuple[list[str], list[Any]]:
        validate_call_id(call)
        if agent:
            validate_id(agent, "agent id")
        if outcome and (outcome not in CALL_OUTCOMES or agent):
            raise ValueError(
                f"invalid outcome {outcome!r}: one of {sorted(CALL_OUTCOMES)}, whole calls only"
            )
        keys = [*self.keys.base, self.keys.call(call), self.keys.ended(call)]
        return keys, [call, agent or "", outcome]

    def set_state(
        self,
        agent: str,
        status: int,
        reason: str = "",
        audit: Audit | None = None,
        expected: Sequence[int] = (),
    ) -> int:
        """Log in (AVAILABLE), pause (PAUSED) or log out (LOGGED_OUT) `agent`.

        Returns the previous status; `UnknownAgent` if not configured. `audit` adds an audit
        event (and its actor to state_changed). With `expected`, the change applies only to
        an agent in one of those statuses (`StateChanged` otherwise, nothing changed: compare
        and set inside the FUNCTION). Cost: exactly 1 FCALL.
        """
        args = set_state_args(agent, status, reason, audit, expected)
        return int(self._fcall("disp_set_state", self.keys.base, args))

    def snapshot(self, gid: str) -> Snapshot:
        """The group's state for planning (after sweeping). Cost: exactly 1 FCALL."""
        keys = [*self.keys.base, self.keys.group(gid)]
        version, now_ms, rr, rows = self._fcall("disp_snapshot", keys, [gid])
        return Snapshot(int(version), int(now_ms), int(rr), [int(v) for v in rows])

    def sweep(self, limit: int = DEFAULT_SWEEP_LIMIT) -> int:
        """Expire up to `limit` overdue reservations; return how many. Cost: 1 FCALL."""
        return int(self._fcall("disp_sweep", self.keys.base, [_positive(limit)]))

    # -- queues ---------------------------------------------------------------------------

    def queue_join(
        self, call: str, gid: str, caller: str, priority: int, node: str, lease_ms: int
    ) -> QueueJoin:
        """Queue `call` in group `gid` (or put it back in its place after a ring round):
        see disp_queue_join. Cost: exactly 1 FCALL, O(callers waiting in the tenant)."""
        validate_call_id(call)
        validate_id(gid, "group id")
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
            raise ValueError(f"invalid priority {priority!r}: an int 0..9")
        args = [call, gid, caller, priority, _node_id(node), _positive(lease_ms)]
        status, position, waiting = self._fcall("disp_queue_join", self.keys.base, args)
        return QueueJoin(status.decode(), int(position), int(waiting))

    def queue_leave(self, call: str, reason: str) -> int | None:
        """`call` leaves its queue (LEAVE_REASONS); its wait in ms, None if it was not queued.
        Cost: exactly 1 FCALL."""
        validate_call_id(call)
        if reason not in LEAVE_REASONS:
            raise ValueError(f"invalid reason {reason!r}: one of {sorted(LEAVE_REASONS)}")
        wait = int(self._fcall("disp_queue_leave", self.keys.base, [call, reason]))
        return None if wait < 0 else wait

    def queue_keep(
        self,
        node: str,
        held: Sequence[str],
        lease_ms: int,
        stats: bool = False,
        announced: Sequence[tuple[str, int, int | None]] = (),
    ) -> QueueKeep:
        """A node's periodic keep of the calls it holds (disp_queue_keep): leases renewed,
        lapsed ones swept, doorbells rung, `announced` (call, position, wait s or None)
        recorded; returns each held call's state and, with `stats`, the wait estimate's
        inputs per group. Cost: exactly 1 FCALL, O(callers waiting + live calls) in Redis."""
        for call in held:
            validate_call_id(call)
        args: list[Any] = [_node_id(node), _positive(lease_ms), int(stats), len(held), *held]
        args.append(len(announced))
        for call, position, wait_s in announced:
            args += [validate_call_id(call), position, "" if wait_s is None else wait_s]
        now_ms, entries, groups = self._fcall("disp_queue_keep", self.keys.base, args)
        return QueueKeep(
            int(now_ms),
            tuple(
                QueueEntryState(c.decode(), s.decode(), int(p), int(w), int(j), g.decode())
                for c, s, p, w, j, g in entries
            ),
            tuple(
                QueueGroupStats(
                    gid.decode(),
                    tuple(
                        MemberLoad(
                            agent.decode(),
                            int(status),
                            int(max_calls),
                            int(wrapup),
                            int(until),
                            tuple(int(t) for t in starts),
                        )
                        for agent, status, max_calls, wrapup, until, starts in rows
                    ),
                    tuple(int(t) for t in times.decode().split(",") if t),
                )
                for gid, rows, times in groups
            ),
        )

    # -- admin API tokens and the tenant list ---------------------------------------------

    def set_token(self, token_id: str, record: bytes | None, audit: Audit | None = None) -> bool:
        """Store (record) or revoke (None) an API token; True if the hash changed.

        The record is opaque here (`dispatcher.api.auth` defines it). Cost: exactly 1 FCALL.
        """
        keys, args = token_set_request(self.keys, token_id, record, audit)
        return bool(self._fcall("disp_token_set", keys, args))

    def tokens(self) -> dict[str, bytes]:
        """Every API token record of the tenant by token id (1 round trip, HGETALL)."""
        with self._reachable():
            return parse_tokens_reply(self._redis.hgetall(self.keys.tokens))

    def registered_tenants(self) -> list[str]:
        """Ids of every tenant that has had a config put, sorted (1 round trip, SMEMBERS)."""
        with self._reachable():
            return parse_tenants_reply(self._redis.smembers(TENANTS_KEY))

    def put_names(self, domains: Sequence[str], dids: Sequence[str]) -> tuple[int, int]:
        """Make `domains` and `dids` the tenant's in the carrier-wide index (names it no
        longer lists are released); (added, released). NameTaken, changing nothing, when
        another tenant holds one. Cost: exactly 1 FCALL, O(the tenant's names) in Redis
        (the index keeps each tenant's names: no walk over every tenant's)."""
        keys, args = names_put_request(self.tenant, domains, dids)
        added, released = self._fcall("disp_names_put", keys, args)
        return int(added), int(released)

    def tenant_of(self, *, domain: str | None = None, did: str | None = None) -> str | None:
        """The tenant a SIP domain or a DID leads to, None when none (1 round trip, HGET)."""
        key, name = (DOMAINS_KEY, domain) if domain is not None else (DIDS_KEY, did)
        with self._reachable():
            owner = self._redis.hget(key, name or "")
        return owner.decode() if isinstance(owner, bytes) else None

    def names_version(self) -> int:
        """How often a domain or DID changed hands so far (disp_names_put counts): a cache
        of `tenant_of` answers is good while this stays (1 round trip, GET)."""
        with self._reachable():
            return int(self._redis.get(NAMES_VERSION_KEY) or 0)

    def credential_put(self, user: str, record: bytes | None, audit: Audit | None = None) -> bool:
        """Set (a `credentials.credential_record`) or remove (None) a SIP user's credentials;
        True if the hash changed. Cost: exactly 1 FCALL."""
        keys, args = credential_put_request(self.keys, user, record, audit)
        return bool(self._fcall("disp_credential_put", keys, args))

    def credential(self, user: str) -> StoredCredential | None:
        """A SIP user's stored HA1s, None when it has none (1 round trip, HGET)."""
        with self._reachable():
            return parse_credential(
                cast(bytes | None, self._redis.hget(self.keys.credentials, user))
            )

    def credential_users(self) -> list[str]:
        """The SIP users that have credentials, sorted (1 round trip, HKEYS)."""
        with self._reachable():
            users = cast(list[bytes], self._redis.hkeys(self.keys.credentials))
        return sorted(u.decode() for u in users)

    def delete_tenant(self, force: bool = False) -> int:
        """Delete every key of the tenant, its domains and DIDs from the index and it from the
        tenant list; the number of keys deleted. TenantBusy (nothing deleted) while it has
        live calls or ringing offers, unless `force`. Another tenant's keys are never
        touched: only keys with this tenant's hash tag are passed, and the library checks.
        Cost: SCAN over the tenant's slot, then 1 FCALL per TENANT_DELETE_BATCH keys."""
        if not force:  # a check alone first: a busy tenant keeps everything, names too
            self._fcall("disp_tenant_delete", list(self.keys.base), [0])
        self.put_names((), ())  # then no new call finds the tenant
        with self._reachable():
            pattern = tenant_key_pattern(self.keys)
            names = [k.decode() for k in self._redis.scan_iter(match=pattern, count=1000)]
        deleted = 0
        for start in range(0, len(names), TENANT_DELETE_BATCH):
            batch = names[start : start + TENANT_DELETE_BATCH]
            deleted += int(self._fcall("disp_tenant_delete", [*self.keys.base, *batch], [1]))
        with self._reachable():
            self._redis.srem(TENANTS_KEY, self.tenant)
        return deleted

    def stale_calls(self, max_age_ms: int) -> list[str]:
        """The calls with a live entry older than `max_age_ms` by Redis' clock: no node
        ended them within the dialog timeout (1 round trip, MULTI/EXEC of TIME and
        HGETALL; O(live calls))."""
        with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            queue_time(pipe, self.keys)
            pipe.hgetall(self.keys.live)
            now, entries = pipe.execute()
        now_ms = time_ms(now)
        starts = _call_starts(cast(dict[bytes, bytes], entries))
        return sorted(call for call, start in starts.items() if now_ms - start > max_age_ms)

    def stale_calls_of(self, tenants: Sequence[str], max_age_ms: int) -> dict[str, list[str]]:
        """`stale_calls` of each of `tenants` that has any, read together: Redis' TIME (on
        this store's slot) and every tenant's live calls in one pipeline - 1 round trip (one
        per Cluster node), O(their live calls); a sixth of the client CPU of a
        `stale_calls` per tenant. The calls of a tenant read after TIME are judged that much
        younger: microseconds, against a max age of hours."""
        with self._reachable(), self._redis.pipeline(transaction=False) as pipe:
            queue_time(pipe, self.keys)
            for tenant in tenants:
                pipe.hgetall(TenantKeys(tenant).live)
            now, *lives = pipe.execute()
        now_ms = time_ms(now)
        out: dict[str, list[str]] = {}
        for tenant, entries in zip(tenants, lives, strict=True):
            starts = _call_starts(cast(dict[bytes, bytes], entries))
            stale = sorted(call for call, start in starts.items() if now_ms - start > max_age_ms)
            if stale:
                out[tenant] = stale
        return out

    def node_beat(self, node: str, dead_after_ms: int, forget: str = "") -> list[str]:
        """Beat `node`'s heart; the nodes silent for `dead_after_ms` (Redis' clock), after
        removing `forget` (a dead node whose calls are released). Cost: exactly 1 FCALL."""
        reply = self._fcall("disp_node_beat", [NODES_KEY], [node, dead_after_ms, forget])
        return [n.decode() for n in reply]

    def calls_of_node(self, node: str, answered_before_ms: int | None = None) -> list[str]:
        """The tenant's answered calls `node` holds; with `answered_before_ms`, only those
        answered before then (Redis' ms): a restarted node's calls of before its start, not
        the ones it answered since. 1 round trip (MULTI/EXEC of two HGETALLs)."""
        with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.lnode)
            pipe.hgetall(self.keys.live)
            holders, live = pipe.execute()
        started = _call_starts(cast(dict[bytes, bytes], live))
        out = []
        for raw_call, holder in cast(dict[bytes, bytes], holders).items():
            call = raw_call.decode()
            if holder.decode() != node:
                continue
            if answered_before_ms is None or started.get(call, 0) < answered_before_ms:
                out.append(call)
        return sorted(out)

    def registration(self, agent: str, expires_ms: int) -> bool:
        """Record when the agent's newest phone registration lapses (epoch ms; 0: none
        left); True when it changed between registered and not. Cost: exactly 1 FCALL."""
        validate_id(agent, "agent id")
        keys = [*self.keys.base, self.keys.registrations]
        return bool(
            self._fcall("disp_registration", keys, [agent, _non_negative(expires_ms, "expires_ms")])
        )

    def registrations(self) -> dict[str, int]:
        """Every agent's registration expiry (epoch ms) as recorded (1 round trip, HGETALL);
        one at or before now is not registered."""
        with self._reachable():
            raw = cast(dict[bytes, bytes], self._redis.hgetall(self.keys.registrations))
        return {k.decode(): int(v) for k, v in raw.items()}

    # -- voicemail and uploaded prompts (state.messages) ----------------------------------

    def voicemail_put(self, message: Voicemail) -> bool:
        """Store a recorded message's metadata; False if its id was stored already.
        Cost: exactly 1 FCALL."""
        keys, args = voicemail_put_request(self.keys, message)
        return bool(self._fcall("disp_voicemail_put", keys, args))

    def voicemail(self, message_id: str) -> Voicemail | None:
        """One message, None if there is none (1 round trip, HGET)."""
        validate_id(message_id, "message id")
        with self._reachable():
            return parse_voicemail(
                cast(bytes | None, self._redis.hget(self.keys.voicemail, message_id))
            )

    def voicemails(self) -> list[Voicemail]:
        """Every message of the tenant, newest first (1 round trip, MULTI/EXEC)."""
        with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            pipe.zrevrange(self.keys.voicemail_index, 0, -1)
            pipe.hgetall(self.keys.voicemail)
            ids, records = pipe.execute()
        return parse_voicemails([records.get(i) for i in ids])

    def voicemail_update(
        self, message_id: str, record: Voicemail | None, audit: Audit | None = None
    ) -> Voicemail | None:
        """Replace a message's record (marked heard or new), or delete it (None); the
        record before, None if there was no such message. Cost: exactly 1 FCALL."""
        keys, args = voicemail_update_request(self.keys, message_id, record, audit)
        return parse_voicemail(self._fcall("disp_voicemail_update", keys, args))

    def voicemail_expire(self, before_ms: int) -> list[Voicemail]:
        """Delete the messages recorded before `before_ms` (one batch); their records, so
        the caller deletes their files. Cost: exactly 1 FCALL."""
        keys, args = voicemail_expire_request(self.keys, before_ms)
        return parse_voicemails(self._fcall("disp_voicemail_expire", keys, args))

    def prompt_put(
        self, prompt_id: str, audio: bytes | None, audit: Audit | None = None
    ) -> str | None:
        """Store an uploaded prompt's audio (None deletes it); the previous digest, None if
        there was none. Cost: exactly 1 FCALL."""
        keys, args = prompt_put_request(self.keys, prompt_id, audio, audit)
        previous = self._fcall("disp_prompt_put", keys, args)
        return previous.decode() if previous else None

    def prompt_digests(self) -> dict[str, str]:
        """Every uploaded prompt's id and digest (1 round trip, HGETALL)."""
        with self._reachable():
            raw = cast(dict[bytes, bytes], self._redis.hgetall(self.keys.prompts))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def prompt_audio(self, digest: str) -> bytes | None:
        """The audio stored under a digest, None if gone (1 round trip, HGET)."""
        with self._reachable():
            return cast(bytes | None, self._redis.hget(self.keys.prompt_data, digest))

    # -- reads for monitoring and tests ---------------------------------------------------

    def live(self) -> LiveState:
        """Config and live counters of every agent and group at one instant.

        1 round trip (MULTI/EXEC), O(agents + live calls) in Redis.
        """
        with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            queue_live_reads(pipe, self.keys)
            return parse_live(pipe.execute())

    def board(self) -> BoardState:
        """`live` with the queued callers per group and the agents' registrations, at one
        instant (1 round trip, MULTI/EXEC)."""
        with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            queue_board_reads(pipe, self.keys)
            return parse_board(pipe.execute())

    def agent_counters(self, agent: str) -> dict[str, int | str | None]:
        """All columns of `agent` read atomically (1 round trip, MULTI/EXEC).

        Ints for the numeric columns, str for reason; None where the column has no entry.
        """
        validate_id(agent, "agent id")
        with self._reachable(), self._redis.pipeline(transaction=True) as pipe:
            for key in self.keys.agent.values():
                pipe.hget(key, agent)
            values = pipe.execute()
        counters: dict[str, int | str | None] = {}
        for column, value in zip(self.keys.agent, values, strict=True):
            if value is None:
                counters[column] = None
            elif column == "reason":
                counters[column] = value.decode()
            else:
                counters[column] = int(value)
        return counters

    def events(self, count: int = 100) -> list[dict[str, str]]:
        """The last `count` events, oldest first; each a dict of its fields plus "id".

        1 round trip (XREVRANGE).
        """
        with self._reachable():
            return parse_events_reply(
                self._redis.xrevrange(self.keys.events, count=_positive(count))
            )


def _positive(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected an int >= 1, got {value!r}")
    return value


def _non_negative(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid {field} {value!r}: must be an int >= 0")
    return value


def _config_args(
    agents: Sequence[AgentLimits],
    groups: Sequence[GroupRecord],
    agent_ids: set[str],
    events_maxlen: int,
) -> list[Any]:
    """ARGV of disp_config_put after expected_version and doc (see library.lua)."""
    if len(agent_ids) != len(agents):
        raise ValueError("duplicate agent id in config")
    args: list[Any] = [_positive(events_maxlen), len(agents), len(groups)]
    for a in agents:
        validate_id(a.id, "agent id")
        if a.status not in (AVAILABLE, PAUSED, LOGGED_OUT):
            raise ValueError(f"invalid status {a.status!r} of agent {a.id}: 0, 1 or 2")
        args += [
            a.id,
            _non_negative(a.max_calls, f"max_calls of agent {a.id}"),
            _non_negative(a.wrapup_s, f"wrapup_s of agent {a.id}"),
            _non_negative(a.auto_pause_after, f"auto_pause_after of agent {a.id}"),
            a.status,
            a.reason,
        ]
    seen_groups: set[str] = set()
    for gid, members, *queue in groups:
        validate_id(gid, "group id")
        if gid in seen_groups:
            raise ValueError(f"duplicate group id {gid!r} in config")
        seen_groups.add(gid)
        if len(set(members)) != len(members):
            raise ValueError(f"group {gid}: a member is listed twice")
        for member in members:
            if member not in agent_ids:
                raise ValueError(f"group {gid}: member {member!r} is not a configured agent")
        args += [gid, ",".join(members), _non_negative(queue[0] if queue else 0, "queue max")]
    return args


def audit_args(audit: Audit | None) -> list[bytes]:
    """The optional trailing audit ARGV: [] or [the audit as JSON]."""
    if not audit:
        return []
    return [orjson.dumps({name: str(value) for name, value in audit.items()})]


def config_put_request(
    keys: TenantKeys,
    doc_json: bytes,
    agents: Sequence[AgentLimits],
    groups: Sequence[GroupRecord],
    *,
    expected_version: int,
    old_groups: Sequence[str],
    events_maxlen: int = DEFAULT_EVENTS_MAXLEN,
    audit: Audit | None = None,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of disp_config_put. `old_groups`: the group ids of the config at
    `expected_version`, whose keys are passed so the groups it drops can be deleted."""
    agent_ids = {a.id for a in agents}
    args = _config_args(agents, groups, agent_ids, events_maxlen)
    new_gids = {record[0]: keys.group(record[0]) for record in groups}
    dropped = [keys.group(gid) for gid in old_groups if gid not in new_gids]
    call_keys = [*keys.base, *new_gids.values(), *dropped]
    expected = _non_negative(expected_version, "expected_version")
    return call_keys, [expected, doc_json, *args, *audit_args(audit)]


def set_state_args(
    agent: str, status: int, reason: str, audit: Audit | None, expected: Sequence[int] = ()
) -> list[Any]:
    """ARGV of disp_set_state (its KEYS are the common ones)."""
    validate_id(agent, "agent id")
    for value in (status, *expected):
        if value not in (AVAILABLE, PAUSED, LOGGED_OUT):
            raise ValueError(f"invalid status {value!r}: 0, 1 or 2")
    if not expected:
        return [agent, status, reason, *audit_args(audit)]
    return [agent, status, reason, *(audit_args(audit) or [b""]), "".join(map(str, expected))]


def _call_starts(live: Mapping[bytes, bytes]) -> dict[str, int]:
    """Each call's earliest live leg start (ms) from `{t:T}:live` (field <call>\\x1f<agent>,
    value <gid>\\x1f<start ms>)."""
    starts: dict[str, int] = {}
    for field, value in live.items():
        call = field.decode().rpartition(FIELD_SEPARATOR)[0]
        start = value.decode().rpartition(FIELD_SEPARATOR)[2]
        if start.isdigit():
            starts[call] = min(starts.get(call, int(start)), int(start))
    return starts


TENANT_DELETE_BATCH = 1000


def tenant_key_pattern(keys: TenantKeys) -> str:
    """SCAN MATCH pattern of every key of the tenant (the hash tag's braces escaped)."""
    return keys.prefix.replace("{", "\\{").replace("}", "\\}") + ":*"


def credential_put_request(
    keys: TenantKeys, user: str, record: bytes | None, audit: Audit | None
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of disp_credential_put; `record` None removes."""
    validate_user(user)
    return [*keys.base, keys.credentials], [user, record or b"", *audit_args(audit)]


def names_put_request(
    tenant: str, domains: Sequence[str], dids: Sequence[str]
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of disp_names_put (names are validated by the config model)."""
    validate_id(tenant, "tenant")
    for name in (*domains, *dids):
        if not name or "," in name:
            raise ValueError(f"invalid name {name!r}: empty or with a comma")
    keys = [DOMAINS_KEY, DIDS_KEY, TENANT_NAMES_KEY, NAMES_VERSION_KEY]
    return keys, [tenant, ",".join(domains), ",".join(dids)]


def token_set_request(
    keys: TenantKeys, token_id: str, record: bytes | None, audit: Audit | None
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of disp_token_set; `record` None revokes."""
    validate_id(token_id, "token id")
    return [*keys.base, keys.tokens], [token_id, record or b"", *audit_args(audit)]


def is_missing_function(exc: redis.ResponseError) -> bool:
    """True when Redis answered that a function is missing (the library must be loaded)."""
    return _MISSING_FUNCTION in str(exc)


def parse_config_reply(reply: Any) -> tuple[int, bytes | None]:
    """(version, doc) from HMGET of the config's version and doc; (0, None) when none."""
    version, doc = cast("list[bytes | None]", reply)
    return int(version or 0), doc


def parse_tokens_reply(reply: Any) -> dict[str, bytes]:
    """Token records by token id from HGETALL of the tokens hash."""
    records = cast("dict[bytes, bytes]", reply)
    return {token_id.decode(): record for token_id, record in records.items()}


def parse_tenants_reply(reply: Any) -> list[str]:
    """Sorted tenant ids from SMEMBERS of the tenant list."""
    return sorted(member.decode() for member in cast("set[bytes]", reply))


def parse_events_reply(reply: Any) -> list[dict[str, str]]:
    """Events from XREVRANGE (newest first), oldest first; each its fields plus "id"."""
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", reply)
    out = []
    for entry_id, fields in reversed(entries):
        event = {k.decode(): v.decode() for k, v in fields.items()}
        event["id"] = entry_id.decode()
        out.append(event)
    return out


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A deferred FCALL whose reply is due: the function, for reports, its callback, and
    its KEYS and ARGV (sent again when a Cluster redirects it)."""

    function: str
    done: Callable[[Any], None] | None
    keys: Sequence[str]
    args: Sequence[Any]


def _log_deferred_error(function: str, exc: Exception) -> None:
    logging.getLogger(__name__).error("deferred %s failed: %s", function, exc)


# Agent ids a claim has validated (`_check_agent_ids`); emptied when it reaches the bound.
_VALID_AGENT_IDS: set[str] = set()
_VALID_AGENT_IDS_MAX = 65_536


def _check_agent_ids(candidates: Sequence[str], withdraw: Sequence[str]) -> None:
    """`validate_id` for the agent ids of a claim (the '' separating candidate waves
    aside), remembered: a claim carries every member of a least-busy group, the same ids
    call after call, and one set lookup in C checks them all. Only valid strings are
    remembered: anything else gets validate_id's own error."""
    try:
        ids = {*candidates}
        ids.discard("")
        ids.update(withdraw)  # no separators here: '' is refused
    except TypeError:  # an unhashable id: validate_id names it
        for agent in (*candidates, *withdraw):
            if agent != "":
                validate_id(agent, "agent id")
        raise
    if ids <= _VALID_AGENT_IDS:
        return
    for agent in ids - _VALID_AGENT_IDS:
        validate_id(agent, "agent id")
    if len(_VALID_AGENT_IDS) + len(ids) > _VALID_AGENT_IDS_MAX:
        _VALID_AGENT_IDS.clear()
    _VALID_AGENT_IDS.update(ids)


_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def _node_id(node: str) -> str:
    """A node id (its doorbell channel's name): letters, digits and _ . : -, 1..128 chars."""
    if not isinstance(node, str) or _NODE_ID.fullmatch(node) is None:
        raise ValueError(f"invalid node id {node!r}: must match ^{_NODE_ID.pattern}$")
    return node


def _claim_pick(pick: str) -> str:
    if pick not in CLAIM_PICKS:
        raise ValueError(f"pick must be one of {sorted(CLAIM_PICKS)}, got {pick!r}")
    return pick


def _closed_while_idle(conn: redis.connection.ConnectionInterface) -> bool:
    """Whether an idle connection is readable (EOF, or stray data): unusable."""
    try:
        return bool(conn.can_read())
    except redis.ConnectionError:  # the parser reports the EOF it read
        return True


class translate_errors:  # named as the generator it replaced; used like contextlib's
    """`with translate_errors(url, socket_timeout, connect_timeout):` turns redis-py's errors
    (sync or asyncio) inside into `StateUnavailable` / `StateError`s.

    A class, not a @contextmanager generator: a SIP call enters it three times, and a
    generator-based one cost about 2 µs of the worker's CPU each time."""

    __slots__ = ("connect_timeout", "socket_timeout", "url")

    def __init__(self, url: str, socket_timeout: float, connect_timeout: float) -> None:
        self.url = url
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, _UNREACHABLE):
            raise unavailable(self.url, self.socket_timeout, self.connect_timeout, exc) from exc
        if isinstance(exc, redis.ResponseError):
            _raise_library_error(exc)


def unavailable(
    url: str, socket_timeout: float, connect_timeout: float, reason: object
) -> StateUnavailable:
    """The `StateUnavailable` for Redis at `url` failing with `reason` (password hidden)."""
    shown = redacted(url)
    return StateUnavailable(
        f"Redis at {shown} unavailable (socket timeout {socket_timeout}s, "
        f"connect timeout {connect_timeout}s): {reason}",
        url=shown,
        timeout=max(socket_timeout, connect_timeout),
    )


def _raise_library_error(exc: redis.ResponseError) -> NoReturn:
    message = str(exc)
    cls = LIBRARY_ERRORS.get(message.split(" ", 1)[0], StateError)
    if cls is not StateError:
        # Redis 7.0 appends the Lua location ("script: ..., on @user_function:N.") to errors
        # raised in a function; the code and message are what callers need.
        message = message.split(" script: ", 1)[0]
    raise cls(message) from exc
