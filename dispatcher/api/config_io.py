"""Reading and changing a tenant's config from the API: the asyncio twin of
`dispatcher.config_sync.update_tenant`.

A change reads (version, doc), applies an `admin_ops` operation, and puts the result with that
version expected; when another writer got in between, the operation is applied again to the
fresh config (UPDATE_ATTEMPTS in all, then 409). A client that sends `If-Match: "<version>"`
(the `version` / ETag of its last read) gets 412 instead when the config moved on, with no
retry: it asked to change exactly what it saw.

Parsed tenants are cached per tenant by document, so reads of an unchanged config skip the
validation (a few ms for a large tenant); the document is compared byte for byte, so a version
number reused after Redis lost its data cannot serve a stale tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Header

from dispatcher.admin_ops import NotFound
from dispatcher.config_sync import UPDATE_ATTEMPTS, config_records
from dispatcher.model import Tenant
from dispatcher.state.errors import ConfigConflict
from dispatcher.state.store import AgentLimits, Audit
from dispatcher.tenant_file import parse_tenant

from .async_store import AsyncStateStore

# Tenants whose parsed config is kept; past it the cache starts over (a burst of many
# tenants costs parsing, never memory).
_CACHE_LIMIT = 256
_parsed: dict[str, tuple[bytes, Tenant]] = {}


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
    records: tuple[bytes, list[AgentLimits], list[tuple[str, list[str]]]],
    events_maxlen: int,
    *,
    expected: int,
    old_groups: list[str],
    audit: Audit,
) -> int:
    doc, agents, groups = records
    return await store.put_config(
        doc,
        agents,
        groups,
        expected_version=expected,
        old_groups=old_groups,
        events_maxlen=events_maxlen,
        audit=audit,
    )


async def update(
    store: AsyncStateStore,
    op: Callable[[Tenant], Tenant],
    audit: Audit,
    if_match: int | None = None,
) -> tuple[int, Tenant]:
    """Apply `op` to the stored config atomically; (version, tenant) after it.

    A change that changes nothing is not written. Cost: 3 round trips per attempt.
    """
    attempt = 1
    while True:
        version, doc, current = await _read(store)
        if if_match is not None and version != if_match:
            raise PreconditionFailed(f"config version is {version}, not {if_match}")
        tenant = op(current)
        records = config_records(tenant)
        if records[0] == doc:
            return version, current
        try:
            new_version = await _put(
                store,
                records,
                tenant.events_maxlen,
                expected=version,
                old_groups=[g.id for g in current.groups],
                audit=audit,
            )
            return new_version, tenant
        except ConfigConflict:
            if if_match is not None:
                raise PreconditionFailed("the config changed meanwhile") from None
            if attempt == UPDATE_ATTEMPTS:
                raise
            attempt += 1


async def replace(
    store: AsyncStateStore, tenant: Tenant, audit: Audit, if_match: int | None = None
) -> int:
    """Put `tenant` over whatever is stored (creating it when there is none); the new version.

    With `if_match` only over that version; without, the last writer wins (retried on a
    conflict like `update`). Cost: 3 round trips per attempt.
    """
    records = config_records(tenant)
    attempt = 1
    while True:
        version, doc = await store.config()
        if if_match is not None and version != if_match:
            raise PreconditionFailed(f"config version is {version}, not {if_match}")
        old_groups = [g.id for g in parsed(store.tenant, doc).groups] if doc else []
        try:
            return await _put(
                store,
                records,
                tenant.events_maxlen,
                expected=version,
                old_groups=old_groups,
                audit=audit,
            )
        except ConfigConflict:
            if if_match is not None:
                raise PreconditionFailed("the config changed meanwhile") from None
            if attempt == UPDATE_ATTEMPTS:
                raise
            attempt += 1
