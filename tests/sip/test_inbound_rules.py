"""Inbound rules end to end: a call to a DID goes by schedule and caller prefix to a group, a
forward or a reply. Kamailio + KEMI router + real Redis; phones are SIPp UAS.

Each Kamailio runs with DISPATCHER_CLOCK_OFFSET_MS set so that its own clock shows a chosen
local time in Europe/Berlin - the next Wednesday at 10:00 or 22:00, the next Saturday at
noon, counted from the real clock - for the schedule; Redis keeps the real time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from clocks import next_local, now_ms
from test_group_routing import TENANT, ZERO, hang_up, happened, phones, settled

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.sipprocs import KamailioProcess, SippProcess, SippResult, run_sipp
from dispatcher.state import StateStore

pytestmark = [pytest.mark.sip, pytest.mark.redis, pytest.mark.timeshift]

SCENARIOS = Path(__file__).parent / "scenarios"
DID = "+493012345600"
VIP_CALLER = "+4940123555"
CALLER = "+4930555777"
# The tenant id is test_group_routing's, so its settled() and happened() read this tenant.
TENANT_YAML = """
id: {tenant}
name: SIP inbound rules
timezone: Europe/Berlin
agents:
  - {{id: a1, name: Sales agent, targets: {{aor: a1}}, state: available}}
  - {{id: a2, name: Key-account agent, targets: {{aor: a2}}, state: available}}
groups:
  - id: sales
    extension: "810"
    name: Sales
    strategy: ring_all
    sticky: false
    ring_timeout: 5
    members: [{{agent: a1}}]
  - id: keyaccount
    extension: "811"
    name: Key accounts
    strategy: ring_all
    sticky: false
    ring_timeout: 5
    members: [{{agent: a2}}]
inbound:
  - did: "{did}"
    caller_prefixes: ["+4940123"]
    target: {{kind: group, group: keyaccount}}
  - did: "{did}"
    schedule: [{{days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00"}}]
    target: {{kind: group, group: sales}}
  - did: "{did}"
    schedule: [{{days: [sat, sun], start: "00:00", end: "24:00"}}]
    target: {{kind: forward, uri: "sip:oncall@127.0.0.1:{oncall_port}"}}
  - did: "{did}"
    target: {{kind: reply, code: 480, reason: Office Closed}}
"""
# Local times in Europe/Berlin as (weekday, hour, minute); weekday 0 is Monday.
WEDNESDAY_10_00 = (2, 10, 0)
WEDNESDAY_22_00 = (2, 22, 0)
SATURDAY_12_00 = (5, 12, 0)

StartKamailio = Callable[..., KamailioProcess]
StartPhone = Callable[..., SippProcess]


@pytest.fixture
def oncall(start_phone: StartPhone) -> SippProcess:
    """The on-call phone weekend calls are forwarded to (a static URI, not registered)."""
    return start_phone("uas_answer.xml")


@pytest.fixture
def client(redis_url: str, oncall: SippProcess) -> Iterator[redis.Redis]:
    tenant = TENANT_YAML.format(tenant=TENANT, did=DID, oncall_port=oncall.local_port)
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(tenant, "yaml"))
    with redis.Redis.from_url(redis_url) as plain:
        yield plain


@pytest.fixture
def kamailio_at(
    start_kamailio: StartKamailio, redis_url: str, client: redis.Redis
) -> Callable[[tuple[int, int, int]], KamailioProcess]:
    """Start a Kamailio whose own clock reads the next `local` (weekday, hour, minute) in
    Berlin now."""

    def start(local: tuple[int, int, int]) -> KamailioProcess:
        offset_ms = next_local(*local, "Europe/Berlin") - now_ms()
        return start_kamailio(
            tenant=TENANT,
            redis_url=redis_url,
            env={"DISPATCHER_CLOCK_OFFSET_MS": str(offset_ms)},
        )

    return start


def dial(workdir: Path, kamailio: KamailioProcess, number: str, caller: str) -> SippResult:
    """One call from `caller` (the From user) to `number`, 100 ms of talk."""
    return run_sipp(
        workdir,
        SCENARIOS / "uac_call.xml",
        kamailio.address,
        calls=1,
        duration_ms=100,
        service=number,
        keys={"caller": caller},
        timeout=15,
    )


def unused(*idle: SippProcess) -> None:
    """Stop phones that must not have been called."""
    for phone in idle:
        result = phone.stop()
        assert (result.stats.successful, result.stats.failed) == (0, 0), result.errors


def test_business_hours_reach_the_sales_group(
    kamailio_at: Callable[[str], KamailioProcess],
    start_phone: StartPhone,
    oncall: SippProcess,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    kamailio = kamailio_at(WEDNESDAY_10_00)
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_answer.xml", a2="uas_answer.xml")

    caller = dial(tmp_path, kamailio, DID, CALLER)

    assert caller.ok, caller.errors or caller.output
    hang_up(agents["a1"])
    unused(agents["a2"], oncall)
    assert settled(client) == ZERO
    assert happened(redis_url, "answered", "a1")
    assert not happened(redis_url, "offered", "a2")
    assert not kamailio.python_errors()


def test_vip_caller_prefix_reaches_the_key_account_group(
    kamailio_at: Callable[[str], KamailioProcess],
    start_phone: StartPhone,
    oncall: SippProcess,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    kamailio = kamailio_at(WEDNESDAY_10_00)  # business hours: the VIP rule is listed first
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_answer.xml", a2="uas_answer.xml")

    caller = dial(tmp_path, kamailio, DID, VIP_CALLER)

    assert caller.ok, caller.errors or caller.output
    hang_up(agents["a2"])
    unused(agents["a1"], oncall)
    assert settled(client) == ZERO
    assert happened(redis_url, "answered", "a2")
    assert not happened(redis_url, "offered", "a1")
    assert not kamailio.python_errors()


def test_after_hours_get_the_closed_reply(
    kamailio_at: Callable[[str], KamailioProcess],
    start_phone: StartPhone,
    oncall: SippProcess,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    kamailio = kamailio_at(WEDNESDAY_22_00)
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_answer.xml")

    caller = dial(tmp_path, kamailio, DID, CALLER)

    assert (caller.stats.successful, caller.stats.failed) == (0, 1)
    assert "480 Office Closed" in caller.errors
    unused(agents["a1"], oncall)
    assert settled(client) == ZERO
    assert not happened(redis_url, "offered", "a1")
    assert not kamailio.python_errors()


def test_weekend_calls_are_forwarded_to_the_on_call_phone(
    kamailio_at: Callable[[str], KamailioProcess],
    start_phone: StartPhone,
    oncall: SippProcess,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    kamailio = kamailio_at(SATURDAY_12_00)
    agents = phones(tmp_path, kamailio, start_phone, a1="uas_answer.xml")

    caller = dial(tmp_path, kamailio, DID, CALLER)

    assert caller.ok, caller.errors or caller.output
    hang_up(oncall)
    unused(agents["a1"])
    assert settled(client) == ZERO
    assert not happened(redis_url, "offered", "a1")
    assert not kamailio.python_errors()


def test_a_group_extension_still_works_next_to_inbound_rules(
    kamailio_at: Callable[[str], KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    kamailio = kamailio_at(WEDNESDAY_22_00)  # after hours: extensions have no schedule
    agents = phones(tmp_path, kamailio, start_phone, a2="uas_answer.xml")

    caller = dial(tmp_path, kamailio, "811", CALLER)

    assert caller.ok, caller.errors or caller.output
    hang_up(agents["a2"])
    assert settled(client) == ZERO
    assert happened(redis_url, "answered", "a2")
    assert not kamailio.python_errors()
