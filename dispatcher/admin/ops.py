"""Admin operations on a tenant's config, as pure functions: a `Tenant` in, a validated
`Tenant` out. The admin API and the CLI both use them.

A writer reads the stored config (version and document), applies one operation and puts the
result with the version it read as `expected_version` (`config_sync.update_tenant`, and its
asyncio twin in the API). disp_config_put refuses a put based on a version that is no longer
current, so the writer re-reads and applies the operation again. That makes every change
atomic — a group is replaced whole, members and settings, in one FCALL, never visible
half-applied — and live: each worker sees the new version in the reply of its next claim.

Every operation validates the whole resulting tenant (references, extensions, overflow
cycles, inbound rules). Its errors:

- `NotFound`: the group, agent or membership it addresses does not exist.
- `ConfigError`: the input would make the tenant invalid. Locations are relative to the input
  (the group, agent or member settings, or the list of inbound rules given; "" for the input
  as a whole), so `ring_timeout` or `members[2].agent`. A problem that the change causes
  elsewhere in the tenant is reported on the input as a whole, with its tenant location in
  the message (`groups[4].no_answer.group: overflow cycle ...`).
- `StillReferenced`: a removal would leave a reference dangling (another group overflows to
  the group, an inbound rule targets it).

Cost: O(agents + members + groups + inbound rules) for the validation, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict

from dispatcher.config.model import (
    Agent,
    ConfigError,
    Group,
    InboundRule,
    Member,
    Overflow,
    Tenant,
    validate_tenant,
)
from dispatcher.core import AVAILABLE, PAUSED

# What an agent state change expects the agent in, checked inside the FUNCTION (compare and
# set, disp_set_state): an unpause that arrives after a logout must not log the agent back
# in; a pause applies to an agent that is on duty. Login and logout apply from any status.
EXPECTED_STATUS: dict[str, tuple[int, ...]] = {"unpause": (PAUSED,), "pause": (AVAILABLE, PAUSED)}


class NotFound(LookupError):
    """The tenant, group, agent or membership an operation addresses does not exist."""


class StillReferenced(ValueError):
    """A removal would leave references to the removed item; `references` says where."""

    def __init__(self, what: str, references: Iterable[str]) -> None:
        self.references = list(references)
        super().__init__(f"{what} is still referenced by {', '.join(self.references)}")


class MemberSettings(BaseModel):
    """A member's settings without the agent id (the API path or CLI names the agent); the
    same fields, defaults and limits as `Member`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: Annotated[int, Member.model_fields["tier"]]
    position: Annotated[int, Member.model_fields["position"]]
    weight: Annotated[int, Member.model_fields["weight"]]


def upsert_group(tenant: Tenant, group: Group) -> Tenant:
    """`tenant` with `group` added, or replacing the group with its id (same position)."""
    problems = [
        ("extension", f"already the extension of group {other.id!r}")
        for other in tenant.groups
        if other.id != group.id and other.extension == group.extension
    ]
    problems += [
        ("extension", f"already a DID of an inbound rule (inbound[{index}])")
        for index, rule in enumerate(tenant.inbound)
        if rule.did == group.extension
    ]
    if problems:
        raise ConfigError(problems)
    groups, index = _replaced(tenant.groups, group)
    return _rebuild(tenant, f"groups[{index}]", groups=groups)


def remove_group(tenant: Tenant, group_id: str) -> Tenant:
    """`tenant` without the group; StillReferenced while an overflow or inbound rule
    targets it."""
    _group(tenant, group_id)
    references = [
        f"groups[{index}].no_answer (group {other.id!r})"
        for index, other in enumerate(tenant.groups)
        if other.id != group_id
        and isinstance(other.no_answer, Overflow)
        and other.no_answer.group == group_id
    ]
    references += [
        f"inbound[{index}].target (did {rule.did!r})"
        for index, rule in enumerate(tenant.inbound)
        if isinstance(rule.target, Overflow) and rule.target.group == group_id
    ]
    if references:
        raise StillReferenced(f"group {group_id!r}", references)
    groups = tuple(g for g in tenant.groups if g.id != group_id)
    return _rebuild(tenant, None, groups=groups)


def upsert_agent(tenant: Tenant, agent: Agent) -> Tenant:
    """`tenant` with `agent` added, or replacing the agent with its id (same position).

    An agent already in Redis keeps its live state (`state` is where a new agent starts)."""
    agents, index = _replaced(tenant.agents, agent)
    return _rebuild(tenant, f"agents[{index}]", agents=agents)


def remove_agent(tenant: Tenant, agent_id: str) -> Tenant:
    """`tenant` without the agent, which also leaves every group it was a member of."""
    if tenant.agent(agent_id) is None:
        raise NotFound(f"agent {agent_id!r} does not exist")
    groups = tuple(
        g.model_copy(update={"members": tuple(m for m in g.members if m.agent != agent_id)})
        if any(m.agent == agent_id for m in g.members)
        else g
        for g in tenant.groups
    )
    agents = tuple(a for a in tenant.agents if a.id != agent_id)
    return _rebuild(tenant, None, agents=agents, groups=groups)


def set_member(tenant: Tenant, group_id: str, agent_id: str, settings: MemberSettings) -> Tenant:
    """`tenant` with the agent a member of the group with `settings` (tier, position,
    weight), added or replacing its current membership."""
    group = _group(tenant, group_id)
    if tenant.agent(agent_id) is None:
        raise NotFound(f"agent {agent_id!r} does not exist")
    member = Member(agent=agent_id, **settings.model_dump())
    members, index = _replaced(group.members, member, key="agent")
    updated = group.model_copy(update={"members": members})
    groups, g = _replaced(tenant.groups, updated)
    return _rebuild(tenant, f"groups[{g}].members[{index}]", groups=groups)


def remove_member(tenant: Tenant, group_id: str, agent_id: str) -> Tenant:
    """`tenant` with the agent no longer a member of the group."""
    group = _group(tenant, group_id)
    if not any(m.agent == agent_id for m in group.members):
        raise NotFound(f"agent {agent_id!r} is not a member of group {group_id!r}")
    members = tuple(m for m in group.members if m.agent != agent_id)
    groups, _ = _replaced(tenant.groups, group.model_copy(update={"members": members}))
    return _rebuild(tenant, None, groups=groups)


def set_inbound(tenant: Tenant, rules: Sequence[InboundRule]) -> Tenant:
    """`tenant` with its inbound rules replaced by `rules` (first match wins, in order)."""
    return _rebuild(tenant, "inbound", inbound=tuple(rules))


# --- helpers -----------------------------------------------------------------------------


def _group(tenant: Tenant, group_id: str) -> Group:
    group = tenant.group(group_id)
    if group is None:
        raise NotFound(f"group {group_id!r} does not exist")
    return group


_Item = TypeVar("_Item", bound=BaseModel)


def _replaced(
    items: tuple[_Item, ...], item: _Item, key: str = "id"
) -> tuple[tuple[_Item, ...], int]:
    """`items` with `item` in place of the one with the same key, else appended; and its
    index."""
    wanted = getattr(item, key)
    for index, current in enumerate(items):
        if getattr(current, key) == wanted:
            return (*items[:index], item, *items[index + 1 :]), index
    return (*items, item), len(items)


def _rebuild(tenant: Tenant, focus: str | None, **changes: Any) -> Tenant:
    """Validate `tenant` with `changes` as a whole; problems under `focus` (the changed
    item's tenant location) become relative to it, others are reported on the input."""
    data = {name: getattr(tenant, name) for name in Tenant.model_fields}
    data.update(changes)
    try:
        return validate_tenant(data)
    except ConfigError as exc:
        raise ConfigError(_refocused(exc.problems, focus)) from None


def _refocused(problems: Iterable[tuple[str, str]], focus: str | None) -> list[tuple[str, str]]:
    out = []
    for location, message in problems:
        inside = focus is not None and (
            location == focus or location.startswith((f"{focus}.", f"{focus}["))
        )
        if focus is not None and inside:
            out.append((location[len(focus) :].removeprefix("."), message))
        else:
            out.append(("", f"{location}: {message}" if location else message))
    return out
