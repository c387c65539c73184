"""Tenants: list, create (bootstrap token), read and replace a whole config."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from dispatcher.config.model import Tenant

from . import config_io
from .async_store import AsyncRedis
from .auth import Caller, ReadAccess, SuperAdmin, WriteAccess
from .config_io import IfMatch, PreconditionFailed, check_path_id, expected_version
from .schemas import TenantList, TenantOut

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


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
