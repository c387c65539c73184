"""Group calls through Kamailio on a highly available Redis: the session's Redis (a Redis
Cluster in make test's cluster pass), and a Sentinel-watched master killed between calls.

Registrations are shared over the nodes' DMQ bus and kept in their memory only: Kamailio
5.6's db_redis reaches one Redis server by host and port and follows neither a Sentinel
failover nor a Cluster's slots, so there is no copy in Redis (the phones' lookups never
needed Redis: a failover does not touch them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from failover import BOUND_S, through_a_kill
from test_group_routing import TENANT, TENANT_YAML, ZERO, hang_up, phones, settled
from test_kamailio import call

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.procs import RedisSentinelSet
from dispatcher.run.sipprocs import KamailioProcess, SippProcess
from dispatcher.state import StateStore
from dispatcher.state.connect import close_client, sync_client

pytestmark = [pytest.mark.sip, pytest.mark.redis]

StartKamailio = Callable[..., KamailioProcess]
StartPhone = Callable[..., SippProcess]


def put_tenant(address: str) -> None:
    with StateStore(address, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))


def answered_events(address: str) -> Counter[str]:
    """How often each call was answered, by the tenant's events."""
    with StateStore(address, TENANT) as store:
        return Counter(e["call"] for e in store.events(100_000) if e["type"] == "answered")


def test_a_group_call_on_the_sessions_redis(
    start_kamailio: StartKamailio, start_phone: StartPhone, tmp_path: Path, redis_url: str
) -> None:
    """The smoke test of the cluster pass: a sequential group whose first agent is busy."""
    put_tenant(redis_url)
    kamailio = start_kamailio(
        tenant=TENANT,
        redis_url=redis_url,
    )
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_busy.xml", a2="uas_answer.xml")

    caller = call(tmp_path, kamailio, "801")

    assert caller.ok, caller.errors or caller.output
    hang_up(*agents.values())
    client = sync_client(redis_url)
    try:
        assert settled(client) == ZERO
    finally:
        close_client(client)
    assert list(answered_events(redis_url).values()) == [1]
    assert not kamailio.python_errors()


@pytest.mark.ha
def test_group_calls_go_on_after_a_failover(
    start_kamailio: StartKamailio,
    start_phone: StartPhone,
    tmp_path: Path,
    sentinels: RedisSentinelSet,
) -> None:
    put_tenant(sentinels.address)
    kamailio = start_kamailio(
        tenant=TENANT,
        env={"REDIS_SENTINELS": sentinels.sentinels, "REDIS_SENTINEL_MASTER": sentinels.service},
    )
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_answer.xml")

    def group_call(n: int) -> bool:
        """One call to the ring-all group (a1 answers); 503 while Redis is failing over."""
        return call(tmp_path, kamailio, "800").ok

    def released_everywhere() -> None:
        """The last call's release is sent without waiting for Redis: lost with a master
        killed at once, it would keep a1 busy until the node's reconciliation (480s, not
        the failover's 503s). Wait until it landed and reached the replica."""
        client = sync_client(sentinels.address)
        try:
            assert settled(client) == ZERO
            assert client.wait(1, 2000) == 1
        finally:
            close_client(client)

    outage = through_a_kill(sentinels, group_call, before=2, before_kill=released_everywhere)
    assert outage.failures > 0, "the kill reached no call"
    bound = BOUND_S + outage.attempt_s  # known to within one call
    assert outage.gap_s <= bound, f"calls failed {outage.gap_s:.2f} s (bound {bound:.2f} s)"
    agents["a1"].stop()
    client = sync_client(sentinels.address)
    try:
        assert settled(client) == ZERO
    finally:
        close_client(client)
    counts = answered_events(sentinels.address)
    assert counts and max(counts.values()) == 1, "a call answered twice"
    assert "Redis" in kamailio.log_text()  # the outage was logged ...
    assert not kamailio.python_errors()  # ... and nothing raised
