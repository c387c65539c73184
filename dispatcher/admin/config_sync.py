"""Moves a validated tenant config into Redis, where every worker picks it up by version."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from dispatcher.admin.ops import NotFound
from dispatcher.config.model import Tenant
from dispatcher.config.tenant_file import parse_tenant, tenant_doc
from dispatcher.core import AVAILABLE, LOGGED_OUT, PAUSED
from dispatcher.state.errors import ConfigConflict
from dispatcher.state.store import AgentLimits, Audit, StateStore

# The model names agent states; Redis and the selection core use the core's int codes.
STATUS_CODES = {"available": AVAILABLE, "paused": PAUSED, "logged_out": LOGGED_OUT}
# Read-apply-put rounds of an update before a lasting conflict is reported.
UPDATE_ATTEMPTS = 8
# The first wait after a conflict, doubled per round: at most ~1.3 s spent waiting in all.
CONFLICT_BACKOFF_S = 0.005


def conflict_backoff(attempt: int) -> float:
    """Seconds to wait before round `attempt + 1` after a conflict: random, up to a bound
    that doubles per round. Writers that collided once would otherwise collide again in
    lock step (each re-read and re-put takes them the same time), and on a slow or busy
    server a few of them can starve one writer for every round."""
    return random.uniform(0, CONFLICT_BACKOFF_S * 2**attempt)


def config_records(
    tenant: Tenant,
) -> tuple[bytes, list[AgentLimits], list[tuple[str, list[str], int]]]:
    """What disp_config_put stores for `tenant`: its document, the agents' limits (and initial
    states) and each group's members in canonical order with its queue's max length (0: no
    queue). Pure, O(agents + members)."""
    agents = [
        AgentLimits(
            id=a.id,
            max_calls=a.max_calls,
            wrapup_s=a.wrapup,
            auto_pause_after=a.auto_pause_after,
            status=STATUS_CODES[a.state],
            reason=a.pause_reason or "",
        )
        for a in tenant.agents
    ]
    groups = [
        (
            g.id,
            [m.agent for m in g.canonical_members()],
            g.queue.max_length if g.queue is not None and g.queue.enabled else 0,
        )
        for g in tenant.groups
    ]
    return tenant_doc(tenant), agents, groups


def import_tenant(
    store: StateStore,
    tenant: Tenant,
    expected_version: int | None = None,
    audit: Audit | None = None,
) -> int:
    """Replace the tenant's config atomically; returns the new config version (2 FCALLs:
    the tenant's domains and DIDs in the carrier-wide index, then the config).

    Agents already known to Redis keep their live state (an import is not a logout);
    new agents start in the state the file gives them. With `expected_version`, a config
    changed by someone else in the meantime raises the store's conflict error instead.
    `audit` (actor, action, object) is appended as an audit event by the same FCALL.
    """
    if store.tenant != tenant.id:
        raise ValueError(f"tenant file is for {tenant.id!r}, the store serves {store.tenant!r}")
    doc, agents, groups = config_records(tenant)
    # The names first: a domain or DID another tenant holds refuses the whole import.
    store.put_names(tenant.domains, tenant.all_dids)
    try:
        return store.put_config(
            doc,
            agents,
            groups,
            expected_version=expected_version,
            events_maxlen=tenant.events_maxlen,
            audit=audit,
        )
    except BaseException:
        _, stored = store.config()
        old = parse_tenant(stored, "json") if stored else None
        store.put_names(old.domains if old else (), old.all_dids if old else ())
        raise


def update_tenant(
    store: StateStore,
    op: Callable[[Tenant], Tenant],
    audit: Audit,
    expected_version: int | None = None,
) -> tuple[int, Tenant]:
    """Apply `op` (one of `dispatcher.admin.ops`) to the stored config; (version, tenant).

    Read (version, doc), apply, put with that version expected: one atomic FCALL, so the
    change is never visible half-applied and the next claim of every worker sees it. When
    another writer got in between, the op is applied again to the fresh config after a random
    wait (`conflict_backoff`), UPDATE_ATTEMPTS times in all; with `expected_version` (the
    version the caller based its change on) any other version raises `ConfigConflict` at once.
    A change that changes nothing is not written (no new version, no event).
    Cost: 3 round trips per attempt.
    """
    attempt = 1
    while True:
        version, doc = store.config()
        if doc is None:
            raise NotFound(f"tenant {store.tenant!r} has no config")
        if expected_version is not None and version != expected_version:
            raise ConfigConflict(f"config version is {version}, expected {expected_version}")
        tenant = op(parse_tenant(doc, "json"))
        if tenant_doc(tenant) == doc:
            return version, tenant
        try:
            return import_tenant(store, tenant, expected_version=version, audit=audit), tenant
        except ConfigConflict:
            if expected_version is not None or attempt == UPDATE_ATTEMPTS:
                raise
            time.sleep(conflict_backoff(attempt))
            attempt += 1
