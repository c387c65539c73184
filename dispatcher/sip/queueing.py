"""Queued callers inside Kamailio: holding a caller nobody can take, serving it when an agent
is free for it, sending it on when it cannot wait.

How a caller is held: with early media. Its INVITE gets `183 Session Progress` carrying
RTPengine's SDP (`dispatcher.sip.media`), RTPengine plays the greeting and then music on hold,
and the INVITE transaction stays open, suspended (tm's t_suspend) so no worker waits for it.
Nothing is answered, so nothing is billed while the caller waits, and a proxy needs no B2BUA
to do it; the price is the unanswered-call limit of carriers and phones
(`dispatcher.config.model.EARLY_MEDIA_LIMIT_S`, which bounds a queue's max_wait).

The node's keeper process (`dispatcher.sip.keeper`) resumes a held caller with t_continue into
one of three routes (kemi.py names them):

- serve (an agent is free for it, Redis rang its doorbell): claim a wave by the group's rules
  and ring it; when nobody is claimed, or nobody of the wave answers, the caller goes back to
  its place in the queue and is suspended again;
- overflow (it waited max_wait, nobody is logged in any more, Redis lost its entry and the
  queue will not take it back, or RTPengine stopped answering the keeper's ping): leave the
  queue and apply the group's overflow target (for a full queue, when it was RTPengine);
- cancel (its CANCEL arrived while suspended; tm would answer 487 but never the CANCEL): leave
  the queue as abandoned and answer 487.

When the agent answers, the reply route hands its SDP to RTPengine (rtpengine_answer), the
music stops, and the 200 goes to the caller: the gap is the answer's own round trip.

RTPengine unreachable or failing when a caller would be held: it is not held, it goes to the
queue's overflow target for a full queue, without audio; logged once per outage (the router's
`media_down`). A held caller's INVITE also carries its own timer (max_wait plus
`TIMER_SLACK_S`): if the node's keeper is gone, the failure route sends the caller on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dispatcher.config.model import Group
from dispatcher.sip import held as held_calls
from dispatcher.sip.decision import CallContext, Exhausted, Offer
from dispatcher.sip.held import CANCELLING, SERVING, SUSPENDED, HeldCall
from dispatcher.sip.names import AVP_CTX, AVP_WAVE, DLG_CANCELLED, DLG_MEDIA, FAILURE_ROUTE
from dispatcher.state import StateUnavailable

if TYPE_CHECKING:
    from dispatcher.sip.routing import Router

SERVE_ROUTE = "ksr_queue_serve"
OVERFLOW_ROUTE = "ksr_queue_overflow"
CANCEL_ROUTE = "ksr_queue_cancel"
# A queue entry's lease: the keeper renews it about 4 times a second; a node gone this long
# leaves its callers to the sweep (dispatcher/state/library.lua).
LEASE_MS = 10_000
# A held INVITE's own timer fires this long after its max wait: only when the keeper is gone.
TIMER_SLACK_S = 5


class Queueing:
    """The queue side of one process's `Router` (workers and the keeper alike)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    @property
    def ksr(self) -> Any:
        return self.router.ksr

    def media_anchored(self) -> bool:
        return bool(self.ksr.pv.get(DLG_MEDIA))

    # -- holding ----------------------------------------------------------------------------

    def hold(self, ctx: CallContext, group: Group, in_failure: bool) -> Exhausted | None:
        """The caller waits in `group`'s queue: None once it is held (suspended), or the
        overflow decision to apply instead (queue full, nobody logged in, no media)."""
        router, ksr = self.router, self.ksr
        assert group.queue is not None
        store = router.decider.store
        priority = group.queue.priority_of(ctx.caller)
        joined = store.queue_join(
            ctx.call_id, group.id, ctx.caller, priority, router.settings.node, LEASE_MS
        )
        if joined.status in ("full", "no_agents"):
            return Exhausted(group.id, group.overflow_target(joined.status), "overflow")
        first = not self.media_anchored()
        if first and not self._answer_early(ctx, in_failure):
            store.queue_leave(ctx.call_id, "error")
            return Exhausted(group.id, group.overflow_target("full"), "overflow")
        ctx.queued = True
        ctx.tried = []
        ksr.pv.sets(AVP_CTX, ctx.encode())
        ksr.pv.unset(AVP_WAVE)
        timer_ms = (group.queue.max_wait + TIMER_SLACK_S) * 1000
        ksr.tm.t_set_fr(timer_ms, timer_ms)
        ksr.tm.t_on_failure(FAILURE_ROUTE)
        if ksr.tmx.t_suspend() < 0:
            store.queue_leave(ctx.call_id, "error")
            ksr.err(f"dispatcher: cannot suspend {ctx.call_id} to queue it\n")
            return Exhausted(group.id, group.overflow_target("full"), "overflow")
        previous = held_calls.get(ksr, ctx.call_id)
        now = router.decider.clock_ms()
        greeting_ms = self._greet(ctx, group) if first else 0
        held_calls.put(
            ksr,
            HeldCall(
                call_id=ctx.call_id,
                tenant=store.tenant,
                group=group.id,
                tindex=int(ksr.pv.get("$T(id_index)")),
                tlabel=int(ksr.pv.get("$T(id_label)")),
                from_tag=str(ksr.pv.get("$ft") or ""),
                joined_ms=previous.joined_ms if previous else now,
                music_at_ms=previous.music_at_ms if previous else now + greeting_ms,
                caller=ctx.caller,
            ),
        )
        return None

    def _answer_early(self, ctx: CallContext, in_failure: bool) -> bool:
        """183 with RTPengine's SDP to the caller; False (logged once) when media fails."""
        router, ksr = self.router, self.ksr
        media = router.media
        sdp = None
        if media is not None:
            sdp = media.anchor(ctx.call_id, str(ksr.pv.get("$ft") or ""))
        if sdp is None:
            router.media_down(media.last_error if media else "no RTPengine configured")
            return False
        router.media_up()
        ksr.pv.sets(DLG_MEDIA, "1")
        if not in_failure:
            ksr.tm.t_newtran()
        ksr.textops.set_reply_body(sdp, "application/sdp")
        ksr.tm.t_reply(183, "Session Progress")
        return True

    def _greet(self, ctx: CallContext, group: Group) -> int:
        """Start the greeting (or the music at once); the ms until the music is due."""
        router = self.router
        if router.announcer is None or router.media is None:
            return 0
        from_tag = str(self.ksr.pv.get("$ft") or "")
        return router.announcer.start(
            router.media, ctx.call_id, from_tag, group, router.decider.store.tenant
        )

    # -- resumed by the keeper --------------------------------------------------------------

    def serve(self) -> None:
        """SERVE_ROUTE: an agent is free for this caller; ring by the group's rules."""
        router = self.router
        ctx = self._context()
        if ctx is None:
            return
        ctx.tried = []
        ctx.started_ms = router.decider.clock_ms()  # a new ring round
        router._looked_up.clear()
        # A doorbell may be a phone that just registered: nobody is presumed unreachable.
        router.decider.forget_unreachable()
        try:
            decision = router.decider.next(ctx, router._reachable)
            router._dispatch(ctx, decision, in_failure=True)
            router._up()
        except StateUnavailable as exc:
            router._unavailable(exc)
            self._give_up(ctx, 503, "Service Unavailable")

    def overflow(self) -> None:
        """OVERFLOW_ROUTE: the caller cannot wait any more; its case is in its record."""
        router, ksr = self.router, self.ksr
        ctx = self._context()
        if ctx is None:
            return
        record = held_calls.get(ksr, ctx.call_id)
        case = record.overflow if record and record.overflow else "timeout"
        held_calls.drop(ksr, ctx.call_id)
        group = router.decider.view().groups.get(ctx.group)
        # No media (RTPengine died while it waited): as a caller that could not be held.
        reason, target_case = ("error", "full") if case == "media" else (case, case)
        try:
            router.decider.store.queue_leave(ctx.call_id, reason)
            target = group.overflow_target(target_case) if group else router_reply_target()
            router._dispatch(ctx, Exhausted(ctx.group, target, "overflow"), in_failure=True)
        except StateUnavailable as exc:
            router._unavailable(exc)
            self._give_up(ctx, 503, "Service Unavailable")

    def cancelled(self) -> None:
        """CANCEL_ROUTE: the caller hung up while waiting."""
        router, ksr = self.router, self.ksr
        ctx = self._context()
        held_calls.drop(ksr, str(ksr.pv.get("$ci") or ""))
        if ctx is not None:
            ksr.pv.sets(DLG_CANCELLED, "1")
            try:
                router.decider.store.queue_leave(ctx.call_id, "abandoned")
            except StateUnavailable as exc:
                router._unavailable(exc)  # its lease lapses; the release ends it too
        ksr.tm.t_reply(487, "Request Terminated")

    def cancel_request(self) -> bool:
        """A CANCEL arrived: if its INVITE waits suspended here, answer the CANCEL and resume
        the INVITE into CANCEL_ROUTE; True when so handled (else relay it as usual)."""
        ksr = self.ksr
        call_id = str(ksr.pv.get("$ci") or "")
        record = held_calls.get(ksr, call_id) if call_id else None
        if record is None or record.state != SUSPENDED:
            return False
        held_calls.put(ksr, record.moved(state=CANCELLING))
        ksr.sl.sl_send_reply(200, "OK")
        if ksr.tmx.t_continue(record.tindex, record.tlabel, CANCEL_ROUTE) < 0:
            # The keeper resumed it in between: tm's own CANCEL handling takes it from here.
            held_calls.put(ksr, record.moved(state=SERVING))
            return False
        return True

    # -- the call's end -----------------------------------------------------------------------

    def on_answer(self, status: int) -> bool:
        """Reply route of a call with media: a 2xx connects caller and agent through
        RTPengine (music stops); an agent's own early media (1xx) is not relayed, the caller
        keeps hearing the queue. False: drop this reply."""
        router, ksr = self.router, self.ksr
        media = router.media
        if not self.media_anchored() or media is None:
            return True
        if status < 200:
            return status == 100
        if status < 300:
            call_id = str(ksr.pv.get("$ci") or "")
            caller_tag = str(ksr.pv.get("$ft") or "")
            media.stop(call_id, caller_tag)
            if not media.connect():
                ksr.err(f"dispatcher: rtpengine_answer failed for {call_id}: one-way audio\n")
            held_calls.drop(ksr, call_id)
        return True

    def ended(self, call_id: str) -> None:
        """The call's dialog ended: RTPengine forgets it, the node stops holding it."""
        held_calls.drop(self.ksr, call_id)
        if self.media_anchored() and self.router.media is not None:
            self.router.media.delete(call_id)

    def failed_while_held(self, ctx: CallContext) -> bool:
        """The failure route of a held caller: its own timer fired (the keeper is gone):
        True after sending it on to the timeout overflow."""
        record = held_calls.get(self.ksr, ctx.call_id)
        if record is None or record.state != SUSPENDED:
            return False
        self.ksr.info(f"dispatcher: {ctx.call_id} waited past its timer: no keeper served it\n")
        held_calls.put(self.ksr, record.moved(state=SERVING, overflow="timeout"))
        self.overflow()
        return True

    # -- helpers ------------------------------------------------------------------------------

    def _context(self) -> CallContext | None:
        text = self.ksr.pv.get(AVP_CTX)
        if not text or not self.router._use_transaction():
            return None
        return CallContext.decode(str(text))

    def _give_up(self, ctx: CallContext, code: int, reason: str) -> None:
        held_calls.drop(self.ksr, ctx.call_id)
        self.router._reply(code, reason, retry_after=code == 503, in_failure=True)


def router_reply_target() -> Any:
    """The target of a caller whose group vanished from the config while it waited."""
    from dispatcher.config.model import Reply

    return Reply(code=480, reason="Temporarily Unavailable")


__all__ = ["CANCEL_ROUTE", "OVERFLOW_ROUTE", "SERVE_ROUTE", "Offer", "Queueing"]
