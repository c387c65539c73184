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
    pipe.time()
    pipe.hmget(keys.config, "version", "doc")
    for column in _COLUMNS:
        pipe.hgetall(keys.agent[column])
    pipe.hvals(keys.live)


def queue_agent_reads(pipe: Any, keys: TenantKeys, agent: str) -> None:
    """Queue the reads of `parse_agent` for one agent on a transaction pipeline.

    Cost when executed: 1 round trip, O(1) in Redis.
    """
    pipe.time()
    for column in _COLUMNS:
        pipe.hget(keys.agent[column], agent)


def parse_agent(replies: Sequence[Any]) -> tuple[int, AgentLive | None]:
    """(Redis time in ms, the agent's counters or None when it is not configured) from the
    replies of `queue_agent_reads`."""
    (seconds, micros), *values = replies
    now_ms = int(seconds) * 1000 + int(micros) // 1000
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
    (seconds, micros), (version, doc), *columns, live_calls = replies
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
        now_ms=int(seconds) * 1000 + int(micros) // 1000,
        agents=agents,
        calls=calls,
        oldest_call_ms=oldest,
    )
