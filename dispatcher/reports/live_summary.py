"""What a tenant is doing right now: agents with their state and counters, groups with their
members and live calls. Built from one atomic read (`StateStore.live`, or the API's async
store) and the config of the same instant; shown by `dispatcher status`, served by the admin
API's `/live` (the dashboard's source) and read by the metrics scrape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.config.model import Tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.core import LOGGED_OUT
from dispatcher.state.live import Activity, AgentLive, LiveState, QueuedEntry, StatusName


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentState(_Out):
    """An agent's live state: `status` as set by login/logout/pause, `activity` what it is
    doing now (on_call and ringing win over the status)."""

    agent: str
    status: StatusName
    reason: str
    activity: Activity
    live_calls: int
    ringing: int
    max_calls: int
    wrapup_until_ms: int
    idle_since_ms: int
    missed_in_a_row: int

    @classmethod
    def of(cls, agent_id: str, live: AgentLive, now_ms: int) -> AgentState:
        return cls(
            agent=agent_id,
            status=live.status_name,
            reason=live.reason,
            activity=live.activity(now_ms),
            live_calls=live.live,
            ringing=live.resv,
            max_calls=live.max_calls,
            wrapup_until_ms=live.wrapup_until_ms,
            idle_since_ms=live.idle_since_ms,
            missed_in_a_row=live.missed,
        )


class LiveAgent(AgentState):
    name: str
    groups: list[str] = Field(description="ids of the groups it is a member of")


class LiveGroup(_Out):
    id: str
    extension: str
    name: str
    strategy: str
    members: list[str] = Field(description="agent ids in canonical order")
    live_calls: int
    longest_call_s: int
    queue_length: int = Field(description="waiting callers")
    longest_wait_s: int = Field(description="wait so far of the longest-waiting caller")


class LiveView(_Out):
    """Every agent and group with live counters, read at one instant (`now_ms`, Redis time)."""

    tenant: str
    version: int
    now_ms: int
    agents: list[LiveAgent]
    groups: list[LiveGroup]


def summarize(
    tenant_id: str,
    live: LiveState,
    tenant: Tenant | None = None,
    queues: Mapping[str, Sequence[QueuedEntry]] | None = None,
) -> LiveView:
    """The view of `live`; `tenant` is the config of `live.doc` when the caller has it parsed
    already (else it is parsed here); `queues` the callers waiting per group, read at the
    same instant (`BoardState.queues`; none given: no queue figures). O(agents + members)."""
    queues = queues or {}
    if tenant is None and live.doc is not None:
        tenant = parse_tenant(live.doc, "json")
    if tenant is None:
        return LiveView(
            tenant=tenant_id, version=live.version, now_ms=live.now_ms, agents=[], groups=[]
        )
    member_of: dict[str, list[str]] = {}
    for group in tenant.groups:
        for member in group.members:
            member_of.setdefault(member.agent, []).append(group.id)
    unknown = AgentLive(LOGGED_OUT, "", 0, 0, 0, 0, 0, 0)  # in the config, not yet in Redis
    agents = [
        LiveAgent(
            **AgentState.of(a.id, live.agents.get(a.id, unknown), live.now_ms).model_dump(),
            name=a.name,
            groups=member_of.get(a.id, []),
        )
        for a in tenant.agents
    ]
    groups = [
        LiveGroup(
            id=g.id,
            extension=g.extension,
            name=g.name,
            strategy=g.strategy,
            members=[m.agent for m in g.canonical_members()],
            live_calls=live.calls.get(g.id, 0),
            longest_call_s=max(0, live.now_ms - live.oldest_call_ms[g.id]) // 1000
            if g.id in live.oldest_call_ms
            else 0,
            queue_length=len(queues.get(g.id, ())),
            longest_wait_s=max(
                (max(0, live.now_ms - e.joined_ms) // 1000 for e in queues.get(g.id, ())),
                default=0,
            ),
        )
        for g in tenant.groups
    ]
    return LiveView(
        tenant=tenant_id, version=live.version, now_ms=live.now_ms, agents=agents, groups=groups
    )


def render(view: LiveView) -> str:
    """The view as terminal text: per group its agents with state, calls and load."""
    agents = {a.agent: a for a in view.agents}
    if not view.groups and not view.agents:
        return f"tenant {view.tenant}: no config\n"
    on_call = sum(1 for a in view.agents if a.activity == "on_call")
    available = sum(1 for a in view.agents if a.activity == "available")
    lines = [
        f"tenant {view.tenant}  config v{view.version}  "
        f"agents {len(view.agents)}: {available} available, {on_call} on a call",
        "",
    ]
    for group in view.groups:
        longest = f", longest {_duration(group.longest_call_s)}" if group.live_calls else ""
        lines.append(
            f"{group.extension:>8}  {group.name} ({group.id}, {group.strategy})  "
            f"live calls {group.live_calls}{longest}  queue {group.queue_length}"
        )
        if not group.members:
            lines.append("          (no members)")
        for agent_id in group.members:
            a = agents.get(agent_id)
            if a is None:
                continue
            state = a.activity.replace("_", " ")
            if a.reason and a.status == "paused":
                state += f" ({a.reason})"
            lines.append(
                f"          {a.agent:<16} {state:<28} calls {a.live_calls}/{a.max_calls}"
                + (f"  ringing {a.ringing}" if a.ringing else "")
            )
    loose = [a for a in view.agents if not a.groups]
    if loose:
        lines += ["", "not in any group: " + ", ".join(f"{a.agent} ({a.activity})" for a in loose)]
    return "\n".join(lines) + "\n"


def _duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
