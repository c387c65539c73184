"""Who may do what: no token 401, another tenant's token 403, read-only never writes."""

from __future__ import annotations

import httpx
import pytest
from api_support import client, demo_doc, make_token

from dispatcher.run.procs import ApiProcess
from dispatcher.state.connect import sync_client

pytestmark = pytest.mark.redis

GROUP = {"id": "g9", "extension": "699", "name": "G9", "strategy": "ring_all"}
# (method, path, json body) of a read and of writes, on tenant "demo".
READS = [
    ("GET", "/v1/tenants/demo", None),
    ("GET", "/v1/tenants/demo/groups", None),
    ("GET", "/v1/tenants/demo/groups/sales", None),
    ("GET", "/v1/tenants/demo/groups/sales/members", None),
    ("GET", "/v1/tenants/demo/agents", None),
    ("GET", "/v1/tenants/demo/agents/alice/state", None),
    ("GET", "/v1/tenants/demo/inbound", None),
    ("GET", "/v1/tenants/demo/live", None),
]
WRITES = [
    ("PUT", "/v1/tenants/demo", demo_doc()),
    ("PUT", "/v1/tenants/demo/groups/g9", GROUP),
    ("DELETE", "/v1/tenants/demo/groups/partners", None),
    ("PUT", "/v1/tenants/demo/groups/sales/members/dave", {"tier": 2}),
    ("DELETE", "/v1/tenants/demo/groups/sales/members/alice", None),
    ("PUT", "/v1/tenants/demo/agents/zoe", {"id": "zoe", "name": "Zoe", "targets": {"aor": "zoe"}}),
    ("DELETE", "/v1/tenants/demo/agents/heidi", None),
    ("POST", "/v1/tenants/demo/agents/alice/state", {"action": "pause", "reason": "lunch"}),
    ("PUT", "/v1/tenants/demo/inbound", []),
    ("POST", "/v1/tenants/demo/tokens", {"role": "read-only"}),
    ("GET", "/v1/tenants/demo/tokens", None),
]


def call(http: httpx.Client, method: str, path: str, body: object) -> httpx.Response:
    return http.request(method, path, json=body)


@pytest.mark.parametrize("token", [None, "nonsense", "dsp_demo.0123456789abcdef.wrong"])
def test_no_valid_token_is_401(admin: httpx.Client, api_server: ApiProcess, token: str) -> None:
    with client(api_server, token) as anonymous:
        for method, path, body in [*READS, *WRITES, ("GET", "/v1/tenants", None)]:
            reply = call(anonymous, method, path, body)
            assert reply.status_code == 401, (method, path, reply.text)
            assert reply.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/healthz").status_code == 200  # liveness needs no token


def test_other_tenants_token_is_403_everywhere(admin: httpx.Client, api_server: ApiProcess) -> None:
    assert admin.post("/v1/tenants", json=demo_doc("other")).status_code == 201
    other_admin = make_token(admin, "other", "admin")
    with client(api_server, other_admin) as stranger:
        for method, path, body in [*READS, *WRITES]:
            reply = call(stranger, method, path, body)
            assert reply.status_code == 403, (method, path, reply.text)
        # ... also on a tenant that does not exist: nothing to learn about other tenants
        assert stranger.get("/v1/tenants/nobody/groups").status_code == 403
        assert stranger.get("/v1/tenants").json() == {"tenants": ["other"]}
        assert stranger.post("/v1/tenants", json=demo_doc("third")).status_code == 403
        assert stranger.get("/metrics").status_code == 403
        assert stranger.get("/v1/tenants/other/groups").status_code == 200


def test_read_only_reads_and_never_writes(admin: httpx.Client, api_server: ApiProcess) -> None:
    version = admin.get("/v1/tenants/demo").json()["version"]
    with client(api_server, make_token(admin, "demo", "read-only")) as reader:
        for method, path, body in READS:
            reply = call(reader, method, path, body)
            assert reply.status_code == 200, (method, path, reply.text)
        for method, path, body in WRITES:
            reply = call(reader, method, path, body)
            assert reply.status_code == 403, (method, path, reply.text)
            assert reply.json() == {"detail": "this token is read-only"}
    assert admin.get("/v1/tenants/demo").json()["version"] == version
    assert admin.get("/v1/tenants/demo/agents/alice/state").json()["status"] == "available"


def test_tenant_admin_writes_its_tenant_only(admin: httpx.Client, api_server: ApiProcess) -> None:
    with client(api_server, make_token(admin, "demo", "admin")) as tenant_admin:
        for method, path, body in WRITES:
            reply = call(tenant_admin, method, path, body)
            assert reply.status_code in (200, 201), (method, path, reply.text)
        assert tenant_admin.post("/v1/tenants", json=demo_doc("x")).status_code == 403


def test_revoked_token_stops_working(admin: httpx.Client, api_server: ApiProcess) -> None:
    token = make_token(admin, "demo", "admin")
    token_id = token.split(".")[1]
    with client(api_server, token) as holder:
        assert holder.get("/v1/tenants/demo").status_code == 200
        listed = admin.get("/v1/tenants/demo/tokens").json()["tokens"]
        assert {"id": token_id, "role": "admin", "label": "test"}.items() <= listed[0].items()
        assert "digest" not in listed[0] and "token" not in listed[0]
        assert holder.delete(f"/v1/tenants/demo/tokens/{token_id}").status_code == 204
        assert holder.get("/v1/tenants/demo").status_code == 401
    assert admin.delete(f"/v1/tenants/demo/tokens/{token_id}").status_code == 404


def test_token_is_stored_hashed(admin: httpx.Client, redis_url: str) -> None:

    token = make_token(admin, "demo", "read-only")
    with sync_client(redis_url) as plain:
        stored = plain.hgetall("{t:demo}:tokens")
    assert len(stored) == 1
    (record,) = stored.values()
    secret = token.rsplit(".", 1)[1]
    assert secret.encode() not in record and token.encode() not in record


def test_bootstrap_token_lists_every_tenant(admin: httpx.Client) -> None:
    admin.post("/v1/tenants", json=demo_doc("acme"))
    assert admin.get("/v1/tenants").json() == {"tenants": ["acme", "demo"]}
