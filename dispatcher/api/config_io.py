"""Reading and changing a tenant's config from the API: the asyncio twin of
`dispatcher.admin.config_sync.update_tenant`.

A change reads (version, doc), applies an `admin_ops` operation, and puts the result with that
version expected; when another writer got in between, the operation is applied again to the
fresh config after a random wait (UPDATE_ATTEMPTS in all, then 409). A client that sends
`If-Match: "<version>"` (the `version` / ETag of its last read) gets 412 instead when the
config moved on, with no retry: it asked to change exactly what it saw.

Parsed tenants are cached per tenant by document, so reads of an unchanged config skip the
validation (a few ms for a large tenant); the document is compared byte for byte, so a version
number reused after Redis lost its data cannot serve a stale tenant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Header, Response

from dispatcher.admin.config_sync import UPDATE_ATTEMPTS, config_records, conflict_backoff
from dispatcher.admin.ops import NotFound
from dispatcher.config.model import ConfigError, Tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.state.errors import ConfigConflict
from dispatcher.state.store import Audit

from .async_store import AsyncStateStore

# Tenants whose parsed config is kept; past it the cache starts over (a burst of many
# tenants costs parsing, never memory).
_CACHE_LIMIT = 256
_parsed: dict[str, tuple[bytes, Tenant]] = {}

_T = TypeVar("_T")


class PreconditionFailed(Exception):
    """If-Match named a version that is not the current one."""


IfMatch = Annotated[
    str | None,
    Header(
        description="Change only if the config is still at this version (the ETag of a read, "
        'e.g. "7"); 412 otherwise.',
    ),
]


def expected_version(if_match: str | None) -> int | None:
    """The version an If-Match header asks for; None for no header or `*`. A value that is
    no version can never match (RFC 9110 §13.1.1), so it becomes -1 (always 412)."""
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() and len(text) < 19 else -1


def etag(version: int) -> str:
    """The ETag of a config version."""
    return f'"{version}"'


def parsed(tenant_id: str, doc: bytes) -> Tenant:
    """The tenant of a stored document, parsed once per document."""
    hit = _parsed.get(tenant_id)
    if hit is not None and hit[0] == doc:
        return hit[1]
    tenant = parse_tenant(doc, "json")
    if len(_parsed) >= _CACHE_LIMIT:
        _parsed.clear()
    _parsed[tenant_id] = (doc, tenant)
    return tenant


async def load(store: AsyncStateStore) -> tuple[int, Tenant]:
    """(version, tenant) as stored; NotFound when the tenant has no config (1 round trip)."""
    version, _, tenant = await _read(store)
    return version, tenant


async def _read(store: AsyncStateStore) -> tuple[int, bytes, Tenant]:
    version, doc = await store.config()
    if doc is None:
        raise NotFound(f"tenant {store.tenant!r} has no config")
    return version, doc, parsed(store.tenant, doc)


async def _put(
    store: AsyncStateStore,
    tenant: Tenant,
    *,
    expected: int,
    old: Tenant | None,
    audit: Audit,
) -> int:
    """Claim the tenant's domains and DIDs in the carrier-wide index, then put its config;
    should the put fail, the names go back to what the stored config says (`old`)."""
    await store.put_names(tenant.domains, tenant.all_dids)
    doc, agents, groups = config_records(tenant)
    try:
        return await store.put_config(
            doc,
            agents,
            groups,
            expected_version=expected,
            old_groups=[g.id for g in old.groups] if old is not None else [],
            events_maxlen=tenant.events_maxlen,
            audit=audit,
        )
    except BaseException:
        if old is not None:
            await store.put_names(old.domains, old.all_dids)
        else:
            await store.put_names((), ())
        raise


def _check_version(version: int, if_match: int | None) -> None:
    if if_match is not None and version != if_match:
        raise PreconditionFailed(f"config version is {version}, not {if_match}")


async def _retried(attempt: Callable[[], Awaitable[_T]], if_match: int | None) -> _T:
    """`attempt()` again while another writer gets in between (ConfigConflict), UPDATE_ATTEMPTS
    in all, then the conflict; with `if_match`, PreconditionFailed at the first conflict."""
    number = 1
    while True:
        try:
            return await attempt()
        except ConfigConflict:
            if if_match is not None:
                raise PreconditionFailed("the config changed meanwhile") from None
            if number == UPDATE_ATTEMPTS:
                raise
            await asyncio.sleep(conflict_backoff(number))
            number += 1


async def update(
    store: AsyncStateStore,
    op: Callable[[Tenant], Tenant],
    audit: Audit,
    if_match: int | None = None,
) -> tuple[int, Tenant]:
    """Apply `op` to the stored config atomically; (version, tenant) after it.

    A change that changes nothing is not written. Cost: 3 round trips per attempt.
    """

    async def attempt() -> tuple[int, Tenant]:
        version, doc, current = await _read(store)
        _check_version(version, if_match)
        tenant = op(current)
        if config_records(tenant)[0] == doc:
            return version, current
        return await _put(store, tenant, expected=version, old=current, audit=audit), tenant

    return await _retried(attempt, if_match)


async def replace(
    store: AsyncStateStore, tenant: Tenant, audit: Audit, if_match: int | None = None
) -> int:
    """Put `tenant` over whatever is stored (creating it when there is none); the new version.

    With `if_match` only over that version; without, the last writer wins (retried on a
    conflict like `update`). Cost: 3 round trips per attempt.
    """

    async def attempt() -> int:
        version, doc = await store.config()
        _check_version(version, if_match)
        old = parsed(store.tenant, doc) if doc else None
        return await _put(store, tenant, expected=version, old=old, audit=audit)

    return await _retried(attempt, if_match)


# --- for the routes: lookups, the path's id, the config version as the response's ETag ------


def found(item: _T | None, what: str) -> _T:
    """`item`; NotFound ("`what` does not exist") when it is None."""
    if item is None:
        raise NotFound(f"{what} does not exist")
    return item


def check_path_id(body_id: str, path_id: str, what: str) -> None:
    """ConfigError unless a body's `id` is the `what` of the path."""
    if body_id != path_id:
        raise ConfigError([("id", f"must be the {what} of the path ({path_id!r})")])


def set_etag(response: Response, version: int) -> None:
    """Make config `version` the ETag of `response`."""
    response.headers["ETag"] = etag(version)


async def load_tagged(store: AsyncStateStore, response: Response) -> tuple[int, Tenant]:
    """`load`, its version the ETag of `response`."""
    version, tenant = await load(store)
    set_etag(response, version)
    return version, tenant


async def update_tagged(
    store: AsyncStateStore,
    op: Callable[[Tenant], Tenant],
    audit: Audit,
    if_match: str | None,
    response: Response,
) -> tuple[int, Tenant]:
    """`update` under the request's If-Match header, the new version the ETag of `response`."""
    version, tenant = await update(store, op, audit, expected_version(if_match))
    set_etag(response, version)
    return version, tenant
