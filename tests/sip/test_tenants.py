"""Many tenants on one Kamailio: a request belongs to the tenant of its dialled number or its
domain; two tenants with the same extensions and agent names never meet; a domain or number
no tenant has gets 404 and leaves nothing in any stream. Real Kamailio and Redis; the phones
are raw SIP (FakePhone turns every INVITE down, and keeps it)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from rawsip import FakePhone, SipPeer, status_of

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.sipprocs import KamailioProcess
from dispatcher.state import StateStore, TenantKeys

pytestmark = [pytest.mark.sip, pytest.mark.redis]

TENANT_YAML = """
id: {tenant}
name: Tenant {tenant}
domains: ["{tenant}.example"]
dids: ["{did}"]
agents:
  - {{id: alice, name: Alice of {tenant}, targets: {{aor: alice}}, state: available}}
groups:
  - id: sales
    extension: "600"
    name: Sales
    strategy: sequential
    sticky: false
    ring_timeout: 2
    members: [{{agent: alice}}]
    no_answer: {{kind: reply, code: 480, reason: "Nobody at {tenant}"}}
inbound:
  - {{did: "{did}", target: {{kind: group, group: sales}}}}
"""
TENANTS = {"acme": "+4930100", "beta": "+4930200"}


@pytest.fixture
def node(
    start_kamailio: Callable[..., KamailioProcess], redis_url: str
) -> Iterator[KamailioProcess]:
    for tenant, did in TENANTS.items():
        with StateStore(redis_url, tenant) as store:
            import_tenant(store, parse_tenant(TENANT_YAML.format(tenant=tenant, did=did), "yaml"))
    # no default tenant: every request must say whose it is; the raw peers' 127.x.y.z
    # addresses trusted (routing, not authentication, is tested here: test_auth.py)
    env = {"DISPATCHER_TENANT": "", "DISPATCHER_TRUSTED": "127.0.0.0/8"}
    yield start_kamailio(tenant="acme", redis_url=redis_url, env=env)


def request(peer: SipPeer, method: str, uri: str, to: str, extra: str = "") -> bytes:
    tag = uuid.uuid4().hex[:10]
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:caller@{peer.host}>;tag={tag}\r\n"
        f"To: <{to}>\r\n"
        f"Call-ID: {method.lower()}-{tag}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def register(peer: SipPeer, user: str, domain: str, contact: str) -> int | None:
    message = request(
        peer,
        "REGISTER",
        f"sip:{domain}",
        f"sip:{user}@{domain}",
        f"Contact: <sip:{user}@{contact}>\r\nExpires: 300\r\n",
    )
    replies = peer.exchange(message, wait_final=2)
    return status_of(replies[-1]) if replies else None


def call(peer: SipPeer, user: str, domain: str) -> list[int | None]:
    uri = f"sip:{user}@{domain}"
    replies = peer.exchange(request(peer, "INVITE", uri, uri), wait_final=6)
    return [status_of(r) for r in replies if (status_of(r) or 0) >= 200]


def events(client: redis.Redis, tenant: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(TenantKeys(tenant).events)]


def test_same_extensions_and_agent_names_each_reach_their_own_tenant(
    node: KamailioProcess, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    with SipPeer(node) as peer:
        phones = {tenant: FakePhone(peer.host) for tenant in TENANTS}
        try:
            for tenant, phone in phones.items():
                assert register(peer, "alice", f"{tenant}.example", phone.contact) == 200
            assert call(peer, "600", "acme.example") == [480]
            assert len(phones["acme"].invites) == 1 and not phones["beta"].invites
            assert call(peer, "600", "beta.example") == [480]
            assert len(phones["beta"].invites) == 1 and len(phones["acme"].invites) == 1
            # a DID from a trunk: its tenant by the number, whatever the domain
            assert call(peer, TENANTS["beta"], node.address) == [480]
            assert len(phones["beta"].invites) == 2 and len(phones["acme"].invites) == 1
            for tenant, calls in (("acme", 1), ("beta", 2)):
                offered = [e for e in events(client, tenant) if e[b"type"] == b"offered"]
                assert len(offered) == calls, tenant
        finally:
            for phone in phones.values():
                phone.close()
    client.close()


def test_an_unknown_domain_or_number_is_404_and_touches_no_tenant(
    node: KamailioProcess, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    before = {tenant: len(events(client, tenant)) for tenant in TENANTS}
    with SipPeer(node) as peer:
        assert call(peer, "600", "other.example") == [404]
        assert call(peer, "+4930999", node.address) == [404]
        assert register(peer, "alice", "other.example", "127.0.0.1:9") == 404
    assert {tenant: len(events(client, tenant)) for tenant in TENANTS} == before
    client.close()
