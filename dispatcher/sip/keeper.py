"""The node's queue keeper: one Kamailio process (an rtimer process, kemi.py's ksr_queue_keeper)
that looks after the callers this node holds in queues.

Each tick (the timer calls it every 10 ms) it waits up to LISTEN_S for a doorbell on the node's
channel (`PUBLISH dispatcher:node:<node>`, rung by the library when an agent may be free for a
held caller) and resumes that caller into the serve route (t_continue) at once. About four
times a second it keeps (`StateStore.queue_keep`): renews the leases, learns each held
caller's state and position (a notified caller whose doorbell was missed is served now; a
caller Redis lost is queued again), sends on callers that waited max_wait or whose group has
nobody logged in, and drives what each caller hears: music on hold after the greeting, and
every announce_interval its position and estimated wait (`dispatcher.queue.estimate`), then
the music again.

Besides the queues it beats the node's heartbeat, releases what dead nodes and lost releases
left (`dispatcher.sip.reconcile`), and opens a node that just started for calls once it
holds the phones its peers have (`dispatcher.sip.warmup`).

Which clock: waits and positions are Redis' (joined_ms, now_ms of the keep); the schedule of
prompts is this node's (it only times what this node plays).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import RedisClusterException

from dispatcher.config.model import Group
from dispatcher.core import LOGGED_OUT, PAUSED
from dispatcher.media import prompts
from dispatcher.media.ng import NgError, NgUnavailable
from dispatcher.queue.estimate import AgentLoad, HandleTimes, Phrase, WaitModel, announcement
from dispatcher.sip import held as held_calls
from dispatcher.sip.edge import define_int
from dispatcher.sip.held import SERVING, SUSPENDED, HeldCall
from dispatcher.sip.queueing import LEASE_MS, OVERFLOW_ROUTE, SERVE_ROUTE
from dispatcher.sip.reconcile import Reconciler
from dispatcher.sip.warmup import Opening
from dispatcher.state import StateError
from dispatcher.state.store import QueueGroupStats, QueueKeep

if TYPE_CHECKING:
    from dispatcher.sip.routing import Router

LISTEN_S = 0.05
KEEP_EVERY_S = 0.25
# While it holds callers, the keeper pings RTPengine this often: a dead RTPengine sends its
# callers to the overflow (they would hear silence until served) within about this long
# plus the client's retransmission budget.
MEDIA_CHECK_S = 1.0
# Heartbeats: every node beats once a second; one silent for NODE_DEAD_MS is dead and the
# others release the calls it held (outcome lost, no wrap-up): within about 7 s of its death.
NODE_BEAT_S = 1.0
NODE_DEAD_MS = 5_000
# A restarted node releases the calls it answered more than this before its start.
RECONCILE_MARGIN_MS = 2_000
# The backstop's walk over the tenants: slices of at least SWEEP_SLICE_MIN tenants (one
# round trip each: fewer, larger slices cost less per tenant) and at most SWEEP_SLICE_MAX
# per tick, and a walk that Redis interrupted goes on this much later.
SWEEP_SLICE_MIN = 50
SWEEP_SLICE_MAX = 200
SWEEP_RETRY_S = 1.0


@dataclass(slots=True)
class _Sweep:
    """One walk of the backstop over the tenant list (Keeper._backstop)."""

    tenants: list[str]
    started: float  # monotonic s
    every_s: float  # LIVE_SWEEP_S: the walk ends within its first half
    max_age_ms: int  # a live call older than this (Redis' clock) is released
    done: int = 0

    def due(self, now: float) -> list[str]:
        """The tenants to look at now: as many as keep the walk on time, once they make a
        slice of SWEEP_SLICE_MIN (or end the walk), at most SWEEP_SLICE_MAX (a walk that fell
        behind, e.g. while Redis was away, catches up over several ticks, not in one stop);
        often none."""
        share = min(1.0, (now - self.started) / (self.every_s / 2)) if self.every_s > 0 else 1.0
        upto = math.ceil(len(self.tenants) * share)
        if upto - self.done < SWEEP_SLICE_MIN and upto < len(self.tenants):
            return []
        return self.tenants[self.done : min(upto, self.done + SWEEP_SLICE_MAX)]


@dataclass(slots=True)
class _Hearing:
    """What one held caller hears, on this node's clock (monotonic seconds)."""

    music_at: float  # when the music (re)starts; inf while it plays
    announce_at: float  # the next announcement
    playing_music: bool = False
    announced: list[tuple[int, int | None]] = field(default_factory=list)


class Keeper:
    """The queue keeper of this node; `router` is the keeper process's own Router."""

    def __init__(self, router: Router, started_ms: int | None = None) -> None:
        self.router = router
        # when this node's processes started (the KEMI module's load, before the fork)
        self.started_ms = started_ms if started_ms is not None else time.time_ns() // 1_000_000
        self.ksr: Any = router.ksr
        self.node = router.settings.node
        self._bell: Any = None  # redis-py PubSub on the node's channel, opened on first use
        self._bell_down = False
        self._next_keep = 0.0
        self._next_media_check = 0.0
        self._next_beat = 0.0
        self._reconciled = False  # this node's calls of before its start are released once
        self._next_backstop = time.monotonic() + 5.0  # not in the start-up rush
        self._sweep: _Sweep | None = None  # the backstop's walk over the tenants, under way
        # this node's live calls in Redis against its dialogs (dispatcher.sip.reconcile)
        self._reconciler = Reconciler(router)
        self._next_reconcile = time.monotonic() + self._reconciler.every_s
        # a node that shares registrations opens once it holds them (dispatcher.sip.warmup)
        self._opening = Opening(router)
        self._hearing: dict[str, _Hearing] = {}
        self._announced: list[tuple[str, int, int | None]] = []
        self._want_stats = False

    # -- the tick ---------------------------------------------------------------------------

    def tick(self) -> None:
        """One turn: the releases the timers handed over, doorbells, then the keep and the
        prompts when due."""
        self.router.send_handed_releases()
        self._opening.tick()
        for call_id in self._doorbells():
            record = held_calls.get(self.ksr, call_id)
            if record is not None and record.state == SUSPENDED:
                self._resume(record, SERVE_ROUTE)
        now = time.monotonic()
        if now >= self._next_keep:
            self._next_keep = now + KEEP_EVERY_S
            try:
                self._keep()
                self.router._up()
            except StateError as exc:
                self.router._unavailable(exc)
            if self.router.media is not None:
                self.router.voicemail.tick()
        self._play_due(time.monotonic())
        if now >= self._next_beat:
            self._next_beat = now + NODE_BEAT_S
            self._beat()
        if now >= self._next_backstop:
            self._next_backstop = self._backstop(now)
        if now >= self._next_reconcile:
            self._next_reconcile = now + self._reconciler.every_s
            self._reconciler.run()
        if now >= self._next_media_check:
            self._next_media_check = now + MEDIA_CHECK_S
            self._check_media()

    def _beat(self) -> None:
        """This node's heartbeat; the calls of dead nodes released; at start, the calls Redis
        says this node held (its dialogs died with the process before it) released too."""
        store = self.router.tenants.store
        try:
            if not self._reconciled:
                # only what it answered before this process started (its clock; a margin
                # for its skew against Redis'): its dialogs of since are alive
                before = self.started_ms - RECONCILE_MARGIN_MS
                self._release_calls_of(self.node, "it restarted", before)
                self._reconciled = True
            for dead in store.node_beat(self.node, NODE_DEAD_MS):
                self._release_calls_of(dead, "its heartbeat lapsed")
                store.node_beat(self.node, NODE_DEAD_MS, forget=dead)
        except StateError as exc:
            self.router._unavailable(exc)

    def _release_calls_of(self, node: str, why: str, before_ms: int | None = None) -> None:
        """Release every tenant's answered calls `node` holds (answered before `before_ms`,
        if given; outcome lost). Twice is harmless: a release is idempotent. Cost: 1 round
        trip per tenant, 1 FCALL per call."""
        store = self.router.tenants.store
        for tenant in store.registered_tenants():
            mine = store.for_tenant(tenant)
            for call in mine.calls_of_node(node, before_ms):
                mine.release(call, outcome="lost")
                self.ksr.notice(
                    f"dispatcher: {tenant} call {call} of node {node} ({why}): released\n"
                )

    def _backstop(self, now: float) -> float:
        """Release every tenant's live calls that outlived the dialog timeout plus
        LIVE_MARGIN_S (no node ended them: a lost release, a node that never came back);
        when to look again. Independent of the dialog module's own timer, which is what
        failed if such a call exists.

        A sweep reads the tenant list once every LIVE_SWEEP_S and looks at its tenants
        spread over the first half of that period, a slice per tick read in one round trip
        (`StateStore.stale_calls_of`), so the keeper never stops for a walk over every
        tenant (10,000 tenants: about 0.5 s, when it took a round trip each) while doorbells
        wait. Cost: 1 round trip per slice, about 10 us of CPU per tenant per LIVE_SWEEP_S,
        plus 1 FCALL per call released."""
        ksr = self.ksr
        store = self.router.tenants.store
        sweep = self._sweep
        try:
            if sweep is None:
                every_s = float(define_int(ksr, "LIVE_SWEEP_S"))
                max_age_s = define_int(ksr, "DLG_TIMEOUT") + define_int(ksr, "LIVE_MARGIN_S")
                sweep = _Sweep(store.registered_tenants(), now, every_s, max_age_s * 1000)
                self._sweep = sweep
            due = sweep.due(now)
            stale = store.stale_calls_of(due, sweep.max_age_ms) if due else {}
            for tenant, calls in stale.items():
                mine = store.for_tenant(tenant)
                for call in calls:
                    mine.release(call, outcome="expired")
                    ksr.notice(f"dispatcher: {tenant} call {call} outlived its dialog: released\n")
            sweep.done += len(due)
        except StateError as exc:
            self.router._unavailable(exc)
            return now + SWEEP_RETRY_S  # the walk goes on from where it stopped
        if sweep.done < len(sweep.tenants):
            return now  # the next slice at the next tick
        self._sweep = None
        return sweep.started + sweep.every_s

    def _check_media(self) -> None:
        """RTPengine gone: every caller this node holds goes to its overflow without audio
        (case media: the queue's overflow for a full queue), logged once per outage."""
        media = self.router.media
        if media is None:
            return
        waiting = [r for r in held_calls.every(self.ksr) if r.state == SUSPENDED]
        if not waiting:
            return
        try:
            media.ng.ping()
        except (NgError, NgUnavailable) as exc:
            self.router.media_down(f"RTPengine stopped answering with {len(waiting)} held: {exc}")
            for record in waiting:
                self._overflow(record, "media")

    def _doorbells(self) -> list[str]:
        """The calls whose doorbells rang since the last tick (waits up to LISTEN_S)."""
        try:
            if self._bell is None:
                self._bell = self.router.decider.store._redis.pubsub(ignore_subscribe_messages=True)
                self._bell.subscribe(f"dispatcher:node:{self.node}")
            calls: list[str] = []
            message = self._bell.get_message(timeout=LISTEN_S)
            while message is not None:
                # "<tenant>\x1f<call>": the held call's record names its tenant again
                calls.append(bytes(message["data"]).decode().partition("\x1f")[2])
                message = self._bell.get_message(timeout=0)
            if self._bell_down:
                self._bell_down = False
                self.ksr.info("dispatcher: queue doorbells heard again\n")
            return calls
        except (redis.ConnectionError, redis.TimeoutError, OSError, RedisClusterException) as exc:
            # (a Cluster whose topology cannot be read: RedisClusterException)
            self._bell = None  # the next tick subscribes again; keeps serve meanwhile
            if not self._bell_down:
                self._bell_down = True
                self.ksr.err(f"dispatcher: queue doorbells lost ({exc}); keeping on\n")
            time.sleep(LISTEN_S)
            return []

    # -- the keep ---------------------------------------------------------------------------

    def _keep(self) -> None:
        every = held_calls.every(self.ksr)
        for gone in set(self._hearing) - {r.call_id for r in every}:
            del self._hearing[gone]
        by_tenant: dict[str, dict[str, HeldCall]] = {}
        for record in every:
            by_tenant.setdefault(record.tenant, {})[record.call_id] = record
        announced, self._announced = self._announced, []
        want_stats, self._want_stats = self._want_stats, False
        for tenant, records in by_tenant.items():
            self.router.use(tenant)
            mine = [a for a in announced if a[0] in records]
            self._keep_tenant(records, mine, want_stats)

    def _keep_tenant(
        self,
        records: dict[str, HeldCall],
        announced: list[tuple[str, int, int | None]],
        want_stats: bool,
    ) -> None:
        """One tenant's keep: 1 FCALL for all the callers this node holds of it."""
        store = self.router.decider.store
        keep = store.queue_keep(
            self.node, list(records), LEASE_MS, stats=want_stats, announced=announced
        )
        view = self.router.decider.view()
        stats = {g.group: g for g in keep.groups}
        for entry in keep.entries:
            record = records[entry.call]
            if record.state != SUSPENDED:
                continue
            group = view.groups.get(record.group)
            if group is None or not group.queued or group.queue is None:
                self._overflow(record, "timeout")
            elif entry.state == "gone":
                # Gone because the caller hung up (a worker took its CANCEL after this keep
                # read the table), or lost by Redis: only a caller still held here rejoins.
                current = held_calls.get(self.ksr, record.call_id)
                if current is not None and current.state == SUSPENDED:
                    self._rejoin(current, group)
            elif (keep.now_ms - entry.joined_ms) >= group.queue.max_wait * 1000:
                self._overflow(record, "timeout")
            elif record.group in stats and not _staffed(stats[record.group]):
                self._overflow(record, "no_agents")
            elif entry.state == "notified":
                self._resume(record, SERVE_ROUTE)
            else:
                self._schedule(record, group, entry.position, keep, stats.get(record.group))

    def _rejoin(self, record: HeldCall, group: Group) -> None:
        """Redis lost the caller's entry (a restart, a lease that lapsed): queue it again."""
        assert group.queue is not None
        priority = group.queue.priority_of(record.caller)
        joined = self.router.decider.store.queue_join(
            record.call_id, group.id, record.caller, priority, self.node, LEASE_MS
        )
        if joined.status in ("full", "no_agents"):
            self._overflow(record, joined.status)

    def _overflow(self, record: HeldCall, case: str) -> None:
        held_calls.put(self.ksr, record.moved(overflow=case))
        self._resume(record.moved(overflow=case), OVERFLOW_ROUTE)

    def _resume(self, record: HeldCall, route: str) -> None:
        held_calls.put(self.ksr, record.moved(state=SERVING))
        if self.ksr.tmx.t_continue(record.tindex, record.tlabel, route) < 0:
            # Its transaction is gone (the caller's CANCEL won, or it timed out): forget it.
            held_calls.drop(self.ksr, record.call_id)

    # -- what the caller hears --------------------------------------------------------------

    def _schedule(
        self,
        record: HeldCall,
        group: Group,
        position: int,
        keep: QueueKeep,
        stats: QueueGroupStats | None,
    ) -> None:
        assert group.queue is not None
        hearing = self._hearing.get(record.call_id)
        now = time.monotonic()
        if hearing is None:
            music_in = max(0.0, (record.music_at_ms - self.router.decider.clock_ms()) / 1000)
            interval = group.queue.announce_interval or float("inf")
            hearing = _Hearing(music_at=now + music_in, announce_at=now + music_in + interval)
            self._hearing[record.call_id] = hearing
        if group.queue.announce_interval and now + 2 * KEEP_EVERY_S >= hearing.announce_at:
            if stats is None:
                self._want_stats = True  # the next keep brings the estimate's inputs
            elif now >= hearing.announce_at:
                self._announce(record, group, hearing, position, keep.now_ms, stats)

    def _announce(
        self,
        record: HeldCall,
        group: Group,
        hearing: _Hearing,
        position: int,
        now_ms: int,
        stats: QueueGroupStats,
    ) -> None:
        assert group.queue is not None and self.router.announcer is not None
        media = self.router.media
        hearing.announce_at = time.monotonic() + group.queue.announce_interval
        if media is None or position < 1:
            return
        estimate = _estimate(stats, position, now_ms)
        wait_s = None if estimate is None else round(estimate)
        sentence = self.router.announcer.announcement(group, position, _spoken(estimate))
        if sentence is None:
            return
        duration = media.play(record.call_id, record.from_tag, str(sentence))
        if duration is None:
            return
        hearing.playing_music = False
        hearing.music_at = time.monotonic() + duration / 1000
        self._announced.append((record.call_id, position, wait_s))

    def _play_due(self, now: float) -> None:
        media, announcer = self.router.media, self.router.announcer
        if media is None or announcer is None:
            return
        for call_id, hearing in self._hearing.items():
            if hearing.playing_music or now < hearing.music_at:
                continue
            record = held_calls.get(self.ksr, call_id)
            group = None
            if record is not None:
                group = self.router.use(record.tenant).view().groups.get(record.group)
            if record is None or group is None or record.state != SUSPENDED:
                continue
            announcer.play_music(media, call_id, record.from_tag, group, record.tenant)
            hearing.playing_music = True


def _staffed(stats: QueueGroupStats) -> bool:
    """Whether any member of the group is logged in (paused counts: it may come back)."""
    return any(m.status != LOGGED_OUT for m in stats.members)


def _estimate(stats: QueueGroupStats, position: int, now_ms: int) -> float | None:
    """The typical wait in seconds of the caller at `position`, from the group's live state;
    None when nobody who could take it is logged in."""
    loads = [
        AgentLoad(
            capacity=m.max_calls,
            calls_elapsed=tuple((now_ms - t) / 1000 for t in m.busy_since_ms),
            wrapup_s=float(m.wrapup_s),
            wrapup_left_s=max(0.0, (m.wrapup_until_ms - now_ms) / 1000),
        )
        for m in stats.members
        if m.status not in (LOGGED_OUT, PAUSED)
    ]
    history = HandleTimes(t / 1000 for t in reversed(stats.handle_times_ms))
    estimate = WaitModel(loads, history).estimate(position)
    return None if estimate is None else estimate.typical_s


def _spoken(seconds: float | None) -> prompts.Estimate:
    """The estimate as the prompts say it: whole minutes, "less than a minute", or nothing."""
    said = announcement(seconds)
    if said is None:
        return None
    if said.phrase == Phrase.LESS_THAN_A_MINUTE:
        return prompts.LESS_THAN_A_MINUTE
    if said.phrase == Phrase.MORE_THAN:
        return prompts.MORE_THAN_60_MINUTES
    return said.minutes
