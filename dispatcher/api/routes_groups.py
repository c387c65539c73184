"""Groups and their members. A group is replaced whole (one atomic put) and is live for the
next call; a membership change touches one member of one group."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from dispatcher.admin import ops as admin_ops
from dispatcher.admin.ops import MemberSettings
from dispatcher.config.model import ID_PATTERN, Group, Tenant

from . import config_io
from .auth import ReadAccess, WriteAccess
from .config_io import IfMatch, check_path_id, found
from .schemas import GroupList, GroupOut, MemberList, MemberOut, Versioned

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["groups"])

GroupId = Annotated[str, Path(pattern=ID_PATTERN, description="group id")]
AgentId = Annotated[str, Path(pattern=ID_PATTERN, description="agent id")]


def _group(tenant: Tenant, group_id: str) -> Group:
    return found(tenant.group(group_id), f"group {group_id!r}")


@router.get("/groups", summary="List the groups")
async def list_groups(access: ReadAccess, response: Response) -> GroupList:
    version, tenant = await config_io.load_tagged(access.store, response)
    return GroupList(version=version, groups=list(tenant.groups))


@router.get("/groups/{group_id}", summary="One group")
async def get_group(access: ReadAccess, group_id: GroupId, response: Response) -> GroupOut:
    version, tenant = await config_io.load_tagged(access.store, response)
    return GroupOut(version=version, group=_group(tenant, group_id))


@router.put("/groups/{group_id}", summary="Create or replace a group")
async def put_group(
    access: WriteAccess,
    group_id: GroupId,
    group: Group,
    response: Response,
    if_match: IfMatch = None,
) -> GroupOut:
    """The whole group, members included, in one atomic change: no call ever sees half of
    it, and the next call to it uses it. A group without `timezone` gets the tenant's."""
    check_path_id(group.id, group_id, "group id")
    version, tenant = await config_io.update_tagged(
        access.store,
        lambda t: admin_ops.upsert_group(t, group),
        access.audit("group.put", f"group:{group_id}"),
        if_match,
        response,
    )
    return GroupOut(version=version, group=_group(tenant, group_id))


@router.delete("/groups/{group_id}", summary="Delete a group")
async def delete_group(
    access: WriteAccess, group_id: GroupId, response: Response, if_match: IfMatch = None
) -> Versioned:
    """409 while another group overflows to it or an inbound rule targets it."""
    version, _ = await config_io.update_tagged(
        access.store,
        lambda t: admin_ops.remove_group(t, group_id),
        access.audit("group.delete", f"group:{group_id}"),
        if_match,
        response,
    )
    return Versioned(version=version)


@router.get("/groups/{group_id}/members", summary="A group's members")
async def list_members(access: ReadAccess, group_id: GroupId, response: Response) -> MemberList:
    version, tenant = await config_io.load_tagged(access.store, response)
    return MemberList(version=version, members=list(_group(tenant, group_id).members))


@router.put("/groups/{group_id}/members/{agent_id}", summary="Add or change a membership")
async def put_member(
    access: WriteAccess,
    group_id: GroupId,
    agent_id: AgentId,
    settings: MemberSettings,
    response: Response,
    if_match: IfMatch = None,
) -> MemberOut:
    version, tenant = await config_io.update_tagged(
        access.store,
        lambda t: admin_ops.set_member(t, group_id, agent_id, settings),
        access.audit("member.put", f"member:{group_id}/{agent_id}"),
        if_match,
        response,
    )
    member = next(m for m in _group(tenant, group_id).members if m.agent == agent_id)
    return MemberOut(version=version, member=member)


@router.delete("/groups/{group_id}/members/{agent_id}", summary="Remove a membership")
async def delete_member(
    access: WriteAccess,
    group_id: GroupId,
    agent_id: AgentId,
    response: Response,
    if_match: IfMatch = None,
) -> Versioned:
    version, _ = await config_io.update_tagged(
        access.store,
        lambda t: admin_ops.remove_member(t, group_id, agent_id),
        access.audit("member.delete", f"member:{group_id}/{agent_id}"),
        if_match,
        response,
    )
    return Versioned(version=version)
