"""The live view of a tenant: agents and groups with their counters, for the dashboard and
anything else that shows who is doing what."""

from __future__ import annotations

from fastapi import APIRouter

from dispatcher.reports.live_summary import summarize

from . import config_io
from .auth import ReadAccess
from .schemas import LiveView

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["live"])


@router.get("/live", summary="Agents and groups with live counters, at one instant")
async def get_live(access: ReadAccess) -> LiveView:
    """One atomic read of config and counters (1 round trip)."""
    live = await access.store.live()
    if live.doc is None:
        await config_io.load(access.store)  # raises 404
    tenant = config_io.parsed(access.tenant, live.doc) if live.doc is not None else None
    return summarize(access.tenant, live, tenant)
