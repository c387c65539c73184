"""A worker's store behind Redis Sentinel: kill -9 the master while it claims, answers and
releases calls; the calls fail for a bounded time, then go on on the promoted replica, and
nothing is counted twice. What asynchronous replication lost is repaired as the nodes'
keepers would: the backstop's release of the calls left live (`stale_calls`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque

import pytest
import redis
from failover import BOUND_S, through_a_kill
from state_support import AGENTS, GROUPS, TENANT, check_invariants

from dispatcher.run.procs import RedisSentinelSet
from dispatcher.state import StateStore, StateUnavailable
from dispatcher.state.connect import (
    MASTER_CHECK_S,
    aclose_client,
    async_client,
    close_client,
    sync_client,
)

pytestmark = [pytest.mark.redis, pytest.mark.ha]


def test_a_worker_follows_a_failover_and_counts_nothing_twice(
    sentinels: RedisSentinelSet,
) -> None:
    store = StateStore(sentinels.address, TENANT, socket_timeout=0.5, connect_timeout=0.5)
    store.put_config(b"{}", AGENTS, GROUPS)
    live: deque[str] = deque()  # calls this worker believes answered and not yet released

    def one_call(n: int) -> bool:
        """A call to g1 answered by the first agent claimed; the oldest of the calls up
        keeps going until two are up, then it is released (as the router: once)."""
        call = f"c{n}"
        try:
            claim = store.claim(call, "g1", "", ["a1", "a2", "a3"], 5000)
            if claim.claimed:
                store.answered(call, "g1", claim.claimed[0])
                live.append(call)
            else:
                store.release(call)
            if len(live) > 2:
                store.release(live.popleft(), outcome="answered")
        except StateUnavailable:
            return False
        return True

    outage = through_a_kill(sentinels, one_call, before=20)
    assert outage.failures > 0, "the kill reached no call"
    assert outage.gap_s <= BOUND_S, f"calls failed {outage.gap_s:.2f} s (bound {BOUND_S} s)"

    client = sync_client(sentinels.address)
    try:
        check_invariants(client, TENANT)  # live and resv counters agree with what is held
        events = store.events(1_000_000)  # all of them
        per_call = Counter((e["type"], e["call"]) for e in events if "call" in e)
        twice = {key: n for key, n in per_call.items() if n > 1 and key[0] in ("answered", "ended")}
        assert not twice, f"counted twice: {twice}"
        counts = {k.decode(): int(v) for k, v in client.hgetall(store.keys.counts).items()}
        kinds = Counter(e["type"] for e in events)
        assert {k: n for k, n in counts.items() if k.startswith("events|")} == {
            f"events|{kind}": n for kind, n in kinds.items()
        }
        # The backstop's repair: calls whose release was lost with the old master (or never
        # reached Redis during the outage) are released; nothing stays busy.
        for call in store.stale_calls(0):
            store.release(call, outcome="expired")
        for call in live:
            store.release(call, outcome="answered")
        totals = check_invariants(client, TENANT)
        assert (totals["live"], totals["live_calls"]) == (0, 0)
    finally:
        close_client(client)
        store.close()


def test_the_library_is_loaded_again_on_a_master_that_lacks_it(
    sentinels: RedisSentinelSet,
) -> None:
    """FUNCTION LOAD is replicated, so the promoted replica has the library; one that lost
    it (a replica re-synced from an empty master, a FUNCTION FLUSH) gets it again."""
    with StateStore(sentinels.address, TENANT) as store:
        store.put_config(b"{}", AGENTS, GROUPS)
        old = sentinels.current_master()
        old.kill()
        new = sentinels.wait_for_failover(old.port)
        with sync_client(new.url) as direct:
            assert direct.function_list(), "the replica had the library replicated"
            direct.function_flush()
        deadline = time.monotonic() + 5
        while True:
            try:
                assert store.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
                break
            except StateUnavailable:  # until the store's connection finds the new master
                assert time.monotonic() < deadline, "the store never reached the new master"
        store.release("c1")


def test_every_client_leaves_a_master_the_sentinels_no_longer_name(
    sentinels: RedisSentinelSet,
) -> None:
    """A split brain made at will: the replica is made a master of its own and the Sentinels
    name it, while the old master runs on - as when a master that stalled resumes just after
    a connection was made to it, and takes writes until the Sentinels demote it (up to 10 s
    later: `bench/chaos.py`'s redis_sigstop). A worker's store, a pooled client and the API's
    asyncio client each leave the old master within MASTER_CHECK_S."""
    old, new = sentinels.master, sentinels.replica
    store = StateStore(sentinels.address, TENANT, socket_timeout=0.5, connect_timeout=0.5)
    pooled = sync_client(sentinels.address, 0.5, 0.5)
    api = async_client(sentinels.address, 0.5, 0.5)
    loop = asyncio.new_event_loop()
    try:
        store.put_config(b"{}", AGENTS, GROUPS)
        pooled.set("written", "before")
        loop.run_until_complete(api.set("written-async", "before"))
        with sync_client(old.url) as direct:
            assert direct.wait(1, 2000) == 1  # the replica holds all of it
        with sync_client(new.url) as direct:
            direct.replicaof("NO", "ONE")
        for watcher in sentinels.watchers:
            with redis.Redis(port=watcher.port, socket_timeout=2) as sentinel:
                sentinel.execute_command("SENTINEL", "REMOVE", sentinels.service)
                sentinel.execute_command(
                    "SENTINEL", "MONITOR", sentinels.service, "127.0.0.1", new.port, 2
                )
        assert sentinels.master_port() == new.port
        time.sleep(MASTER_CHECK_S + 0.2)

        assert store.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
        pooled.set("written", "after")
        loop.run_until_complete(api.set("written-async", "after"))
        with sync_client(new.url) as direct:
            assert direct.zscore(store.keys.resv, "c1\x1fa1") is not None
            assert direct.mget("written", "written-async") == [b"after", b"after"]
        with sync_client(old.url) as direct:
            assert direct.zscore(store.keys.resv, "c1\x1fa1") is None
            assert direct.mget("written", "written-async") == [b"before", b"before"]
    finally:
        store.close()
        close_client(pooled)
        loop.run_until_complete(aclose_client(api))
        loop.close()
