"""The admin API application: `create_app(settings)` builds it, uvicorn serves it.

    uvicorn --factory dispatcher.api.app:app_from_env --host 127.0.0.1 --port 8080

(`make run` / `make up` start it that way on 127.0.0.1:API_PORT.) Each resource is a router of
its own module, all under `/v1/tenants/{tenant}` (tenants, groups, agents, inbound rules,
tokens, the live view, prompts, voicemail, the dashboard's calls and event stream); later
parts (reports) add routers the same way: `create_app(settings, extra_routers=[...])` or
`app.include_router(...)`. OpenAPI at `/openapi.json`, interactive docs at `/docs`.

Errors are JSON `{"detail": ...}`:
- 401 no valid token, 403 a token of another tenant or a read-only token on a write;
- 404 unknown tenant, group, agent, membership, prompt or voicemail message;
- 409 a removal that leaves references (a group, a prompt a group names), a state change
  that does not apply, a tenant that already exists, a change that kept colliding with other
  writers;
- 410 a voicemail recording whose file is not on this machine;
- 412 an If-Match version that is no longer current;
- 413 an upload over the size limit;
- 422 invalid input: `detail` is a list of `{loc, field, msg, type}`, `loc` as FastAPI has it
  (`["body", "members", 0, "agent"]`), `field` the same as text (`members[0].agent`); for
  audio that cannot be a prompt, `type` is the problem's code (`not_wav`, `sample_rate`, ...);
- 503 Redis unavailable (with Retry-After).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from dispatcher.admin.ops import NotFound, StillReferenced
from dispatcher.admin.tokens import digest
from dispatcher.config.model import ConfigError, format_location
from dispatcher.settings import Settings, SettingsError
from dispatcher.state.errors import (
    ConfigConflict,
    NameTaken,
    StateError,
    StateUnavailable,
    UnknownAgent,
)

from . import (
    routes_agents,
    routes_credentials,
    routes_dashboard,
    routes_groups,
    routes_inbound,
    routes_live,
    routes_metrics,
    routes_prompts,
    routes_tenants,
    routes_tokens,
    routes_voicemail,
)
from .async_store import AsyncRedis
from .config_io import PreconditionFailed
from .routes_metrics import StreamCounts

log = logging.getLogger("dispatcher.api")

RETRY_AFTER_S = 5
_LOCATION_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class OrjsonResponse(JSONResponse):
    """JSON rendered with orjson.

    FastAPI's own ORJSONResponse is deprecated: routes with a response model are serialized
    by pydantic-core straight to bytes, which is as fast. This class serves the routes and
    error handlers without one.
    """

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def create_app(settings: Settings, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The admin API on the Redis of `settings` (REDIS_URL required)."""
    if settings.redis_url is None:
        raise SettingsError("REDIS_URL is not set: which Redis holds the state?")
    redis_url = settings.redis_url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = AsyncRedis(redis_url, timeout=settings.redis_timeout_ms / 1000)
        app.state.stream_counts = StreamCounts()
        try:
            await app.state.stream_counts.prime(app.state.redis)
        except StateError as exc:  # counted from the start of each stream then
            log.warning("Redis not readable at start-up: %s", exc)
        try:
            yield
        finally:
            await app.state.redis.close()

    app = FastAPI(
        title="dispatcher admin API",
        version="1",
        summary="Call groups, agents and their live state, per tenant.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.bootstrap_digest = digest(settings.admin_token) if settings.admin_token else None
    for router in (
        routes_tenants.router,
        routes_groups.router,
        routes_agents.router,
        routes_inbound.router,
        routes_tokens.router,
        routes_credentials.router,
        routes_live.router,
        routes_prompts.router,
        routes_voicemail.router,
        routes_dashboard.router,
        routes_metrics.router,
        *extra_routers,
    ):
        app.include_router(router)
    _add_error_handlers(app)
    return app


def app_from_env() -> FastAPI:
    """`create_app` with the settings of the environment (uvicorn's --factory)."""
    return create_app(Settings.from_env())


# --- errors ------------------------------------------------------------------------------


def location_parts(location: str) -> list[str | int]:
    """`"members[0].agent"` -> `["members", 0, "agent"]`."""
    return [int(index) if index else name for name, index in _LOCATION_PART.findall(location)]


def _problem(head: str, field: str, msg: str, kind: str) -> dict[str, Any]:
    """One problem; `field` is a location as the model writes it (`members[0].agent`)."""
    return {"loc": [head, *location_parts(field)], "field": field, "msg": msg, "type": kind}


def _validation_problems(errors: Iterable[Any]) -> list[dict[str, Any]]:
    """FastAPI's errors, with a model's whole-object ConfigError split into its fields and
    the tag of a tagged union (`no_answer.forward.uri`) dropped as `format_location` does."""
    out = []
    for error in errors:
        head, *rest = list(error.get("loc", ())) or ["body"]
        field = format_location(rest)
        nested = (error.get("ctx") or {}).get("error")
        if isinstance(nested, ConfigError):
            for location, message in nested.problems:
                joined = (
                    f"{field}.{location}"
                    if field and location and not location.startswith("[")
                    else field + location
                )
                out.append(_problem(str(head), joined, message, "config"))
        else:
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            out.append(_problem(str(head), field, message, str(error.get("type", "invalid"))))
    return out


def _detail(code: int, detail: Any, headers: dict[str, str] | None = None) -> OrjsonResponse:
    return OrjsonResponse({"detail": detail}, status_code=code, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        return _detail(422, _validation_problems(exc.errors()))

    @app.exception_handler(ConfigError)
    async def invalid_config(_: Request, exc: ConfigError) -> OrjsonResponse:
        problems = [
            _problem("body", location, message, "config") for location, message in exc.problems
        ]
        return _detail(422, problems)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> OrjsonResponse:
        return _detail(status.HTTP_404_NOT_FOUND, str(exc))

    @app.exception_handler(UnknownAgent)
    async def unknown_agent(_: Request, exc: UnknownAgent) -> OrjsonResponse:
        return _detail(status.HTTP_404_NOT_FOUND, str(exc).removeprefix("NOAGENT "))

    @app.exception_handler(StillReferenced)
    async def still_referenced(_: Request, exc: StillReferenced) -> OrjsonResponse:
        return _detail(status.HTTP_409_CONFLICT, str(exc))

    @app.exception_handler(ConfigConflict)
    async def conflict(_: Request, exc: ConfigConflict) -> OrjsonResponse:
        return _detail(status.HTTP_409_CONFLICT, f"concurrent changes kept conflicting: {exc}")

    @app.exception_handler(NameTaken)
    async def name_taken(_: Request, exc: NameTaken) -> OrjsonResponse:
        # "DID +49... belongs to tenant acme": which other tenant is not this caller's to know
        text = str(exc).removeprefix("TAKEN ").split(" belongs to ", 1)[0]
        field = "domains" if text.startswith("domain ") else "dids"
        return _detail(status.HTTP_409_CONFLICT, f"{field}: {text} belongs to another tenant")

    @app.exception_handler(PreconditionFailed)
    async def precondition(_: Request, exc: PreconditionFailed) -> OrjsonResponse:
        return _detail(status.HTTP_412_PRECONDITION_FAILED, str(exc))

    @app.exception_handler(StateUnavailable)
    async def unavailable(_: Request, exc: StateUnavailable) -> OrjsonResponse:
        log.warning("Redis unavailable: %s", exc)
        return _detail(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Redis is unavailable; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    @app.exception_handler(StateError)
    async def state_error(_: Request, exc: StateError) -> OrjsonResponse:
        log.error("unexpected reply from Redis: %s", exc)
        return _detail(status.HTTP_500_INTERNAL_SERVER_ERROR, "unexpected reply from Redis")
