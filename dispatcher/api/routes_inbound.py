"""Inbound rules: where calls to the tenant's dialled numbers (DIDs) go, replaced as a list
(the first matching rule wins, so their order is part of the config)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from dispatcher.admin import ops as admin_ops
from dispatcher.config.model import InboundRule

from . import config_io
from .auth import ReadAccess, WriteAccess
from .config_io import IfMatch
from .schemas import InboundList

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["inbound"])


@router.get("/inbound", summary="The inbound rules, in order")
async def get_inbound(access: ReadAccess, response: Response) -> InboundList:
    version, tenant = await config_io.load_tagged(access.store, response)
    return InboundList(version=version, inbound=list(tenant.inbound))


@router.put("/inbound", summary="Replace the inbound rules")
async def put_inbound(
    access: WriteAccess, rules: list[InboundRule], response: Response, if_match: IfMatch = None
) -> InboundList:
    version, tenant = await config_io.update_tagged(
        access.store,
        lambda t: admin_ops.set_inbound(t, rules),
        access.audit("inbound.put", "inbound", f"{len(rules)} rules"),
        if_match,
        response,
    )
    return InboundList(version=version, inbound=list(tenant.inbound))
