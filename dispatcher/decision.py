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

import orjson

from dispatcher import core
from dispatcher.model import Group, NoAnswerTarget, Tenant
from dispatcher.planning import group_table
from dispatcher.state.sticky import sticky_day
from dispatcher.state.store import AnswerOutcome, ClaimResult, FailResult, StateStore
from dispatcher.tenant_file import parse_tenant

# A reservation outlives its ring timeout by this much, so a slow CANCEL/487 still finds it;
# past the deadline a crashed worker's reservation frees the agent on its own.
RESERVATION_MARGIN_MS = 10_000
# Claims per decision when snapshots keep turning out stale (heavy contention).
MAX_CLAIM_ATTEMPTS = 3

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
    """Nobody (more) can be offered: the group's no-answer target applies."""

    group: str
    target: NoAnswerTarget


@dataclass(slots=True)
class CallContext:
    """What a call carries from wave to wave; the router keeps it with the transaction."""

    call_id: str
    group: str
    caller: str
    started_ms: int
    tried: list[str] = field(default_factory=list)
    sticky: str | None = None

    @property
    def seed(self) -> int:
        """Stable per call, so every node plans the same random order for it."""
        return int.from_bytes(hashlib.blake2b(self.call_id.encode(), digest_size=8).digest())

    def encode(self) -> str:
        """Compact text for a Kamailio AVP."""
        return orjson.dumps(
            [self.call_id, self.group, self.caller, self.started_ms, self.tried, self.sticky]
        ).decode()

    @classmethod
    def decode(cls, text: str) -> CallContext:
        """Inverse of `encode`; ValueError on anything else."""
        try:
            call_id, group, caller, started_ms, tried, sticky = orjson.loads(text)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise ValueError(f"not a call context: {text[:80]!r}") from exc
        return cls(str(call_id), str(group), str(caller), int(started_ms), list(tried), sticky)


@dataclass(frozen=True, slots=True)
class TenantView:
    """One config version of a tenant, compiled for planning."""

    version: int
    tenant: Tenant
    tables: dict[str, core.GroupTable]

    @classmethod
    def build(cls, version: int, tenant: Tenant) -> TenantView:
        return cls(version, tenant, {g.id: group_table(g) for g in tenant.groups})


class ConfigMissing(LookupError):
    """Redis holds no config for the tenant (not imported yet, or Redis lost it)."""


class Decider:
    """Plans and claims waves for the calls of one tenant (one instance per worker)."""

    def __init__(self, store: StateStore, clock_ms: Callable[[], int] | None = None) -> None:
        self.store = store
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._view: TenantView | None = None
        # group id -> (flat live rows, rr cursor) as this worker last knew them
        self._live: dict[str, tuple[list[int], int]] = {}

    # -- config ------------------------------------------------------------------------

    def view(self) -> TenantView:
        """The cached config, loaded on first use (1 round trip, then none)."""
        if self._view is None:
            self._reload()
        assert self._view is not None
        return self._view

    def _reload(self) -> None:
        version, doc = self.store.config()
        if doc is None:
            raise ConfigMissing(f"tenant {self.store.tenant!r} has no config in Redis")
        self._view = TenantView.build(version, parse_tenant(doc, "json"))
        self._live.clear()

    # -- decisions ----------------------------------------------------------------------

    def start(
        self, call_id: str, extension: str, caller: str, reachable: Reachable | None = None
    ) -> tuple[CallContext, Offer | Exhausted] | None:
        """First decision for a call to `extension`; None when no group has that number."""
        group = self.view().tenant.group_by_extension(extension)
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

        The wave is planned on the worker's snapshot and claimed; the claim answers with the
        state it decided on, and the worker re-plans on that. When both plans agree (the
        snapshot was fresh) the decision took 1 FCALL. Otherwise the next claim withdraws what
        the stale plan took and claims the right wave, at most MAX_CLAIM_ATTEMPTS in all.
        """
        group = self._group(ctx.group)
        now = self.clock_ms()
        remaining_s = (group.overall_timeout * 1000 - (now - ctx.started_ms)) // 1000
        if remaining_s <= 0:
            return Exhausted(group.id, group.no_answer)
        timeout = min(group.ring_timeout, remaining_s)
        caller = ctx.caller if (group.sticky and not ctx.tried) else ""
        day = sticky_day(now, group.timezone)[0] if caller else ""
        seed = ctx.seed
        unreachable = (
            frozenset(a for a in self.view().tables[group.id].agent_ids if not reachable(a))
            if reachable is not None
            else frozenset()
        )
        wave = self._plan(group.id, self._snapshot(group.id), now, seed, ctx, unreachable)
        held: list[str] = []
        for _ in range(MAX_CLAIM_ATTEMPTS):
            want = wave.agents if wave is not None else ()
            result = self.store.claim(
                ctx.call_id,
                group.id,
                caller,
                [a for a in want if a not in held],
                ttl_ms=timeout * 1000 + RESERVATION_MARGIN_MS,
                sticky_day=day,
                withdraw=[a for a in held if a not in want],
            )
            self._adopt(result)
            if result.sticky_agent:
                ctx.sticky = result.sticky_agent
            held = [a for a in held if a in want] + list(result.claimed)
            if result.is_sticky:
                break
            # What the claim decided on, with this decision's own earlier holds given back.
            fresh = self._rows_without(group.id, result, held[: len(held) - len(result.claimed)])
            wave = self._plan(group.id, fresh, result.now_ms, seed, ctx, unreachable)
            if wave is None or set(wave.agents) == set(held):
                if wave is not None:
                    held = list(wave.agents)  # the core's order: canonical, by position, ...
                break
        if not held:
            return Exhausted(group.id, group.no_answer)
        ctx.tried.extend(held)
        return Offer(group.id, tuple(held), timeout, bool(result.is_sticky))

    def _plan(
        self,
        group_id: str,
        live: core.LiveTable | None,
        now: int,
        seed: int,
        ctx: CallContext,
        unreachable: frozenset[str],
    ) -> core.Wave | None:
        """The wave the core picks on `live`; None without a snapshot (first use)."""
        if live is None:
            return None
        table = self.view().tables[group_id]
        for agent in unreachable:
            if agent in table.agent_ids:  # a config reload may have dropped it
                live.set_reachable(table.index(agent), False)
        return core.next_wave(table, live, now, seed, ctx.tried, ctx.sticky)

    def _group(self, group_id: str) -> Group:
        group = self.view().tenant.group(group_id)
        if group is None:
            raise LookupError(f"group {group_id!r} is not in tenant {self.store.tenant!r}")
        return group

    def _snapshot(self, group_id: str) -> core.LiveTable | None:
        """This worker's view of the group: the last claim's state plus its own claims since."""
        cached = self._live.get(group_id)
        return None if cached is None else core.LiveTable(cached[0], cached[1])

    def _adopt(self, result: ClaimResult) -> None:
        """Reload the config when a claim shows it moved on."""
        if self._view is None or result.version != self._view.version:
            self._reload()

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
                if other_id != group_id and other is not None and agent in other.agent_ids:
                    other_rows[other.index(agent) * core.LIVE_FIELDS + 1] += 1
        self._live[group_id] = (after, rr)
        return core.LiveTable(rows, result.rr)

    # -- outcomes, passed through so the router talks to one object ------------------------

    def answered(self, ctx: CallContext, agent: str) -> AnswerOutcome:
        """The agent answered: its reservation becomes a live call (1 round trip).

        With sticky on, the caller sticks to the agent until the group's local midnight.
        """
        group = self._group(ctx.group)
        if not (group.sticky and ctx.caller):
            return self.store.answered(ctx.call_id, group.id, agent)
        day, midnight_ms = sticky_day(self.clock_ms(), group.timezone)
        return self.store.answered(ctx.call_id, group.id, agent, ctx.caller, day, midnight_ms)

    def failed(self, ctx: CallContext, agent: str, reason: str) -> FailResult:
        """The offer to `agent` failed (busy, no answer, declined, error, cancelled)."""
        return self.store.failed(ctx.call_id, agent, reason)

    def release(self, call_id: str, agent: str = "") -> int:
        """The call ended (BYE, CANCEL, timeout): release everything it holds, once."""
        return self.store.release(call_id, agent)
