"""The live view's queues and phone registrations (`/live`, the dashboard's source, and the
queue gauges of `/metrics`), against a real uvicorn and Redis: callers queued through the
library (`StateStore.queue_join`), registrations as a node records them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis
from api_support import demo_doc, scrape, value

from dispatcher.state import StateStore
from dispatcher.state.connect import sync_client
from dispatcher.state.keys import FIELD_SEPARATOR, TenantKeys
from dispatcher.state.live import PRIORITY_SPAN, parse_queues

pytestmark = pytest.mark.redis

LEASE_MS = 60_000


def queue_groups(admin: httpx.Client, *gids: str, max_length: int = 5) -> None:
    """Give the demo groups `gids` a queue."""
    for group in demo_doc()["groups"]:
        if group["id"] in gids:
            queued = {**group, "queue": {"max_length": max_length}}
            reply = admin.put(f"/v1/tenants/demo/groups/{group['id']}", json=queued)
            assert reply.status_code == 200, reply.text


def redis_now_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def live(admin: httpx.Client) -> tuple[dict[str, Any], dict[str, Any], int]:
    view = admin.get("/v1/tenants/demo/live").json()
    return (
        {a["agent"]: a for a in view["agents"]},
        {g["id"]: g for g in view["groups"]},
        view["now_ms"],
    )


def test_queued_callers_in_queue_order_with_waits(admin: httpx.Client, redis_url: str) -> None:
    queue_groups(admin, "sales", "support")
    with StateStore(redis_url, "demo") as store:
        # nobody free: the callers wait (a free agent would be offered at once)
        for agent in ("bob", "carol", "dave", "erin"):
            store.set_state(agent, 1, "meeting")
        store.claim("busy", "sales", "", ["alice"], 60_000)
        assert store.queue_join("c-1", "sales", "+49301", 0, "node-a", LEASE_MS).status == "queued"
        assert store.queue_join("c-2", "sales", "+49302", 5, "node-a", LEASE_MS).position == 1
        assert store.queue_join("c-3", "sales", "", 0, "node-b", LEASE_MS).position == 3
    keys = TenantKeys("demo")
    with sync_client(redis_url) as r:
        # a caller who has waited 42 s already, written as disp_queue_join writes it
        joined = redis_now_ms(r) - 42_000
        r.zadd(keys.queue["q"], {f"support{FIELD_SEPARATOR}old": 9 * PRIORITY_SPAN + joined})
        entry = FIELD_SEPARATOR.join(
            ["support", "+4940", "0", str(joined), "node-a", "waiting", "0"]
        )
        r.hset(keys.queue["qe"], "old", entry)
        r.hincrby(keys.queue["qn"], "support", 1)

    _, groups, now = live(admin)
    sales = groups["sales"]
    assert sales["queue_length"] == 3
    assert [(q["call"], q["position"], q["priority"], q["caller"]) for q in sales["queued"]] == [
        ("c-2", 1, 5, "+49302"),
        ("c-1", 2, 0, "+49301"),
        ("c-3", 3, 0, ""),
    ]
    for caller in sales["queued"]:
        assert caller["state"] == "waiting"
        assert (
            caller["joined_ms"] <= now and caller["wait_s"] == (now - caller["joined_ms"]) // 1000
        )
    assert sales["longest_wait_s"] == (now - sales["queued"][1]["joined_ms"]) // 1000
    support = groups["support"]
    assert support["queue_length"] == 1 and support["queued"][0]["call"] == "old"
    assert support["longest_wait_s"] == support["queued"][0]["wait_s"] >= 42
    assert groups["billing"]["queue_length"] == 0 and groups["billing"]["queued"] == []
    assert groups["billing"]["longest_wait_s"] == 0

    samples = scrape(admin)
    labels = {"tenant": "demo", "group": "sales"}
    assert value(samples, "dispatcher_queue_length", **labels) == 3
    assert value(samples, "dispatcher_queue_length", tenant="demo", group="support") == 1
    wait = value(samples, "dispatcher_queue_longest_wait_seconds", tenant="demo", group="support")
    assert 42 <= wait < 60

    with StateStore(redis_url, "demo") as store:
        assert store.queue_leave("c-2", "abandoned") is not None
    _, groups, _ = live(admin)
    assert [(q["call"], q["position"]) for q in groups["sales"]["queued"]] == [
        ("c-1", 1),
        ("c-3", 2),
    ]


def test_agents_without_a_registered_phone(admin: httpx.Client, redis_url: str) -> None:
    keys = TenantKeys("demo")
    with sync_client(redis_url) as r:
        now = redis_now_ms(r)
        r.hset(keys.registrations, mapping={"alice": now + 60_000, "bob": now - 1})
    # an agent with static URIs is rung on them, registered or not
    reply = admin.put(
        "/v1/tenants/demo/agents/trunk",
        json={"id": "trunk", "name": "Trunk", "targets": {"uris": ["sip:desk@pbx.example.net"]}},
    )
    assert reply.status_code == 200, reply.text
    agents, _, _ = live(admin)
    assert agents["alice"]["registered"] is True
    assert agents["bob"]["registered"] is False  # lapsed
    assert agents["carol"]["registered"] is False  # never registered
    assert agents["trunk"]["registered"] is None
    # the activity stays what the counters say; the dashboard shows the difference
    assert agents["bob"]["activity"] == "available"


def test_parse_queues_keeps_a_caller_with_separators_and_an_entry_gone() -> None:
    sep = FIELD_SEPARATOR
    members = [
        (f"g1{sep}a".encode(), float(9 * PRIORITY_SPAN + 1_000)),
        (f"g1{sep}b".encode(), float(4 * PRIORITY_SPAN + 2_000)),
    ]
    odd_caller = f"x{sep}y"
    entries = {b"a": sep.join(["g1", odd_caller, "0", "1000", "n1", "notified", "9", "0"]).encode()}
    (first, second) = parse_queues(members, entries)["g1"]
    assert (first.call, first.caller, first.priority, first.joined_ms) == ("a", odd_caller, 0, 1000)
    assert (first.node, first.state, first.position) == ("n1", "notified", 1)
    # an entry missing (swept between the reads cannot happen in one MULTI, but a bad write
    # must not break the view): order, priority and arrival still come from the score
    assert (second.call, second.priority, second.joined_ms, second.caller) == ("b", 5, 2000, "")
