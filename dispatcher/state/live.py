"""A tenant's live state, read in one atomic round trip: what `dispatcher status`, the admin
API's `/live` and the metrics scrape show.

The reads are queued on a MULTI/EXEC pipeline by `queue_live_reads`, which works on redis-py's
sync and asyncio pipelines alike, and the replies are turned into a `LiveState` by
`parse_live`; the sync `StateStore.live` and the API's async store share both, so they read
exactly the same keys the same way. Reading never writes: expired reservations still count
as ringing until the next claim or sweep removes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from dispatcher.core import AVAILABLE, LOGGED_OUT, PAUSED

from .keys import FIELD_SEPARATOR, TenantKeys

StatusName = Literal["available", "paused", "logged_out"]
STATUS_NAMES: dict[int, StatusName] = {
    AVAILABLE: "available",
    PAUSED: "paused",
    LOGGED_OUT: "logged_out",
}
# What an agent is doing, most telling first: an agent on a call is shown on_call even when
# paused (pausing stops new offers, not the call in progress).
Activity = Literal["on_call", "ringing", "paused", "logged_out", "wrapup", "available"]
ACTIVITIES: tuple[Activity, ...] = get_args(Activity)
_COLUMNS = ("status", "reason", "live", "resv", "max", "wrapuntil", "idle", "missed")
# Redis' TIME inside the transaction, as a script that names the tenant's config key: a
# Cluster pipeline refuses TIME (it has no key, so no slot), a script with a key runs on the
# tenant's primary with the reads. no-writes: it runs on a full (OOM) Redis too.
_TIME_SCRIPT = "#!lua flags=no-writes\nreturn redis.call('TIME')"


def queue_time(pipe: Any, keys: TenantKeys) -> None:
    """Queue Redis' TIME on a transaction pipeline, on the tenant's node in a Cluster as
    well; its reply is [seconds, microseconds] like TIME's (`time_ms`)."""
    pipe.execute_command("EVAL", _TIME_SCRIPT, 1, keys.config)  # a Cluster pipeline has no eval()


def time_ms(reply: Sequence[Any]) -> int:
    """Milliseconds from the reply of `queue_time`."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


@dataclass(frozen=True, slots=True)
class AgentLive:
    """One configured agent's counters as Redis holds them."""

    status: int
    reason: str
    live: int
    resv: int
    max_calls: int
    wrapup_until_ms: int
    idle_since_ms: int
    missed: int

    @property
    def status_name(self) -> StatusName:
        """available, paused or logged_out."""
        return STATUS_NAMES.get(self.status, "logged_out")

    def activity(self, now_ms: int) -> Activity:
        """One of ACTIVITIES: on_call, ringing, paused, logged_out, wrapup, available."""
        if self.live > 0:
            return "on_call"
        if self.resv > 0:
            return "ringing"
        if self.status != AVAILABLE:
            return self.status_name
        return "wrapup" if now_ms < self.wrapup_until_ms else "available"


@dataclass(frozen=True, slots=True)
class LiveState:
    """A tenant's config version and document with the live counters of the same instant.

    `agents`: the configured agents (an agent removed while on a call drains unseen);
    `calls` and `oldest_call_ms`: live calls per group and the start of the longest one.
    """

    version: int
    doc: bytes | None
    now_ms: int
    agents: dict[str, AgentLive]
    calls: dict[str, int]
    oldest_call_ms: dict[str, int]


def queue_live_reads(pipe: Any, keys: TenantKeys) -> None:
    """Queue the reads of `parse_live` on a transaction pipeline (sync or asyncio).

    Cost when executed: 1 round trip, O(agents + live calls) in Redis.
    """
    queue_time(pipe, keys)
    pipe.hmget(keys.config, "version", "doc")
    for column in _COLUMNS:
        pipe.hgetall(keys.agent[column])
    pipe.hvals(keys.live)


def queue_agent_reads(pipe: Any, keys: TenantKeys, agent: str) -> None:
    """Queue the reads of `parse_agent` for one agent on a transaction pipeline.

    Cost when executed: 1 round trip, O(1) in Redis.
    """
    queue_time(pipe, keys)
    for column in _COLUMNS:
        pipe.hget(keys.agent[column], agent)


def parse_agent(replies: Sequence[Any]) -> tuple[int, AgentLive | None]:
    """(Redis time in ms, the agent's counters or None when it is not configured) from the
    replies of `queue_agent_reads`."""
    now, *values = replies
    now_ms = time_ms(now)
    column = dict(zip(_COLUMNS, values, strict=True))
    if column["max"] is None:
        return now_ms, None
    return now_ms, AgentLive(
        status=int(column["status"] if column["status"] is not None else LOGGED_OUT),
        reason=(column["reason"] or b"").decode(),
        live=int(column["live"] or 0),
        resv=int(column["resv"] or 0),
        max_calls=int(column["max"]),
        wrapup_until_ms=int(column["wrapuntil"] or 0),
        idle_since_ms=int(column["idle"] or 0),
        missed=int(column["missed"] or 0),
    )


def parse_live(replies: Sequence[Any]) -> LiveState:
    """The `LiveState` from the replies of the reads `queue_live_reads` queued, in order."""
    now, (version, doc), *columns, live_calls = replies
    by_column = {
        column: {field.decode(): value for field, value in reply.items()}
        for column, reply in zip(_COLUMNS, columns, strict=True)
    }

    def number(column: str, agent: str) -> int:
        return int(by_column[column].get(agent) or 0)

    agents = {
        agent: AgentLive(
            status=int(by_column["status"].get(agent, LOGGED_OUT)),
            reason=(by_column["reason"].get(agent) or b"").decode(),
            live=number("live", agent),
            resv=number("resv", agent),
            max_calls=number("max", agent),
            wrapup_until_ms=number("wrapuntil", agent),
            idle_since_ms=number("idle", agent),
            missed=number("missed", agent),
        )
        for agent in sorted(by_column["max"])
    }
    calls: dict[str, int] = {}
    oldest: dict[str, int] = {}
    for value in live_calls:
        group, _, start = value.decode().partition(FIELD_SEPARATOR)
        calls[group] = calls.get(group, 0) + 1
        started = int(start or 0)
        oldest[group] = min(oldest.get(group, started), started)
    return LiveState(
        version=int(version or 0),
        doc=doc,
        now_ms=time_ms(now),
        agents=agents,
        calls=calls,
        oldest_call_ms=oldest,
    )


# --- calls ringing and in progress ---------------------------------------------------------

# How many of the newest events the calls read looks through for a call's caller, group and
# arrival: the reservation zset and the live hash do not hold them. A call whose events are
# older than that (a long call on a busy tenant) still shows, with caller unknown.
CALL_EVENTS_WINDOW = 1000
CallState = Literal["ringing", "in_progress"]
LegState = Literal["ringing", "talking"]


@dataclass(frozen=True, slots=True)
class CallLeg:
    """One agent of a call: ringing (a reservation, `deadline_ms` its end) or talking (a live
    call). `since_ms`: when the offer was made (ringing; None when its event is out of the
    window) or answered (talking)."""

    agent: str
    state: LegState
    since_ms: int | None
    deadline_ms: int | None


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call that rings agents or is in progress, as the reservation zset and the live hash
    hold it at one instant, with what the recent events tell about it.

    `state`: in_progress once an agent talks on it, else ringing. `group`: the live call's
    group, else the group of its newest offer. `started_ms`: its arrival at the group, else
    its first offer, else its answer (None only for a ringing call whose events are out of the
    window). `answered_ms`: the earliest talking leg's start.
    """

    call: str
    state: CallState
    group: str | None
    caller: str | None
    started_ms: int | None
    answered_ms: int | None
    legs: tuple[CallLeg, ...]


@dataclass(frozen=True, slots=True)
class CallsState:
    """The calls of a tenant at one instant (`now_ms`, Redis time), oldest first, with the
    config version of that instant (0: the tenant has no config)."""

    version: int
    now_ms: int
    calls: tuple[LiveCall, ...]


def queue_calls_reads(pipe: Any, keys: TenantKeys, window: int = CALL_EVENTS_WINDOW) -> None:
    """Queue the reads of `parse_calls` on a transaction pipeline (sync or asyncio).

    Cost when executed: 1 round trip, O(reservations + live calls + window) in Redis.
    """
    queue_time(pipe, keys)
    pipe.hget(keys.config, "version")
    pipe.zrange(keys.resv, 0, -1, withscores=True)
    pipe.hgetall(keys.live)
    pipe.xrevrange(keys.events, count=window)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass(slots=True)
class _Seen:
    """What the events in the window say about one call."""

    caller: str = ""
    group: str = ""
    arrived_ms: int | None = None
    first_offer_ms: int | None = None
    offered_ms: dict[str, int] | None = None


def _events_about(
    entries: Sequence[tuple[Any, dict[Any, Any]]], wanted: set[str]
) -> dict[str, _Seen]:
    """Caller, group, arrival and offer times of the calls in `wanted` from the newest-first
    stream entries. O(len(entries))."""
    seen: dict[str, _Seen] = {}
    for _, raw in reversed(entries):  # oldest first: the newest offer's group wins
        fields = {_text(k): v for k, v in raw.items()}
        call = _text(fields.get("call"))
        kind = _text(fields.get("type"))
        if call not in wanted or kind not in ("arrived", "offered", "answered"):
            continue
        info = seen.setdefault(call, _Seen())
        caller, group = _text(fields.get("caller")), _text(fields.get("group"))
        info.caller = caller or info.caller
        info.group = group or info.group
        try:
            ts: int | None = int(_text(fields.get("ts")))
        except ValueError:
            ts = None
        if kind == "arrived" and info.arrived_ms is None:
            info.arrived_ms = ts
        elif kind == "offered" and ts is not None:
            if info.first_offer_ms is None:
                info.first_offer_ms = ts
            if info.offered_ms is None:
                info.offered_ms = {}
            info.offered_ms[_text(fields.get("agent"))] = ts
    return seen


def parse_calls(replies: Sequence[Any]) -> CallsState:
    """The `CallsState` from the replies of the reads `queue_calls_reads` queued, in order."""
    now, version, reservations, live, entries = replies
    now_ms = time_ms(now)
    ringing: dict[str, list[tuple[str, int]]] = {}
    for member, deadline in reservations:
        call, _, agent = _text(member).partition(FIELD_SEPARATOR)
        ringing.setdefault(call, []).append((agent, int(deadline)))
    talking: dict[str, list[tuple[str, str, int]]] = {}
    for field, value in live.items():
        call, _, agent = _text(field).partition(FIELD_SEPARATOR)
        group, _, start = _text(value).partition(FIELD_SEPARATOR)
        talking.setdefault(call, []).append((agent, group, int(start or 0)))
    seen = _events_about(entries, set(ringing) | set(talking))

    calls = []
    for call in set(ringing) | set(talking):
        info = seen.get(call, _Seen())
        offered = info.offered_ms or {}
        legs = [
            CallLeg(agent, "talking", start, None)
            for agent, _, start in sorted(talking.get(call, ()), key=lambda t: (t[2], t[0]))
        ] + [
            CallLeg(agent, "ringing", offered.get(agent), deadline)
            for agent, deadline in sorted(ringing.get(call, ()), key=lambda r: (r[1], r[0]))
        ]
        live_legs = talking.get(call, [])
        answered_ms = min((start for _, _, start in live_legs), default=None)
        group = live_legs[0][1] if live_legs else info.group
        started = info.arrived_ms if info.arrived_ms is not None else info.first_offer_ms
        calls.append(
            LiveCall(
                call=call,
                state="in_progress" if live_legs else "ringing",
                group=group or None,
                caller=info.caller or None,
                started_ms=started if started is not None else answered_ms,
                answered_ms=answered_ms,
                legs=tuple(legs),
            )
        )
    calls.sort(key=lambda c: (c.started_ms if c.started_ms is not None else now_ms, c.call))
    return CallsState(version=int(version or 0), now_ms=now_ms, calls=tuple(calls))


# --- the queues and the registrations, for the boards (API, CLI) ---------------------------

# library.lua's queue score: (9 - priority) * PRIORITY_SPAN + joined_ms.
PRIORITY_SPAN = 10**13
_EXTRA_READS = 3  # the replies queue_board_reads adds after the live reads


@dataclass(frozen=True, slots=True)
class QueuedEntry:
    """One caller waiting in a group's queue, as `{t:T}:q` and `{t:T}:qe` hold it.

    `position`: 1 for the next caller to be offered (priority first, then arrival);
    `state`: waiting, notified (its node was told an agent is free) or ringing.
    """

    call: str
    group: str
    caller: str
    priority: int
    joined_ms: int
    position: int
    node: str
    state: str


@dataclass(frozen=True, slots=True)
class BoardState:
    """`LiveState` with the queued callers per group (queue order) and every agent's
    registration expiry (epoch ms), all of one instant."""

    live: LiveState
    queues: dict[str, tuple[QueuedEntry, ...]]
    registrations: dict[str, int]

    def registered(self, agent: str) -> bool:
        """Whether the agent has a phone registered now (by Redis' clock)."""
        return self.registrations.get(agent, 0) > self.live.now_ms


def queue_board_reads(pipe: Any, keys: TenantKeys) -> None:
    """Queue the live reads and the extra reads of `parse_board` on a transaction pipeline
    (sync or asyncio). Cost when executed: 1 round trip, O(agents + live calls + queued
    callers) in Redis."""
    queue_live_reads(pipe, keys)
    pipe.zrange(keys.queue["q"], 0, -1, withscores=True)
    pipe.hgetall(keys.queue["qe"])
    pipe.hgetall(keys.registrations)


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def parse_queues(
    members: Sequence[tuple[bytes, float]], entries: dict[bytes, bytes]
) -> dict[str, tuple[QueuedEntry, ...]]:
    """Queued callers per group in queue order, from ZRANGE WITHSCORES of `{t:T}:q` and
    HGETALL of `{t:T}:qe`. O(queued callers).

    Priority and arrival come from the zset score, which orders the queue; the entry adds
    caller, node and state (encoded by library.lua's entry_put: gid, caller, priority,
    joined, node, state, until, rounds joined by \\x1f; a caller may hold any character, so
    it is what lies between the first field and the last six).
    """
    by_call = {_text(call): _text(raw) for call, raw in entries.items()}
    queues: dict[str, list[QueuedEntry]] = {}
    for member, score in members:
        group, _, call = _text(member).partition(FIELD_SEPARATOR)
        rank, joined = divmod(int(score), PRIORITY_SPAN)
        caller, node, state = "", "", "waiting"
        raw = by_call.get(call)
        if raw is not None:
            _, _, rest = raw.partition(FIELD_SEPARATOR)
            fields = rest.rsplit(FIELD_SEPARATOR, 6)
            if len(fields) == 7:
                caller, _, _, node, state, _, _ = fields
        waiting = queues.setdefault(group, [])
        waiting.append(
            QueuedEntry(
                call=call,
                group=group,
                caller=caller,
                priority=9 - rank,
                joined_ms=joined,
                position=len(waiting) + 1,
                node=node,
                state=state or "waiting",
            )
        )
    return {group: tuple(waiting) for group, waiting in queues.items()}


def parse_board(replies: Sequence[Any]) -> BoardState:
    """The `BoardState` from the replies of the reads `queue_board_reads` queued, in order."""
    members, entries, registrations = replies[-_EXTRA_READS:]
    return BoardState(
        live=parse_live(replies[:-_EXTRA_READS]),
        queues=parse_queues(members, entries),
        registrations={
            _text(agent): _int(_text(until), 0) for agent, until in registrations.items()
        },
    )
