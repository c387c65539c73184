"""SIP credentials of a tenant's users (its agents' phones): set a password, remove it, list
who has one. Only HA1 digests are stored (`dispatcher.state.credentials`); no response ever
carries a password or a digest. Admin tokens and the bootstrap token only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from dispatcher.admin.ops import NotFound
from dispatcher.state.credentials import MAX_PASSWORD, USER_PATTERN, credential_record

from . import config_io
from .auth import WriteAccess

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["credentials"])

SipUser = Annotated[
    str, Path(pattern=f"^{USER_PATTERN.pattern}$", description="SIP user (an agent's aor)")
]


class PasswordRequest(BaseModel):
    """A new SIP password for a user."""

    model_config = ConfigDict(extra="forbid")
    password: str = Field(max_length=MAX_PASSWORD, description="8..128 characters")


class CredentialUsers(BaseModel):
    """The SIP users of the tenant that have a password."""

    users: list[str]


@router.put(
    "/credentials/{user}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a SIP user's password (stored as HA1 digests only)",
)
async def set_password(access: WriteAccess, user: SipUser, request: PasswordRequest) -> Response:
    """Phones of `user` authenticate with this password from the next REGISTER or INVITE
    (digest, SHA-256 or MD5). The realm is the tenant's id."""
    await config_io.load(access.store)  # 404 for a tenant without config
    try:
        record = credential_record(user, access.tenant, request.password)
    except ValueError as exc:
        detail = [{"loc": ["body", "password"], "field": "password", "msg": str(exc)}]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail) from None
    await access.store.credential_put(user, record, access.audit("credential.set", user))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/credentials/{user}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a password"
)
async def remove_password(access: WriteAccess, user: SipUser) -> Response:
    """The user's phones can no longer register or call (until a new password is set)."""
    if not await access.store.credential_put(user, None, access.audit("credential.remove", user)):
        raise NotFound(f"SIP user {user!r} has no password")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/credentials", summary="The SIP users that have a password (never the digests)")
async def list_users(access: WriteAccess) -> CredentialUsers:
    return CredentialUsers(users=await access.store.credential_users())
