"""Redis figures of the core benchmark: round trips per decision and claims per second.

Round trips are counted by the server, never assumed: INFO commandstats counts a command
run inside a function under its own name and the FCALL that carried it once, so the FCALL
count is the number of round trips the workers made for their decisions. The only other
command a worker sends, the config read, happens when the config version changes; the
measurement checks that it did not happen in the measured window. Two runs:

- one worker, calls held (as in a busy hour, calls last longer than decisions take): the
  worker's snapshot is always the state its own last claim left, so this is the steady
  state of a worker whose group is not being changed by others between its decisions;
- two worker processes deciding and hanging up at once on the same groups: the snapshots
  go stale between decisions, and the figure includes the corrective claims this costs.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.model import STRATEGY_NAMES as STRATEGIES
from dispatcher.config.model import Tenant
from dispatcher.run.procs import RedisProcess
from dispatcher.sip.decision import Decider, Offer
from dispatcher.state import StateStore

AGENTS = 100


def bench_tenant(max_calls: int) -> Tenant:
    """100 agents, one group per strategy with all of them (three tiers)."""
    agents = [
        {
            "id": f"a{i:03d}",
            "name": f"A{i}",
            "targets": {"aor": f"a{i:03d}"},
            "state": "available",
            "max_calls": max_calls,
        }
        for i in range(AGENTS)
    ]
    members = [
        {"agent": f"a{i:03d}", "tier": i % 3, "position": i, "weight": 1 + i % 5}
        for i in range(AGENTS)
    ]
    groups = [
        {
            "id": name.replace("_", "-"),
            "extension": str(800 + n),
            "name": name,
            "strategy": name,
            "sticky": False,
            "members": members,
        }
        for n, name in enumerate(STRATEGIES)
    ]
    return Tenant.model_validate(
        {"id": "bench", "name": "Bench", "agents": agents, "groups": groups}
    )


def fcalls(client: redis.Redis) -> int:
    """FCALLs the server executed so far: one per round trip of a worker's decision."""
    return int(client.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0))


def _decide(url: str, count: int, release: bool, worker: int) -> int:
    """Make `count` decisions cycling over the groups; returns decisions that got an offer."""
    store = StateStore(url, "bench")
    decider = Decider(store)
    offers = 0
    for i in range(count):
        ext = str(800 + i % len(STRATEGIES))
        started = decider.start(f"w{worker}-c{i}", ext, "")
        assert started is not None
        offers += isinstance(started[1], Offer)
        if release:
            decider.release(f"w{worker}-c{i}")
    store.close()
    return offers


def _held_round(url: str, client: redis.Redis, decisions: int) -> tuple[int, float]:
    """One worker, calls held: (FCALLs, seconds) for `decisions` decisions."""
    client.flushall()
    store = StateStore(url, "bench")
    import_tenant(store, bench_tenant(max_calls=100))
    decider = Decider(store)
    for i in range(len(STRATEGIES)):  # this worker's first look at each group
        decider.start(f"warm{i}", str(800 + i), "")
    view = decider.view()
    base = fcalls(client)
    started = time.perf_counter()
    for i in range(decisions):
        decider.start(f"c{i}", str(800 + i % len(STRATEGIES)), "")
    elapsed = time.perf_counter() - started
    assert decider.view() is view, "config reloaded inside the measured window"
    store.close()
    return fcalls(client) - base, elapsed


def measure_redis(rounds: int = 10, decisions: int = 400) -> dict[str, Any]:
    """Start a private redis-server, run both workloads, return the figures.

    Held calls fill the agents (max 100 calls each, ring_all reserves all 100 agents per
    decision), so the held workload runs in rounds of `decisions` on a fresh config.
    """
    with tempfile.TemporaryDirectory() as tmp, RedisProcess(Path(tmp)) as server:
        client = redis.Redis.from_url(server.url)
        commands, seconds = 0, 0.0
        for _ in range(rounds):
            c, s = _held_round(server.url, client, decisions)
            commands, seconds = commands + c, seconds + s
        held = commands / (rounds * decisions)

        client.flushall()
        store = StateStore(server.url, "bench")
        import_tenant(store, bench_tenant(max_calls=4))
        store.close()
        per_worker = rounds * decisions // 2
        base = fcalls(client)
        with mp.get_context("spawn").Pool(2) as pool:
            pool.starmap(_decide, [(server.url, per_worker, True, w) for w in range(2)])
        total = fcalls(client) - base
        # each call also ends with one release FCALL
        contended = (total - 2 * per_worker) / (2 * per_worker)
        client.close()
    return {
        "redis_round_trips_per_decision": round(held, 3),
        "redis_round_trips_per_decision_two_workers": round(contended, 3),
        "claims_per_second": round(rounds * decisions / seconds),
    }
