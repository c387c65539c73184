"""Random mixes of operations, sequential and from many processes, against the invariants."""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import threading
import time
from collections import Counter, deque

import pytest
import redis
from state_support import check_invariants

from dispatcher.state import (
    AVAILABLE,
    PAUSED,
    AgentLimits,
    ClaimResult,
    StateStore,
    StateUnavailable,
    UnknownAgent,
)
from dispatcher.state.connect import sync_client

pytestmark = pytest.mark.redis

STRESS_TENANT = "stress"
STRESS_AGENTS = (
    AgentLimits("s1", max_calls=1, status=AVAILABLE),
    AgentLimits("s2", max_calls=2, status=AVAILABLE),
    AgentLimits("s3", max_calls=3, wrapup_s=0, status=AVAILABLE),
    AgentLimits("s4", max_calls=1, auto_pause_after=3, status=AVAILABLE),
    AgentLimits("s5", max_calls=2, status=AVAILABLE),
)
# s2..s4 are in both groups: their load is shared across groups.
STRESS_GROUPS = {"ga": ["s1", "s2", "s3", "s4"], "gb": ["s2", "s3", "s4", "s5"]}
REASONS = ("busy", "noanswer", "declined", "error", "cancelled")


def put_stress_config(state: StateStore, agents: tuple[AgentLimits, ...] = STRESS_AGENTS) -> None:
    ids = {a.id for a in agents}
    groups = [(gid, [m for m in members if m in ids]) for gid, members in STRESS_GROUPS.items()]
    state.put_config(b"{}", agents, groups)


def check_decided_on(result: ClaimResult, gid: str, wave: list[str], first: bool) -> None:
    """The rows a claim returns are the state it decided on, before its own reservations.

    Every claimed agent was eligible on them; on a call's first claim (no sticky) every wave
    agent of the group left out was not.
    """
    n_members = len(result.rows) // 5  # s5 may be out of gb (config churn); it is last
    for agent in wave:
        i = STRESS_GROUPS[gid].index(agent)
        if i >= n_members:
            assert agent not in result.claimed
            continue
        status, busy, max_calls, wrapuntil, _ = result.rows[5 * i : 5 * i + 5]
        eligible = status == AVAILABLE and result.now_ms >= wrapuntil and busy < max_calls
        if agent in result.claimed:
            assert eligible, (agent, result)
        elif first:
            assert not eligible, (agent, result)


def one_call(state: StateStore, rng: random.Random, call: str, stats: Counter) -> list:
    """Hunt one call; return the (call, agent) legs left live for the caller to end."""
    gid = rng.choice(sorted(STRESS_GROUPS))
    members = STRESS_GROUPS[gid]
    ttl = rng.choice((2, 20)) if rng.random() < 0.15 else 5000
    wave = rng.sample(members, rng.randint(1, len(members)))
    result = state.claim(call, gid, "", wave, ttl)
    check_decided_on(result, gid, wave, first=True)
    claimed = list(result.claimed)
    stats["offered"] += len(claimed)
    stats["skipped"] += len(wave) - len(claimed)
    if claimed and rng.random() < 0.25:  # re-planned on the claim's rows: give some back
        withdraw = rng.sample(claimed, rng.randint(1, len(claimed)))
        wave = rng.sample(members, rng.randint(0, len(members)))
        result = state.claim(call, gid, "", wave, ttl, withdraw=withdraw)
        check_decided_on(result, gid, wave, first=False)
        claimed = [a for a in claimed if a not in withdraw] + list(result.claimed)
        assert len(set(claimed)) == len(claimed)
        stats["withdrawn"] += len(withdraw)
        stats["offered"] += len(result.claimed)
    if rng.random() < 0.3:  # next wave of the same call, as after a ring timeout
        for agent in claimed:
            state.failed(call, agent, rng.choice(REASONS))
        wave = rng.sample(members, rng.randint(1, len(members)))
        claimed = list(state.claim(call, gid, "", wave, ttl).claimed)
        stats["offered"] += len(claimed)
    roll = rng.random()
    if roll < 0.55 and claimed:
        agent = rng.choice(claimed)
        if ttl < 100 and rng.random() < 0.5:
            time.sleep(ttl / 1000)
        outcome = state.answered(call, gid, agent)
        stats[outcome] += 1
        legs = [(call, agent)]
        if len(claimed) > 1 and rng.random() < 0.2:  # a second 200 OK raced the CANCEL
            other = rng.choice([a for a in claimed if a != agent])
            stats["race_" + state.answered(call, gid, other)] += 1
            legs.append((call, other))
        if rng.random() < 0.1:
            stats["dup_" + state.answered(call, gid, agent)] += 1
        for other in claimed:
            if other != agent and rng.random() < 0.5:
                state.failed(call, other, "cancelled")
        return legs
    if roll < 0.85:
        for agent in claimed:
            stats["paused"] += state.failed(call, agent, rng.choice(REASONS)).paused
    if roll < 0.95 or ttl >= 100:
        state.release(call)
    return []  # else abandoned: its short reservations expire


def random_step(
    state: StateStore, rng: random.Random, i: int, name: str, held: deque, stats: Counter
) -> None:
    held.extend(one_call(state, rng, f"{name}-{i}", stats))
    while len(held) > rng.randint(0, 4):
        call, agent = held.popleft()
        ended = state.release(call, agent if rng.random() < 0.5 else None)
        stats["ended"] += ended
        if rng.random() < 0.2:
            stats["ended_twice"] += state.release(call)
    if rng.random() < 0.08:
        agent = rng.choice(STRESS_AGENTS).id
        with contextlib.suppress(UnknownAgent):  # removed by the sequential test's churn
            state.set_state(agent, AVAILABLE if rng.random() < 0.8 else PAUSED, "break")
    if rng.random() < 0.05:
        state.sweep(rng.randint(1, 10))


def stress_worker(url: str, seed: int, iterations: int) -> Counter:
    """One process's share of the concurrent run; returns what happened."""
    rng = random.Random(seed)
    stats: Counter = Counter()
    held: deque = deque()
    # Generous timeouts: ten busy processes on a small CI box must not fail on scheduling.
    with StateStore(url, STRESS_TENANT, socket_timeout=10, connect_timeout=10) as state:
        for i in range(iterations):
            random_step(state, rng, i, f"w{seed}", held, stats)
        while held:
            stats["ended"] += state.release(held.popleft()[0])
    return stats


def assert_all_released(state: StateStore, client: redis.Redis) -> None:
    time.sleep(0.03)  # past the shortest reservation TTLs
    state.sweep(10_000)
    totals = check_invariants(client, STRESS_TENANT)
    assert totals == dict.fromkeys(("live", "resv", "reservations", "live_calls", "full"), 0)
    for agent in STRESS_AGENTS:
        counters = state.agent_counters(agent.id)
        assert counters["live"] in (0, None) and counters["resv"] in (0, None), agent.id
    # Only abandoned calls (never released) keep their offered set, until its safety expiry.
    for key in client.keys(f"{state.keys.prefix}:call:*"):
        assert client.ttl(key) > 0, key


@pytest.mark.parametrize("seed", range(4))
def test_seeded_random_operations(redis_url: str, client: redis.Redis, seed: int) -> None:
    rng = random.Random(seed)
    stats: Counter = Counter()
    held: deque = deque()
    with StateStore(redis_url, STRESS_TENANT) as state:
        put_stress_config(state)
        for i in range(150):
            if rng.random() < 0.04:  # config churn: drop s5 or bring it back, same limits
                put_stress_config(state, STRESS_AGENTS[:4] if rng.random() < 0.5 else STRESS_AGENTS)
            random_step(state, rng, i, "seq", held, stats)
            check_invariants(client, STRESS_TENANT)
        put_stress_config(state)
        while held:
            state.release(held.popleft()[0])
        assert_all_released(state, client)
    assert stats["offered"] > 100 and stats["ok"] > 10 and stats["withdrawn"] > 5


def test_concurrent_processes_never_exceed_max_calls(redis_url: str, client: redis.Redis) -> None:
    with StateStore(redis_url, STRESS_TENANT) as state:
        put_stress_config(state)
    samples: list[dict[str, int]] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def monitor() -> None:
        with sync_client(redis_url) as own:
            while not done.is_set():
                try:
                    samples.append(check_invariants(own, STRESS_TENANT))
                except (AssertionError, redis.RedisError) as exc:
                    failures.append(exc)
                time.sleep(0.005)

    # spawn, not fork: the children must not inherit the monitor thread or pytest's state.
    context = multiprocessing.get_context("spawn")
    with context.Pool(8) as pool:
        watcher = threading.Thread(target=monitor)
        watcher.start()
        try:
            results = pool.starmap(stress_worker, [(redis_url, seed, 200) for seed in range(8)])
        finally:
            done.set()
            watcher.join()
    assert failures == []
    assert len(samples) >= 10
    assert any(sample["full"] for sample in samples), "the run never reached a max_calls limit"
    stats = sum(results, Counter())
    assert stats["offered"] > 500 and stats["withdrawn"] > 50
    assert stats["skipped"] > 100  # contention: agents at max were passed over
    assert stats["ok"] > 100 and stats["ended"] > 100
    with StateStore(redis_url, STRESS_TENANT) as state:
        assert_all_released(state, client)


def test_stress_worker_gives_up_fast_without_redis() -> None:
    from dispatcher.run.procs import free_port

    with pytest.raises(StateUnavailable):
        stress_worker(f"redis://127.0.0.1:{free_port()}/0", 0, 1)
