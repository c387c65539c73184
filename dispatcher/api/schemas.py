"""Request and response bodies of the admin API that are not the config model itself.

Config objects travel as the model (`Tenant`, `Group`, `Agent`, `Member`, `InboundRule`) with
the config `version` they belong to: `{"version": 7, "group": {...}}`. The version is also the
response's ETag; sending it back as If-Match makes a change conditional on it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.admin.tokens import Role
from dispatcher.config.model import Agent, Group, InboundRule, Member, Name, ReasonText, Tenant
from dispatcher.reports.live_summary import AgentState, LiveView


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Versioned(_Body):
    version: int = Field(description="config version after the request (its ETag)")


class TenantOut(Versioned):
    tenant: Tenant


class TenantList(_Body):
    tenants: list[str]


class GroupOut(Versioned):
    group: Group


class GroupList(Versioned):
    groups: list[Group]


class AgentOut(Versioned):
    agent: Agent


class AgentList(Versioned):
    agents: list[Agent]


class MemberOut(Versioned):
    member: Member


class MemberList(Versioned):
    members: list[Member]


class InboundList(Versioned):
    inbound: list[InboundRule]


StateAction = Literal["login", "logout", "pause", "unpause"]


class StateChange(_Body):
    """login: available; logout: logged out; pause (with an optional reason); unpause:
    available again, only from paused."""

    action: StateAction
    reason: ReasonText | None = Field(default=None, description="pause reason (pause only)")


class TokenRequest(_Body):
    role: Role
    label: Annotated[Name | None, Field(description="what the token is for")] = None


class TokenInfo(_Body):
    id: str
    role: Role
    label: str
    created_ms: int


class TokenCreated(TokenInfo):
    token: str = Field(description="the bearer token; shown only now, store it safely")


class TokenList(_Body):
    tokens: list[TokenInfo]


__all__ = [
    "AgentList",
    "AgentOut",
    "AgentState",
    "GroupList",
    "GroupOut",
    "InboundList",
    "LiveView",
    "MemberList",
    "MemberOut",
    "StateChange",
    "TenantList",
    "TenantOut",
    "TokenCreated",
    "TokenInfo",
    "TokenList",
    "TokenRequest",
    "Versioned",
]
