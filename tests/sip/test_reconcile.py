"""A running node heals a release Redis never got (issue 12 section 1): its keeper compares
the live calls Redis says it holds with its dialogs every DLG_RECONCILE_S, and releases a
call without a dialog (outcome lost) - and only such a call: under a steady call rate no
call being answered or ended right now is taken for a lost one.

The release is really lost: Redis pauses writes (CLIENT PAUSE WRITE, as a failover does)
while the caller hangs up, so the worker's release FCALL waits in Redis unrun; then every
client connection is killed (as when the old primary goes), which drops it, and writes
resume. Real Kamailio, Redis and SIPp."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from state_support import imported_tenant
from test_group_strategies import ZERO, caller, events, live, of, phone, settled, wait_for

from dispatcher.run.sipprocs import KamailioProcess, SippProcess

pytestmark = [pytest.mark.sip, pytest.mark.redis]

TENANT_YAML = """
id: strategies
name: Reconciliation
agents:
  - {id: r1, name: R1, targets: {aor: r1}, state: available, wrapup: 30}
  - {id: r2, name: R2, targets: {aor: r2}, state: available, max_calls: 60}
groups:
  - {id: rec, extension: "890", name: Reconcile, strategy: sequential, sticky: false,
     ring_timeout: 5, members: [{agent: r1}]}
  - {id: busy, extension: "891", name: Busy, strategy: sequential, sticky: false,
     ring_timeout: 5, members: [{agent: r2}]}
"""
RECONCILE_S = 1


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with imported_tenant(redis_url, TENANT_YAML) as plain:
        yield plain


@pytest.fixture
def kamailio(
    start_kamailio: Callable[..., KamailioProcess], redis_url: str, client: redis.Redis
) -> Iterator[KamailioProcess]:
    node = start_kamailio(
        tenant="strategies", redis_url=redis_url, extra_defines={"DLG_RECONCILE_S": RECONCILE_S}
    )
    yield node


def test_a_release_redis_never_got_is_healed_by_the_node_within_two_periods(
    kamailio: KamailioProcess,
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    phone(tmp_path, start_phone, kamailio, "r1", "uas_answer.xml")
    call = caller(tmp_path, kamailio, "890", talk_ms=1500)
    wait_for(lambda: live(client, "r1") == 1, what="r1 answered")

    client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        assert call.wait().ok  # its BYE went through: the release FCALL waits in Redis
        client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
    healed_from = time.monotonic()
    assert live(client, "r1") == 1, "the release was not lost"
    assert "dialog:active_dialogs = 0" in kamailio.rpc("stats.get_statistics", "dialog:")

    wait_for(lambda: live(client, "r1") == 0, timeout=2 * RECONCILE_S + 3, what="healed")
    assert time.monotonic() - healed_from < 2 * RECONCILE_S + 2
    assert settled(client) == ZERO
    (ended,) = of("ended", events(client))
    assert ended["outcome"] == "lost"
    # no wrap-up after a call whose end nobody saw (the agent has been free since)
    wrapup_until = int(client.hget("{t:strategies}:a:wrapuntil", "r1") or 0)
    assert wrapup_until <= int(client.time()[0]) * 1000
    assert "has no dialog here: released" in kamailio.log_text()
    assert not kamailio.python_errors(), kamailio.python_errors()


def test_no_call_being_answered_or_ended_is_taken_for_a_lost_one(
    kamailio: KamailioProcess,
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    """20 calls a second for 10 s, each talking 1 s, one look a second: every call is
    answered and ends `answered`, none `lost`."""
    phone(tmp_path, start_phone, kamailio, "r2", "uas_answer.xml")
    result = caller(tmp_path, kamailio, "891", calls=200, rate=20, talk_ms=1000, timeout=60)
    outcome = result.wait()
    assert outcome.ok, outcome.errors
    assert settled(client, timeout=5) == ZERO
    ended = of("ended", events(client))
    assert len(ended) == 200
    assert {e["outcome"] for e in ended} == {"answered"}
    assert "has no dialog here" not in kamailio.log_text()
    assert not kamailio.python_errors(), kamailio.python_errors()


IDLE_TENANTS = 500


def test_the_keeper_looks_at_the_tenants_it_served_not_at_every_tenant(
    start_kamailio: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    redis_url: str,
    client: redis.Redis,
) -> None:
    """Beside IDLE_TENANTS tenants that never call, a look a second reads this node's calls
    of the one tenant it routed, and the backstop walks the tenant list in slices: under one
    read per tenant in 4 s (reading every tenant's calls at every look, as before, made 2000
    reads a second here; with 10,000 tenants that was 5 % of a core with no call at all)."""
    from state_support import AGENTS

    from dispatcher.state import StateStore

    with StateStore(redis_url, "strategies") as store:
        for i in range(IDLE_TENANTS):
            store.for_tenant(f"idle{i}").put_config(b"{}", AGENTS, ())
    node = start_kamailio(
        tenant="strategies", redis_url=redis_url, extra_defines={"DLG_RECONCILE_S": 1}
    )
    phone(tmp_path, start_phone, node, "r1", "uas_answer.xml")
    assert caller(tmp_path, node, "890", talk_ms=200).wait().ok
    time.sleep(6)  # past the start-up release (every tenant, once) and the backstop's start

    def reads() -> int:
        return int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))

    before = reads()
    time.sleep(4)
    assert reads() - before < IDLE_TENANTS
    assert settled(client) == ZERO
    assert not node.python_errors(), node.python_errors()
