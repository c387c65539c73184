"""Several agents answering one group call: the dialogs of a forked INVITE's 2xx replies.

A wave of several agents forks the caller's INVITE. Phones that answer at the same instant
each send a 2xx, and tm relays every one of them to the caller: a proxy must (RFC 3261 16.7
step 5; RFC 6026 keeps the INVITE server transaction in its Accepted state for exactly
that). Each 2xx makes a dialog of its own with the caller (RFC 3261 12.1, 13.2.2.4); the
caller decides which to keep, and a correct one ACKs every 2xx and sends BYE on the dialogs
it does not want. Kamailio's dialog module tracks one dialog per Call-ID and From tag, the
one the first 2xx confirmed (its To tag is the callee tag; a later 2xx changes nothing and
starts no dialog:start), so a BYE on any other dialog matches none of its dialogs: no
dialog:end, no release - the agent of that dialog stayed counted until the call ended.

What is counted follows the dialogs: every agent whose 2xx reached Redis is counted live
(`disp_answered`; a late one gets reason `late` when the first answer had already released
its reservation), and each dialog's end releases its own agent only (`disp_release(call,
agent)`) - never the agent of a dialog still up, nor an agent that still has another dialog
on the call (two phones of one agent). The call ends (`disp_release(call)`: event `ended`,
nothing of it left counted) with its last dialog. Which dialog the caller keeps is its
choice: usually the first 2xx it got, which is usually the one the dialog module tracks -
but two 2xx relayed in the same instant by two workers may reach the caller in one order
and the module's state machine in the other (tm runs the module's TMCB_RESPONSE_READY after
its reply lock), so neither is assumed.

How the dialogs are told apart, cheaply: the 2xx of a wave of several agents (the reply
route runs for those only) is recorded in the node's htable `dspans`: `<call>` counts the
call's 2xx (sht_inc, atomic), `<call>\\x1f<i>` holds the i-th as `<to tag> <agent> <tenant>`
while its dialog is up. A BYE inside a dialog (kemi.py, before loose_route) reads one value,
`$sht(dspans=>$ci)`: unset or 1 for every call answered once, and that is all it costs them.
With two or more, the BYE's To and From tags are looked up among the records (one of them
is its dialog's agent tag, whichever end sends it); a BYE the dialog module knows
(`is_known_dlg`, a tight match on both tags) belongs to the tracked dialog and is left to
its dialog:end, which finds its record by `$dlg(to_tag)`. The extra dialogs have no timer
of their own: one whose BYE never comes is released by the keepers' backstop (the dialog
timeout plus LIVE_MARGIN_S), and the node's reconciliation leaves a call alone while it has
records here (`alive`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dispatcher.state import StateUnavailable

if TYPE_CHECKING:
    from dispatcher.sip.routing import Router

# kamailio.cfg: modparam("htable", "htable", "dspans=>...")
ANSWERS_TABLE = "dspans"
ANSWER_COUNT = f"$sht({ANSWERS_TABLE}=>$ci)"
SEP = "\x1f"  # never in a Call-ID the router serves (dispatcher.state.keys.validate_call_id)


class Answers:
    """The 2xx replies of one process's group calls (`Router.answers`)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def record(self, call_id: str, agent: str) -> None:
        """A 2xx of a wave of several agents (tm reply route): remember its To tag's agent.
        Cost: 3 KSR calls."""
        ksr = self.router.ksr
        tag = str(ksr.pv.get("$tt") or "")
        index = ksr.htable.sht_inc(ANSWERS_TABLE, call_id)
        tenant = self.router.decider.store.tenant
        ksr.htable.sht_sets(ANSWERS_TABLE, f"{call_id}{SEP}{index}", f"{tag} {agent} {tenant}")

    def on_bye(self) -> None:
        """A BYE inside a dialog (either end): when it ends an extra dialog of a group call,
        release that dialog's agent (unless another of its dialogs on the call is up), or the
        whole call when it was the call's last dialog. Cost for a call answered once: 1 KSR
        call."""
        ksr = self.router.ksr
        answers = ksr.pv.get(ANSWER_COUNT)
        if not answers or int(answers) < 2:
            return
        call_id = str(ksr.pv.get("$ci"))
        records = self._records(call_id, int(answers))
        tags = {str(ksr.pv.get("$tt") or ""), str(ksr.pv.get("$ft") or "")}
        ended = next((i for i, (tag, _, _) in records.items() if tag in tags), None)
        if ended is None or ksr.dialog.is_known_dlg() > 0:
            return  # not one of ours, or the tracked dialog: its dialog:end sees to it
        tenant = records[ended][2]
        if not self._dialog_gone(call_id, records, ended):
            self._release(tenant, call_id, "", "its last dialog ended")

    def dialog_ended(self, call_id: str) -> bool:
        """The tracked dialog of `call_id` ended (dialog:end, dialog:failed, the module's own
        BYE): True when extra dialogs of the call are still up - then only the tracked
        dialog's agent is released here and the call lives on in them; False when the whole
        call is to be released (its records are dropped). Cost for a call without a wave of
        several: 1 KSR call."""
        ksr = self.router.ksr
        answers = ksr.htable.sht_get(ANSWERS_TABLE, call_id)
        if not answers:
            return False
        records = self._records(call_id, int(answers))
        tag = str(ksr.pv.get("$dlg(to_tag)") or "")
        tracked = next((i for i, (t, _, _) in records.items() if t == tag), None)
        if tracked is None:  # ended before: only extras are left, or nothing
            if records:
                return True
            self._forget(call_id)
            return False
        return self._dialog_gone(call_id, records, tracked)

    def alive(self, call_id: str) -> bool:
        """Whether the node records dialogs of `call_id` still up (the keeper's
        reconciliation: a call whose tracked dialog is gone may live on in extra ones)."""
        return bool(self.router.ksr.htable.sht_get(ANSWERS_TABLE, call_id))

    def _dialog_gone(
        self, call_id: str, records: dict[int, tuple[str, str, str]], gone: int
    ) -> bool:
        """The dialog of record `gone` ended: True, its agent released (unless another of
        its dialogs is up), while other dialogs of the call are up; False, the records
        dropped, when it was the last: the whole call is to be released."""
        tag, agent, tenant = records[gone]
        # a retransmitted 2xx was recorded again under the same tag
        for index in [i for i, record in records.items() if record[0] == tag]:
            self.router.ksr.htable.sht_rm(ANSWERS_TABLE, f"{call_id}{SEP}{index}")
        # Read the records again, after removing ours: two phones hanging up at once are two
        # workers, each holding the records it read before the other removed its own. Each
        # removes before it reads, so whichever reads last finds none left and releases the
        # whole call (both may: that release is idempotent); with its first reading, each
        # would have seen the other's dialog up and released only its own agent - nobody
        # counted, but the call never ended (no event `ended`).
        records = self._records(call_id, self._count(call_id))
        if not records:
            self._forget(call_id)
            return False
        if all(other != agent for _, other, _ in records.values()):
            self._release(tenant, call_id, agent, "one of its dialogs ended")
        return True

    def _release(self, tenant: str, call_id: str, agent: str, why: str) -> None:
        who = agent or "every agent"
        self.router.ksr.info(f"dispatcher: {call_id}: {why}, {who} released\n")
        try:
            if agent:
                self.router.use(tenant).release_later(call_id, agent)
            else:
                self.router.use(tenant).release_later(call_id, outcome="answered")
            self.router._up()
        except StateUnavailable as exc:
            self.router._unavailable(exc)

    def _count(self, call_id: str) -> int:
        """How many 2xx of the call were recorded (0 once its records are forgotten)."""
        return int(self.router.ksr.htable.sht_get(ANSWERS_TABLE, call_id) or 0)

    def _forget(self, call_id: str) -> None:
        ksr = self.router.ksr
        for index in range(1, self._count(call_id) + 1):
            ksr.htable.sht_rm(ANSWERS_TABLE, f"{call_id}{SEP}{index}")
        ksr.htable.sht_rm(ANSWERS_TABLE, call_id)

    def _records(self, call_id: str, answers: int) -> dict[int, tuple[str, str, str]]:
        """The call's recorded 2xx whose dialogs are up: index -> (to tag, agent, tenant)."""
        out: dict[int, tuple[str, str, str]] = {}
        for index in range(1, answers + 1):
            value = self.router.ksr.htable.sht_get(ANSWERS_TABLE, f"{call_id}{SEP}{index}")
            if value:
                tag, agent, tenant = str(value).split(" ", 2)
                out[index] = (tag, agent, tenant)
        return out
