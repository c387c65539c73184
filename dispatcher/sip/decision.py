"""Routing decisions for one tenant: plan a wave on the worker's snapshot, claim it in Redis.

One Kamailio worker holds one `Decider`. A decision costs one Redis round trip in the
steady state: the worker plans on the live state the previous claim returned, and the
claim re-checks every agent atomically and returns the fresh state with its answer. Only
when the snapshot was stale (nobody in the wave could be claimed) does the worker re-plan
on the fresh state and claim again, a bounded number of times.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from dispatcher import core
from dispatcher.config.model import Agent, Group, NoAnswerTarget, Tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.sip.planning import group_table
from dispatcher.state.sticky import StickyDays, sticky_days
from dispatcher.state.store import AnswerOutcome, ClaimResult, FailResult, StateStore

# A reservation outlives its ring timeout by this much, so a slow CANCEL/487 still finds it;
# past the deadline a crashed worker's reservation frees the agent on its own.
RESERVATION_MARGIN_MS = 10_000
# Claims per decision when snapshots keep turning out stale (heavy contention).
MAX_CLAIM_ATTEMPTS = 3

# Candidate waves one claim carries: enough that a stale snapshot rarely costs a second claim,
# few enough that the claim stays small (ring_all and priority need one per tier).
CANDIDATE_WAVES = 8

# A worker that made no claim for this long confirms its config version before using it.
CONFIG_RECHECK_S = 2.0

# Strategies whose pick is not "the first eligible in an order": a weighted draw depends on
# which members are eligible, so the claim leads with the exact pick on the snapshot.
PICK_DEPENDS_ON_ELIGIBLE = frozenset({core.WEIGHTED_RANDOM})

# An agent a decision found without a phone is not asked again for this long: new decisions
# leave it out (a phone that registers meanwhile rings from then on, at most this late).
UNREACHABLE_RECHECK_S = 2.0

# Strategies whose pick is "the eligible member with the least key" on live counts: the claim
# applies that key to its candidate waves on Redis' current counts (StateStore.claim's
# `pick`), so a worker's stale counts do not cost a corrective claim.
CLAIM_PICK = {core.LEAST_BUSY: "busy", core.LONGEST_IDLE: "idle"}

# Whether an agent has a phone to ring right now (a registered contact or a static URI).
Reachable = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Offer:
    """Ring these agents in parallel for `timeout` seconds."""

    group: str
    agents: tuple[str, ...]
    timeout: int
    sticky: bool


@dataclass(frozen=True, slots=True)
class Exhausted:
    """Nobody (more) can be offered now: the group's no-answer target applies, or, for a group
    with a queue, the caller waits in it. `why`: busy (no member could be claimed, or callers
    wait in the group's queue ahead of this one) or timeout (the overall timeout is over)."""

    group: str
    target: NoAnswerTarget
    why: str = "busy"


@dataclass(slots=True)
class CallContext:
    """What a call carries from wave to wave; the router keeps it with the transaction."""

    call_id: str
    group: str
    caller: str
    started_ms: int
    tried: list[str] = field(default_factory=list)
    sticky: str | None = None
    # The call waits (or waited) in the group's queue: its claims are no new arrival.
    queued: bool = False

    @property
    def seed(self) -> int:
        """Stable per call, so every node plans the same random order for it."""
        return int.from_bytes(hashlib.blake2b(self.call_id.encode(), digest_size=8).digest())

    def encode(self) -> str:
        """Compact text for a Kamailio AVP."""
        return orjson.dumps(
            [
                self.call_id,
                self.group,
                self.caller,
                self.started_ms,
                self.tried,
                self.sticky,
                self.queued,
            ]
        ).decode()

    @classmethod
    def decode(cls, text: str) -> CallContext:
        """Inverse of `encode`; ValueError on anything else."""
        try:
            call_id, group, caller, started_ms, tried, sticky, queued = orjson.loads(text)
            return cls(
                str(call_id),
                str(group),
                str(caller),
                int(started_ms),
                list(tried),
                sticky,
                bool(queued),
            )
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise ValueError(f"not a call context: {text[:80]!r}") from exc


@dataclass(frozen=True, slots=True)
class TenantView:
    """One config version of a tenant, compiled for planning."""

    version: int
    tenant: Tenant
    tables: dict[str, core.GroupTable]
    # Per group, its members in the core's rank order (position, then canonical index).
    ranked: dict[str, tuple[str, ...]]
    # The tenant's lookups as plain dicts: Tenant.agent() and friends read pydantic private
    # attributes, several times per SIP call.
    agents: dict[str, Agent]
    groups: dict[str, Group]
    extensions: dict[str, Group]

    @classmethod
    def build(cls, version: int, tenant: Tenant) -> TenantView:
        ranked = {}
        for group in tenant.groups:
            members = group.canonical_members()
            order = sorted(range(len(members)), key=lambda i: (members[i].position, i))
            ranked[group.id] = tuple(members[i].agent for i in order)
        return cls(
            version,
            tenant,
            {g.id: group_table(g) for g in tenant.groups},
            ranked,
            agents={a.id: a for a in tenant.agents},
            groups={g.id: g for g in tenant.groups},
            extensions={g.extension: g for g in tenant.groups},
        )


class ConfigMissing(LookupError):
    """Redis holds no config for the tenant (not imported yet, or Redis lost it)."""


class Decider:
    """Plans and claims waves for the calls of one tenant (one instance per worker)."""

    def __init__(self, store: StateStore, clock_ms: Callable[[], int] | None = None) -> None:
        self.store = store
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._view: TenantView | None = None
        self._confirmed = 0.0  # monotonic time the cached version was last confirmed
        # group id -> (flat live rows, rr cursor) as this worker last knew them
        self._live: dict[str, tuple[list[int], int]] = {}
        # agent -> monotonic time until which it counts as unreachable (`_reachability`)
        self._unreachable: dict[str, float] = {}
        # Redis' TIME minus this worker's clock at the last claim (ms; round trip included).
        # Shared state follows Redis' TIME, so a skew only shows in what stays on this node
        # (overall timeouts, inbound schedules); past a day it also loses sticky memory
        # (state/sticky.py). The router logs it.
        self.clock_skew_ms = 0

    # -- config ------------------------------------------------------------------------

    def view(self) -> TenantView:
        """The cached config, loaded on first use.

        Every claim's reply confirms the version for free; a worker that made no claim for
        CONFIG_RECHECK_S (say it only routes DIDs to replies) asks for the version once
        (1 round trip), so an admin change reaches it too.
        """
        if self._view is None:
            self._reload()
        elif time.monotonic() - self._confirmed > CONFIG_RECHECK_S:
            self._confirmed = time.monotonic()
            if self.store.config_version() != self._view.version:
                self._reload()
        assert self._view is not None
        return self._view

    def _reload(self) -> None:
        version, doc = self.store.config()
        if doc is None:
            raise ConfigMissing(f"tenant {self.store.tenant!r} has no config in Redis")
        self._view = TenantView.build(version, parse_tenant(doc, "json"))
        self._live.clear()
        self._confirmed = time.monotonic()

    # -- decisions ----------------------------------------------------------------------

    def start(
        self, call_id: str, extension: str, caller: str, reachable: Reachable | None = None
    ) -> tuple[CallContext, Offer | Exhausted] | None:
        """First decision for a call to `extension`; None when no group has that number."""
        group = self.view().extensions.get(extension)
        if group is None:
            return None
        return self.start_group(call_id, group.id, caller, reachable)

    def start_group(
        self, call_id: str, group_id: str, caller: str, reachable: Reachable | None = None
    ) -> tuple[CallContext, Offer | Exhausted]:
        """First decision for a call to a group (also used for overflow from another group)."""
        ctx = CallContext(call_id, group_id, caller, self.clock_ms())
        return ctx, self.next(ctx, reachable)

    def next(self, ctx: CallContext, reachable: Reachable | None = None) -> Offer | Exhausted:
        """The next wave for the call, or Exhausted; updates ctx.tried and ctx.sticky.

        The claim carries the worker's plan as candidate waves in preference order, made on
        its snapshot with eligibility left to Redis (`_candidates`); Redis reserves the first
        candidate wave with eligible agents and answers with the state it decided on. The
        worker re-plans on that state: when both agree, the decision took 1 FCALL. That holds
        even on a stale snapshot whenever the order does not depend on live counts (ring_all,
        sequential, priority, random; round_robin while its cursor is unchanged). Otherwise
        the next claim withdraws what was taken and claims the right wave, at most
        MAX_CLAIM_ATTEMPTS in all. `reachable(agent)` says whether the agent has a phone to
        ring now; agents it rejects are never claimed. It is asked lazily, at most once per
        agent and decision, and only for the agents of a wave about to be claimed or
        accepted (the first candidate wave, the re-plan), not for every member: in the
        router it is a location lookup. An agent it rejects is left out unasked for
        UNREACHABLE_RECHECK_S after.
        """
        group = self._group(ctx.group)
        now = self.clock_ms()
        remaining_s = (group.overall_timeout * 1000 - (now - ctx.started_ms)) // 1000
        if remaining_s <= 0:
            return Exhausted(group.id, group.no_answer, "timeout")
        timeout = min(group.ring_timeout, remaining_s)
        # The caller goes with every claim, for the events (the dashboard and reports show
        # it); the sticky days only with a sticky group's first one, which alone looks up and
        # claims the caller's agent of the day (the day Redis' TIME falls in: state/sticky.py).
        caller = ctx.caller
        days = (
            sticky_days(now, group.timezone)
            if (group.sticky and not ctx.tried and caller)
            else None
        )
        unreachable = self._reachability(reachable)
        try:
            return self._decide(ctx, group, now, timeout, caller, days, unreachable)
        finally:
            self._remember(unreachable)

    def _decide(
        self,
        ctx: CallContext,
        group: Group,
        now: int,
        timeout: int,
        caller: str,
        days: StickyDays | None,
        unreachable: _Reachability,
    ) -> Offer | Exhausted:
        """`next` from the claims on: see there."""
        seed = ctx.seed
        waves = self._candidates(group.id, now, seed, ctx, unreachable)
        held: list[str] = []
        arrival = not ctx.tried and not ctx.queued
        pick = CLAIM_PICK.get(self.view().tables[group.id].strategy, "first")
        for _ in range(MAX_CLAIM_ATTEMPTS):
            want = waves[0] if waves else ()
            result = self.store.claim(
                ctx.call_id,
                group.id,
                caller,
                [a for a in want if a not in held],
                ttl_ms=timeout * 1000 + RESERVATION_MARGIN_MS,
                sticky=days,
                withdraw=[a for a in held if a not in want],
                then=waves[1:],
                arrival=arrival,
                pick=pick,
            )
            arrival = False
            self.clock_skew_ms = result.now_ms - now
            self._adopt(result)
            if result.queue_ahead:
                return Exhausted(group.id, group.no_answer)  # behind the callers waiting
            if result.sticky_agent:
                ctx.sticky = result.sticky_agent
            held = [a for a in held if a in want] + list(result.claimed)
            if result.is_sticky:
                break
            if pick != "first":
                # The claim made the strategy's pick on Redis' own counts (and sent no rows):
                # only whether the agent has a phone is left to ask. One without is withdrawn
                # by the next claim, which picks among the others.
                if all(unreachable.ask(agent) for agent in result.claimed):
                    break
                waves = self._candidates(group.id, now, seed, ctx, unreachable)
                continue
            # What the claim decided on, with this decision's own earlier holds given back.
            fresh = self._rows_without(group.id, result, held[: len(held) - len(result.claimed)])
            wave = self._plan(group.id, fresh, result.now_ms, seed, ctx, unreachable)
            if wave is None or set(wave.agents) == set(held):
                if wave is not None:
                    held = list(wave.agents)  # the core's order: canonical, by position, ...
                break
            waves = [wave.agents]
        if not held:
            return Exhausted(group.id, group.no_answer)
        ctx.tried.extend(held)
        return Offer(group.id, tuple(held), timeout, bool(result.is_sticky))

    def _reachability(self, reachable: Reachable | None) -> _Reachability:
        """A decision's reachability memo, presuming unreachable the agents a decision of
        the last UNREACHABLE_RECHECK_S found so: least busy and longest idle send every
        member to the claim unasked, and an agent without a phone (idle, so always first)
        would otherwise cost a corrective claim on every call."""
        if reachable is None:
            return _Reachability(None)
        now = time.monotonic()
        expired = [agent for agent, until in self._unreachable.items() if until <= now]
        for agent in expired:
            del self._unreachable[agent]
        return _Reachability(reachable, frozenset(self._unreachable))

    def forget_unreachable(self) -> None:
        """Presume nobody unreachable any more (the next decision asks every agent)."""
        self._unreachable.clear()

    def _remember(self, unreachable: _Reachability) -> None:
        until = time.monotonic() + UNREACHABLE_RECHECK_S
        for agent, answer in unreachable.answers.items():
            if answer:
                self._unreachable.pop(agent, None)
            else:
                self._unreachable[agent] = until

    def _candidates(
        self, group_id: str, now: int, seed: int, ctx: CallContext, unreachable: _Reachability
    ) -> list[tuple[str, ...]]:
        """Up to CANDIDATE_WAVES waves in the order the core would offer them if every member
        were free: the snapshot's busy counts, idle times and round-robin cursor rank them,
        Redis applies the current eligibility (for PICK_DEPENDS_ON_ELIGIBLE strategies the
        exact pick on the snapshot leads). O(CANDIDATE_WAVES * members).

        Only the first wave's agents are asked whether they are reachable: the claim nearly
        always takes it, and an unreachable agent of a later one that gets claimed is caught
        by the re-plan on the claim's rows, which asks, and withdrawn.

        CLAIM_PICK strategies (least_busy, longest_idle) send every member not tried yet, one
        per wave, in rank order and unasked: the claim picks by the strategy's key on the
        current counts, ties to the earlier, so its pick is the core's on the same state
        (only reachability can differ: asked of the agent it picked, which is withdrawn if
        it has no phone). No planning at all, before or after the claim."""
        table = self.view().tables[group_id]
        if table.strategy in CLAIM_PICK:
            skip = {*ctx.tried, *unreachable.known}
            return [(agent,) for agent in self.view().ranked[group_id] if agent not in skip]
        rows, rr = self._live.get(group_id, ([0] * (len(table) * core.LIVE_FIELDS), -1))
        relaxed: list[int] = []
        for i in range(len(table)):
            busy = rows[i * core.LIVE_FIELDS + 1]
            relaxed += (core.AVAILABLE, busy, busy + 1, 0, rows[i * core.LIVE_FIELDS + 4])
        waves: list[tuple[str, ...]] = []
        if table.strategy in PICK_DEPENDS_ON_ELIGIBLE and group_id in self._live:
            exact = self._plan(group_id, core.LiveTable(rows, rr), now, seed, ctx, unreachable)
            if exact is not None:
                waves.append(exact.agents)
        live = core.LiveTable(relaxed, rr)
        tried = [*ctx.tried, *(a for w in waves for a in w)]
        while len(waves) < CANDIDATE_WAVES:
            ask = unreachable if not waves else unreachable.known
            wave = self._plan(group_id, live, now, seed, ctx, ask, tried)
            if wave is None:
                break
            waves.append(wave.agents)
            tried.extend(wave.agents)
        return waves

    def _plan(
        self,
        group_id: str,
        live: core.LiveTable,
        now: int,
        seed: int,
        ctx: CallContext,
        unreachable: _Reachability | frozenset[str],
        tried: list[str] | None = None,
    ) -> core.Wave | None:
        """The wave the core picks on `live` (tried: the call's, unless given) among the
        agents not known to be unreachable. With a `_Reachability` every agent of the wave
        is asked, and the pick is made again without those that turn out unreachable (at
        most once per member); a frozenset is only what is known already."""
        table = self.view().tables[group_id]
        tried = ctx.tried if tried is None else tried
        marked: set[str] = set()
        while True:
            known = unreachable if isinstance(unreachable, frozenset) else unreachable.known
            for agent in known - marked:
                index = _member_index(table, agent)
                if index is not None:  # a config reload may have dropped it
                    live.set_reachable(index, False)
            marked |= known
            wave = core.next_wave(table, live, now, seed, tried, ctx.sticky)
            if wave is None or isinstance(unreachable, frozenset):
                return wave
            if all(unreachable.ask(agent) for agent in wave.agents):
                return wave

    def _group(self, group_id: str) -> Group:
        group = self.view().groups.get(group_id)
        if group is None:
            raise LookupError(f"group {group_id!r} is not in tenant {self.store.tenant!r}")
        return group

    def _adopt(self, result: ClaimResult) -> None:
        """Reload the config when a claim shows it moved on."""
        if self._view is None or result.version != self._view.version:
            self._reload()
        self._confirmed = time.monotonic()

    def _rows_without(
        self, group_id: str, result: ClaimResult, given_back: list[str]
    ) -> core.LiveTable:
        """The claim's rows less `given_back`'s holds: what a correct plan is made on.

        Also caches the state after the claim for the next plan, and counts the claimed
        agents busy in this worker's snapshots of their other groups: an agent is busy
        across all its groups, and this worker knows it without asking.
        """
        tables = self.view().tables
        table = tables[group_id]
        rows = list(result.rows)
        for agent in given_back:
            rows[table.index(agent) * core.LIVE_FIELDS + 1] -= 1
        after = list(result.rows)
        rr = result.rr
        for agent in result.claimed:
            rr = table.index(agent)
            after[rr * core.LIVE_FIELDS + 1] += 1
            for other_id, (other_rows, _) in self._live.items():
                other = tables.get(other_id)
                index = (
                    None if other_id == group_id or other is None else _member_index(other, agent)
                )
                if index is not None:
                    other_rows[index * core.LIVE_FIELDS + 1] += 1
        self._live[group_id] = (after, rr)
        return core.LiveTable(rows, result.rr)

    # -- outcomes, passed through so the router talks to one object ------------------------

    def answered(self, ctx: CallContext, agent: str) -> AnswerOutcome:
        """The agent answered: its reservation becomes a live call (1 round trip).

        With sticky on, the caller sticks to the agent until the end of the group's local day
        (the day Redis' TIME falls in).
        """
        return self.store.answered(ctx.call_id, agent=agent, **self._answer_sticky(ctx))

    def answered_later(
        self, ctx: CallContext, agent: str, done: Callable[[AnswerOutcome], None] | None = None
    ) -> None:
        """`answered` without waiting: `done` gets the outcome later
        (`StateStore.answered_later`), so a SIP worker relays the 200 at once."""
        self.store.answered_later(ctx.call_id, agent=agent, done=done, **self._answer_sticky(ctx))

    def _answer_sticky(self, ctx: CallContext) -> dict[str, Any]:
        """The group and sticky arguments of an answer on `ctx`."""
        group = self._group(ctx.group)
        if not (group.sticky and ctx.caller):
            return {"gid": group.id}
        return {
            "gid": group.id,
            "caller": ctx.caller,
            "sticky": sticky_days(self.clock_ms(), group.timezone),
        }

    def failed(self, ctx: CallContext, agent: str, reason: str) -> FailResult:
        """The offer to `agent` failed (busy, no answer, declined, error, cancelled)."""
        return self.store.failed(ctx.call_id, agent, reason)

    def release(self, call_id: str, agent: str = "", outcome: str = "") -> int:
        """The call ended (BYE, CANCEL, timeout): release everything it holds, once.

        `outcome` (answered, abandoned, no_answer, failed; "" unknown) goes into the call's
        `ended` event for reports (see `StateStore.release`).
        """
        return self.store.release(call_id, agent, outcome)

    def release_later(self, call_id: str, agent: str = "", outcome: str = "") -> None:
        """`release` without waiting for the reply (`StateStore.release_later`)."""
        self.store.release_later(call_id, agent, outcome)


class _Reachability:
    """One decision's answers of a `Reachable` callback: each agent asked at most once.

    `presumed` agents count as unreachable without asking (found so by a recent decision).
    """

    __slots__ = ("_reachable", "answers", "known")

    def __init__(self, reachable: Reachable | None, presumed: frozenset[str] = frozenset()):
        self._reachable = reachable
        self.answers: dict[str, bool] = {}  # what this decision asked, and the answers
        self.known = presumed  # the agents unreachable so far

    def ask(self, agent: str) -> bool:
        """Whether `agent` is reachable (True without a callback)."""
        if agent in self.known:
            return False
        answer = self.answers.get(agent)
        if answer is None:
            answer = self._reachable is None or self._reachable(agent)
            self.answers[agent] = answer
            if not answer:
                self.known = self.known | {agent}
        return answer


def _member_index(table: core.GroupTable, agent: str) -> int | None:
    """The agent's index in the table, None when not a member (O(1), the table's dict)."""
    try:
        return table.index(agent)
    except KeyError:
        return None
