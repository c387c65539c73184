"""Agents: their config, and their state (login, logout, pause with a reason, unpause).

The config's `state` is where a new agent starts; afterwards the live state in Redis is the
agent's own (disp_set_state), kept across config changes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status

from dispatcher.admin import ops as admin_ops
from dispatcher.config.model import ID_PATTERN, Agent, ConfigError, Tenant
from dispatcher.core import AVAILABLE, LOGGED_OUT, PAUSED
from dispatcher.state.errors import StateChanged
from dispatcher.state.live import AgentLive

from . import config_io
from .auth import ReadAccess, TenantAccess, WriteAccess
from .config_io import IfMatch, check_path_id, found
from .schemas import AgentList, AgentOut, AgentState, StateChange, Versioned

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["agents"])

AgentId = Annotated[str, Path(pattern=ID_PATTERN, description="agent id")]

_STATUS = {"login": AVAILABLE, "logout": LOGGED_OUT, "pause": PAUSED, "unpause": AVAILABLE}


def _agent(tenant: Tenant, agent_id: str) -> Agent:
    return found(tenant.agent(agent_id), f"agent {agent_id!r}")


async def _live(access: TenantAccess, agent_id: str) -> tuple[int, AgentLive]:
    """(Redis time ms, the agent's live counters); NotFound for an agent not configured."""
    now_ms, live = await access.store.agent(agent_id)
    return now_ms, found(live, f"agent {agent_id!r}")


@router.get("/agents", summary="List the agents")
async def list_agents(access: ReadAccess, response: Response) -> AgentList:
    version, tenant = await config_io.load_tagged(access.store, response)
    return AgentList(version=version, agents=list(tenant.agents))


@router.get("/agents/{agent_id}", summary="One agent's config")
async def get_agent(access: ReadAccess, agent_id: AgentId, response: Response) -> AgentOut:
    version, tenant = await config_io.load_tagged(access.store, response)
    return AgentOut(version=version, agent=_agent(tenant, agent_id))


@router.put("/agents/{agent_id}", summary="Create or replace an agent")
async def put_agent(
    access: WriteAccess,
    agent_id: AgentId,
    agent: Agent,
    response: Response,
    if_match: IfMatch = None,
) -> AgentOut:
    """An agent that exists keeps its live state; `state` applies to a new agent only."""
    check_path_id(agent.id, agent_id, "agent id")
    version, tenant = await config_io.update_tagged(
        access.store,
        lambda t: admin_ops.upsert_agent(t, agent),
        access.audit("agent.put", f"agent:{agent_id}"),
        if_match,
        response,
    )
    return AgentOut(version=version, agent=_agent(tenant, agent_id))


@router.delete("/agents/{agent_id}", summary="Delete an agent")
async def delete_agent(
    access: WriteAccess, agent_id: AgentId, response: Response, if_match: IfMatch = None
) -> Versioned:
    """The agent also leaves every group; a call it is on runs to its end."""
    version, _ = await config_io.update_tagged(
        access.store,
        lambda t: admin_ops.remove_agent(t, agent_id),
        access.audit("agent.delete", f"agent:{agent_id}"),
        if_match,
        response,
    )
    return Versioned(version=version)


@router.get("/agents/{agent_id}/state", summary="An agent's live state")
async def get_state(access: ReadAccess, agent_id: AgentId) -> AgentState:
    now_ms, live = await _live(access, agent_id)
    return AgentState.of(agent_id, live, now_ms)


@router.post("/agents/{agent_id}/state", summary="Log in, log out, pause or unpause")
async def change_state(access: WriteAccess, agent_id: AgentId, change: StateChange) -> AgentState:
    """Takes effect for the next offer; a call in progress goes on. unpause applies only to a
    paused agent (409 otherwise: a logged-out agent logs in)."""
    if change.reason is not None and change.action != "pause":
        raise ConfigError([("reason", "only allowed with action 'pause'")])
    reason = change.reason or ""
    try:
        await access.store.set_state(
            agent_id,
            _STATUS[change.action],
            reason,
            access.audit(f"agent.{change.action}", f"agent:{agent_id}", reason),
            admin_ops.EXPECTED_STATUS.get(change.action, ()),
        )
    except StateChanged as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc).removeprefix("STATE ")) from None
    now_ms, live = await _live(access, agent_id)  # NotFound if removed from the config meanwhile
    return AgentState.of(agent_id, live, now_ms)
