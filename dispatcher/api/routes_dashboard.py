"""The live dashboard: a web page, the calls read and the tenant's event stream as
Server-Sent Events.

- `GET /dashboard`: the page (plain HTML, CSS and JavaScript from `static/`, no build step, no
  third-party code). It holds no data: it asks for a tenant and a token, reads `/live` and
  `/calls` with the token, and refreshes both when the event stream says something happened.
- `GET /v1/tenants/{t}/calls`: calls ringing and in progress, one atomic read.
- `POST /v1/tenants/{t}/events/ticket`: a one-time ticket for the event stream.
- `GET /v1/tenants/{t}/events/stream`: the tenant's event stream (`{t:T}:events`) as
  Server-Sent Events, from now on or after `Last-Event-ID`.

Authentication of the stream. A browser's EventSource cannot send an Authorization header, and
a token in the URL ends up in access logs, proxy logs and the browser history, where it stays
valid until revoked. So the page keeps the token in sessionStorage (this tab only, gone when
it closes), sends it as a bearer header on its fetches, and for the stream first POSTs for a
ticket (bearer auth, any token of the tenant): a random 256-bit value, stored in Redis only as
its SHA-256 digest under the tenant's hash tag, valid for TICKET_TTL_S seconds and for one
connection (redeemed with GETDEL, so a logged URL is useless). It is bound to the tenant and
to the token that asked for it: redeeming re-checks that token, and an open stream re-checks
it with every heartbeat, so revoking the token ends its streams within HEARTBEAT_S. Clients
that can send headers (curl, scripts) may use the bearer header on the stream directly.
Neither tokens nor tickets are logged.

Resources of a stream: one Redis connection of its own (XREAD BLOCK holds it), closed when the
client goes or the server stops; at most MAX_STREAMS streams per API process (503 past that);
at most READ_COUNT events per read; a heartbeat event every HEARTBEAT_S seconds.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, cast

import anyio
import orjson
import redis.asyncio as aredis
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Receive, Scope, Send

from dispatcher.admin.ops import NotFound
from dispatcher.admin.tokens import digest, read_record
from dispatcher.state.connect import async_key_client
from dispatcher.state.errors import StateError
from dispatcher.state.live import CallState, LegState, LiveCall
from dispatcher.state.store import translate_errors
from dispatcher.telemetry import count_redis_error

from .async_store import AsyncRedis
from .auth import (
    BOOTSTRAP_ACTOR,
    Principal,
    ReadAccess,
    TenantAccess,
    TenantId,
    _access,
    _bearer,
    _unauthorized,
    authenticate,
)

log = logging.getLogger("dispatcher.api")

router = APIRouter(tags=["dashboard"])

TICKET_TTL_S = 30
HEARTBEAT_S = 15.0
MAX_STREAMS = 100
READ_COUNT = 200
RETRY_MS = 2000
STREAM_CLIENT_NAME = "dispatcher-sse"
_EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_TICKET = r"^[A-Za-z0-9_-]{43}$"
# XREAD's reply (RESP2): per stream [name, [(id, {field: value}), ...]], None when it timed out
_XreadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None

# --- the page ------------------------------------------------------------------------------

_STATIC = resources.files("dispatcher.api") / "static"
_ASSETS: dict[str, str] = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Only the page's own files: no inline script or style, no other origin, not framed.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return (_STATIC / name).read_bytes()


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> Response:
    """The live dashboard page (no data in it; it asks for a tenant and a token)."""
    return Response(_asset("dashboard.html"), media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/dashboard/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> Response:
    """The page's script, style sheet and icon (a fixed list, nothing else is served)."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
    return Response(_asset(name), media_type=media_type, headers=_PAGE_HEADERS)


# --- calls ---------------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallLegOut(_Out):
    agent: str
    state: LegState = Field(description="ringing (an offer) or talking (answered)")
    since_ms: int | None = Field(
        description="offered at (ringing; null when not in the recent events) or answered at"
    )
    deadline_ms: int | None = Field(description="the offer's reservation ends (ringing only)")


class CallOut(_Out):
    call: str = Field(description="SIP Call-ID")
    state: CallState = Field(description="in_progress once an agent talks, else ringing")
    group: str | None
    caller: str | None = Field(description="From user, when the recent events tell it")
    started_ms: int | None = Field(description="arrival at the group (else first offer/answer)")
    answered_ms: int | None
    legs: list[CallLegOut]


class CallsView(_Out):
    """Calls ringing and in progress, read at one instant (`now_ms`, Redis time)."""

    tenant: str
    version: int
    now_ms: int
    calls: list[CallOut]


def _call_out(call: LiveCall) -> CallOut:
    return CallOut(
        call=call.call,
        state=call.state,
        group=call.group,
        caller=call.caller,
        started_ms=call.started_ms,
        answered_ms=call.answered_ms,
        legs=[
            CallLegOut(
                agent=leg.agent,
                state=leg.state,
                since_ms=leg.since_ms,
                deadline_ms=leg.deadline_ms,
            )
            for leg in call.legs
        ],
    )


@router.get(
    "/v1/tenants/{tenant}/calls",
    tags=["live"],
    summary="Calls ringing and in progress, at one instant",
)
async def get_calls(access: ReadAccess) -> CallsView:
    """Reservations (ringing offers) and live calls with caller, group and times from the
    newest events (1 round trip, MULTI/EXEC)."""
    state = await access.store.calls()
    if state.version == 0:
        raise NotFound(f"tenant {access.tenant!r} has no config")
    return CallsView(
        tenant=access.tenant,
        version=state.version,
        now_ms=state.now_ms,
        calls=[_call_out(call) for call in state.calls],
    )


# --- tickets -------------------------------------------------------------------------------


class TicketOut(_Out):
    ticket: str = Field(description="pass as ?ticket= to the event stream; one connection")
    expires_in_s: int


@dataclass(frozen=True, slots=True)
class _Credential:
    """Who a stream belongs to and the digest of the token that opened it, re-checked on
    every heartbeat."""

    principal: Principal
    token_digest: str


async def _still_valid(request: Request, credential: _Credential) -> bool:
    """Whether the token behind `credential` is still the one stored (not revoked, not
    replaced); the bootstrap token while it is this process's. 0 or 1 round trip."""
    principal = credential.principal
    if principal.is_super:
        bootstrap: str | None = request.app.state.bootstrap_digest
        return bootstrap is not None and hmac.compare_digest(bootstrap, credential.token_digest)
    redis_: AsyncRedis = request.app.state.redis
    assert principal.tenant is not None
    raw = await redis_.tenant(principal.tenant).token(principal.token_id)
    if raw is None:
        return False
    stored, _, _, _ = read_record(raw)
    return hmac.compare_digest(stored, credential.token_digest)


@router.post(
    "/v1/tenants/{tenant}/events/ticket",
    status_code=status.HTTP_201_CREATED,
    summary="A one-time ticket for the event stream (EventSource cannot send headers)",
)
async def create_ticket(
    access: ReadAccess,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TicketOut:
    """Any token of the tenant. The ticket opens one stream connection within
    TICKET_TTL_S seconds; it is stored only as its SHA-256 digest (1 round trip)."""
    assert credentials is not None  # ReadAccess authenticated it
    ticket = secrets.token_urlsafe(32)
    record = orjson.dumps(
        {
            "token": access.principal.token_id,
            "digest": digest(credentials.credentials),
            "super": access.principal.is_super,
        }
    )
    async with access.store.client.guard():
        await access.store.client.client.set(
            access.store.keys.ticket(digest(ticket)), record, ex=TICKET_TTL_S
        )
    return TicketOut(ticket=ticket, expires_in_s=TICKET_TTL_S)


async def _redeem(request: Request, tenant: str, ticket: str) -> _Credential:
    """The credential a ticket was made for; 401 when it is unknown, used, expired or its
    token no longer valid (1-2 round trips)."""
    redis_: AsyncRedis = request.app.state.redis
    store = redis_.tenant(tenant)
    async with redis_.guard():
        raw = await redis_.client.getdel(store.keys.ticket(digest(ticket)))
    if raw is None:
        raise _unauthorized("invalid or expired ticket")
    record = orjson.loads(raw)
    token_id, token_digest = str(record.get("token", "")), str(record.get("digest", ""))
    if record.get("super"):
        credential = _Credential(Principal(None, "admin", BOOTSTRAP_ACTOR), token_digest)
    else:
        credential = _Credential(Principal(tenant, "read-only", token_id), token_digest)
    if not await _still_valid(request, credential):
        raise _unauthorized("the ticket's token is no longer valid")
    return credential


async def stream_access(
    request: Request,
    tenant: TenantId,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ticket: Annotated[
        str | None,
        Query(pattern=_TICKET, description="from POST .../events/ticket (browsers)"),
    ] = None,
) -> tuple[TenantAccess, _Credential]:
    """A bearer token of the tenant (or the bootstrap token), or a ticket."""
    if credentials is not None:
        principal = await authenticate(request, credentials)
        credential = _Credential(principal, digest(credentials.credentials))
    elif ticket is not None:
        credential = await _redeem(request, tenant, ticket)
    else:
        raise _unauthorized("a bearer token or a ticket is required")
    return _access(request, credential.principal, tenant, write=False), credential


# --- the event stream ----------------------------------------------------------------------


class _Slots:
    """Streams open in this process, at most `limit` (no await between check and count)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


def _slots(request: Request) -> _Slots:
    slots: _Slots | None = getattr(request.app.state, "sse_slots", None)
    if slots is None:
        slots = request.app.state.sse_slots = _Slots(MAX_STREAMS)
    return slots


class _EventStreamResponse(StreamingResponse):
    """A StreamingResponse that always closes its generator (and so the stream's Redis
    connection) and gives its slot back, however the response ends: finished, client gone,
    or cancelled at server shutdown."""

    def __init__(self, body: AsyncGenerator[bytes, None], slots: _Slots) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._body = body
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._body.aclose()
            self._slots.give_back()


def _sse(data: Any, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One Server-Sent Events message; `data` as JSON (one line: orjson escapes newlines)."""
    head = f"event: {event}\n" if event else ""
    head += f"id: {event_id}\n" if event_id else ""
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> bytes:
    """A stream entry as a message: id = the stream id, data = its fields and "id"."""
    data = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    ident = entry_id.decode()
    data["id"] = ident
    return _sse(data, event_id=ident)


async def _stream(
    request: Request,
    events_key: str,
    start_id: str,
    still_valid: Callable[[], Awaitable[bool]],
) -> AsyncGenerator[bytes, None]:
    """The messages of one stream: `ready`, then every event after `start_id` as it is
    appended, a `ping` every HEARTBEAT_S; `unavailable` and the end when Redis fails, `revoked` and
    the end when the token is no longer valid."""
    settings = request.app.state.settings
    timeout = settings.redis_timeout_ms / 1000
    read_timeout = HEARTBEAT_S + timeout + 5  # XREAD BLOCK waits up to HEARTBEAT_S
    client: aredis.Redis | None = None
    try:
        with translate_errors(settings.redis_url, read_timeout, timeout):
            # on the node that serves the stream's key now (a Cluster's primary of its
            # slot, the master the Sentinels name): a move later ends this stream with
            # `unavailable`, and the browser's reconnect finds the key where it is then
            client = await async_key_client(
                request.app.state.redis.client,
                settings.redis_url,
                events_key,
                read_timeout,
                timeout,
                STREAM_CLIENT_NAME,
            )
        yield f"retry: {RETRY_MS}\n\n".encode() + _sse(
            {"last_id": start_id, "heartbeat_s": HEARTBEAT_S}, event="ready"
        )
        last_id = start_id
        next_beat = time.monotonic() + HEARTBEAT_S
        while True:
            block_ms = max(1, int((next_beat - time.monotonic()) * 1000))
            with translate_errors(settings.redis_url, read_timeout, timeout):
                reply = await client.xread({events_key: last_id}, count=READ_COUNT, block=block_ms)
            for _, entries in cast("_XreadReply", reply) or ():
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    yield _event(entry_id, fields)
            if time.monotonic() >= next_beat:
                if not await still_valid():
                    yield _sse({"detail": "the token is no longer valid"}, event="revoked")
                    return
                yield _sse({"last_id": last_id}, event="ping")
                next_beat = time.monotonic() + HEARTBEAT_S
    except StateError as exc:
        count_redis_error("api", exc)
        log.warning("event stream of %s ended: Redis failed: %s", events_key, exc)
        yield _sse({"detail": "Redis is unavailable; reconnect shortly"}, event="unavailable")
    finally:
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()


def _start_id(header: str | None, query: str | None) -> str | None:
    """The event id to resume after: the Last-Event-ID header (what EventSource sends when
    it reconnects by itself), else the query parameter; 422 when malformed."""
    value = header if header else query
    if not value:
        return None
    if _EVENT_ID.fullmatch(value) is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["header", "Last-Event-ID"], "field": "Last-Event-ID",
              "msg": "must be a stream id like 1700000000000-0", "type": "value_error"}],
        )  # fmt: skip
    return value


@router.get(
    "/v1/tenants/{tenant}/events/stream",
    summary="The tenant's events as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`ready` first, then each event (`id`: stream id, `data`: JSON of "
            "its fields and `id`), `ping` every 15 s; before it ends, `unavailable` (Redis "
            "failed) or `revoked` (the token is no longer valid).",
        },
        503: {"description": "too many streams open on this API process"},
    },
)
async def stream_events(
    request: Request,
    auth: Annotated[tuple[TenantAccess, _Credential], Depends(stream_access)],
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", include_in_schema=False)
    ] = None,
    last_event_id: Annotated[
        str | None, Query(max_length=41, description="resume after this event id")
    ] = None,
) -> Response:
    """Every event appended after now, or after Last-Event-ID (header or query); each
    message's id is the stream id, so a reconnecting EventSource resumes where it was."""
    access, credential = auth
    start = _start_id(last_event_id_header, last_event_id)
    version, _ = await access.store.config()
    if version == 0:
        raise NotFound(f"tenant {access.tenant!r} has no config")
    if start is None:
        start = await access.store.last_event_id()
    slots = _slots(request)
    if not slots.take():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "too many event streams open; try again shortly",
            headers={"Retry-After": "5"},
        )

    async def still_valid() -> bool:
        return await _still_valid(request, credential)

    body = _stream(request, access.store.keys.events, start, still_valid)
    return _EventStreamResponse(body, slots)


__all__ = ["CallsView", "TicketOut", "router"]
