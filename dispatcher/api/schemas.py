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


class VoicemailOut(_Body):
    """One voicemail message of a group's box."""

    id: str
    group: str
    caller: str = Field(description="From user of the call ('' when unknown)")
    started_ms: int = Field(description="recording start, epoch ms")
    started_at: str = Field(description="recording start, ISO 8601 in UTC")
    duration_s: float
    heard: bool
    node: str = Field(description="the node whose disk holds the recording")
    audio_url: str = Field(description="the recording (audio/wav), same token")


class VoicemailList(_Body):
    messages: list[VoicemailOut] = Field(description="newest first, at most `limit`")
    total: int = Field(description="messages that match the filters, `limit` aside")
    new_by_group: dict[str, int] = Field(
        description="unheard messages per group, of the whole tenant whatever the filters "
        "(groups without any are left out)"
    )


class HeardChange(_Body):
    heard: bool = Field(description="true: heard; false: new again")


class PromptInfo(_Body):
    """An uploaded prompt, stored in the playback format (WAV, 8000 Hz mono 16-bit)."""

    id: str
    digest: str = Field(description="SHA-256 of the stored audio; a new upload, a new digest")
    bytes: int = Field(description="size of the stored WAV")
    duration_s: float


class PromptList(_Body):
    prompts: list[PromptInfo]


__all__ = [
    "AgentList",
    "AgentOut",
    "AgentState",
    "GroupList",
    "GroupOut",
    "HeardChange",
    "InboundList",
    "LiveView",
    "MemberList",
    "MemberOut",
    "PromptInfo",
    "PromptList",
    "StateChange",
    "TenantList",
    "TenantOut",
    "TokenCreated",
    "TokenInfo",
    "TokenList",
    "TokenRequest",
    "Versioned",
    "VoicemailList",
    "VoicemailOut",
]
