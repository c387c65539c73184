"""Group routing inside Kamailio: SIP events of the KEMI script in, `Decider` calls out.

kamailio/kemi.py opens one `Router` per process (`Router.open`, in child_init, SIP workers and
the rank -1 timer processes where tm runs failure routes) and translates SIP events into
calls of it; everything that talks to Kamailio here goes through the `ksr` object it is given
(the `KSR` module of app_python3), so the script stays thin.

A call to a group extension (R-URI user):

1. INVITE - `route_invite`: `Decider.start`, then one branch per target of each agent of the
   wave. An agent's targets are the contacts registered for its AOR (read with
   `registrar.reg_fetch_contacts` into the `$ulc(dsp=>...)` profile; a contact's `received`
   becomes the branch's destination URI) followed by its static URIs. The Request-URI is the
   first target, the others are `corex.append_branch_uri` branches, so the extension itself is
   never forked. Planning asks the same lookup whether each member has a target now, so an
   agent whose phone is not registered is never planned or claimed. One that loses its
   registration between plan and fork is reported `failed(..., "unreachable")` (not a missed
   offer) and, when the whole wave had none, the next wave is taken at once.
   fr_inv/fr timers = the wave's timeout (`tm.t_set_fr`); the encoded `CallContext` goes into
   `$avp(dsp_ctx)` and the wave's agents into `$avp(dsp_wave)` (transaction AVPs, seen by the
   reply and failure routes); `t_on_reply("ksr_onreply_group")` (waves of several agents),
   `t_on_failure("ksr_failure_group")`; the dialog flag and `$dlg_var(dsp_call)` mark the call
   for release, and the dialog properties `ka-src`/`ka-dst` have it keepalive both ends.
2. Branch to agent: each branch carries `(index of the agent in ctx.tried) + 1` in its branch
   flags, bits 8..23 (`$bf`); tm restores a branch's flags before its reply route runs.
3. Replies. A wave of one agent (sequential, least busy, random, round robin, weighted,
   longest idle, sticky; a tier of one) arms no reply route: `$dlg_var(dsp_answer)` names
   the agent and the call, and the dialog module's `dialog:start` (the 2xx that confirms the
   dialog) records the answer - one Python entry less per provisional and final reply. A
   wave of several agents arms `on_reply` (tm onreply route, every reply of every branch):
   a 2xx is the answer; a negative final reply is remembered per call, group and agent in
   the shared-memory htable `dsp`, for the failure route. Either way the answer is
   `Decider.answered_later`: sent without waiting for Redis' reply, so tm relays the 200 at
   once.
4. All branches failed - `on_failure`: every agent of the wave gets `failed` with the reason of
   its reply - for a one-agent wave the reply tm chose (`$T_reply_code`), else the code the
   reply route remembered - (486/600 busy, 603 declined, 408/480 and tm's own timeout
   noanswer, 487 cancelled after the caller's CANCEL else noanswer, anything else error).
   A cancelled call stops there; otherwise `Decider.next` gives the next wave (new
   branches, t_relay) or the no-answer target: `reply` its code, `forward` t_relay to its
   URI, `group` `Decider.start_group` for the overflow group, `voicemail` 480 for now (the
   queue issue builds voicemail).
5. Release, exactly once per call: the dialog module's `dialog:end` (BYE, dialog timeout, an
   end that stopped answering keepalives) or `dialog:failed` (any negative final reply to the
   caller: CANCEL, no-answer reply, failed forward) event calls
   `Decider.release_later(call_id, outcome=...)` (no wait either) - `dialog_event`; the
   outcome (answered / abandoned / no_answer, `call_outcome`) is for reports. A dialog the
   module ends itself is also released on its first BYE (tm:local-request, kemi.py):
   Kamailio 5.6 skips that dialog:end when a reply to the BYEs beats it; repeated releases
   change nothing. Only a call answered with a reply before any dialog existed (Exhausted
   at once, in the request route) is released right there.

Redis unreachable or slower than REDIS_TIMEOUT_MS (connect and per command, no retries):
the caller gets 503 with Retry-After, at most about two timeouts after the INVITE, and the
worker logs the reason once per outage (and once when Redis is back). A Request-URI user that
is registered (a plain user call) still goes to the user location then. A tenant without
config in Redis routes no groups (logged once). REDIS_URL unset: group routing is off.
An answer or release sent without waiting whose reply is an error, or whose connection is
lost before the reply comes, is logged ("... sent earlier failed") and counted as a Redis
error; its reservations expire by themselves, and a live call stays until swept - as for a
release Redis never got.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from dispatcher.config.model import Forward, Overflow, Reply
from dispatcher.config.model import Voicemail as VoicemailTarget
from dispatcher.media.ng import NgClient
from dispatcher.settings import Settings, SettingsError
from dispatcher.sip import handoff
from dispatcher.sip.announcer import Announcer
from dispatcher.sip.answers import Answers
from dispatcher.sip.authn import Authenticator
from dispatcher.sip.decision import CallContext, ConfigMissing, Decider, Exhausted, Offer
from dispatcher.sip.inbound import match_inbound
from dispatcher.sip.media import CallMedia

# Kamailio names shared with kamailio.cfg / kemi.py.
from dispatcher.sip.names import (
    AVP_CTX,
    AVP_TENANT,
    AVP_WAVE,
    DLG_ANSWER,
    DLG_CALL,
    DLG_CANCELLED,
    DLG_TENANT,
    FAILURE_ROUTE,
    FLT_DLG,
    HTABLE,
    LOCATION,
    REPLY_ROUTE,
    ULC_PROFILE,
)
from dispatcher.sip.queueing import Queueing
from dispatcher.sip.reconcile import ServedTenants
from dispatcher.sip.tenants import Tenants, UnknownTenant
from dispatcher.sip.voicemail import Voicemail
from dispatcher.state import AnswerOutcome, StateError, StateStore, StateUnavailable
from dispatcher.state.keys import validate_call_id

BRANCH_SHIFT = 8
BRANCH_MASK = 0xFFFF
RETRY_AFTER_S = 5
# How long the keeper waits before it tries the handed releases again after Redis failed.
HANDOFF_RETRY_S = 0.5
# Overflow hops one call may take (the config refuses cycles; this is a belt).
MAX_OVERFLOWS = 8
# A node clock further than this from Redis' TIME is logged, once per change. Shared state
# follows Redis' TIME, so only what stays on the node (overall timeouts, inbound schedules)
# and, past a day, sticky memory (dispatcher/state/sticky.py) suffer from it.
CLOCK_SKEW_LOG_MS = 2000
# The node's outages in a shared htable (kamailio.cfg, dspnode): every process of the node
# (workers, the keeper) sees one outage, and the first to see it logs.
NODE_TABLE = "dspnode"
MEDIA_DOWN_KEY = "media_down"
REDIS_DOWN_KEY = "redis_down"


def call_outcome(dialog_event: str, caller_cancelled: bool) -> str:
    """The outcome a group call's `ended` event gets when its dialog ends with `dialog_event`.

    dialog:end: answered (by an agent, or by a forward target: reports tell them apart by
    the agent's answered event). dialog:failed: abandoned when the failure route saw the
    caller's CANCEL while the group's phones rang, else no_answer (the no-answer target's
    reply, or a forward target that failed).
    """
    if dialog_event == "dialog:end":
        return "answered"
    return "abandoned" if caller_cancelled else "no_answer"


def failure_reason(code: int | None, caller_cancelled: bool) -> str:
    """The `Decider.failed` reason for an agent whose branches ended with `code`.

    None: no final reply from the agent (tm's ring timer ended it, or the caller cancelled).
    """
    if caller_cancelled:
        return "cancelled"
    if code is None or code in (408, 480, 487):
        return "noanswer"  # 487: tm cancelled the branch when the wave timed out
    if code in (486, 600):
        return "busy"
    if code == 603:
        return "declined"
    return "error"


class Router:
    """The group routing of one Kamailio process; `ksr` is app_python3's KSR module.

    `media` (RTPengine) and `announcer` (the prompts) serve queued callers; without them a
    caller that would wait goes to the queue's overflow target for a full queue.
    """

    def __init__(
        self,
        ksr: Any,
        decider: Decider,
        settings: Settings | None = None,
        media: CallMedia | None = None,
        announcer: Announcer | None = None,
        tenants: Tenants | None = None,
    ) -> None:
        self.ksr = ksr
        self.settings = settings or Settings.from_env()
        # The decider of the tenant of the request at hand (`use`); `decider` is the first.
        self.decider = decider
        decider.store.deferred_error = self._deferred_failed
        decider.store.node = self.settings.node  # answers record the node holding the dialog
        if tenants is None:
            clock = decider.clock_ms
            tenants = Tenants(
                decider.store,
                lambda store: type(decider)(store, clock),
                self.settings.tenant,
                self.settings.tenant_cache,
            )
        self.tenants = tenants
        self.tenants.adopt(decider)
        self.media = media
        self.announcer = announcer
        self.queue = Queueing(self)
        self.auth = Authenticator(self)
        self.voicemail = Voicemail(self)
        self.answers = Answers(self)
        # the tenants this node routes, for the keeper's reconciler (not every tenant's calls)
        self.served = ServedTenants(ksr)
        # Set by the KEMI script in Kamailio's timer processes: dialog ends there are handed
        # to the keeper, never sent to Redis from the timer (dispatcher.sip.handoff).
        self.in_timer = False
        self._handoff_retry_at = 0.0
        self._down = False
        self._no_config = False
        self._skewed = False
        # The targets `_reachable` looked up during the current decision, by agent: the
        # wave's relay uses them rather than asking the location table again.
        self._looked_up: dict[str, list[tuple[str, str]]] = {}

    def use(self, tenant: str) -> Decider:
        """Serve `tenant` from now on (each SIP event names its tenant); its decider."""
        if tenant != self.decider.store.tenant:
            self.decider = self.tenants.decider(tenant)
        return self.decider

    def _use_transaction(self) -> bool:
        """The tenant of the transaction at hand (its AVP); False when it has none."""
        tenant = self.ksr.pv.get(AVP_TENANT)
        if not tenant:
            return False
        self.use(str(tenant))
        return True

    @classmethod
    def open(cls, ksr: Any) -> Router | None:
        """The process's router from the environment; None (logged) when routing is off."""
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            ksr.err(f"dispatcher: group routing off: {exc}\n")
            return None
        if settings.redis_url is None:
            ksr.info("dispatcher: REDIS_URL unset, group routing off\n")
            return None
        timeout = settings.redis_timeout_ms / 1000
        # The default tenant's store holds the worker's connections; every tenant's shares them.
        store = StateStore(
            settings.redis_url,
            settings.tenant or "default",
            socket_timeout=timeout,
            connect_timeout=timeout,
        )
        # Records each decision's latency and Redis errors for /metrics (dispatcher.sip.metrics).
        from dispatcher.sip.metrics import MeteredDecider

        media = None
        if settings.rtpengine_ng is not None:
            # One retransmission: a caller waits at most ~0.6 s for a dead RTPengine.
            ng = NgClient(*settings.rtpengine_ng, timeout=0.3, retries=1)
            media = CallMedia(ksr, ng)
        announcer = Announcer(settings.prompts_dir, ksr.err, store_of=store.for_tenant)
        return cls(ksr, MeteredDecider(store, settings.clock_ms), settings, media, announcer)

    # -- request route ----------------------------------------------------------------

    def route_invite(self) -> bool:
        """An initial INVITE: True if it was a group call or matched an inbound rule and is
        handled (relayed/replied).

        Inbound rules come first (`dispatcher.sip.inbound.match_inbound` on the Request-URI user,
        the From user and the decision clock): a `group` target starts that group as if its
        extension had been dialled; forward, voicemail and reply go through `_dispatch` like
        a group's no-answer target. Without a matching rule the user is a group extension or
        not ours.
        """
        ksr = self.ksr
        self._looked_up.clear()
        call_id, user, caller = (_pv_text(ksr, pv) for pv in ("$ci", "$rU", "$fU"))
        try:
            tenant = self.tenants.resolve(user, _pv_text(ksr, "$rd"))
            aor_domain = self.tenants.aor_domain(tenant)
        except UnknownTenant as exc:
            ksr.info(f"dispatcher: INVITE {call_id} refused: {exc}\n")
            self._reply(404, "Not Found")
            return True
        except StateUnavailable as exc:
            self._unavailable(exc)
            self._reply(503, "Service Unavailable", retry_after=True)
            return True
        except ConfigMissing as exc:
            return self._config_missing(exc)
        self.use(tenant)
        self.served.note(tenant)
        ksr.pv.sets(AVP_TENANT, tenant)
        if not _usable_call_id(call_id):
            # RFC 3261 allows Call-IDs our Redis keys refuse (over 256 bytes, \x1f; not UTF-8,
            # which app_python3 cannot even hand over): such calls reach registered users only.
            ksr.pv.sets("$rd", aor_domain)
            if ksr.registrar.registered(LOCATION) > 0:
                return False
            ksr.info("dispatcher: INVITE refused, its Call-ID cannot be a state key\n")
            self._reply(400, "Bad Request")
            return True
        try:
            now_ms = self.decider.clock_ms()
            rule = match_inbound(self.decider.view().tenant, user, caller, now_ms)
            if rule is None:
                started = self.decider.start(call_id, user, caller, self._reachable)
            elif isinstance(rule.target, Overflow):
                started = self.decider.start_group(
                    call_id, rule.target.group, caller, self._reachable
                )
            else:  # nothing to claim: the target applies at once
                started = CallContext(call_id, "", caller, now_ms), Exhausted("", rule.target)
            self._up()
            self._check_clock()
        except StateUnavailable as exc:
            if ksr.registrar.registered(LOCATION) > 0:
                return False  # a plain user, registered here: no Redis needed
            self._unavailable(exc)
            self._reply(503, "Service Unavailable", retry_after=True)
            return True
        except ConfigMissing as exc:
            return self._config_missing(exc)
        if started is None:
            # a call to a plain user: the location lookup finds it under its tenant's domain
            ksr.pv.sets("$rd", aor_domain)
            return False
        self._no_config = False
        ctx, decision = started
        ksr.setflag(FLT_DLG)
        ksr.pv.sets(DLG_CALL, call_id)
        ksr.pv.sets(DLG_TENANT, tenant)
        # In-dialog OPTIONS keepalives to both ends once answered (kamailio.cfg DLG_KA_*): an
        # end that stops answering them ends the dialog like a timeout - BYEs, dialog:end.
        ksr.dialog.dlg_set_property("ka-src")
        ksr.dialog.dlg_set_property("ka-dst")
        try:
            self._dispatch(ctx, decision, in_failure=False)
        except StateUnavailable as exc:
            self._unavailable(exc)
            self._reply(503, "Service Unavailable", retry_after=True)
        return True

    def _config_missing(self, exc: ConfigMissing) -> bool:
        if not self._no_config:
            self.ksr.err(f"dispatcher: {exc}; no group routing until it is imported\n")
            self._no_config = True
        return False

    # -- tm onreply route -------------------------------------------------------------

    def on_reply(self) -> bool:
        """A reply of a group call's branch: 2xx answered, negative final remembered. False:
        drop it (an agent's early media while the caller hears the queue)."""
        ksr = self.ksr
        status = int(ksr.pv.get("$rs") or 0)
        self._use_transaction()
        if not self.queue.on_answer(status):
            return False
        if status >= 200:
            self._on_final_reply(status)
        return True

    def _on_final_reply(self, status: int) -> None:
        ksr = self.ksr
        wave = self._wave_agents()
        if len(wave) < 2:
            return  # a one-agent wave: dialog:start and the failure route see to it
        found = self._branch_agent()
        if found is None:
            return
        ctx, agent = found
        if status >= 300:
            ksr.htable.sht_seti(HTABLE, _code_key(ctx, agent), status)
            return
        # Answered: the failure route will not run for this wave; drop its codes. The
        # answer releases the others' reservations without counting a miss.
        for other in wave:
            ksr.htable.sht_rm(HTABLE, _code_key(ctx, other))
        self.answers.record(ctx.call_id, agent)  # tells its dialog from the others' (2xx each)
        self._answered(ctx, agent)

    def _answered(self, ctx: CallContext, agent: str) -> None:
        """Record the answer, sent without waiting for Redis' reply so tm relays the 200 at
        once; the outcome is read with the worker's next FCALL."""
        ksr = self.ksr

        def done(outcome: AnswerOutcome) -> None:
            if outcome != "ok":
                ksr.info(f"dispatcher: answer by {agent} on {ctx.call_id}: {outcome}\n")

        try:
            self.decider.answered_later(ctx, agent, done)
            self._up()
        except StateUnavailable as exc:
            self._unavailable(exc)

    def _wave_agents(self) -> list[str]:
        """The agents of the transaction's current wave (set by `_relay_wave`)."""
        return [a for a in str(self.ksr.pv.get(AVP_WAVE) or "").split(",") if a]

    def _branch_agent(self) -> tuple[CallContext, str] | None:
        text = self.ksr.pv.get(AVP_CTX)
        if not text:
            return None
        ctx = CallContext.decode(str(text))
        index = (int(self.ksr.pv.get("$bf") or 0) >> BRANCH_SHIFT) & BRANCH_MASK
        if not 0 < index <= len(ctx.tried):
            return None
        return ctx, ctx.tried[index - 1]

    # -- tm failure route -------------------------------------------------------------

    def on_failure(self) -> None:
        """Every branch of the wave failed: report the agents, then the next step."""
        ksr = self.ksr
        text = ksr.pv.get(AVP_CTX)
        if not text or not self._use_transaction():
            return
        ctx = CallContext.decode(str(text))
        self._looked_up.clear()
        if ctx.queued and self.queue.failed_while_held(ctx):
            return
        wave = self._wave_agents()
        cancelled = ksr.tm.t_is_canceled() > 0
        if cancelled:
            # For dialog:failed, whose event route cannot ask tm any more: tm sets the
            # dialog context in failure routes (TMCB_ON_FAILURE), so the var sticks.
            ksr.pv.sets(DLG_CANCELLED, "1")
        try:
            for agent in wave:
                if len(wave) == 1:  # no reply route: the reply tm chose is the agent's
                    code = ksr.pv.get("$T_reply_code")
                else:
                    key = _code_key(ctx, agent)
                    code = ksr.htable.sht_get(HTABLE, key)
                    ksr.htable.sht_rm(HTABLE, key)
                reason = failure_reason(int(code) if code else None, cancelled)
                self.decider.failed(ctx, agent, reason)
            if cancelled:
                if ctx.queued:
                    self.decider.store.queue_leave(ctx.call_id, "abandoned")
                return  # tm answers the caller 487; dialog:failed releases the call
            self._dispatch(ctx, self.decider.next(ctx, self._reachable), in_failure=True)
            self._up()
        except StateUnavailable as exc:
            self._unavailable(exc)
            if not cancelled:
                self._reply(503, "Service Unavailable", retry_after=True, in_failure=True)

    # -- dialog events ----------------------------------------------------------------

    def dialog_event(self, event: str) -> None:
        """dialog:start of a call whose last wave had one agent: that agent answered.
        dialog:end / dialog:failed of a group call: release it (once per dialog); in a
        Kamailio timer process (`in_timer`) the release is handed to the keeper instead
        (dispatcher.sip.handoff): a timer must never wait on Redis."""
        tenant = self.ksr.pv.get(DLG_TENANT)
        if not tenant:
            return
        if event in ("dialog:end", "dialog:failed"):
            self._dialog_ended(str(tenant), event)
            return
        if event == "dialog:start":
            self.use(str(tenant))
            answer = self.ksr.pv.get(DLG_ANSWER)
            if answer:
                agent, _, ctx_text = str(answer).partition(" ")
                self._answered(CallContext.decode(ctx_text), agent)

    def _dialog_ended(self, tenant: str, event: str) -> None:
        call_id = self.ksr.pv.get(DLG_CALL)
        if not call_id:
            return
        if not self.in_timer:  # a timer process names the tenant to the keeper instead
            self.use(tenant)
        self.queue.ended(str(call_id))
        if self.answers.dialog_ended(str(call_id)):
            return  # its agent released; the call lives on in extra dialogs (sip/answers.py)
        outcome = call_outcome(event, bool(self.ksr.pv.get(DLG_CANCELLED)))
        if self.in_timer:
            handoff.hand_over(self.ksr, handoff.Release(tenant, str(call_id), outcome))
            return
        try:
            self.decider.release_later(str(call_id), outcome=outcome)
            self._up()
        except StateUnavailable as exc:
            # Its reservations expire by themselves (TTL); a live call stays until swept.
            self._unavailable(exc)

    def send_handed_releases(self) -> None:
        """The keeper's turn: send the releases the timer processes handed over, each taken
        from the table once Redis replied (so they wait one round trip each, not a deferred
        reply that a dropped connection would lose). While Redis is unavailable the rest
        stay in the table and are tried again after HANDOFF_RETRY_S."""
        now = time.monotonic()
        if now < self._handoff_retry_at:
            return
        for release in handoff.handed(self.ksr):
            self.use(release.tenant)
            try:
                self.decider.release(release.call_id, outcome=release.outcome)
            except StateUnavailable as exc:
                self._unavailable(exc)
                self._handoff_retry_at = now + HANDOFF_RETRY_S
                return
            except StateError as exc:  # refused by the library: retrying cannot help
                self.ksr.err(f"dispatcher: handed release of {release.call_id} refused: {exc}\n")
            except BaseException:
                handoff.taken(self.ksr, release)  # a bug raises once, not every turn
                raise
            handoff.taken(self.ksr, release)
            self._up()

    # -- decisions into SIP -----------------------------------------------------------

    def _dispatch(self, ctx: CallContext, decision: Offer | Exhausted, in_failure: bool) -> None:
        """Relay the offer's branches, or apply the group's no-answer target."""
        overflows = 0
        while True:
            if isinstance(decision, Offer):
                if self._relay_wave(ctx, decision, in_failure):
                    return
                decision = self.decider.next(ctx, self._reachable)  # nobody of this wave reachable
                continue
            group = self.decider.view().groups.get(decision.group)
            if decision.why == "busy" and group is not None and group.queued:
                waits = self.queue.hold(ctx, group, in_failure)
                if waits is None:
                    return  # held: the keeper serves it
                decision = waits  # it cannot wait: the queue's overflow target
                continue
            target = decision.target
            if isinstance(target, Overflow) and overflows < MAX_OVERFLOWS:
                overflows += 1
                ctx, decision = self.decider.start_group(
                    ctx.call_id, target.group, ctx.caller, self._reachable
                )
                continue
            if isinstance(target, Forward):
                self._relay_to(target.uri, in_failure)
                return
            if isinstance(target, Reply):
                self._reply(target.code, target.reason, in_failure=in_failure)
            elif isinstance(target, VoicemailTarget):
                mailbox = target.mailbox or decision.group
                if self.voicemail.answer(ctx.call_id, ctx.caller, mailbox, in_failure):
                    return  # answered: the keeper records it and releases the call
                self._reply(480, "Voicemail Unavailable", in_failure=in_failure)
            else:  # overflow upon overflow past MAX_OVERFLOWS
                self._reply(480, "Temporarily Unavailable", in_failure=in_failure)
            if not in_failure:
                # no dialog yet: nobody else releases
                self.decider.release(ctx.call_id, outcome="no_answer")
            return

    def _relay_wave(self, ctx: CallContext, offer: Offer, in_failure: bool) -> bool:
        """Fork the wave; False (its agents failed as "unreachable") if none has a target."""
        ksr = self.ksr
        branches: list[tuple[str, str, int]] = []
        for agent in offer.agents:
            flags = (ctx.tried.index(agent) + 1) << BRANCH_SHIFT
            targets = self._looked_up.pop(agent, None)
            if targets is None:  # claimed without asking: a sticky agent
                targets = self._targets(agent)
            if not targets:
                ksr.info(f"dispatcher: {agent} has no registered contact, not offered\n")
                self.decider.failed(ctx, agent, "unreachable")
                continue
            branches += [(uri, dst, flags) for uri, dst in targets]
        if not branches:
            return False
        for uri, dst, flags in branches[1:]:
            self._set_dst(dst)
            ksr.pv.seti("$bf", flags)
            ksr.corex.append_branch_uri(uri)
        uri, dst, flags = branches[0]
        ksr.pv.sets("$ru", uri)
        self._set_dst(dst)
        ksr.pv.seti("$bf", flags)
        ms = offer.timeout * 1000
        ksr.tm.t_set_fr(ms, ms)
        encoded = ctx.encode()
        ksr.pv.sets(AVP_CTX, encoded)
        ksr.pv.sets(AVP_WAVE, ",".join(offer.agents))
        if len(offer.agents) == 1:
            # Who answers is known already: dialog:start records it, the failure route takes
            # the reason from tm's reply, and no reply route runs per 1xx/2xx (but for a
            # caller whose media runs through RTPengine, whose agent's 2xx must reach it).
            ksr.pv.sets(DLG_ANSWER, f"{offer.agents[0]} {encoded}")
            if self.queue.media_anchored():
                ksr.tm.t_on_reply(REPLY_ROUTE)
        else:
            ksr.pv.unset(DLG_ANSWER)
            ksr.tm.t_on_reply(REPLY_ROUTE)
        ksr.tm.t_on_failure(FAILURE_ROUTE)
        if ksr.tm.t_relay() < 0:
            ksr.err(f"dispatcher: relaying {ctx.call_id} to {offer.agents} failed\n")
            self._reply(500, "Server Internal Error", in_failure=in_failure)
        return True

    def _reachable(self, agent_id: str) -> bool:
        """Whether the agent has a phone to ring now: a registered contact or a static URI.

        Cost: one usrloc lookup for an agent with an AOR; its result is kept for the relay
        of this decision's wave.
        """
        targets = self._targets(agent_id)
        self._looked_up[agent_id] = targets
        return bool(targets)

    def _targets(self, agent_id: str) -> list[tuple[str, str]]:
        """(uri, destination uri or "") per registered contact of the agent, then its URIs."""
        agent = self.decider.view().agents.get(agent_id)
        if agent is None:
            return []
        ksr = self.ksr
        out: list[tuple[str, str]] = []
        if agent.targets.aor:
            aor = f"sip:{agent.targets.aor}@{self.tenants.aor_domain(self.decider.store.tenant)}"
            if ksr.registrar.reg_fetch_contacts(LOCATION, aor, ULC_PROFILE) > 0:
                count = int(ksr.pv.get(f"$ulc({ULC_PROFILE}=>count)") or 0)
                now_s = time.time()
                for i in range(count):
                    # reg_fetch_contacts also returns contacts usrloc has not purged yet: an
                    # expired one, or one unregistered under write-back (expires set in the
                    # past until the next timer run). 0 is a permanent contact.
                    expires = int(ksr.pv.get(f"$(ulc({ULC_PROFILE}=>expires)[{i}])") or 0)
                    if 0 < expires <= now_s:
                        continue
                    # a contact that is not UTF-8 cannot be handed to Python: not rung
                    addr = _pv_text(ksr, f"$(ulc({ULC_PROFILE}=>addr)[{i}])")
                    received = _pv_text(ksr, f"$(ulc({ULC_PROFILE}=>received)[{i}])")
                    # one branch per phone: usrloc may hold two rows of one contact
                    # (dispatcher.state.locations)
                    if addr and (addr, received) not in out:
                        out.append((addr, received))
                ksr.registrar.reg_free_contacts(ULC_PROFILE)
        out += [(uri, "") for uri in agent.targets.uris]
        return out

    def register(self) -> None:
        """A REGISTER: saved (and answered by the registrar) under its tenant's AOR domain
        (`Tenants.aor_domain`), so a tenant's phones are found whichever of its domains they
        register at and two tenants' `alice` never meet; 404 for a domain no tenant has, 503
        when Redis cannot say whose it is. A node whose default tenant has no config yet
        saves it as it came."""
        ksr = self.ksr
        domain = _pv_text(ksr, "$td")
        try:
            tenant = self.tenants.resolve("", domain)
            self.use(tenant)
            domain = self.tenants.aor_domain(tenant)
        except UnknownTenant as exc:
            ksr.info(f"dispatcher: REGISTER refused: {exc}\n")
            ksr.sl.sl_send_reply(404, "Not Found")
            return
        except StateUnavailable as exc:
            self._unavailable(exc)
            ksr.sl.sl_send_reply(503, "Service Unavailable")
            return
        except ConfigMissing:
            tenant = ""
        aor = f"sip:{_pv_text(ksr, '$tU')}@{domain or 'localhost'}"
        if ksr.registrar.save_uri(LOCATION, 0, aor) < 0:
            ksr.sl.sl_reply_error()
            return
        if tenant:
            self._record_registration(aor)

    def _record_registration(self, aor: str) -> None:
        """After a REGISTER was saved: record in Redis until when the agents whose AOR it
        is have a phone (the newest contact's expiry; 0 when the last one unregistered), so
        the dashboard tells them from available agents and a queued caller is offered an
        agent whose phone just came up. A Redis error is logged; the REGISTER stands."""
        ksr = self.ksr
        user = _pv_text(ksr, "$tU")
        try:
            agents = [a.id for a in self.decider.view().agents.values() if a.targets.aor == user]
        except StateError as exc:
            self._unavailable(exc)
            return
        if not agents:
            return
        expires_s = 0
        if ksr.registrar.reg_fetch_contacts(LOCATION, aor, ULC_PROFILE) > 0:
            count = int(ksr.pv.get(f"$ulc({ULC_PROFILE}=>count)") or 0)
            for i in range(count):
                expires_s = max(
                    expires_s, int(ksr.pv.get(f"$(ulc({ULC_PROFILE}=>expires)[{i}])") or 0)
                )
            ksr.registrar.reg_free_contacts(ULC_PROFILE)
        try:
            for agent in agents:
                self.decider.store.registration(agent, expires_s * 1000)
        except StateError as exc:
            self._unavailable(exc)

    def _set_dst(self, dst: str) -> None:
        if dst:
            self.ksr.pv.sets("$du", dst)
        else:
            self.ksr.pv.unset("$du")

    def _relay_to(self, uri: str, in_failure: bool) -> None:
        ksr = self.ksr
        ksr.pv.unset(DLG_ANSWER)  # whoever answers a forward is not the wave's agent
        ksr.pv.sets("$ru", uri)
        ksr.pv.unset("$du")
        ksr.pv.seti("$bf", 0)
        if ksr.tm.t_relay() < 0:
            self._reply(500, "Server Internal Error", in_failure=in_failure)

    def _reply(
        self, code: int, reason: str, retry_after: bool = False, in_failure: bool = False
    ) -> None:
        """A transaction-stateful reply, from the request route or a failure route."""
        ksr = self.ksr
        if retry_after:
            ksr.hdr.append_to_reply(f"Retry-After: {RETRY_AFTER_S}\r\n")
        if not in_failure:
            ksr.tm.t_newtran()  # a transaction, so retransmissions get the same reply
        ksr.tm.t_reply(code, reason)

    def _deferred_failed(self, function: str, exc: Exception) -> None:
        """An answer or release sent without waiting did not go through: logged, counted."""
        from dispatcher.telemetry import count_redis_error

        count_redis_error("router", exc)
        self.ksr.err(f"dispatcher: {function} sent earlier failed: {exc}\n")

    # -- Redis health, logged once per change -----------------------------------------

    def _unavailable(self, exc: StateError) -> None:
        # The process flag keeps the hot path free of htable look-ups; the node's flag
        # makes it one log line per outage and node, not per process.
        if not self._down:
            self._down = True
            self._outage(REDIS_DOWN_KEY, f"Redis unavailable, group calls get 503: {exc}")

    def _check_clock(self) -> None:
        skew = self.decider.clock_skew_ms
        if (abs(skew) > CLOCK_SKEW_LOG_MS) != self._skewed:
            self._skewed = not self._skewed
            if self._skewed:
                self.ksr.err(f"dispatcher: this node's clock is {-skew} ms off Redis' TIME\n")
            else:
                self.ksr.info("dispatcher: this node's clock agrees with Redis' TIME again\n")

    def media_down(self, why: str) -> None:
        """A caller could not be held: RTPengine failed. Logged once per outage and node."""
        self._outage(MEDIA_DOWN_KEY, f"no queue audio, callers go to the overflow: {why}")

    def media_up(self) -> None:
        self._recovered(MEDIA_DOWN_KEY, "queue audio works again")

    def _up(self) -> None:
        if self._down:
            self._down = False
            self._recovered(REDIS_DOWN_KEY, "Redis reachable again")

    def _outage(self, key: str, message: str) -> None:
        """Logs `message` if no process of this node has logged the outage `key` yet.
        sht_inc is atomic under the table's lock, so two processes never both log."""
        if self.ksr.htable.sht_inc(NODE_TABLE, key) == 1:
            self.ksr.err(f"dispatcher: {message}\n")

    def _recovered(self, key: str, message: str) -> None:
        """Ends the node's outage `key`, logging `message` once."""
        if self.ksr.htable.sht_get(NODE_TABLE, key):
            self.ksr.htable.sht_rm(NODE_TABLE, key)
            self.ksr.info(f"dispatcher: {message}\n")


def _pv_text(ksr: Any, name: str) -> str:
    """A pseudo-variable as text, "" when unset or not UTF-8 (app_python3 raises
    UnicodeDecodeError for such octets, which SIP allows in Call-IDs and URIs)."""
    try:
        return str(ksr.pv.get(name) or "")
    except UnicodeDecodeError:
        return ""


def _usable_call_id(call_id: str) -> bool:
    """Whether `call_id` can be part of the state's keys (dispatcher.state.keys)."""
    try:
        validate_call_id(call_id)
    except ValueError:
        return False
    return True


def _code_key(ctx: CallContext, agent: str) -> str:
    return f"{ctx.call_id}|{ctx.group}|{agent}"


__all__: Sequence[str] = ("Router", "failure_reason")
