"""A running node heals its lost releases: the live calls Redis says it holds, compared on a
timer with the dialogs it really has (issue 12 section 1).

A release can be lost while the node runs: its FCALL is sent without waiting
(`release_later`), and a connection that dies before Redis runs it (a failover, a
partition, a Redis restart) takes it along; so does a Redis that is unreachable at the
BYE. The call then stays live in Redis though its dialog is gone. Every
`DLG_RECONCILE_S` (kamailio.cfg, default 10 s) the node's keeper compares:

1. the answered calls Redis maps to this node (`{t:T}:lnode`, 1 round trip per tenant),
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
from typing import TYPE_CHECKING, Any

from dispatcher.sip.edge import define_int
from dispatcher.state import StateError

if TYPE_CHECKING:
    from dispatcher.sip.routing import Router

# dlg.briefing's fields: c call-id, s state (dialog module's DLG_STATE_*).
BRIEFING = json.dumps(
    {"jsonrpc": "2.0", "method": "dlg.briefing", "params": ["cs"], "id": 1}, separators=(",", ":")
)
DLG_STATE_DELETED = 5


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
                for tenant in store.registered_tenants()
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
