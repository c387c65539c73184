"""Tenants, groups, agents, memberships, inbound rules and agent state through the API:
validation errors name the field, every change is one audited config version."""

from __future__ import annotations

import httpx
import pytest
from api_support import demo_doc

from dispatcher.state import StateStore
from dispatcher.state.connect import sync_client

pytestmark = pytest.mark.redis

GROUP = {
    "id": "night",
    "extension": "690",
    "name": "Night shift",
    "strategy": "sequential",
    "members": [{"agent": "bob"}, {"agent": "alice", "position": 2}],
}


def audit_events(redis_url: str, tenant: str = "demo") -> list[dict[str, str]]:
    with StateStore(redis_url, tenant) as store:
        return [e for e in store.events(1000) if e["type"] == "audit"]


def test_tenant_create_read_replace(admin: httpx.Client, redis_url: str) -> None:
    reply = admin.get("/v1/tenants/demo")
    assert reply.status_code == 200 and reply.headers["etag"] == '"1"'
    body = reply.json()
    assert body["version"] == 1 and body["tenant"]["id"] == "demo"
    assert admin.post("/v1/tenants", json=demo_doc()).status_code == 409
    doc = demo_doc()
    doc["name"] = "Renamed"
    reply = admin.put("/v1/tenants/demo", json=doc)
    assert reply.status_code == 200 and reply.json()["version"] == 2
    assert admin.get("/v1/tenants/demo").json()["tenant"]["name"] == "Renamed"
    reply = admin.put("/v1/tenants/demo", json=demo_doc("other"))
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "id"]
    assert admin.get("/v1/tenants/nobody").status_code == 404
    actions = [(e["action"], e["object"], e["actor"]) for e in audit_events(redis_url)]
    assert actions == [
        ("tenant.create", "tenant:demo", "bootstrap"),
        ("tenant.replace", "tenant:demo", "bootstrap"),
    ]


def test_group_put_get_delete(admin: httpx.Client, redis_url: str) -> None:
    reply = admin.put("/v1/tenants/demo/groups/night", json=GROUP)
    assert reply.status_code == 200, reply.text
    group = reply.json()["group"]
    assert reply.json()["version"] == 2 and reply.headers["etag"] == '"2"'
    assert group["timezone"] == "Europe/Berlin"  # the tenant's, as in a tenant file
    assert group["no_answer"] == {"kind": "reply", "code": 480, "reason": "Temporarily Unavailable"}
    assert admin.get("/v1/tenants/demo/groups/night").json()["group"] == group
    ids = [g["id"] for g in admin.get("/v1/tenants/demo/groups").json()["groups"]]
    assert ids[-1] == "night"
    # the workers' view: the group's member list in Redis, canonical order
    with sync_client(redis_url) as plain:
        assert plain.hget("{t:demo}:g:night", "members") == b"bob,alice"
    assert admin.delete("/v1/tenants/demo/groups/night").json() == {"version": 3}
    assert admin.get("/v1/tenants/demo/groups/night").status_code == 404
    assert admin.delete("/v1/tenants/demo/groups/night").status_code == 404
    with sync_client(redis_url) as plain:
        assert not plain.exists("{t:demo}:g:night")
    audits = audit_events(redis_url)[-2:]
    assert [(e["action"], e["object"], e["version"]) for e in audits] == [
        ("group.put", "group:night", "2"),
        ("group.delete", "group:night", "3"),
    ]


def test_unchanged_put_writes_nothing(admin: httpx.Client, redis_url: str) -> None:
    sales = admin.get("/v1/tenants/demo/groups/sales").json()["group"]
    reply = admin.put("/v1/tenants/demo/groups/sales", json=sales)
    assert reply.status_code == 200 and reply.json()["version"] == 1
    assert len(audit_events(redis_url)) == 1  # the creation only


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        ({"ring_timeout": 0}, ["body", "ring_timeout"], "greater than or equal to 1"),
        ({"strategy": "loudest"}, ["body", "strategy"], "Input should be"),
        ({"extension": 690}, ["body", "extension"], "quote it in YAML"),
        ({"extension": "600"}, ["body", "extension"], "already the extension of group 'sales'"),
        ({"overall_timeout": 5}, ["body", "overall_timeout"], "must be >= ring_timeout"),
        ({"members": [{"agent": "nobody"}]}, ["body", "members", 0, "agent"], "unknown agent"),
        (
            {"members": [{"agent": "bob"}, {"agent": "bob"}]},
            ["body", "members", 1, "agent"],
            "already a member",
        ),
        (
            {"no_answer": {"kind": "forward", "uri": "mailto:x"}},
            ["body", "no_answer", "uri"],
            "not a SIP URI",
        ),
        (
            {"no_answer": {"kind": "group", "group": "ghost"}},
            ["body", "no_answer", "group"],
            "unknown group 'ghost'",
        ),
        ({"colour": "red"}, ["body", "colour"], "Extra inputs are not permitted"),
        ({"id": "other"}, ["body", "id"], "must be the group id of the path"),
    ],
)
def test_invalid_group_is_422_naming_the_field(
    admin: httpx.Client, change: dict[str, object], loc: list[object], message: str
) -> None:
    reply = admin.put("/v1/tenants/demo/groups/night", json={**GROUP, **change})
    assert reply.status_code == 422, reply.text
    problems = reply.json()["detail"]
    assert any(p["loc"] == loc and message in p["msg"] for p in problems), problems
    assert admin.get("/v1/tenants/demo").json()["version"] == 1


def test_overflow_cycle_is_reported_on_the_body(admin: httpx.Client) -> None:
    reply = admin.put(
        "/v1/tenants/demo/groups/night",
        json={**GROUP, "no_answer": {"kind": "group", "group": "night"}},
    )
    assert reply.status_code == 422
    (problem,) = reply.json()["detail"]
    assert problem["loc"] == ["body", "no_answer", "group"]
    assert problem["field"] == "no_answer.group"
    assert problem["msg"] == "overflow cycle night -> night"


def test_delete_of_a_referenced_group_is_409(admin: httpx.Client) -> None:
    reply = admin.delete("/v1/tenants/demo/groups/sales")
    assert reply.status_code == 409
    assert "inbound[1].target" in reply.json()["detail"]


def test_if_match_makes_a_change_conditional(admin: httpx.Client) -> None:
    stale = {"If-Match": '"0"'}
    reply = admin.put("/v1/tenants/demo/groups/night", json=GROUP, headers=stale)
    assert reply.status_code == 412
    reply = admin.put("/v1/tenants/demo/groups/night", json=GROUP, headers={"If-Match": '"1"'})
    assert reply.status_code == 200 and reply.json()["version"] == 2
    assert (
        admin.delete("/v1/tenants/demo/groups/night", headers={"If-Match": "x"}).status_code == 412
    )
    assert (
        admin.delete("/v1/tenants/demo/groups/night", headers={"If-Match": "*"}).status_code == 200
    )


def test_members(admin: httpx.Client, redis_url: str) -> None:
    reply = admin.put("/v1/tenants/demo/groups/sales/members/dave", json={"tier": 2, "weight": 5})
    assert reply.status_code == 200, reply.text
    assert reply.json()["member"] == {"agent": "dave", "tier": 2, "position": 0, "weight": 5}
    members = admin.get("/v1/tenants/demo/groups/sales/members").json()["members"]
    assert [m["agent"] for m in members] == ["alice", "bob", "carol", "dave"]
    reply = admin.put("/v1/tenants/demo/groups/sales/members/dave", json={"weight": 0})
    assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["body", "weight"]
    assert admin.put("/v1/tenants/demo/groups/sales/members/ghost", json={}).status_code == 404
    assert admin.put("/v1/tenants/demo/groups/ghost/members/dave", json={}).status_code == 404
    assert admin.delete("/v1/tenants/demo/groups/sales/members/dave").status_code == 200
    assert admin.delete("/v1/tenants/demo/groups/sales/members/dave").status_code == 404
    with sync_client(redis_url) as plain:
        assert plain.hget("{t:demo}:g:sales", "members") == b"alice,bob,carol"
    assert [e["object"] for e in audit_events(redis_url)[-2:]] == [
        "member:sales/dave",
        "member:sales/dave",
    ]


def test_agents_and_their_state(admin: httpx.Client, redis_url: str) -> None:
    zoe = {"id": "zoe", "name": "Zoe", "targets": {"aor": "zoe"}, "state": "available"}
    reply = admin.put("/v1/tenants/demo/agents/zoe", json=zoe)
    assert reply.status_code == 200 and reply.json()["agent"]["max_calls"] == 1
    state = admin.get("/v1/tenants/demo/agents/zoe/state").json()
    assert (state["status"], state["activity"], state["live_calls"]) == (
        "available",
        "available",
        0,
    )
    reply = admin.post(
        "/v1/tenants/demo/agents/zoe/state", json={"action": "pause", "reason": "lunch"}
    )
    assert reply.json()["status"] == "paused" and reply.json()["reason"] == "lunch"
    # a config change does not touch the live state
    assert admin.put("/v1/tenants/demo/agents/zoe", json={**zoe, "max_calls": 2}).status_code == 200
    assert admin.get("/v1/tenants/demo/agents/zoe/state").json()["status"] == "paused"
    assert (
        admin.post("/v1/tenants/demo/agents/zoe/state", json={"action": "unpause"}).status_code
        == 200
    )
    reply = admin.post("/v1/tenants/demo/agents/zoe/state", json={"action": "unpause"})
    assert reply.status_code == 409
    reply = admin.post("/v1/tenants/demo/agents/zoe/state", json={"action": "login", "reason": "x"})
    assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["body", "reason"]
    reply = admin.post("/v1/tenants/demo/agents/zoe/state", json={"action": "dance"})
    assert reply.status_code == 422 and reply.json()["detail"][0]["loc"] == ["body", "action"]
    assert (
        admin.post("/v1/tenants/demo/agents/zoe/state", json={"action": "logout"}).status_code
        == 200
    )
    assert (
        admin.post("/v1/tenants/demo/agents/ghost/state", json={"action": "login"}).status_code
        == 404
    )
    assert admin.get("/v1/tenants/demo/agents/ghost/state").status_code == 404
    with StateStore(redis_url, "demo") as store:
        changes = [e for e in store.events(1000) if e["type"] == "state_changed"]
    assert [(e["agent"], e["status"], e.get("reason", ""), e["actor"]) for e in changes] == [
        ("zoe", "1", "lunch", "bootstrap"),
        ("zoe", "0", "", "bootstrap"),
        ("zoe", "2", "", "bootstrap"),
    ]
    actions = [e["action"] for e in audit_events(redis_url)]
    assert actions[-5:] == [
        "agent.put",
        "agent.pause",
        "agent.put",
        "agent.unpause",
        "agent.logout",
    ]


def test_delete_agent_leaves_its_groups(admin: httpx.Client) -> None:
    reply = admin.delete("/v1/tenants/demo/agents/alice")
    assert reply.status_code == 200
    groups = admin.get("/v1/tenants/demo/groups").json()["groups"]
    assert all(m["agent"] != "alice" for g in groups for m in g["members"])
    assert admin.get("/v1/tenants/demo/agents/alice").status_code == 404


def test_inbound_rules(admin: httpx.Client, redis_url: str) -> None:
    rules = admin.get("/v1/tenants/demo/inbound").json()["inbound"]
    assert len(rules) == 3
    reply = admin.put("/v1/tenants/demo/inbound", json=rules[1:])
    assert reply.status_code == 200 and len(reply.json()["inbound"]) == 2
    bad = [{"did": "+4930999", "target": {"kind": "group", "group": "ghost"}}]
    reply = admin.put("/v1/tenants/demo/inbound", json=bad)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", 0, "target", "group"]
    reply = admin.put(
        "/v1/tenants/demo/inbound", json=[{"did": "600", "target": {"kind": "voicemail"}}]
    )
    assert reply.status_code == 422 and "ambiguous" in reply.json()["detail"][0]["msg"]
    assert audit_events(redis_url)[-1]["action"] == "inbound.put"


def test_live_view(admin: httpx.Client, redis_url: str) -> None:
    with StateStore(redis_url, "demo") as store:
        store.claim("call-1", "sales", "", ["alice"], 30_000)
        store.answered("call-1", "sales", "alice")
        store.claim("call-2", "support", "", ["bob"], 30_000)
    live = admin.get("/v1/tenants/demo/live").json()
    agents = {a["agent"]: a for a in live["agents"]}
    assert agents["alice"]["activity"] == "on_call" and agents["alice"]["live_calls"] == 1
    assert agents["bob"]["activity"] == "ringing" and agents["bob"]["ringing"] == 1
    assert "sales" in agents["alice"]["groups"]
    groups = {g["id"]: g for g in live["groups"]}
    assert groups["sales"]["live_calls"] == 1 and groups["support"]["live_calls"] == 0
    assert groups["sales"]["queue_length"] == 0
    assert live["version"] == 1 and live["now_ms"] > 0


def test_openapi_is_served(admin: httpx.Client) -> None:
    spec = admin.get("/openapi.json").json()
    assert "/v1/tenants/{tenant}/groups/{group_id}" in spec["paths"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert admin.get("/docs").status_code == 200
