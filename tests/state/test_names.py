"""The carrier-wide index from a SIP domain or a dialled number to its tenant."""

from __future__ import annotations

import pytest

from dispatcher.state import StateStore
from dispatcher.state.connect import sync_client
from dispatcher.state.errors import NameTaken
from dispatcher.state.keys import DIDS_KEY, DOMAINS_KEY, TENANT_NAMES_KEY

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


def test_a_put_touches_its_own_names_only_whatever_the_number_of_tenants(
    redis_url: str,
) -> None:
    """Each put used to walk every tenant's names (HGETALL of both index hashes): loading
    10,000 tenants took minutes and one admin change held Redis for ~30 ms. Now the index
    keeps each tenant's names too, and a put reads no whole hash."""
    client = sync_client(redis_url)
    with StateStore(redis_url, "t0") as first:
        for i in range(200):
            first.for_tenant(f"t{i}").put_names([f"t{i}.example"], [f"+4930{i:04d}1"])

        def hgetalls() -> int:
            return int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))

        before = hgetalls()
        t7 = first.for_tenant("t7")
        assert t7.put_names(["t7.example", "new.t7.example"], ["+4930000772"]) == (2, 1)
        assert t7.put_names([], []) == (0, 3)
        assert hgetalls() == before
        assert t7.tenant_of(did="+4930000071") is None
        assert t7.tenant_of(domain="t8.example") == "t8"
        assert len(client.hgetall(DOMAINS_KEY)) == 199 and len(client.hgetall(DIDS_KEY)) == 199
    client.close()


def test_an_index_written_before_the_reverse_one_is_adopted_on_the_first_put(
    redis_url: str,
) -> None:
    """Names a library without `{dispatcher}:tenant_names` put are still released when a
    tenant drops them: the first put builds the reverse index from the two hashes, once."""
    client = sync_client(redis_url)
    client.hset(DOMAINS_KEY, mapping={"acme.example": "acme", "beta.example": "beta"})
    client.hset(DIDS_KEY, mapping={"+4930111": "acme", "+4930222": "beta"})
    with StateStore(redis_url, "acme") as acme:
        assert acme.put_names(["acme.example"], []) == (0, 1)
        assert acme.tenant_of(did="+4930111") is None
        assert acme.tenant_of(did="+4930222") == "beta"
        assert acme.for_tenant("beta").put_names([], ["+4930222"]) == (0, 1)
        assert acme.tenant_of(domain="beta.example") is None
        assert acme.tenant_of(domain="acme.example") == "acme"
    assert client.hgetall(TENANT_NAMES_KEY) == {
        b"": b"1",
        b"acme": b"acme.example\x1f",
        b"beta": b"\x1f+4930222",
    }
    client.close()


def test_the_names_version_moves_when_a_name_changes_hands_only(redis_url: str) -> None:
    with StateStore(redis_url, "acme") as acme:
        assert acme.names_version() == 0
        acme.put_names(["acme.example"], ["+4930111"])
        first = acme.names_version()
        assert first > 0
        acme.put_names(["acme.example"], ["+4930111"])  # an import that changes no name
        assert acme.names_version() == first
        acme.put_names(["acme.example"], [])
        assert acme.names_version() == first + 1
        with pytest.raises(NameTaken):
            acme.for_tenant("beta").put_names(["acme.example"], [])
        assert acme.names_version() == first + 1
