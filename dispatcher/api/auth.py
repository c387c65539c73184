"""Who may call the admin API: bearer tokens per tenant (see `dispatcher.admin.tokens` for their
format and storage) and the bootstrap token.

The bootstrap token (DISPATCHER_ADMIN_TOKEN) is the super-admin: every tenant, and the only
one that creates tenants and reads `/metrics`. Without it set, only tenant tokens exist.

Access, checked before anything else of a request:
- no or malformed Authorization header, unknown or revoked token: 401;
- a tenant token on another tenant's path: 403 (whether that tenant exists or not);
- a read-only token on a write: 403; marking voicemail heard or new takes an admin or a
  supervisor token (`HEARD_ROLES`), the bootstrap token included.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dispatcher.admin.tokens import Role, digest, parse_token, read_record
from dispatcher.config.model import ID_PATTERN

from .async_store import AsyncRedis, AsyncStateStore

BOOTSTRAP_ACTOR = "bootstrap"

# Who may mark a voicemail message heard or new: the people who listen to messages. A
# supervisor changes no config; a read-only token (a wallboard) changes nothing at all.
HEARD_ROLES: frozenset[str] = frozenset({"admin", "supervisor"})

_bearer = HTTPBearer(
    auto_error=False,
    description="`dsp_<tenant>.<id>.<secret>` for a tenant token, or the bootstrap token "
    "(DISPATCHER_ADMIN_TOKEN).",
)

TenantId = Annotated[str, Path(pattern=ID_PATTERN, description="tenant id", examples=["demo"])]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: `tenant` None for the bootstrap token (every tenant)."""

    tenant: str | None
    role: Role
    token_id: str

    @property
    def actor(self) -> str:
        """How audit events name the caller."""
        return BOOTSTRAP_ACTOR if self.tenant is None else f"token:{self.token_id}"

    @property
    def is_super(self) -> bool:
        return self.tenant is None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller behind the Authorization header; 401 when there is none that is valid.

    Cost: none for the bootstrap token, 1 round trip (HGET) for a tenant token.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("a bearer token is required")
    token = credentials.credentials
    presented = digest(token)
    bootstrap: str | None = request.app.state.bootstrap_digest
    if bootstrap is not None and hmac.compare_digest(presented, bootstrap):
        return Principal(None, "admin", BOOTSTRAP_ACTOR)
    parsed = parse_token(token)
    if parsed is None:
        raise _unauthorized("invalid token")
    tenant, token_id = parsed
    redis: AsyncRedis = request.app.state.redis
    raw = await redis.tenant(tenant).token(token_id)
    if raw is None:
        raise _unauthorized("invalid token")
    stored, role, _, _ = read_record(raw)
    if not hmac.compare_digest(presented, stored):
        raise _unauthorized("invalid token")
    return Principal(tenant, role, token_id)


@dataclass(frozen=True, slots=True)
class TenantAccess:
    """A request's tenant, its store and the caller allowed on it."""

    tenant: str
    store: AsyncStateStore
    principal: Principal

    def audit(self, action: str, obj: str, detail: str = "") -> dict[str, str]:
        """The audit record of a change made by this caller."""
        return {"actor": self.principal.actor, "action": action, "object": obj, "detail": detail}


def _access(request: Request, principal: Principal, tenant: str, write: bool) -> TenantAccess:
    if principal.tenant is not None and principal.tenant != tenant:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token is for another tenant")
    if write and principal.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token is read-only")
    redis: AsyncRedis = request.app.state.redis
    return TenantAccess(tenant, redis.tenant(tenant), principal)


async def read_access(
    request: Request,
    principal: Annotated[Principal, Depends(authenticate)],
    tenant: TenantId,
) -> TenantAccess:
    """Any token of the tenant, or the bootstrap token."""
    return _access(request, principal, tenant, write=False)


async def write_access(
    request: Request,
    principal: Annotated[Principal, Depends(authenticate)],
    tenant: TenantId,
) -> TenantAccess:
    """An admin token of the tenant, or the bootstrap token."""
    return _access(request, principal, tenant, write=True)


async def heard_access(
    request: Request,
    principal: Annotated[Principal, Depends(authenticate)],
    tenant: TenantId,
) -> TenantAccess:
    """An admin or supervisor token of the tenant, or the bootstrap token."""
    access = _access(request, principal, tenant, write=False)
    if principal.role not in HEARD_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only an admin or supervisor token may mark messages"
        )
    return access


async def super_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """The bootstrap token only."""
    if not principal.is_super:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the bootstrap token may do this")
    return principal


Caller = Annotated[Principal, Depends(authenticate)]
ReadAccess = Annotated[TenantAccess, Depends(read_access)]
WriteAccess = Annotated[TenantAccess, Depends(write_access)]
HeardAccess = Annotated[TenantAccess, Depends(heard_access)]
SuperAdmin = Annotated[Principal, Depends(super_admin)]
