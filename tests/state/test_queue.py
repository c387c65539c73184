"""The queues in Redis: join, order, doorbells, leases, leaving, and what keep reports."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from state_support import AGENTS, TENANT, check_invariants

from dispatcher.state import AVAILABLE, LOGGED_OUT, PAUSED, StateStore
from dispatcher.state.connect import sync_client
from dispatcher.state.errors import UnknownQueue

pytestmark = pytest.mark.redis

# g1 (a1 a2 a3) has a queue of 3; g2 (a2 a3 a4) has none.
QUEUED = (("g1", ("a1", "a2", "a3"), 3), ("g2", ("a2", "a3", "a4")))
NODE = "node-1"
LEASE = 10_000


@pytest.fixture
def store(redis_url: str) -> Iterator[StateStore]:
    with StateStore(redis_url, TENANT) as state:
        state.put_config(b"{}", AGENTS, QUEUED)
        yield state


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with sync_client(redis_url) as plain:
        yield plain


def busy_all(store: StateStore) -> None:
    """Every member of g1 on a call (a2 has two lines: two calls)."""
    for call, agent in (("b1", "a1"), ("b2", "a2"), ("b3", "a2"), ("b4", "a3")):
        assert store.claim(call, "g2" if agent != "a1" else "g1", "", [agent], 60_000).claimed
        store.answered(call, "g2" if agent != "a1" else "g1", agent)


def join(store: StateStore, call: str, priority: int = 0, node: str = NODE) -> tuple:
    result = store.queue_join(call, "g1", f"+49{call}", priority, node, LEASE)
    return result.status, result.position, result.waiting


def events(store: StateStore, kind: str, n: int = 50) -> list[dict[str, str]]:
    return [e for e in store.events(n) if e["type"] == kind]


def test_callers_wait_by_priority_then_arrival(store: StateStore) -> None:
    busy_all(store)
    assert join(store, "c1") == ("queued", 1, 1)
    assert join(store, "c2") == ("queued", 2, 2)
    assert join(store, "vip", priority=5) == ("queued", 1, 3)
    assert join(store, "c4") == ("full", 0, 3)
    # back from a ring round: the same place, nothing counted twice
    assert join(store, "c2") == ("waiting", 3, 3)
    keep = store.queue_keep(NODE, ["c1", "c2", "vip", "c4"], LEASE)
    assert [(e.call, e.state, e.position, e.waiting) for e in keep.entries] == [
        ("c1", "waiting", 2, 3),
        ("c2", "waiting", 3, 3),
        ("vip", "waiting", 1, 3),
        ("c4", "gone", 0, 0),
    ]
    queued = events(store, "queued")
    assert [(e["call"], e["position"], e["priority"]) for e in queued] == [
        ("c1", "1", "0"),
        ("c2", "2", "0"),
        ("vip", "1", "5"),
    ]


def test_a_group_nobody_is_logged_in_to_refuses_callers(store: StateStore) -> None:
    for agent in ("a1", "a2", "a3"):
        store.set_state(agent, LOGGED_OUT)
    assert join(store, "c1") == ("no_agents", 0, 0)
    store.set_state("a3", PAUSED)  # paused is logged in: the caller may wait for the unpause
    assert join(store, "c1") == ("queued", 1, 1)


def test_a_group_without_a_queue_is_refused(store: StateStore) -> None:
    with pytest.raises(UnknownQueue, match="group g2 has no queue"):
        store.queue_join("c1", "g2", "", 0, NODE, LEASE)
    with pytest.raises(ValueError, match="priority"):
        store.queue_join("c1", "g1", "", 10, NODE, LEASE)
    with pytest.raises(ValueError, match="node id"):
        store.queue_join("c1", "g1", "", 0, "bad node", LEASE)


def test_new_calls_queue_behind_waiting_callers_who_then_claim(
    store: StateStore, client: redis.Redis
) -> None:
    busy_all(store)
    join(store, "c1")
    store.release("b1")  # a1 is free, and promised to c1
    newcomer = store.claim("new", "g1", "", ["a1"], 5000)
    assert newcomer.queue_ahead and newcomer.claimed == ()
    queued_claim = store.claim("c1", "g1", "", ["a1"], 5000)
    assert not queued_claim.queue_ahead and queued_claim.claimed == ("a1",)
    (entry,) = store.queue_keep(NODE, ["c1"], LEASE).entries
    assert entry.state == "ringing"
    assert store.answered("c1", "g1", "a1") == "ok"
    assert store.queue_keep(NODE, ["c1"], LEASE).entries[0].state == "gone"
    (left,) = events(store, "dequeued")
    assert (left["call"], left["reason"]) == ("c1", "answered") and int(left["wait_ms"]) >= 0
    check_invariants(client, TENANT)


def test_a_freed_agent_rings_the_doorbell_of_the_callers_node(
    store: StateStore, client: redis.Redis
) -> None:
    busy_all(store)
    join(store, "c1")
    join(store, "c2", node="node-2")
    with client.pubsub() as bell:
        bell.subscribe("dispatcher:node:node-1", "dispatcher:node:node-2")
        for _ in range(2):
            bell.get_message(timeout=1)  # the subscribe confirmations
        started = time.monotonic()
        store.release("b1")  # a1 free: one agent, so only the head is told
        message = bell.get_message(timeout=1)
        assert message is not None and time.monotonic() - started < 0.3
        assert (message["channel"], message["data"]) == (
            b"dispatcher:node:node-1",
            f"{TENANT}\x1fc1".encode(),
        )
        assert bell.get_message(timeout=0.2) is None
        store.release("b2")  # a2 has a line free: the next caller, on node-2
        message = bell.get_message(timeout=1)
        assert message is not None and message["data"] == f"{TENANT}\x1fc2".encode()
        states = {e.call: e.state for e in store.queue_keep(NODE, ["c1"], LEASE).entries}
        assert states == {"c1": "notified"}


def test_an_unused_doorbell_lapses_and_rings_again(
    store: StateStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy_all(store)
    join(store, "c1")
    with client.pubsub() as bell:
        bell.subscribe("dispatcher:node:node-1")
        bell.get_message(timeout=1)
        store.release("b1")
        assert bell.get_message(timeout=1) is not None
        store.queue_keep(NODE, ["c1"], LEASE)  # within the notification: no second bell
        assert bell.get_message(timeout=0.1) is None
        time.sleep(2.1)  # NOTIFY_MS: the node did not claim
        store.queue_keep(NODE, ["c1"], LEASE)
        assert bell.get_message(timeout=1) is not None


def test_a_caller_back_from_a_ring_round_is_notified_again_after_a_growing_pause(
    store: StateStore, client: redis.Redis
) -> None:
    """A free agent the caller's node could not ring (its phone not registered there yet)
    must not make the keeper serve the caller on every keep: each round costs a branch of
    the caller's INVITE. Back from a round, it waits 250 ms, then 500 ms, ... (at most 8 s),
    and meanwhile the next caller may take the agent."""
    busy_all(store)
    join(store, "c1")
    join(store, "c2", node="node-2")
    with client.pubsub() as bell:
        bell.subscribe("dispatcher:node:node-1", "dispatcher:node:node-2")
        for _ in range(2):
            bell.get_message(timeout=1)
        store.release("b1")  # a1 free: c1 is told
        assert bell.get_message(timeout=1)["data"] == f"{TENANT}\x1fc1".encode()
        for rounds, pause_s in ((1, 0.25), (2, 0.5)):
            # c1's node rang nobody and queued it again: c2 is told instead, c1 not yet
            assert join(store, "c1")[0] == "waiting"
            assert bell.get_message(timeout=0.2)["data"] == f"{TENANT}\x1fc2".encode()
            assert join(store, "c2", node="node-2")[0] == "waiting"  # c2 too
            store.queue_keep(NODE, ["c1"], LEASE)
            assert bell.get_message(timeout=0.05) is None, f"round {rounds}: at once"
            time.sleep(pause_s + 0.05)
            store.queue_keep(NODE, ["c1"], LEASE)  # c1 is due again, ahead of c2
            assert bell.get_message(timeout=1)["data"] == f"{TENANT}\x1fc1".encode()
        check_invariants(client, TENANT)


def test_unpause_and_expired_reservations_ring_too(store: StateStore, client: redis.Redis) -> None:
    for agent in ("a1", "a2", "a3"):
        store.set_state(agent, PAUSED)
    join(store, "c1")
    with client.pubsub() as bell:
        bell.subscribe("dispatcher:node:node-1")
        bell.get_message(timeout=1)
        store.set_state("a2", AVAILABLE)
        assert bell.get_message(timeout=1) is not None
        store.queue_leave("c1", "abandoned")
        join(store, "c2")
        assert store.claim("c2", "g1", "", ["a2"], 1).claimed == ("a2",)  # 1 ms reservation
        time.sleep(0.01)
        store.claim("x", "g2", "", ["a4"], 5000)  # any claim sweeps the expired one
        assert bell.get_message(timeout=1) is not None


def test_leaving_reports_the_wait_once(store: StateStore) -> None:
    busy_all(store)
    join(store, "c1")
    wait = store.queue_leave("c1", "abandoned")
    assert wait is not None and wait >= 0
    assert store.queue_leave("c1", "abandoned") is None
    with pytest.raises(ValueError, match="reason"):
        store.queue_leave("c1", "bored")
    (left,) = events(store, "dequeued")
    assert (left["call"], left["group"], left["reason"]) == ("c1", "g1", "abandoned")


def test_a_released_call_still_queued_is_abandoned(store: StateStore) -> None:
    busy_all(store)
    join(store, "c1")
    store.release("c1", outcome="abandoned")
    assert store.queue_keep(NODE, ["c1"], LEASE).entries[0].state == "gone"
    assert events(store, "dequeued")[0]["reason"] == "abandoned"


def test_a_lapsed_lease_never_blocks_the_queue(store: StateStore, client: redis.Redis) -> None:
    busy_all(store)
    store.queue_join("dead", "g1", "", 0, "node-dead", 1)  # its node died at once
    time.sleep(0.01)
    assert join(store, "c1") == ("queued", 1, 1)  # the join swept it
    assert store.queue_keep("node-dead", ["dead"], LEASE).entries[0].state == "gone"
    (lost,) = events(store, "dequeued")
    assert (lost["call"], lost["reason"]) == ("dead", "lost")
    store.release("b1")
    assert store.claim("new", "g1", "", ["a1"], 5000).queue_ahead  # c1 still waits
    store.queue_leave("c1", "abandoned")
    assert store.claim("new2", "g1", "", ["a1"], 5000).claimed == ("a1",)
    assert client.hlen(store.keys.queue["qe"]) == 0 and client.zcard(store.keys.queue["q"]) == 0


def test_keep_renews_only_its_own_calls_and_records_announcements(
    store: StateStore, client: redis.Redis
) -> None:
    busy_all(store)
    store.queue_join("mine", "g1", "", 0, NODE, 50)
    store.queue_join("theirs", "g1", "", 0, "node-2", 50)
    for _ in range(3):
        time.sleep(0.03)
        store.queue_keep(NODE, ["mine", "theirs"], 50, announced=[("mine", 1, 90)])
    states = {e.call: e.state for e in store.queue_keep(NODE, ["mine", "theirs"], 50).entries}
    assert states == {"mine": "waiting", "theirs": "gone"}
    announced = events(store, "announced")
    assert len(announced) == 3
    assert (announced[0]["call"], announced[0]["position"], announced[0]["wait_s"]) == (
        "mine",
        "1",
        "90",
    )


def test_keep_reports_what_the_wait_estimate_needs(store: StateStore) -> None:
    busy_all(store)
    join(store, "c1")
    keep = store.queue_keep(NODE, ["c1"], LEASE, stats=True)
    (group,) = keep.groups
    assert group.group == "g1"
    loads = {m.agent: (m.status, m.max_calls, len(m.busy_since_ms)) for m in group.members}
    assert loads == {"a1": (AVAILABLE, 1, 1), "a2": (AVAILABLE, 2, 2), "a3": (AVAILABLE, 1, 1)}
    starts = [t for m in group.members for t in m.busy_since_ms]
    assert all(0 <= keep.now_ms - t < 60_000 for t in starts)
    assert group.handle_times_ms == ()
    store.release("b1")  # a g1 call: its handle time is kept; g2's are not
    store.release("b4")
    (group,) = store.queue_keep(NODE, ["c1"], LEASE, stats=True).groups
    assert len(group.handle_times_ms) == 1
    assert [len(m.busy_since_ms) for m in group.members] == [0, 2, 0]


def test_config_changes_keep_the_queue_config_current(
    store: StateStore, client: redis.Redis
) -> None:
    assert client.hkeys(store.keys.queue["qcfg"]) == [b"g1"]
    store.put_config(b"{}", AGENTS, (("g1", ("a1",)), ("g2", ("a2",), 5)))
    assert client.hget(store.keys.queue["qcfg"], "g2") == b"5\x1fa2"
    assert client.hexists(store.keys.queue["qcfg"], "g1") == 0


def test_a_phone_that_registers_rings_the_doorbell(store: StateStore, client: redis.Redis) -> None:
    for agent in ("a1", "a2", "a3"):
        store.set_state(agent, PAUSED)
    store.set_state("a1", AVAILABLE)
    store.claim("b1", "g1", "", ["a1"], 60_000)
    join(store, "c1")
    now = store.queue_keep(NODE, ["c1"], LEASE).now_ms
    with client.pubsub() as bell:
        bell.subscribe("dispatcher:node:node-1")
        bell.get_message(timeout=1)
        store.release("b1")
        assert bell.get_message(timeout=1) is not None  # (a1 free: the usual bell)
        store.queue_keep(NODE, ["c1"], LEASE)
        assert store.registration("a1", now + 60_000)  # came up: a bell if it is due
        assert not store.registration("a1", now + 120_000)  # a refresh: no change
        assert store.registrations() == {"a1": now + 120_000}
        assert store.registration("a1", 0)
        assert store.registrations() == {}
    changes = [(e["agent"], e["registered"]) for e in events(store, "registration")]
    assert changes == [("a1", "1"), ("a1", "0")]
