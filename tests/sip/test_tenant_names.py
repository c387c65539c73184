"""How a worker's `Tenants` caches which tenant a DID or domain belongs to, without Redis:
an answer (a miss too) is kept while the index's version stays, and the version is read at
most once a second. test_tenants.py runs the same in Kamailio; tests/state/test_names.py
counts the versions in Redis."""

from __future__ import annotations

from typing import Any

from dispatcher.sip.tenants import NAMES_CHECK_S, Tenants


class Store:
    """The two StateStore reads Tenants makes, counted."""

    def __init__(self) -> None:
        self.dids = {"+4930111": "acme"}
        self.version = 7
        self.asked: list[str] = []

    def tenant_of(self, *, domain: str | None = None, did: str | None = None) -> str | None:
        self.asked.append(f"did {did}" if did is not None else f"domain {domain}")
        return self.dids.get(did or "")

    def names_version(self) -> int:
        self.asked.append("version")
        return self.version


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


def tenants(store: Store, clock: Clock) -> Tenants:
    def no_decider(_: Any) -> Any:
        raise AssertionError("not needed")

    return Tenants(store, no_decider, default="", clock=clock)  # type: ignore[arg-type]


def test_a_name_is_asked_once_and_the_version_once_a_second() -> None:
    store, clock = Store(), Clock()
    names = tenants(store, clock)
    for _ in range(100):
        assert names._lookup("did", "+4930111") == "acme"
        assert names._lookup("did", "+4930999") is None  # a miss is kept as well
        clock.now += 0.005
    assert store.asked == ["version", "did +4930111", "did +4930999"]
    clock.now += NAMES_CHECK_S
    assert names._lookup("did", "+4930111") == "acme"
    assert store.asked[3:] == ["version"]  # unchanged: nothing asked again


def test_a_name_that_changes_hands_is_seen_within_a_check() -> None:
    store, clock = Store(), Clock()
    names = tenants(store, clock)
    assert names._lookup("did", "+4930999") is None
    store.dids["+4930999"] = "beta"
    store.version += 1
    assert names._lookup("did", "+4930999") is None  # not yet: the check is due in a second
    clock.now += NAMES_CHECK_S
    assert names._lookup("did", "+4930999") == "beta"
    assert names._lookup("did", "+4930111") == "acme"
    assert store.asked == ["version", "did +4930999", "version", "did +4930999", "did +4930111"]
