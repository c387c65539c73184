"""Group calls end to end: Kamailio + KEMI router + real Redis, agents' phones are SIPp UAS."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from state_support import check_invariants
from test_kamailio import call, register

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.sipprocs import KamailioProcess, SippProcess, run_sipp
from dispatcher.state import StateStore

pytestmark = [pytest.mark.sip, pytest.mark.redis]

SCENARIOS = Path(__file__).parent / "scenarios"
TENANT = "sip-test"
TENANT_YAML = """
id: sip-test
name: SIP test
agents:
  - {id: a1, name: A1, targets: {aor: a1}, state: available}
  - {id: a2, name: A2, targets: {aor: a2}, state: available}
  - {id: a3, name: A3, targets: {aor: a3}, state: available}
groups:
  - id: all
    extension: "800"
    name: Ring all
    strategy: ring_all
    sticky: false
    ring_timeout: 5
    members: [{agent: a1}, {agent: a2}]
    no_answer: {kind: reply, code: 480}
  - id: seq
    extension: "801"
    name: Sequential
    strategy: sequential
    sticky: false
    ring_timeout: 5
    members: [{agent: a1, position: 1}, {agent: a2, position: 2}]
    no_answer: {kind: reply, code: 480}
  - id: short
    extension: "802"
    name: Nobody picks up
    strategy: ring_all
    sticky: false
    ring_timeout: 1
    members: [{agent: a1}, {agent: a2}]
    no_answer: {kind: reply, code: 603}
  - id: unreg
    extension: "803"
    name: First agent has no phone
    strategy: sequential
    sticky: false
    ring_timeout: 5
    members: [{agent: a3, position: 1}, {agent: a1, position: 2}]
"""
ZERO = {"live": 0, "resv": 0, "reservations": 0, "live_calls": 0}

StartKamailio = Callable[..., KamailioProcess]
StartPhone = Callable[..., SippProcess]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
    with redis.Redis.from_url(redis_url) as plain:
        yield plain


@pytest.fixture
def kamailio(start_kamailio: StartKamailio, redis_url: str, client: redis.Redis) -> KamailioProcess:
    return start_kamailio(tenant=TENANT, redis_url=redis_url)


def phones(tmp_path: Path, kamailio: KamailioProcess, start_phone: StartPhone, **scenarios: str):
    """Start a SIPp UAS per agent and register it as the agent's AOR."""
    started = {}
    for agent, scenario in scenarios.items():
        phone = start_phone(scenario)
        register(tmp_path, kamailio, agent, phone.local_port)
        started[agent] = phone
    return started


def settled(client: redis.Redis) -> dict[str, int]:
    """The state totals once the call's release has landed (the BYE's 200 may be first)."""
    deadline = time.monotonic() + 3
    while True:
        totals = check_invariants(client, TENANT)
        if all(totals[k] == 0 for k in ZERO) or time.monotonic() > deadline:
            return {k: totals[k] for k in ZERO}
        time.sleep(0.05)


def happened(redis_url: str, kind: str, agent: str, reason: str | None = None) -> bool:
    """Whether the tenant's event stream has a `kind` event of `agent` (with `reason`)."""
    with StateStore(redis_url, TENANT) as store:
        return any(
            e.get("type") == kind
            and e.get("agent") == agent
            and (reason is None or e.get("reason") == reason)
            for e in store.events()
        )


def call_outcome(redis_url: str) -> str | None:
    """The outcome of the one call's `ended` event, once its release has landed."""
    deadline = time.monotonic() + 3
    with StateStore(redis_url, TENANT) as store:
        while True:
            ended = [e for e in store.events() if e.get("type") == "ended"]
            if ended or time.monotonic() > deadline:
                assert len(ended) <= 1, ended
                return ended[0].get("outcome") if ended else None
            time.sleep(0.05)


def hang_up(*phones: SippProcess) -> None:
    """Stop agent phones; each handled its one call to the end of its scenario."""
    for phone in phones:
        result = phone.stop()
        assert (result.stats.successful, result.stats.failed) == (1, 0), result.errors


def test_ring_all_first_answer_wins_and_the_other_phone_is_cancelled(
    kamailio: KamailioProcess,
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_answer.xml", a2="uas_noanswer.xml")

    caller = call(tmp_path, kamailio, "800")

    assert caller.ok, caller.errors or caller.output
    hang_up(agents["a1"])
    hang_up(agents["a2"])
    assert settled(client) == ZERO
    assert happened(redis_url, "answered", "a1")
    assert call_outcome(redis_url) == "answered"
    assert not kamailio.python_errors()


def test_sequential_busy_first_agent_then_second_answers(
    kamailio: KamailioProcess,
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_busy.xml", a2="uas_answer.xml")

    caller = call(tmp_path, kamailio, "801")

    assert caller.ok, caller.errors or caller.output
    hang_up(agents["a1"])
    hang_up(agents["a2"])
    assert settled(client) == ZERO
    assert happened(redis_url, "failed", "a1", "busy")
    assert happened(redis_url, "answered", "a2")
    assert not kamailio.python_errors()


def test_all_busy_gets_the_no_answer_reply(
    kamailio: KamailioProcess,
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_busy.xml", a2="uas_busy.xml")

    caller = call(tmp_path, kamailio, "800")

    assert (caller.stats.successful, caller.stats.failed) == (0, 1)
    # the group's no-answer target (reply 480), not the phones' 486
    assert "480 Temporarily Unavailable" in caller.errors
    hang_up(*agents.values())
    assert settled(client) == ZERO
    assert happened(redis_url, "failed", "a1", "busy")
    assert happened(redis_url, "failed", "a2", "busy")
    assert call_outcome(redis_url) == "no_answer"
    assert not kamailio.python_errors()


def test_nobody_answers_within_the_ring_timeout(
    kamailio: KamailioProcess,
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_noanswer.xml", a2="uas_noanswer.xml")

    started = time.monotonic()
    caller = call(tmp_path, kamailio, "802")

    assert (caller.stats.successful, caller.stats.failed) == (0, 1)
    assert "603 Decline" in caller.errors
    assert time.monotonic() - started < 5
    hang_up(*agents.values())
    assert settled(client) == ZERO
    assert happened(redis_url, "failed", "a1", "noanswer")
    assert happened(redis_url, "failed", "a2", "noanswer")
    assert call_outcome(redis_url) == "no_answer"
    assert not kamailio.python_errors()


def test_agent_without_registered_phone_is_skipped(
    kamailio: KamailioProcess,
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_answer.xml")

    caller = call(tmp_path, kamailio, "803")

    assert caller.ok, caller.errors or caller.output
    hang_up(agents["a1"])
    assert settled(client) == ZERO
    assert happened(redis_url, "answered", "a1")
    # a3 has no registered phone: never planned, never offered, no missed offer counted
    assert not happened(redis_url, "offered", "a3")
    assert not happened(redis_url, "failed", "a3")
    assert not kamailio.python_errors()


def test_caller_cancel_releases_the_group_call(
    kamailio: KamailioProcess,
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    # sequential: one phone rings (uac_cancel.xml expects exactly one 180)
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_noanswer.xml")

    caller = run_sipp(
        tmp_path,
        SCENARIOS / "uac_cancel.xml",
        kamailio.address,
        calls=1,
        duration_ms=200,
        service="801",
        keys={"caller": "bob"},
    )

    assert caller.ok, caller.errors or caller.output
    hang_up(*agents.values())
    assert settled(client) == ZERO
    assert happened(redis_url, "failed", "a1", "cancelled")
    assert call_outcome(redis_url) == "abandoned"
    assert not kamailio.python_errors()


def test_unknown_group_number_gets_404(kamailio: KamailioProcess, tmp_path: Path) -> None:
    result = run_sipp(
        tmp_path,
        SCENARIOS / "uac_expect_404.xml",
        kamailio.address,
        calls=1,
        service="899",
        keys={"caller": "bob"},
    )

    assert result.ok, result.errors or result.output
    assert not kamailio.python_errors()


def test_redis_down_gets_503_fast(start_kamailio: StartKamailio, tmp_path: Path) -> None:
    # Registrations in memory: with them in Redis (usrloc db_mode 3) Kamailio cannot start
    # while its Redis is down, and this is the router's answer to a Redis lost later.
    kamailio = start_kamailio(
        tenant=TENANT, redis_url="redis://127.0.0.1:1/0", shared_registrations=False
    )

    started = time.monotonic()
    caller = call(tmp_path, kamailio, "800", calls=2)

    assert (caller.stats.successful, caller.stats.failed) == (0, 2)
    assert "503 Service Unavailable" in caller.errors
    assert time.monotonic() - started < 3
    # Once per node: the workers and the keeper share the node's outage flag.
    assert kamailio.log_text().count("Redis unavailable") == 1
    assert not kamailio.python_errors()


def test_redis_that_never_answers_gets_503_within_a_second(
    start_kamailio: StartKamailio, tmp_path: Path
) -> None:
    # A listening socket nobody accepts from: connects succeed, replies never come.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        kamailio = start_kamailio(  # registrations in memory, as above
            tenant=TENANT, redis_url=f"redis://127.0.0.1:{port}/0", shared_registrations=False
        )

        started = time.monotonic()
        caller = call(tmp_path, kamailio, "800")
        elapsed = time.monotonic() - started

    assert (caller.stats.successful, caller.stats.failed) == (0, 1)
    assert "503 Service Unavailable" in caller.errors
    # REDIS_TIMEOUT_MS 500: one timed-out command, then the 503 (SIPp's start-up included)
    assert "Timeout" in kamailio.log_text() or "timed out" in kamailio.log_text()
    assert elapsed < 1.5
    assert not kamailio.python_errors()
