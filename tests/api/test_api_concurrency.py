"""Concurrent updates of one group never leave, or show, a mix of two definitions.

Writers alternate the group between two full definitions that differ in every field, through
the API (several threads, so the API's event loop interleaves their read-apply-put) and through
the CLI's path (`config_sync.update_tenant`, straight on Redis). Readers watch through the API
and, atomically, in Redis: the config document and the member list workers claim from.
"""

from __future__ import annotations

import threading

import httpx
import orjson
import pytest
from api_support import client

from dispatcher.admin import ops as admin_ops
from dispatcher.admin.config_sync import update_tenant
from dispatcher.config.model import Group
from dispatcher.run.procs import ApiProcess
from dispatcher.state import ConfigConflict, StateStore
from dispatcher.state.connect import sync_client

pytestmark = pytest.mark.redis

A = {
    "id": "duo",
    "extension": "691",
    "name": "Definition A",
    "strategy": "ring_all",
    "ring_timeout": 11,
    "overall_timeout": 111,
    "sticky": True,
    "members": [{"agent": "alice", "tier": 1}, {"agent": "bob", "tier": 2}],
    "no_answer": {"kind": "reply", "code": 486},
}
B = {
    "id": "duo",
    "extension": "692",
    "name": "Definition B",
    "strategy": "weighted_random",
    "ring_timeout": 22,
    "overall_timeout": 222,
    "sticky": False,
    "timezone": "UTC",
    "members": [{"agent": "carol", "weight": 3}, {"agent": "dave"}, {"agent": "erin"}],
    "no_answer": {"kind": "forward", "uri": "sip:+4930123@gw.example.net"},
}
API_WRITERS, CLI_WRITERS, ROUNDS = 4, 2, 30


def test_concurrent_group_updates_never_mix(
    admin: httpx.Client, api_server: ApiProcess, redis_url: str
) -> None:
    resolved = {}
    for definition in (A, B):
        reply = admin.put("/v1/tenants/demo/groups/duo", json=definition)
        assert reply.status_code == 200, reply.text
        resolved[definition["name"]] = reply.json()["group"]
    members = {
        name: ",".join(m.agent for m in Group.model_validate(g).canonical_members())
        for name, g in resolved.items()
    }
    stop = threading.Event()
    failures: list[str] = []
    outcomes: list[int] = []

    def api_writer(index: int) -> None:
        with client(api_server) as http:
            for n in range(ROUNDS):
                body = (A, B)[(index + n) % 2]
                reply = http.put("/v1/tenants/demo/groups/duo", json=body)
                outcomes.append(reply.status_code)
                if reply.status_code == 200 and reply.json()["group"] != resolved[body["name"]]:
                    failures.append(f"write answered {reply.json()['group']}")

    def cli_writer(index: int) -> None:
        with StateStore(redis_url, "demo") as store:
            for n in range(ROUNDS):
                group = Group.model_validate((A, B)[(index + n) % 2])
                try:
                    update_tenant(
                        store,
                        lambda t, g=group: admin_ops.upsert_group(t, g),
                        {"actor": "cli:test", "action": "group.put", "object": "group:duo"},
                    )
                except ConfigConflict:
                    outcomes.append(409)
                else:
                    outcomes.append(200)

    def api_reader() -> None:
        last = 0
        with client(api_server) as http:
            while not stop.is_set():
                body = http.get("/v1/tenants/demo/groups/duo").json()
                if body["group"] not in resolved.values():
                    failures.append(f"API showed a mix: {body['group']}")
                if body["version"] < last:
                    failures.append(f"version went back from {last} to {body['version']}")
                last = body["version"]

    def redis_reader() -> None:
        with sync_client(redis_url) as plain:
            while not stop.is_set():
                with plain.pipeline(transaction=True) as pipe:
                    pipe.hget("{t:demo}:config", "doc")
                    pipe.hget("{t:demo}:g:duo", "members")
                    doc, group_members = pipe.execute()
                group = next(g for g in orjson.loads(doc)["groups"] if g["id"] == "duo")
                if group not in resolved.values():
                    failures.append(f"Redis held a mix: {group}")
                elif members[group["name"]].encode() != group_members:
                    failures.append(f"doc says {group['name']}, workers see {group_members!r}")

    readers = [threading.Thread(target=api_reader), threading.Thread(target=redis_reader)]
    writers = [threading.Thread(target=api_writer, args=(i,)) for i in range(API_WRITERS)]
    writers += [threading.Thread(target=cli_writer, args=(i,)) for i in range(CLI_WRITERS)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=60)
    stop.set()
    for thread in readers:
        thread.join(timeout=10)

    assert not failures, failures[:5]
    # a write that kept colliding is refused whole (409, ConfigConflict), never half-applied
    assert set(outcomes) <= {200, 409} and outcomes.count(200) >= len(outcomes) // 2
    final = admin.get("/v1/tenants/demo/groups/duo").json()["group"]
    assert final in resolved.values()
    with StateStore(redis_url, "demo") as store:
        events = store.events(100_000)
    versions = [int(e["version"]) for e in events if e["type"] == "config_changed"]
    assert versions == list(range(1, len(versions) + 1))  # one version per put, in order
    audited = [int(e["version"]) for e in events if e["type"] == "audit"]
    assert audited == versions  # every change audited, with its version


def test_group_change_is_live_for_the_next_claim(admin: httpx.Client, redis_url: str) -> None:
    """A worker's next claim sees the new version and claims from the new member list."""
    from dispatcher.sip.decision import Decider, Offer

    with StateStore(redis_url, "demo") as store:
        decider = Decider(store)
        _, first = decider.start("call-1", "600", "")
        assert isinstance(first, Offer) and set(first.agents) == {"alice", "bob", "carol"}
        decider.release("call-1")
        reply = admin.put(
            "/v1/tenants/demo/groups/sales/members/dave", json={"tier": 0}
        )  # tier 0 rings first; sales is ring_all
        assert reply.status_code == 200
        sales = admin.get("/v1/tenants/demo/groups/sales").json()["group"]
        sales["members"] = [{"agent": "dave"}]
        assert admin.put("/v1/tenants/demo/groups/sales", json=sales).status_code == 200
        _, second = decider.start("call-2", "600", "")
        assert isinstance(second, Offer) and second.agents == ("dave",)
        assert decider.view().version == 3
