"""The carrier-wide index from a SIP domain or a dialled number to its tenant."""

from __future__ import annotations

import pytest

from dispatcher.state import StateStore
from dispatcher.state.connect import sync_client
from dispatcher.state.errors import NameTaken

pytestmark = pytest.mark.redis


def test_names_lead_to_their_tenant_and_are_released_when_dropped(redis_url: str) -> None:
    with StateStore(redis_url, "acme") as acme:
        assert acme.put_names(["acme.example", "sip.acme.example"], ["+4930111"]) == (3, 0)
        assert acme.tenant_of(domain="sip.acme.example") == "acme"
        assert acme.tenant_of(did="+4930111") == "acme"
        assert acme.put_names(["acme.example"], []) == (0, 2)
        assert acme.tenant_of(domain="sip.acme.example") is None
        assert acme.tenant_of(did="+4930111") is None


def test_a_name_belongs_to_one_tenant_and_a_refused_put_changes_nothing(redis_url: str) -> None:
    with StateStore(redis_url, "acme") as acme:
        beta = acme.for_tenant("beta")
        acme.put_names(["acme.example"], ["+4930111"])
        beta.put_names(["beta.example"], [])
        with pytest.raises(NameTaken, match=r"DID \+4930111 belongs to tenant acme"):
            beta.put_names(["beta.example", "new.beta.example"], ["+4930111"])
        assert beta.tenant_of(domain="new.beta.example") is None
        assert beta.tenant_of(domain="beta.example") == "beta"
        assert acme.put_names([], []) == (0, 2)  # a deleted tenant lets go of everything
        assert beta.put_names(["beta.example"], ["+4930111"]) == (1, 0)


def test_a_sibling_store_shares_the_connections(redis_url: str) -> None:
    with StateStore(redis_url, "acme") as acme:
        beta = acme.for_tenant("beta")
        assert beta.tenant == "beta" and beta.keys.prefix == "{t:beta}"
        assert beta._redis is acme._redis and acme.for_tenant("acme") is acme
        beta.put_names(["beta.example"], [])
        assert acme._link.every_channel() and acme._link is beta._link


def test_credentials_keep_only_digests_and_can_be_removed(redis_url: str) -> None:
    from dispatcher.state.credentials import credential_record, ha1

    with StateStore(redis_url, "acme") as acme:
        assert acme.credential_put("alice", credential_record("alice", "acme", "correct horse"))
        stored = acme.credential("alice")
        assert stored is not None and stored.realm == "acme"
        assert stored.ha1("MD5") == ha1("alice", "acme", "correct horse", "MD5")
        assert stored.ha1("SHA-256") == ha1("alice", "acme", "correct horse", "SHA-256")
        raw = acme._redis.hget(acme.keys.credentials, "alice")
        assert raw is not None and b"correct horse" not in raw
        assert acme.credential_users() == ["alice"]
        assert acme.for_tenant("beta").credential("alice") is None
        assert acme.credential_put("alice", None) and acme.credential("alice") is None
    with pytest.raises(ValueError, match=r"8\.\.128"):
        credential_record("alice", "acme", "short")
    with pytest.raises(ValueError, match="invalid SIP user"):
        credential_record("al ice", "acme", "long enough")


def test_deleting_a_tenant_takes_all_its_keys_and_no_other(redis_url: str) -> None:
    from state_support import AGENTS

    from dispatcher.state.credentials import credential_record
    from dispatcher.state.errors import TenantBusy

    client = sync_client(redis_url)
    stores = {t: StateStore(redis_url, t) for t in ("acme", "beta")}
    for tenant, store in stores.items():
        store.put_config(b"{}", AGENTS, (("g1", ("a1", "a2")),))
        store.put_names([f"{tenant}.example"], [f"+49{len(tenant)}0{tenant == 'acme':d}"])
        store.credential_put("a1", credential_record("a1", tenant, "long enough"))
        store.set_token("t1", b'{"digest": "x", "role": "admin"}')
        assert store.claim("c1", "g1", "", ["a1"], 60_000).claimed == ("a1",)
    beta_before = {k: client.dump(k) for k in client.scan_iter(match="{t:beta}:*")}
    acme = stores["acme"]
    with pytest.raises(TenantBusy, match="1 ringing offers"):
        acme.delete_tenant()
    assert acme.tenant_of(domain="acme.example") == "acme"  # refused: nothing changed
    assert acme.delete_tenant(force=True) > 5
    assert list(client.scan_iter(match="{t:acme}:*")) == []
    assert acme.tenant_of(domain="acme.example") is None
    assert b"acme" not in client.smembers("dispatcher:tenants")
    assert {k: client.dump(k) for k in client.scan_iter(match="{t:beta}:*")} == beta_before
    assert acme.tenant_of(domain="beta.example") == "beta"
    for store in stores.values():
        store.close()
    client.close()
