"""Which tenant a SIP request belongs to, and the worker's deciders of the tenants it serves.

A carrier runs one Kamailio cluster for many tenants. A request is mapped to its tenant by
what it was sent to:

- a dialled number (the Request-URI user) that is one of a tenant's DIDs: a call from a
  carrier trunk (`{dispatcher}:dids`);
- else its domain (the Request-URI's, a REGISTER's To): phones and internal calls
  (`{dispatcher}:domains`);
- else, when the node has a default tenant (DISPATCHER_TENANT) that names no domains of its
  own, that tenant: one tenant on one Kamailio, listening on any domain, as before there
  were many (`make run`'s demo without domains);
- else none: the request gets a clear reply (404 for an unknown number or domain) and
  nothing reaches any tenant's stream.

A worker asks Redis' index about a name once and keeps the answer (a miss too) while the
index's version (`{dispatcher}:names_version`, counted by every change of a name's owner)
stays; it reads the version at most once per NAMES_CHECK_S, when it needs a name. So a
name that changes hands is seen within about a second, and a worker serving the DIDs of
hundreds of tenants makes one round trip a second for them, not one per name and period:
with 500 DIDs and a 10 s lifetime per answer (the first design) that was half a round trip
per call at 400 calls a second.

A worker keeps one `Decider` (config view, live snapshots) per tenant it has served, the
least recently used ones dropped past `capacity` (DISPATCHER_TENANT_CACHE, default 256).
Its size is the tenant's parsed config and core tables (tracemalloc, TenantView.build): the
demo tenant (8 agents, 8 groups, 30 memberships) 59 kB, a tenant of 50 agents in 10 groups of
10 members 130 kB; so 256 tenants of that size hold about 33 MB per worker process, and
the bound holds whatever the number of tenants on the cluster. Every decider shares the
worker's Redis connections (`StateStore.for_tenant`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from dispatcher.sip.decision import Decider
from dispatcher.state import StateStore

NAMES_CHECK_S = 1.0
DEFAULT_CAPACITY = 256


class UnknownTenant(LookupError):
    """No tenant has the request's number or domain (the message says which)."""


class Tenants:
    """The tenants of one worker process: `resolve` a request's tenant, `decider` its
    Decider. `default` is DISPATCHER_TENANT ("" for none)."""

    def __init__(
        self,
        store: StateStore,
        make_decider: Callable[[StateStore], Decider],
        default: str,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.make_decider = make_decider
        self.default = default
        self.capacity = capacity
        self.clock = clock
        self._deciders: OrderedDict[str, Decider] = OrderedDict()
        # (kind, name) -> tenant (None: no tenant has it), good while the index's version is
        # `_names_version`, last read at `_names_checked` (monotonic s)
        self._names: dict[tuple[str, str], str | None] = {}
        self._names_version: int | None = None
        self._names_checked = float("-inf")

    def decider(self, tenant: str) -> Decider:
        """The worker's Decider of `tenant`, made on first use (LRU, `capacity` at most)."""
        found = self._deciders.get(tenant)
        if found is not None:
            self._deciders.move_to_end(tenant)
            return found
        made = self.make_decider(self.store.for_tenant(tenant))
        self._deciders[tenant] = made
        if len(self._deciders) > self.capacity:
            self._deciders.popitem(last=False)
        return made

    def known(self) -> list[str]:
        """The tenants this worker has deciders for now."""
        return list(self._deciders)

    def adopt(self, decider: Decider) -> None:
        """Use `decider` for its tenant (the router's first, built before the cache)."""
        self._deciders[decider.store.tenant] = decider

    def resolve(self, number: str, domain: str) -> str:
        """The tenant of a request to `number` at `domain` (module docstring); UnknownTenant
        when none. StateUnavailable when Redis cannot say (not cached)."""
        if number:
            tenant = self._lookup("did", number)
            if tenant is not None:
                return tenant
        domain = domain.lower()
        tenant = self._lookup("domain", domain) if domain else None
        if tenant is not None:
            return tenant
        if self.default and not self._has_domains(self.default):
            return self.default
        raise UnknownTenant(f"no tenant has the domain {domain!r} or the number {number!r}")

    def aor_domain(self, tenant: str) -> str:
        """The domain of the tenant's AORs in usrloc: its first domain, or for a tenant
        without domains its id (whatever domain its phones register at or are called by,
        they are saved and found there: two such tenants never share an AOR)."""
        domains = self.decider(tenant).view().tenant.domains
        return domains[0] if domains else tenant

    def _has_domains(self, tenant: str) -> bool:
        return bool(self.decider(tenant).view().tenant.domains)

    def _lookup(self, kind: str, name: str) -> str | None:
        """The tenant of a name: cached, else 1 round trip; plus 1 to read the index's
        version when NAMES_CHECK_S passed since the last read."""
        now = self.clock()
        if now - self._names_checked >= NAMES_CHECK_S:
            version = self.store.names_version()
            if version != self._names_version:
                self._names.clear()
                self._names_version = version
            self._names_checked = now
        key = (kind, name)
        if key in self._names:
            return self._names[key]
        if len(self._names) > 16 * self.capacity:
            self._names.clear()  # a scan of random names costs lookups, never memory
        tenant = (
            self.store.tenant_of(did=name) if kind == "did" else self.store.tenant_of(domain=name)
        )
        self._names[key] = tenant
        return tenant
