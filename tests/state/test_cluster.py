"""The state on a real Redis Cluster the tests start: each tenant's keys in one slot, the
tenants spread over the primaries; the library on every primary, loaded again where it is
missing; doorbells heard on any node; a slot that moves (ASK while it migrates, MOVED
after) or a primary that dies (its replica takes over) followed by a worker's store.
(The whole state suite also runs on a Cluster in make test's cluster pass.)"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from failover import Outage
from redis.crc import key_slot
from redis_support import library_names
from state_support import AGENTS, GROUPS, check_invariants

from dispatcher.run.procs import RedisClusterSet, RedisProcess
from dispatcher.state import AnswerOutcome, StateStore, StateUnavailable
from dispatcher.state.connect import close_client, sync_client
from dispatcher.state.keys import NODES_KEY, TENANTS_KEY

pytestmark = [pytest.mark.redis, pytest.mark.ha]

TENANTS = [f"tenant-{n}" for n in range(12)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    with RedisClusterSet(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def fresh(cluster: RedisClusterSet) -> Iterator[str]:
    """The module's Cluster, every primary flushed."""
    client = sync_client(cluster.url)
    client.flushall()
    close_client(client)
    yield cluster.url


def direct(node: RedisProcess) -> redis.Redis:
    """A plain client of one node (no slot routing: it answers only for its own keys)."""
    return redis.Redis(port=node.port, socket_timeout=2)


def node_of(cluster: RedisClusterSet, slot: int) -> RedisProcess:
    """The primary that serves `slot` now, as a live node sees it."""
    alive = next(n for n in cluster.nodes if n.proc is not None and n.proc.poll() is None)
    with direct(alive) as client:
        for start, end, (_, port, *_), *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return next(n for n in cluster.nodes if n.port == port)
    raise AssertionError(f"no node serves slot {slot}")


def put_tenants(url: str) -> None:
    for tenant in TENANTS:
        with StateStore(url, tenant) as store:
            store.put_config(b"{}", AGENTS, GROUPS)
            store.claim("c1", "g1", "", ["a1"], 60_000)  # a reservation, an event, a call set


def test_each_tenant_lives_in_one_slot_and_the_tenants_spread_over_the_primaries(
    cluster: RedisClusterSet, fresh: str
) -> None:
    put_tenants(fresh)
    where: dict[str, set[tuple[int, int]]] = defaultdict(set)  # tenant -> (node port, slot)
    for node in cluster.nodes:
        with direct(node) as client:
            for key in client.scan_iter(match="{t:*"):
                tenant = key.decode().split("}")[0].removeprefix("{t:")
                where[tenant].add((node.port, key_slot(key)))
    assert sorted(where) == sorted(TENANTS)
    assert all(len(places) == 1 for places in where.values()), where  # one slot, one node
    primaries = {port for places in where.values() for port, _ in places}
    assert len(primaries) == len(cluster.nodes) == 3  # every primary holds some tenant
    with StateStore(fresh, TENANTS[0]) as store:
        assert store.registered_tenants() == sorted(TENANTS)  # dispatcher:tenants, own slot


def test_deleting_a_tenant_scans_every_primary_and_touches_no_other(
    cluster: RedisClusterSet, fresh: str
) -> None:
    put_tenants(fresh)
    with StateStore(fresh, TENANTS[0]) as store:
        assert store.delete_tenant(force=True) > 10
    for node in cluster.nodes:
        with direct(node) as client:
            assert not list(client.scan_iter(match=f"{{t:{TENANTS[0]}}}*"))
    with StateStore(fresh, TENANTS[1]) as other:
        assert other.config_version() == 1 and other.registered_tenants() == sorted(TENANTS[1:])
        assert other.agent_counters("a1")["resv"] == 1


def test_the_library_is_on_every_primary_and_reloaded_where_it_went_missing(
    cluster: RedisClusterSet, fresh: str
) -> None:
    with StateStore(fresh, TENANTS[0]) as store:
        store.put_config(b"{}", AGENTS, GROUPS)
        client = sync_client(fresh)
        assert library_names(client) == [[b"dispatcher"]] * 3
        # one node restarted empty, say: only its calls find the library gone
        home = node_of(cluster, key_slot(store.keys.prefix.encode()))
        with direct(home) as plain:
            plain.function_flush()
        assert store.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
        assert library_names(client) == [[b"dispatcher"]] * 3
        close_client(client)


def test_a_doorbell_is_heard_on_a_node_that_does_not_hold_the_tenant(
    cluster: RedisClusterSet, fresh: str
) -> None:
    """PUBLISH inside a library function reaches every node (classic pub/sub is broadcast
    over the cluster bus), so a keeper subscribed anywhere hears its doorbells."""
    with StateStore(fresh, TENANTS[0]) as store:
        store.put_config(b"{}", AGENTS, [("g1", ("a1", "a2", "a3"), 10)])  # g1 queues
        home = node_of(cluster, key_slot(store.keys.prefix.encode()))
        elsewhere = next(n for n in cluster.nodes if n is not home)
        for agent in ("a1", "a2", "a3"):
            for leg in range(2):
                store.claim(f"b-{agent}-{leg}", "g1", "", [agent], 60_000)
        store.queue_join("c1", "g1", "", 0, "node-1", 10_000)
        with direct(elsewhere) as client, client.pubsub() as bell:
            bell.subscribe("dispatcher:node:node-1")
            assert bell.get_message(timeout=1) is not None  # the confirmation
            store.release("b-a1-0")
            message = bell.get_message(timeout=2)
            assert message is not None and message["data"] == f"{TENANTS[0]}\x1fc1".encode()


def test_the_keepers_reconcile_and_backstop_reads_work_across_slots(
    cluster: RedisClusterSet, fresh: str
) -> None:
    """What a node's keeper reads for heartbeats, its restart reconcile and the backstop:
    the heartbeats ({dispatcher} slot), the tenant list (a slot of its own) and each
    tenant's calls (its slot, Redis' time in the same transaction)."""
    put_tenants(fresh)
    with StateStore(fresh, TENANTS[0]) as store:
        store.node = "node-1"
        assert store.node_beat("node-1", 5000) == []
        for tenant in store.registered_tenants():
            store.for_tenant(tenant).answered("c1", "g1", "a1")
        time.sleep(0.01)  # older than 0 ms by Redis' clock
        for tenant in store.registered_tenants():
            mine = store.for_tenant(tenant)
            assert mine.calls_of_node("node-1") == ["c1"]
            assert mine.stale_calls(0) == ["c1"] and mine.stale_calls(60_000) == []
        # the backstop's slices: every tenant's calls in one pipeline over the primaries
        tenants = store.registered_tenants()
        assert store.stale_calls_of(tenants, 0) == {tenant: ["c1"] for tenant in tenants}
        assert store.stale_calls_of(tenants, 60_000) == {}
        for tenant in tenants:
            assert store.for_tenant(tenant).release("c1", outcome="expired") == 1


def migrate_slot(cluster: RedisClusterSet, slot: int, target: RedisProcess, finish: bool) -> None:
    """Move `slot`'s keys to `target` as redis-cli --cluster reshard does; with `finish`
    the slot then belongs to `target` (MOVED from the old owner), else it stays migrating
    (ASK for keys the old owner no longer has)."""
    source = node_of(cluster, slot)
    with direct(source) as src, direct(target) as dst:
        source_id, target_id = (
            src.execute_command("CLUSTER MYID"),
            dst.execute_command("CLUSTER MYID"),
        )
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        if finish:
            for node in cluster.nodes:
                with direct(node) as each:
                    each.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)


def test_a_store_follows_slots_through_a_resharding(cluster: RedisClusterSet, fresh: str) -> None:
    """A slot on its way to another primary (MIGRATING there, its keys moved): a call of one
    key is served there after ASK; a tenant's call names keys that do not exist yet, which
    Redis refuses during the move (TRYAGAIN): 503 for the few moments a reshard of its slot
    lasts. Once the slot is the other primary's, MOVED is followed, deferred calls too."""
    tenant = TENANTS[0]
    with StateStore(fresh, tenant) as store:
        store.put_config(b"{}", AGENTS, GROUPS)
        store.node_beat("node-1", 5000)
        store.claim("c1", "g1", "", ["a1"], 60_000)  # the store's connections are open
        beats = key_slot(NODES_KEY.encode())
        migrate_slot(
            cluster,
            beats,
            next(n for n in cluster.nodes if n is not node_of(cluster, beats)),
            finish=False,
        )
        assert store.node_beat("node-1", 5000) == []  # ASK: served where the key went

        slot = key_slot(store.keys.prefix.encode())
        target = next(n for n in cluster.nodes if n is not node_of(cluster, slot))
        failed: list[tuple[str, Exception]] = []
        store.deferred_error = lambda function, exc: failed.append((function, exc))
        migrate_slot(cluster, slot, target, finish=False)
        with pytest.raises(StateUnavailable, match="rehashing"):
            store.claim("c2", "g1", "", ["a2"], 60_000)  # after ASK, TRYAGAIN
        store.answered_later("c1", "g1", "a1")
        store.flush()
        assert [function for function, _ in failed] == ["disp_answered"]

        migrate_slot(cluster, slot, target, finish=True)
        answers: list[object] = []
        store.answered_later("c1", "g1", "a1", done=answers.append)  # MOVED, deferred
        assert store.claim("c2", "g1", "", ["a2"], 60_000).claimed == ("a2",)  # MOVED
        assert answers == [AnswerOutcome.OK]
        assert node_of(cluster, slot) is target
        store.release_later("c1", outcome="answered")
        store.release("c2")
        client = sync_client(fresh)
        totals = check_invariants(client, tenant)
        assert (totals["live"], totals["resv"]) == (0, 0)
        close_client(client)
        ended = [e["call"] for e in store.events(100) if e["type"] == "ended"]
        assert sorted(ended) == ["c1", "c2"]  # each once


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[RedisClusterSet]:
    """Three primaries with a replica each; a silent primary is failed over within about
    a second (cluster-node-timeout 1000 ms)."""
    with RedisClusterSet(tmp_path / "cluster", replicas=1, node_timeout_ms=1000) as started:
        yield started


def test_a_store_follows_a_primary_that_dies(replicated: RedisClusterSet) -> None:
    """kill -9 the primary of a tenant's slot: its replica takes over (the Cluster's own
    failover) and the store's calls go on there after reading the topology again."""
    with StateStore(replicated.url, TENANTS[0]) as store:
        store.put_config(b"{}", AGENTS, GROUPS)
        assert store.claim("c0", "g1", "", ["a1"], 5000).claimed == ("a1",)
        store.release("c0")
        home = node_of(replicated, key_slot(store.keys.prefix.encode()))
        with direct(home) as plain:  # the config on the replica (replication is asynchronous)
            assert plain.execute_command("WAIT", 1, 2000) == 1
        killed_at = time.monotonic()
        home.kill()
        failures, n, last_failure = 0, 0, killed_at
        while time.monotonic() - last_failure < 1.0:
            assert time.monotonic() - killed_at < 30, "the store never found the new primary"
            n += 1
            try:
                store.claim(f"c{n}", "g1", "", ["a1", "a2"], 5000)
                store.release(f"c{n}")
            except StateUnavailable:
                failures, last_failure = failures + 1, time.monotonic()
                time.sleep(0.05)
        outage = Outage(last_failure - killed_at, n, failures, 0.0)
        print(f"cluster failover: {outage}")
        # the Cluster's own failover: 1 s to call the primary failed, the replica's election
        # (0.5-1 s delay), then the store's topology read (at most every 0.5 s); 2.5-3 s seen
        assert failures > 0 and outage.gap_s <= 5.0, outage
        assert node_of(replicated, key_slot(store.keys.prefix.encode())) is not home
        client = sync_client(replicated.url)  # one that never knew the dead primary
        assert check_invariants(client, TENANTS[0])["resv"] == 0
        assert client.sismember(TENANTS_KEY, TENANTS[0])
        close_client(client)
