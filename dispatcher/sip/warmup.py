"""A node that starts takes no call before it holds the phones its peers have.

With registrations shared over the DMQ bus (WITH_DMQ), a node that starts learns them from a
peer after it is up (dmq_usrloc's sync), or loads them from Redis' copy where there is one.
Until they are in its memory every agent looks unreachable to it: a call goes to its group's
no-answer target (480), and each worker then presumes those agents unreachable for a while
(dispatcher.sip.decision.UNREACHABLE_RECHECK_S). The calls that come first after a restart
are the ones that waited for it - their callers retransmitted the INVITE all along - so a
restart turned every call of its outage into a 480: bench/chaos.py's kamailio_kill (a node
killed with kill -9 and started 2 s later, 30 calls a second to it) counted 116, in the 4 s
after the restart, while the agents sat free.

So such a node starts closed: its workers drop initial INVITEs unanswered (`admits`), which
to the caller looks like the node still starting - the INVITE comes again, RFC 3261
17.1.1.2 (0.5, 1, 2, 4 s ...) - and the keeper opens it (`Opening`) once every agent Redis
records as registered (`{t:T}:reg`, every tenant) has a contact in this node's usrloc, or
OPEN_AT_MOST_S after its first look (a phone Redis remembers but no node holds any more,
or a Redis out of reach, must not keep it closed). REGISTERs, in-dialog requests, OPTIONS
and the DMQ bus are never held back. A node without the DMQ bus keeps its phones to itself
and is open from the start.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dispatcher.sip.decision import ConfigMissing
from dispatcher.sip.edge import define
from dispatcher.sip.names import LOCATION, NODE_TABLE
from dispatcher.state import StateError

if TYPE_CHECKING:
    from dispatcher.sip.routing import Router

OPEN_KEY = "open"  # in NODE_TABLE: 1 once the keeper opened the node
OPEN_AT_MOST_S = 5.0
CHECK_EVERY_S = 0.05


def starts_closed(ksr: Any) -> bool:
    """Whether this node shares registrations over the DMQ bus, so a peer may hold phones it
    does not have yet (kamailio.cfg's WITH_DMQ)."""
    try:
        define(ksr, "WITH_DMQ")
    except KeyError:
        return False
    return True


def admits(ksr: Any) -> bool:
    """Whether the keeper opened the node (one shared-memory read; a worker that saw it open
    need not ask again)."""
    return bool(ksr.htable.sht_get(NODE_TABLE, OPEN_KEY))


class Opening:
    """The keeper's part: looks every CHECK_EVERY_S until the node may open, then opens it."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.ksr: Any = router.ksr
        self.closed = starts_closed(self.ksr)
        self._first_look = 0.0
        self._next_look = 0.0
        self._why = ""  # what the last look missed

    def tick(self) -> None:
        """One look when due, while the node is closed."""
        now = time.monotonic()
        if not self.closed or now < self._next_look:
            return
        self._next_look = now + CHECK_EVERY_S
        self._first_look = self._first_look or now
        waited = now - self._first_look
        if waited >= OPEN_AT_MOST_S:  # first: whatever the look below would raise
            self._open(f"not every registered phone after {waited:.1f} s: {self._why}")
            return
        missing = self.missing()
        if missing == []:
            self._open(f"every registered phone in place after {waited:.2f} s")
        else:
            self._why = "Redis out of reach" if missing is None else f"no phone of {missing[:10]}"

    def _open(self, why: str) -> None:
        self.ksr.htable.sht_seti(NODE_TABLE, OPEN_KEY, 1)
        self.closed = False
        self.ksr.notice(f"dispatcher: node takes calls: {why}\n")

    def missing(self) -> list[str] | None:
        """The agents Redis records as registered that have no contact here, as tenant/agent;
        None when Redis cannot say. Cost: 1 round trip for the tenants, then per tenant 1
        (its registrations) and one usrloc lookup per registered agent."""
        router, ksr = self.router, self.ksr
        store = router.tenants.store
        now_ms = time.time_ns() // 1_000_000  # the nodes record lapses on their own clocks
        out = []
        try:
            for tenant in store.registered_tenants():
                registered = store.for_tenant(tenant).registrations()
                if not any(until > now_ms for until in registered.values()):
                    continue
                agents = router.tenants.decider(tenant).view().agents
                domain = router.tenants.aor_domain(tenant)
                for agent_id, until in sorted(registered.items()):
                    agent = agents.get(agent_id)
                    if until <= now_ms or agent is None or not agent.targets.aor:
                        continue
                    aor = f"sip:{agent.targets.aor}@{domain}"
                    if ksr.registrar.registered_uri(LOCATION, aor) < 0:
                        out.append(f"{tenant}/{agent_id}")
        except (StateError, ConfigMissing):  # a tenant without config: Redis lost it
            return None
        return out


def mend_registrations(ksr: Any) -> None:
    """Before usrloc loads Redis' copy of the registrations (kamailio.cfg's DBURL; none:
    nothing to do): drop the rows a newer row of the same contact replaces and keep the
    row count off the multiples of 1000 that db_redis 5.6 loads 1000 short of
    (dispatcher.state.locations). In the main process, before the fork: the connection is
    closed again. A Redis out of reach is logged; the node starts all the same."""
    import redis

    from dispatcher.state.locations import mend

    try:
        url = define(ksr, "DBURL")
    except KeyError:
        return
    try:
        with redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0) as client:
            mended = mend(client)
    except redis.RedisError as exc:
        ksr.err(f"dispatcher: registrations in Redis not checked before loading: {exc}\n")
        return
    if mended.replaced or mended.pad:
        pad = {1: "; pad row added", -1: "; pad row removed", 0: ""}[mended.pad]
        ksr.info(
            f"dispatcher: registrations in Redis: {mended.replaced} replaced rows deleted, "
            f"{mended.rows} rows to load{pad}\n"
        )
