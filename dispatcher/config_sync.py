"""Moves a validated tenant config into Redis, where every worker picks it up by version."""

from __future__ import annotations

from dispatcher.core import AVAILABLE, LOGGED_OUT, PAUSED
from dispatcher.model import Tenant
from dispatcher.state.store import AgentLimits, StateStore
from dispatcher.tenant_file import tenant_doc

# The model names agent states; Redis and the selection core use the core's int codes.
STATUS_CODES = {"available": AVAILABLE, "paused": PAUSED, "logged_out": LOGGED_OUT}


def import_tenant(store: StateStore, tenant: Tenant, expected_version: int | None = None) -> int:
    """Replace the tenant's config atomically; returns the new config version (1 FCALL).

    Agents already known to Redis keep their live state (an import is not a logout);
    new agents start in the state the file gives them. With `expected_version`, a config
    changed by someone else in the meantime raises the store's conflict error instead.
    """
    if store.tenant != tenant.id:
        raise ValueError(f"tenant file is for {tenant.id!r}, the store serves {store.tenant!r}")
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
    groups = [(g.id, [m.agent for m in g.canonical_members()]) for g in tenant.groups]
    return store.put_config(
        tenant_doc(tenant),
        agents,
        groups,
        expected_version=expected_version,
        events_maxlen=tenant.events_maxlen,
    )
