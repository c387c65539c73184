"""A worker's decisions against a real Redis: one round trip, stale snapshots, live config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from clocks import now_ms, zone_at_noon
from redis_support import command_calls
from state_support import check_invariants

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.model import Tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.core import AVAILABLE
from dispatcher.run.procs import RedisProcess
from dispatcher.sip import decision
from dispatcher.sip.decision import CallContext, ConfigMissing, Decider, Exhausted, Offer
from dispatcher.state import AgentLimits, StateStore, StateUnavailable, sticky_day
from dispatcher.state.connect import sync_client

pytestmark = [pytest.mark.redis, pytest.mark.timeshift]


TENANT_YAML = """
id: acme
name: Acme
timezone: Europe/Berlin
agents:
  - {id: a1, name: A1, targets: {aor: a1}, state: available}
  - {id: a2, name: A2, targets: {aor: a2}, state: available}
  - {id: a3, name: A3, targets: {aor: a3}, state: available, max_calls: 2}
groups:
  - id: seq
    extension: "700"
    name: Sequential
    strategy: sequential
    ring_timeout: 15
    overall_timeout: 60
    members:
      - {agent: a1, position: 1}
      - {agent: a2, position: 2}
      - {agent: a3, position: 3}
    no_answer: {kind: group, group: all}
  - id: all
    extension: "701"
    name: Everyone
    strategy: ring_all
    sticky: false
    members: [{agent: a1}, {agent: a2}, {agent: a3}]
    no_answer: {kind: reply, code: 486}
  - id: idle
    extension: "702"
    name: Longest idle
    strategy: longest_idle
    sticky: false
    members: [{agent: a1}, {agent: a2}]
"""


class Clock:
    """An injectable wall clock in ms."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def tenant(text: str = TENANT_YAML) -> Tenant:
    return parse_tenant(text, "yaml")


@pytest.fixture
def store(redis_url: str) -> Iterator[StateStore]:
    with StateStore(redis_url, "acme") as state:
        import_tenant(state, tenant())
        yield state


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with sync_client(redis_url) as plain:
        yield plain


def fcalls(client: redis.Redis) -> int:
    return command_calls(client, "fcall")


def test_unknown_extension_is_none(store: StateStore) -> None:
    assert Decider(store).start("c1", "999", "+491") is None


def test_sequential_failover_then_no_answer_target(store: StateStore) -> None:
    decider = Decider(store)
    started = decider.start("c1", "700", "+491")
    assert started is not None
    ctx, offer = started
    assert offer == Offer("seq", ("a1",), 15, False)
    decider.failed(ctx, "a1", "busy")
    assert decider.next(ctx) == Offer("seq", ("a2",), 15, False)
    decider.failed(ctx, "a2", "noanswer")
    assert decider.next(ctx) == Offer("seq", ("a3",), 15, False)
    decider.failed(ctx, "a3", "noanswer")
    outcome = decider.next(ctx)
    assert isinstance(outcome, Exhausted)
    assert outcome.target.kind == "group"
    decider.release(ctx.call_id)


def test_one_round_trip_per_decision_on_a_fresh_snapshot(
    store: StateStore, client: redis.Redis
) -> None:
    store.put_config(
        store.config()[1] or b"",
        [AgentLimits(a, 50, 0, 0, AVAILABLE, "") for a in ("a1", "a2", "a3")],
        [("seq", ("a1", "a2", "a3")), ("all", ("a1", "a2", "a3")), ("idle", ("a1", "a2"))],
    )
    decider = Decider(store)
    decider.start("warm", "701", "")
    before = fcalls(client)
    for i in range(20):
        started = decider.start(f"c{i}", "701", "")
        assert started is not None and started[1] == Offer("all", ("a1", "a2", "a3"), 20, False)
    assert fcalls(client) - before == 20


def test_stale_snapshot_still_one_claim_when_order_is_static(
    store: StateStore, client: redis.Redis
) -> None:
    decider = Decider(store)
    _, offer = decider.start("c1", "701", "")  # type: ignore[misc]
    assert offer == Offer("all", ("a1", "a2", "a3"), 20, False)
    decider.release("c1")  # the snapshot still shows everyone ringing
    before = fcalls(client)
    _, offer = decider.start("c2", "701", "")  # type: ignore[misc]
    # the claim carried the plan with eligibility left to Redis: right pick, one round trip
    assert offer == Offer("all", ("a1", "a2", "a3"), 20, False)
    assert fcalls(client) - before == 1


def test_stale_live_counts_still_one_claim_for_least_key_strategies(
    store: StateStore, client: redis.Redis
) -> None:
    decider = Decider(store)
    ctx, offer = decider.start("c1", "702", "")  # type: ignore[misc]
    assert offer == Offer("idle", ("a1",), 20, False)
    decider.answered(ctx, "a1")
    decider.release("c1")  # a1 idle from now; the snapshot still says idle since ever
    before = fcalls(client)
    _, offer = decider.start("c2", "702", "")  # type: ignore[misc]
    # the stale ranking led with a1; the claim ranked the candidates on Redis' counts
    assert offer == Offer("idle", ("a2",), 20, False)
    assert fcalls(client) - before == 1
    assert check_invariants(client, "acme")["resv"] == 1


def test_a_claimed_agent_without_a_phone_costs_one_corrective_claim(
    store: StateStore, client: redis.Redis
) -> None:
    decider = Decider(store)
    reachable = {"a1": False, "a2": True}.__getitem__
    before = fcalls(client)
    _, offer = decider.start("c1", "702", "", reachable)  # type: ignore[misc]
    # longest_idle's candidates go to the claim unasked; it took a1 (a tie, broken by rank),
    # asked after the claim, a1 has no phone: the next claim withdrew a1 and took a2
    assert offer == Offer("idle", ("a2",), 20, False)
    assert fcalls(client) - before == 2
    assert [(e["agent"], e["reason"]) for e in store.events(3) if e["type"] == "released"] == [
        ("a1", "replanned")
    ]
    assert check_invariants(client, "acme")["resv"] == 1


def test_an_agent_found_without_a_phone_is_left_out_for_a_while(
    store: StateStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    decider = Decider(store)
    asked: list[str] = []

    def reachable(agent: str) -> bool:
        asked.append(agent)
        return agent != "a1"

    decider.start("c1", "702", "", reachable)  # a1 claimed, found without a phone, withdrawn
    decider.release("c1")
    assert asked == ["a1", "a2"]
    before = fcalls(client)
    _, offer = decider.start("c2", "702", "", reachable)  # type: ignore[misc]
    assert offer == Offer("idle", ("a2",), 20, False)
    assert fcalls(client) - before == 1  # a1 left out: no corrective claim
    assert asked == ["a1", "a2", "a2"]  # nor asked again (a reachable one always is)
    decider.release("c2")
    monkeypatch.setattr(decision, "UNREACHABLE_RECHECK_S", 0.0)
    decider._unreachable = dict.fromkeys(decider._unreachable, 0.0)  # the while is over
    decider.start("c3", "702", "", reachable)
    assert asked[3:] == ["a1", "a2"]  # a1 asked again


def test_stale_snapshot_replans_on_fresh_state(store: StateStore) -> None:
    worker_a, worker_b = Decider(store), Decider(store)
    # both workers warm their snapshot of "seq" while everyone is free
    for worker, call in ((worker_a, "wa"), (worker_b, "wb")):
        started = worker.start(call, "700", "")
        assert started is not None
        worker.release(call)
    ctx_a, offer_a = worker_a.start("ca", "700", "")  # type: ignore[misc]
    assert offer_a == Offer("seq", ("a1",), 15, False)
    worker_a.answered(ctx_a, "a1")
    # worker B still believes a1 is free: its claim fails, it re-plans on the fresh rows
    ctx_b, offer_b = worker_b.start("cb", "700", "")  # type: ignore[misc]
    assert offer_b == Offer("seq", ("a2",), 15, False)
    assert ctx_b.tried == ["a2"]


@pytest.fixture
def noon_store(clock_redis: RedisProcess) -> Iterator[StateStore]:
    """The tenant on a Redis whose clock the test moves, in a zone where it is about noon."""
    with StateStore(clock_redis.url, "acme") as state:
        import_tenant(state, tenant(TENANT_YAML.replace("Europe/Berlin", zone_at_noon())))
        yield state


def test_sticky_same_day_not_next_day(noon_store: StateStore, clock_redis: RedisProcess) -> None:
    decider = Decider(noon_store)  # the worker's clock is the real one throughout
    ctx, _offer = decider.start("c1", "700", "+4930555")  # type: ignore[misc]
    decider.failed(ctx, "a1", "busy")
    assert decider.next(ctx) == Offer("seq", ("a2",), 15, False)
    assert decider.answered(ctx, "a2") == "ok"
    decider.release("c1")
    # later the same day: a2 first, alone, marked sticky
    clock_redis.clock.shift(3600)
    ctx2, offer2 = decider.start("c2", "700", "+4930555")  # type: ignore[misc]
    assert offer2 == Offer("seq", ("a2",), 15, True)
    # a2 does not answer: the strategy goes on over the others
    decider.failed(ctx2, "a2", "noanswer")
    assert decider.next(ctx2) == Offer("seq", ("a1",), 15, False)
    decider.release("c2")
    # a different caller is not sticky
    _, other = decider.start("c3", "700", "+4930999")  # type: ignore[misc]
    assert other == Offer("seq", ("a1",), 15, False)
    decider.release("c3")
    # the next local day by Redis' clock (about 01:00): no memory
    clock_redis.clock.shift(12 * 3600)
    _, next_day = decider.start("c4", "700", "+4930555")  # type: ignore[misc]
    assert next_day == Offer("seq", ("a1",), 15, False)
    decider.release("c4")


def test_sticky_day_follows_redis_not_a_skewed_worker(
    noon_store: StateStore, client: redis.Redis
) -> None:
    right = Decider(noon_store)
    ahead = Decider(noon_store, Clock(now_ms() + 13 * 3_600_000))  # "tomorrow, 01:00"
    ctx, _ = right.start("c1", "700", "+4930555")  # type: ignore[misc]
    right.failed(ctx, "a1", "busy")
    right.next(ctx)
    assert right.answered(ctx, "a2") == "ok"
    right.release("c1")
    # The skewed worker still reaches the caller's agent of Redis' day...
    _, offer = ahead.start("c2", "700", "+4930555")  # type: ignore[misc]
    assert offer == Offer("seq", ("a2",), 15, True)
    assert abs(ahead.clock_skew_ms + 13 * 3_600_000) < 5_000  # and knows how far off it is
    ahead.release("c2")
    # ...and what it writes ends at Redis' local midnight, not the next one.
    ctx3, _ = ahead.start("c3", "700", "+4930777")  # type: ignore[misc]
    assert ahead.answered(ctx3, "a1") == "ok"
    (key,) = noon_store._redis.scan_iter(match="*sticky*")  # every primary of a Cluster
    group_zone = right.view().groups["seq"].timezone
    assert noon_store._redis.pexpiretime(key) == sticky_day(now_ms(), group_zone)[1]
    assert noon_store._redis.hgetall(key) == {b"+4930555": b"a2", b"+4930777": b"a1"}


def test_sticky_agent_busy_falls_back_to_strategy(store: StateStore) -> None:
    decider = Decider(store, Clock(now_ms()))
    ctx, _ = decider.start("c1", "700", "+4930555")  # type: ignore[misc]
    decider.answered(ctx, "a1")
    # a1 is on the call (max 1): the same caller's second call goes by the strategy
    _, offer = decider.start("c2", "700", "+4930555")  # type: ignore[misc]
    assert offer == Offer("seq", ("a2",), 15, False)


def test_busy_across_groups(store: StateStore) -> None:
    decider = Decider(store)
    ctx, _ = decider.start("c1", "700", "")  # type: ignore[misc]
    decider.answered(ctx, "a1")
    _, offer = decider.start("c2", "701", "")  # type: ignore[misc]
    assert offer == Offer("all", ("a2", "a3"), 20, False)


def test_config_change_applies_to_next_decision(store: StateStore) -> None:
    decider = Decider(store)
    _, offer = decider.start("c1", "700", "")  # type: ignore[misc]
    assert offer.agents == ("a1",)  # type: ignore[union-attr]
    decider.release("c1")
    changed = TENANT_YAML.replace("{agent: a1, position: 1}", "{agent: a1, position: 9}")
    import_tenant(store, tenant(changed))
    _, offer = decider.start("c2", "700", "")  # type: ignore[misc]
    assert offer.agents == ("a2",)  # type: ignore[union-attr]
    assert decider.view().version == store.config_version()


def test_overall_timeout_ends_the_plan(store: StateStore) -> None:
    clock = Clock(now_ms())
    decider = Decider(store, clock)
    ctx, _ = decider.start("c1", "700", "")  # type: ignore[misc]
    decider.failed(ctx, "a1", "noanswer")
    clock.now_ms += 50_000
    # 10 s of the 60 s overall timeout left: the next wave rings only that long
    assert decider.next(ctx) == Offer("seq", ("a2",), 10, False)
    decider.failed(ctx, "a2", "noanswer")
    clock.now_ms += 10_000
    assert isinstance(decider.next(ctx), Exhausted)


def test_everyone_busy_is_exhausted_and_state_is_clean(
    store: StateStore, client: redis.Redis
) -> None:
    decider = Decider(store)
    ctxs = []
    for i in range(4):  # a1 + a2 + a3 twice = 4 live calls fill the group
        ctx, offer = decider.start(f"c{i}", "700", "")  # type: ignore[misc]
        assert isinstance(offer, Offer)
        decider.answered(ctx, offer.agents[0])
        ctxs.append(ctx)
    _, outcome = decider.start("c9", "700", "")  # type: ignore[misc]
    assert isinstance(outcome, Exhausted)
    for ctx in ctxs:
        assert decider.release(ctx.call_id) == 1
        assert decider.release(ctx.call_id) == 0
    totals = check_invariants(client, "acme")
    assert totals["live"] == 0 and totals["resv"] == 0


def test_call_context_round_trips_and_rejects_garbage() -> None:
    ctx = CallContext("call-1@host", "seq", "+491", 123, ["a1"], "a2")
    assert CallContext.decode(ctx.encode()) == ctx
    with pytest.raises(ValueError, match="not a call context"):
        CallContext.decode("[1,2")


def test_no_config_is_a_clear_error(redis_url: str) -> None:
    with StateStore(redis_url, "empty") as state, pytest.raises(ConfigMissing, match="empty"):
        Decider(state).start("c1", "700", "")


def test_redis_down_is_a_typed_error_not_a_hang(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    with StateStore(server.url, "acme") as state:
        import_tenant(state, tenant())
        decider = Decider(state)
        decider.start("c1", "700", "")
        server.stop()
        with pytest.raises(StateUnavailable):
            decider.start("c2", "700", "")
        # back again, empty (a crash): config re-imported, the library reloads itself
        server.start()
        import_tenant(state, tenant())
        try:
            started = decider.start("c3", "700", "")
            assert started is not None and isinstance(started[1], Offer)
        finally:
            server.stop()


def test_unreachable_agents_are_never_claimed(store: StateStore, client: redis.Redis) -> None:
    decider = Decider(store)
    reachable = {"a1": False, "a2": True, "a3": False}.__getitem__
    ctx, offer = decider.start("c1", "701", "", reachable)  # type: ignore[misc]
    assert offer == Offer("all", ("a2",), 20, False)
    decider.failed(ctx, "a2", "noanswer")
    assert isinstance(decider.next(ctx, reachable), Exhausted)
    assert decider.release("c1") == 0
    assert check_invariants(client, "acme")["resv"] == 0


def test_unreachable_failure_is_not_a_missed_offer(store: StateStore) -> None:
    decider = Decider(store)
    ctx, _ = decider.start("c1", "700", "")  # type: ignore[misc]
    before = store.agent_counters("a1")["missed"]
    result = decider.failed(ctx, "a1", "unreachable")
    assert result.released and not result.paused
    assert store.agent_counters("a1")["missed"] == before
    ctx2, _ = decider.start("c2", "700", "")  # type: ignore[misc]
    decider.failed(ctx2, "a1", "noanswer")
    assert store.agent_counters("a1")["missed"] == (before or 0) + 1


def test_arrival_is_recorded_once_per_call_and_group(store: StateStore) -> None:
    decider = Decider(store)
    ctx, _ = decider.start("c1", "700", "+491")  # type: ignore[misc]
    decider.failed(ctx, "a1", "busy")
    decider.next(ctx)
    arrivals = [e for e in store.events(500) if e["type"] == "arrived"]
    assert arrivals == [
        {**arrivals[0], "call": "c1", "group": "seq", "caller": "+491", "type": "arrived"}
    ]


def test_idle_worker_confirms_its_config_version(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dispatcher.sip.decision as decision

    decider = Decider(store)
    assert decider.view().tenant.group_by_extension("702") is not None
    changed = TENANT_YAML.replace('extension: "702"', 'extension: "709"')
    import_tenant(store, tenant(changed))
    # within the recheck interval the cached config is used without asking Redis
    assert decider.view().tenant.group_by_extension("702") is not None
    monkeypatch.setattr(decision, "CONFIG_RECHECK_S", 0.0)
    assert decider.view().tenant.group_by_extension("709") is not None
