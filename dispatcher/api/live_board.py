"""The live view the dashboard and the metrics scrape show: `state.live`'s agents and groups
plus every queued caller and the agents' phone registrations, read in the same MULTI/EXEC.

The extra reads (the queue zset and entries of `TenantKeys.queue`, the registrations hash)
are queued after `queue_live_reads` on the same transaction pipeline, so queue positions,
waits and "not registered" belong to the same instant as the counters. Like `state.live`,
reading never writes: a caller whose node's lease lapsed still shows until the next
queue-aware call sweeps it (event dequeued, reason lost).

Imports config/, reports/ and state/.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.config.model import Tenant
from dispatcher.reports.live_summary import LiveAgent, LiveGroup, LiveView, summarize
from dispatcher.state.live import (
    BoardState,
    QueuedEntry,
)

# --- the view --------------------------------------------------------------------------------


class QueuedCaller(BaseModel):
    """A caller waiting in a group's queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    call: str = Field(description="SIP Call-ID")
    caller: str = Field(description="From user ('' when unknown)")
    position: int = Field(description="1: offered the next free agent")
    priority: int = Field(description="0..9, higher waits ahead")
    joined_ms: int = Field(description="when it joined the queue (Redis time)")
    wait_s: int = Field(description="waited so far, at now_ms")
    state: str = Field(description="waiting, notified (an agent is free for it) or ringing")


class BoardAgent(LiveAgent):
    registered: bool | None = Field(
        description="whether a phone of its aor is registered; null when it has static URIs "
        "(reached whether or not a phone is registered)"
    )


class BoardGroup(LiveGroup):
    queue_length: int = Field(description="callers waiting in its queue")
    longest_wait_s: int = Field(description="wait so far of its longest-waiting caller")
    queued: list[QueuedCaller] = Field(description="its waiting callers in queue order")


class LiveBoard(BaseModel):
    """Every agent and group with live counters, queued callers and phone registrations,
    read at one instant (`now_ms`, Redis time)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    version: int
    now_ms: int
    agents: list[BoardAgent]
    groups: list[BoardGroup]


def _queued(entry: QueuedEntry, now_ms: int) -> QueuedCaller:
    return QueuedCaller(
        call=entry.call,
        caller=entry.caller,
        position=entry.position,
        priority=entry.priority,
        joined_ms=entry.joined_ms,
        wait_s=max(0, now_ms - entry.joined_ms) // 1000,
        state=entry.state,
    )


def board_view(tenant_id: str, state: BoardState, tenant: Tenant) -> LiveBoard:
    """The view of `state`; `tenant` is the config of `state.live.doc`. O(agents + members +
    queued callers)."""
    view: LiveView = summarize(tenant_id, state.live, tenant)
    now = state.live.now_ms
    # An agent with static URIs is rung on them whether or not its phone registered.
    needs_phone = {a.id: not a.targets.uris for a in tenant.agents}
    agents = [
        BoardAgent(
            **agent.model_dump(),
            registered=state.registered(agent.agent) if needs_phone.get(agent.agent) else None,
        )
        for agent in view.agents
    ]
    groups = []
    for group in view.groups:
        waiting = state.queues.get(group.id, ())
        oldest = min((entry.joined_ms for entry in waiting), default=now)
        groups.append(
            BoardGroup(
                **group.model_dump(exclude={"queue_length", "longest_wait_s"}),
                queue_length=len(waiting),
                longest_wait_s=max(0, now - oldest) // 1000,
                queued=[_queued(entry, now) for entry in waiting],
            )
        )
    return LiveBoard(
        tenant=tenant_id, version=view.version, now_ms=now, agents=agents, groups=groups
    )
