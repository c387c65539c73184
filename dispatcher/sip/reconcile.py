"""A running node heals its lost releases: the live calls Redis says it holds, compared on a
timer with the dialogs it really has (issue 12 section 1).

A release can be lost while the node runs: its FCALL is sent without waiting
(`release_later`), and a connection that dies before Redis runs it (a failover, a
partition, a Redis restart) takes it along; so does a Redis that is unreachable at the
BYE. The call then stays live in Redis though its dialog is gone. Every
`DLG_RECONCILE_S` (kamailio.cfg, default 10 s) the node's keeper compares:

1. the answered calls Redis maps to this node (`{t:T}:lnode`, 1 round trip per tenant), of
   the tenants whose calls the node routed lately (`ServedTenants`, the node's htable
   `dsptn`): a call the node answered had its INVITE routed here, so a tenant it has not
   routed for longer than a call can last holds none of its calls. Not every tenant of the
   carrier: with 10,000 tenants that walk cost the keeper 10,000 round trips every period,
   about 5 % of the node's core with no call at all;
2. then the node's dialogs, from the dialog module itself (`dlg.briefing` with call-id and
   state, run in-process through jsonrpcs' `exec`: no socket, one pass over the module's
   hash table under its per-slot locks; dialogs in state 5, deleted, count as gone).

In that order, a call answered meanwhile cannot be mistaken for a lost one: its dialog
exists from its INVITE on, before any answer reaches Redis. A call without a dialog (and
without extra dialogs of simultaneous answers, `dispatcher.sip.answers`) is a suspect; a
suspect of the previous round that is still live and still without a dialog is released
(outcome `lost`, no wrap-up, event `ended`): a release in flight at the first look has
landed by the second. So a lost release heals within two periods plus one look - 20 s at
the default - independent of the dialog module's timer, like the backstop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dispatcher.sip.edge import define_int
from dispatcher.sip.held import values
from dispatcher.sip.names import SERVED_TABLE
from dispatcher.state import StateError

if TYPE_CHECKING:
    from dispatcher.sip.routing import Router

# dlg.briefing's fields: c call-id, s state (dialog module's DLG_STATE_*).
BRIEFING = json.dumps(
    {"jsonrpc": "2.0", "method": "dlg.briefing", "params": ["cs"], "id": 1}, separators=(",", ":")
)
DLG_STATE_DELETED = 5
# A process notes a tenant it routes an INVITE of at most this often (ServedTenants).
NOTE_EVERY_S = 60
# Tenants a process remembers having noted; past it, it forgets those due again (or all,
# if none is): a few more shared-memory writes, never more memory.
MAX_NOTED = 4096


class ServedTenants:
    """The tenants whose calls this node routes, in the node's shared htable SERVED_TABLE
    (tenant -> tenant), for its reconciler: each process notes the tenant of an INVITE it
    routes, at most once per NOTE_EVERY_S per tenant, with an expiry past the longest a
    call routed then can stay this node's without the backstop taking it (DLG_TIMEOUT +
    LIVE_MARGIN_S) and the period of the notes. Cost per call: a dict lookup; per tenant
    and NOTE_EVERY_S, one shared-memory write."""

    def __init__(self, ksr: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.ksr = ksr
        self.clock = clock
        self._keep_s = 0  # read from the defines on first use (a process may never route)
        self._due: dict[str, float] = {}

    def note(self, tenant: str) -> None:
        """This process routes a call of `tenant`."""
        now = self.clock()
        if self._due.get(tenant, 0.0) > now:
            return
        if not self._keep_s:
            ksr = self.ksr
            self._keep_s = (
                define_int(ksr, "DLG_TIMEOUT") + define_int(ksr, "LIVE_MARGIN_S") + NOTE_EVERY_S
            )
        if len(self._due) >= MAX_NOTED:
            self._due = {t: due for t, due in self._due.items() if due > now}
            if len(self._due) >= MAX_NOTED:
                self._due.clear()
        self.ksr.htable.sht_setxs(SERVED_TABLE, tenant, tenant, self._keep_s)
        self._due[tenant] = now + NOTE_EVERY_S


def served_tenants(ksr: Any) -> list[str]:
    """The tenants the node's processes noted (ServedTenants) and whose notes are alive:
    O(those tenants), in shared memory."""
    return sorted(set(values(ksr, SERVED_TABLE)))


def node_dialogs(ksr: Any) -> set[str] | None:
    """The Call-IDs of the node's dialogs not yet deleted; None when the module did not
    answer. Cost: O(dialogs), in this process."""
    if ksr.jsonrpcs.exec(BRIEFING) < 0:
        return None
    try:
        reply = json.loads(str(ksr.pv.get("$jsonrpl(body)") or ""))
    except ValueError:
        return None
    if "result" not in reply:
        return None
    return {
        str(d.get("call-id"))
        for d in reply["result"] or []
        if int(d.get("state", 0)) != DLG_STATE_DELETED
    }


class Reconciler:
    """The keeper's comparison of Redis' live calls of this node with its dialogs."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.every_s = float(define_int(router.ksr, "DLG_RECONCILE_S"))
        self._suspects: set[tuple[str, str]] = set()  # (tenant, call) without a dialog

    def run(self) -> None:
        """One look; releases the calls found without a dialog twice in a row."""
        router, ksr = self.router, self.router.ksr
        store = router.tenants.store
        try:
            held = [
                (tenant, call)
                for tenant in served_tenants(ksr)
                for call in store.for_tenant(tenant).calls_of_node(router.settings.node)
            ]
        except StateError as exc:
            router._unavailable(exc)
            return
        dialogs = node_dialogs(ksr)
        if dialogs is None:
            ksr.err("dispatcher: dlg.briefing failed: no reconciliation this round\n")
            return
        suspects = {
            (tenant, call)
            for tenant, call in held
            if call not in dialogs and not router.answers.alive(call)
        }
        lost, self._suspects = suspects & self._suspects, suspects - self._suspects
        for tenant, call in sorted(lost):
            try:
                store.for_tenant(tenant).release(call, outcome="lost")
            except StateError as exc:
                router._unavailable(exc)
                self._suspects.add((tenant, call))
                continue
            ksr.notice(f"dispatcher: {tenant} call {call} has no dialog here: released\n")
