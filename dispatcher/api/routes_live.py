"""The live view of a tenant: agents and groups with their counters, queued callers and
phone registrations, for the dashboard and anything else that shows who is doing what."""

from __future__ import annotations

from fastapi import APIRouter

from dispatcher.admin.ops import NotFound

from . import config_io
from .auth import ReadAccess
from .live_board import LiveBoard, board_view

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["live"])


@router.get("/live", summary="Agents, groups and queued callers with live counters, at one instant")
async def get_live(access: ReadAccess) -> LiveBoard:
    """One atomic read of config, counters, queues and registrations (1 round trip)."""
    state = await access.store.board()
    doc = state.live.doc
    if doc is None:
        raise NotFound(f"tenant {access.tenant!r} has no config")
    return board_view(access.tenant, state, config_io.parsed(access.tenant, doc))
