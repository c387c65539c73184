"""Tenants: list, create and delete (bootstrap token), read and replace a whole config."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, Response, status

from dispatcher.config.model import Tenant
from dispatcher.state.errors import TenantBusy
from dispatcher.state.keys import validate_id

from . import config_io
from .async_store import AsyncRedis
from .auth import Caller, ReadAccess, SuperAdmin, WriteAccess
from .config_io import IfMatch, PreconditionFailed, check_path_id, expected_version
from .schemas import TenantList, TenantOut

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])
log = logging.getLogger(__name__)


def check_tenant_id(tenant: str) -> str:
    """`tenant` if it is a valid id; 422 naming the rule otherwise."""
    try:
        return validate_id(tenant, "tenant")
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None


@router.get("", summary="List the tenants this token sees")
async def list_tenants(request: Request, caller: Caller) -> TenantList:
    """Every tenant for the bootstrap token; a tenant token sees its own tenant only."""
    if caller.tenant is not None:
        return TenantList(tenants=[caller.tenant])
    redis: AsyncRedis = request.app.state.redis
    return TenantList(tenants=await redis.registered_tenants())


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a tenant")
async def create_tenant(
    request: Request, caller: SuperAdmin, config: Tenant, response: Response
) -> TenantOut:
    """Create a tenant from a whole config (bootstrap token only); 409 if it exists."""
    redis: AsyncRedis = request.app.state.redis
    store = redis.tenant(config.id)
    audit = {"actor": caller.actor, "action": "tenant.create", "object": f"tenant:{config.id}"}
    try:
        version = await config_io.replace(store, config, audit, if_match=0)
    except PreconditionFailed:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"tenant {config.id!r} already exists"
        ) from None
    config_io.set_etag(response, version)
    response.headers["Location"] = f"/v1/tenants/{config.id}"
    return TenantOut(version=version, tenant=config)


@router.get("/{tenant}", summary="A tenant's whole config")
async def get_tenant(access: ReadAccess, response: Response) -> TenantOut:
    version, tenant = await config_io.load_tagged(access.store, response)
    return TenantOut(version=version, tenant=tenant)


@router.put("/{tenant}", summary="Replace a tenant's whole config (an import)")
async def replace_tenant(
    access: WriteAccess, config: Tenant, response: Response, if_match: IfMatch = None
) -> TenantOut:
    """Agents already known keep their live state; new agents start in their `state`."""
    check_path_id(config.id, access.tenant, "tenant")
    audit = access.audit("tenant.replace", f"tenant:{access.tenant}")
    version = await config_io.replace(access.store, config, audit, expected_version(if_match))
    config_io.set_etag(response, version)
    return TenantOut(version=version, tenant=config)


@router.delete(
    "/{tenant}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a tenant (bootstrap token)",
)
async def delete_tenant(
    request: Request, caller: SuperAdmin, tenant: str, force: bool = False
) -> Response:
    """Its config, tokens, credentials, domains, DIDs, voicemail records and state go; no key
    of another tenant is touched. 409 while it has live calls or ringing offers, unless
    `force=true` (its calls then end without their release being counted)."""
    redis: AsyncRedis = request.app.state.redis
    store = redis.tenant(check_tenant_id(tenant))
    await config_io.load(store)  # 404 for a tenant without config
    try:
        deleted = await store.delete_tenant(force)
    except TenantBusy as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc).removeprefix("BUSY ")) from None
    log.warning("tenant %s deleted by %s (%d keys, force=%s)", tenant, caller.actor, deleted, force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
