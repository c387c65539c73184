"""Tenants' SIP domains and DIDs through the API: validated, one owner per name, and a
refused change changes nothing."""

from __future__ import annotations

import httpx
import pytest
from api_support import demo_doc

from dispatcher.state.connect import sync_client
from dispatcher.state.keys import DIDS_KEY, DOMAINS_KEY

pytestmark = pytest.mark.redis


def test_names_are_claimed_and_a_second_owner_is_refused(
    admin: httpx.Client, redis_url: str
) -> None:
    doc = demo_doc()
    doc["domains"] = ["Demo.Example.NET"]
    doc["dids"] = ["+4930999"]
    assert admin.put("/v1/tenants/demo", json=doc).status_code == 200
    plain = sync_client(redis_url)
    assert plain.hget(DOMAINS_KEY, "demo.example.net") == b"demo"
    # the inbound rules' DIDs lead to the tenant too
    assert plain.hget(DIDS_KEY, "+493012345600") == b"demo"
    other = {**demo_doc("other"), "dids": ["+4930999"]}
    reply = admin.post("/v1/tenants", json=other)
    assert reply.status_code == 409, reply.text
    assert "dids: DID +4930999 belongs to another tenant" in reply.text
    assert "demo" not in reply.json()["detail"]  # who holds it is not the caller's to know
    assert admin.get("/v1/tenants/other").status_code == 404
    assert plain.hget(DIDS_KEY, "+4930999") == b"demo"
    doc["domains"] = []
    assert admin.put("/v1/tenants/demo", json=doc).status_code == 200
    assert plain.hget(DOMAINS_KEY, "demo.example.net") is None
    plain.close()


def test_bad_names_are_422_naming_the_field(admin: httpx.Client) -> None:
    doc = {**demo_doc(), "domains": ["not a domain"], "dids": ["12x"]}
    reply = admin.put("/v1/tenants/demo", json=doc)
    assert reply.status_code == 422
    fields = {problem["field"] for problem in reply.json()["detail"]}
    assert {"domains[0]", "dids[0]"} <= fields


def test_sip_passwords_are_set_never_shown_and_removed(admin: httpx.Client, redis_url: str) -> None:
    from dispatcher.state import StateStore

    url = "/v1/tenants/demo/credentials"
    assert admin.put(f"{url}/alice", json={"password": "correct horse"}).status_code == 204
    assert admin.get(url).json() == {"users": ["alice"]}
    reply = admin.put(f"{url}/bob", json={"password": "short"})
    assert reply.status_code == 422 and reply.json()["detail"][0]["field"] == "password"
    assert admin.put(f"{url}/bad%20user", json={"password": "long enough"}).status_code == 422
    with StateStore(redis_url, "demo") as store:
        stored = store.credential("alice")
        assert stored is not None and stored.realm == "demo"
        audits = [e for e in store.events() if e.get("action") == "credential.set"]
        assert audits and all("correct" not in str(e) for e in store.events())
    assert admin.delete(f"{url}/alice").status_code == 204
    assert admin.delete(f"{url}/alice").status_code == 404


def test_deleting_a_tenant_needs_the_bootstrap_token_and_force_while_busy(
    admin: httpx.Client, redis_url: str, api_server: object
) -> None:
    from api_support import client, make_token

    from dispatcher.state import StateStore

    assert admin.post("/v1/tenants", json=demo_doc("other")).status_code == 201
    token = make_token(admin, "other", "admin")
    with client(api_server, token) as tenant_admin:  # type: ignore[arg-type]
        assert tenant_admin.delete("/v1/tenants/other").status_code == 403
    with StateStore(redis_url, "other") as store:
        store.claim("c1", "sales", "", ["alice"], 60_000)
    reply = admin.delete("/v1/tenants/other")
    assert reply.status_code == 409 and "force" in reply.text
    assert admin.delete("/v1/tenants/other?force=true").status_code == 204
    assert admin.get("/v1/tenants/other").status_code == 404
    assert admin.delete("/v1/tenants/other").status_code == 404
    plain = sync_client(redis_url)
    assert list(plain.scan_iter(match="{t:other}:*")) == []
    assert plain.hget(DIDS_KEY, "+493012345600") == b"demo"  # the demo keeps its numbers
    assert admin.get("/v1/tenants/demo").status_code == 200
    plain.close()
