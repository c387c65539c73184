"""API tokens of a tenant: create (the token is shown once), list, revoke. Admin tokens and
the bootstrap token only; see `dispatcher.admin.tokens` for the token design."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from dispatcher.admin.ops import NotFound
from dispatcher.admin.tokens import new_token, read_record, token_record
from dispatcher.state.keys import ID_PATTERN

from . import config_io
from .auth import WriteAccess
from .schemas import TokenCreated, TokenInfo, TokenList, TokenRequest

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["tokens"])

TokenId = Annotated[str, Path(pattern=f"^{ID_PATTERN.pattern}$", description="token id")]


def _info(token_id: str, raw: bytes) -> TokenInfo:
    _, role, label, created_ms = read_record(raw)
    return TokenInfo(id=token_id, role=role, label=label, created_ms=created_ms)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, summary="Create a token")
async def create_token(access: WriteAccess, request: TokenRequest) -> TokenCreated:
    """A new bearer token for this tenant; `token` is in this response only."""
    await config_io.load(access.store)  # 404 for a tenant without config
    token_id, token = new_token(access.tenant)
    label = request.label or ""
    raw = token_record(token, request.role, label)
    await access.store.set_token(
        token_id, raw, access.audit("token.create", f"token:{token_id}", request.role)
    )
    return TokenCreated(**_info(token_id, raw).model_dump(), token=token)


@router.get("/tokens", summary="List the tokens (ids and roles, never the secrets)")
async def list_tokens(access: WriteAccess) -> TokenList:
    tokens = await access.store.tokens()
    return TokenList(tokens=[_info(token_id, raw) for token_id, raw in sorted(tokens.items())])


@router.delete(
    "/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a token"
)
async def revoke_token(access: WriteAccess, token_id: TokenId) -> Response:
    """The token stops working with the next request."""
    revoked = await access.store.set_token(
        token_id, None, access.audit("token.revoke", f"token:{token_id}")
    )
    if not revoked:
        raise NotFound(f"token {token_id!r} does not exist")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
