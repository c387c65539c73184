"""Group strategies end to end: Kamailio + KEMI router + real Redis, phones and callers are SIPp.

Each test imports the tenant below into a flushed Redis, starts its own Kamailio node(s),
registers SIPp phones for the agents it uses (an agent without a registered phone is never
planned) and ends with every Redis counter back at zero (`check_invariants` totals) and no
Python exception in any Kamailio log. The CANCEL race is the exception to "SIPp": its two
ends are small Python UAs, see there why.

Which agent got a call is read from the tenant's event stream: `offered` events carry the
agent and come in stream order (one claim = one Redis function call, so the agents of one
wave share the claim's timestamp), `answered` events name the agent that took the call.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from clocks import HOUR_MS, zone_at_noon
from state_support import check_invariants
from test_kamailio import register

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.procs import RedisProcess, free_port
from dispatcher.run.sipprocs import KamailioProcess, SippProcess, SippResult
from dispatcher.state import StateStore, TenantKeys

pytestmark = [pytest.mark.sip, pytest.mark.redis]

SCENARIOS = Path(__file__).parent / "scenarios"
TENANT = "strategies"

# Every group but `sticky` forgets callers, so a caller's earlier calls never steer a test.
# {gateway_port}: the SIPp UAS that plays the carrier's PSTN gateway (forward target).
TENANT_YAML = """
id: strategies
name: Strategy tests
agents:
  - {{id: p1, name: P1, targets: {{aor: p1}}, state: available}}
  - {{id: p2, name: P2, targets: {{aor: p2}}, state: available}}
  - {{id: p3, name: P3, targets: {{aor: p3}}, state: available}}
  - {{id: p4, name: P4, targets: {{aor: p4}}, state: available}}
  - {{id: l1, name: L1, targets: {{aor: l1}}, state: available, max_calls: 3}}
  - {{id: l2, name: L2, targets: {{aor: l2}}, state: available, max_calls: 3}}
  - {{id: l3, name: L3, targets: {{aor: l3}}, state: available, max_calls: 3}}
  - {{id: d1, name: D1, targets: {{aor: d1}}, state: available, max_calls: 20}}
  - {{id: d2, name: D2, targets: {{aor: d2}}, state: available, max_calls: 20}}
  - {{id: d3, name: D3, targets: {{aor: d3}}, state: available, max_calls: 20}}
  - {{id: s1, name: S1, targets: {{aor: s1}}, state: available}}
  - {{id: s2, name: S2, targets: {{aor: s2}}, state: available}}
  - {{id: x1, name: X1, targets: {{aor: x1}}, state: available}}
  - {{id: x2, name: X2, targets: {{aor: x2}}, state: available}}
  - {{id: x3, name: X3, targets: {{aor: x3}}, state: available}}
  - {{id: f1, name: F1, targets: {{aor: f1}}, state: available}}
  - {{id: f2, name: F2, targets: {{aor: f2}}, state: available}}
  - {{id: f3, name: F3, targets: {{aor: f3}}, state: available}}
  - {{id: c1, name: C1, targets: {{aor: c1}}, state: available}}
  - {{id: t1, name: T1, targets: {{aor: t1}}, state: available}}
groups:
  - id: prio
    extension: "810"
    name: Priority tiers
    strategy: priority
    sticky: false
    ring_timeout: 1
    members:
      - {{agent: p1, tier: 1, position: 1}}
      - {{agent: p2, tier: 1, position: 2}}
      - {{agent: p3, tier: 2, position: 1}}
      - {{agent: p4, tier: 2, position: 2}}
    no_answer: {{kind: reply, code: 480}}
  - id: lb
    extension: "820"
    name: Least busy
    strategy: least_busy
    sticky: false
    ring_timeout: 5
    members: [{{agent: l1, position: 1}}, {{agent: l2, position: 2}}, {{agent: l3, position: 3}}]
  - {{id: lb-hold1, extension: "821", name: Hold L1, strategy: sequential, sticky: false,
     members: [{{agent: l1}}]}}
  - {{id: lb-hold2, extension: "822", name: Hold L2, strategy: sequential, sticky: false,
     members: [{{agent: l2}}]}}
  - id: rr
    extension: "830"
    name: Round robin
    strategy: round_robin
    sticky: false
    ring_timeout: 5
    members: [{{agent: d1, position: 1}}, {{agent: d2, position: 2}}, {{agent: d3, position: 3}}]
  - id: rnd
    extension: "831"
    name: Random
    strategy: random
    sticky: false
    ring_timeout: 5
    members: [{{agent: d1}}, {{agent: d2}}, {{agent: d3}}]
  - id: wrnd
    extension: "832"
    name: Weighted random
    strategy: weighted_random
    sticky: false
    ring_timeout: 5
    members: [{{agent: d1, weight: 1}}, {{agent: d2, weight: 2}}, {{agent: d3, weight: 3}}]
  - id: sticky
    extension: "840"
    name: Sticky sequential
    strategy: sequential
    sticky: true
    timezone: UTC
    ring_timeout: 2
    members: [{{agent: s1, position: 1}}, {{agent: s2, position: 2}}]
  - {{id: hold-s1, extension: "841", name: Hold S1, strategy: sequential, sticky: false,
     members: [{{agent: s1}}]}}
  - {{id: hold-s2, extension: "842", name: Hold S2, strategy: sequential, sticky: false,
     members: [{{agent: s2}}]}}
  - id: ga
    extension: "850"
    name: Group A
    strategy: sequential
    sticky: false
    ring_timeout: 2
    members: [{{agent: x1, position: 1}}, {{agent: x2, position: 2}}]
    no_answer: {{kind: reply, code: 480}}
  - id: gb
    extension: "851"
    name: Group B
    strategy: sequential
    sticky: false
    ring_timeout: 2
    members: [{{agent: x1, position: 1}}, {{agent: x3, position: 2}}]
    no_answer: {{kind: reply, code: 480}}
  - id: fwd
    extension: "860"
    name: Forward to the PSTN
    strategy: ring_all
    sticky: false
    ring_timeout: 1
    members: [{{agent: f1}}]
    no_answer: {{kind: forward, uri: "sip:4930123456@127.0.0.1:{gateway_port}"}}
  - id: ovf
    extension: "861"
    name: Overflow
    strategy: ring_all
    sticky: false
    ring_timeout: 1
    members: [{{agent: f2}}]
    no_answer: {{kind: group, group: ovf-target}}
  - id: ovf-target
    extension: "862"
    name: Overflow target
    strategy: sequential
    sticky: false
    ring_timeout: 2
    members: [{{agent: f3}}]
  - {{id: race, extension: "870", name: Cancel race, strategy: sequential, sticky: false,
     ring_timeout: 5, members: [{{agent: c1}}]}}
  - {{id: dlg, extension: "880", name: Dialog timeout, strategy: sequential, sticky: false,
     ring_timeout: 5, members: [{{agent: t1}}]}}
"""
ZERO = {"live": 0, "resv": 0, "reservations": 0, "live_calls": 0}
# Each tail bound below may fail a correct dispatcher with at most this probability; a test
# checks at most 3 agents x 2 tails, so its false-failure probability stays below 1e-6.
TAIL = 1e-7

StartKamailio = Callable[..., KamailioProcess]
StartPhone = Callable[..., SippProcess]


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def gateway_port() -> int:
    """The UDP port of the PSTN gateway SIPp the `fwd` group forwards to."""
    return free_port(socket.SOCK_DGRAM)


@pytest.fixture
def client(redis_url: str, gateway_port: int) -> Iterator[redis.Redis]:
    """The tenant imported into the (flushed) Redis; a plain client on it."""
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML.format(gateway_port=gateway_port), "yaml"))
    with redis.Redis.from_url(redis_url) as plain:
        yield plain


@pytest.fixture
def node(
    start_kamailio: StartKamailio, redis_url: str, client: redis.Redis
) -> Iterator[Callable[..., KamailioProcess]]:
    """Start a Kamailio node on the shared Redis; its Python errors are checked at teardown."""
    nodes: list[KamailioProcess] = []

    def start(**options: Any) -> KamailioProcess:
        kamailio = start_kamailio(tenant=TENANT, redis_url=redis_url, **options)
        nodes.append(kamailio)
        return kamailio

    yield start
    for kamailio in nodes:
        assert not kamailio.python_errors(), kamailio.python_errors()


# UACs started by `caller`; a test that fails while some still run leaves them to
# `_reap_callers`.
_callers: list[SippProcess] = []


@pytest.fixture(autouse=True)
def _reap_callers() -> Iterator[None]:
    yield
    while _callers:
        uac = _callers.pop()
        if uac.proc is not None and uac.proc.poll() is None:
            uac.proc.kill()
            uac.proc.wait()


def phone(
    tmp_path: Path,
    start_phone: StartPhone,
    nodes: KamailioProcess | list[KamailioProcess],
    agent: str,
    scenario: str,
    **options: Any,
) -> SippProcess:
    """A SIPp UAS for `agent`, registered as its AOR at every node given."""
    uas = start_phone(scenario, **options)
    for kamailio in nodes if isinstance(nodes, list) else [nodes]:
        register(tmp_path, kamailio, agent, uas.local_port)
    return uas


def caller(
    tmp_path: Path,
    kamailio: KamailioProcess,
    number: str,
    *,
    who: str = "bob",
    calls: int = 1,
    rate: float = 20,
    limit: int | None = None,
    talk_ms: int = 100,
    timeout: float = 20,
) -> SippProcess:
    """A started SIPp UAC placing `calls` calls from `who` to `number` (uac_call.xml: each
    answered call talks `talk_ms`, then hangs up). Wait for it with .wait()."""
    uac = SippProcess(
        tmp_path,
        SCENARIOS / "uac_call.xml",
        kamailio.address,
        calls=calls,
        rate=rate,
        limit=limit or calls,
        duration_ms=talk_ms,
        service=number,
        keys={"caller": who},
        timeout=timeout,
    )
    uac.start()
    _callers.append(uac)
    return uac


def dial(tmp_path: Path, kamailio: KamailioProcess, number: str, **options: Any) -> SippResult:
    """Place the calls of `caller` and wait until they are done."""
    return caller(tmp_path, kamailio, number, **options).wait()


def events(client: redis.Redis, after: str = "-") -> list[dict[str, str]]:
    """The tenant's events after stream id `after` (exclusive), oldest first, each with "id"."""
    start = "-" if after == "-" else f"({after}"
    out = []
    for entry_id, fields in client.xrange(TenantKeys(TENANT).events, start, "+"):
        event = {k.decode(): v.decode() for k, v in fields.items()}
        event["id"] = entry_id.decode()
        out.append(event)
    return out


def mark(client: redis.Redis) -> str:
    """The id of the newest event so far: pass it to `events` for what comes after."""
    last = client.xrevrange(TenantKeys(TENANT).events, count=1)
    return last[0][0].decode() if last else "0-0"


def of(kind: str, stream: list[dict[str, str]], **match: str) -> list[dict[str, str]]:
    """The events of `kind` whose fields equal `match`."""
    return [e for e in stream if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]


def offers(stream: list[dict[str, str]], **match: str) -> list[dict[str, str]]:
    """The `offered` events (matching `match`) whose reservation was not withdrawn by a
    re-plan: a worker that claimed on a stale snapshot corrects itself in its next claim
    (event released, reason replanned) before anything is sent, so only these agents rang."""
    withdrawn = {(e["call"], e["agent"]) for e in of("released", stream, reason="replanned")}
    return [e for e in of("offered", stream, **match) if (e["call"], e["agent"]) not in withdrawn]


def live(client: redis.Redis, agent: str) -> int:
    return int(client.hget(TenantKeys(TENANT).agent["live"], agent) or 0)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def settled(client: redis.Redis, timeout: float = 3.0) -> dict[str, int]:
    """The state totals once the last release has landed (a BYE's 200 may come first)."""
    deadline = time.monotonic() + timeout
    while True:
        totals = check_invariants(client, TENANT)
        if all(totals[k] == 0 for k in ZERO) or time.monotonic() > deadline:
            return {k: totals[k] for k in ZERO}
        time.sleep(0.05)


def handled(uas: SippProcess) -> tuple[int, int]:
    """Stop a phone; (calls it completed, calls it failed)."""
    result = uas.stop()
    return result.stats.successful, result.stats.failed


def binomial_bounds(n: int, p: float, tail: float = TAIL) -> tuple[int, int]:
    """(lo, hi): P(X < lo) <= tail and P(X > hi) <= tail for X ~ Binomial(n, p). Exact sums."""
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    lo = 0
    while sum(pmf[: lo + 1]) <= tail:
        lo += 1
    hi = n
    while sum(pmf[hi:]) <= tail:
        hi -= 1
    return lo, hi


# -- 1. priority ----------------------------------------------------------------------------


def test_priority_rings_tier_one_together_then_tier_two_together(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    kamailio = node()
    phones = {
        "p1": phone(tmp_path, start_phone, kamailio, "p1", "uas_busy.xml"),
        "p2": phone(tmp_path, start_phone, kamailio, "p2", "uas_noanswer.xml"),
        "p3": phone(
            tmp_path, start_phone, kamailio, "p3", "uas_ring_then_answer.xml", duration_ms=300
        ),
        "p4": phone(tmp_path, start_phone, kamailio, "p4", "uas_noanswer.xml"),
    }

    result = dial(tmp_path, kamailio, "810")

    assert result.ok, result.errors or result.output
    # every phone got exactly one INVITE and played its part to the end: p1 486, p2 rang
    # until the 1 s tier timeout cancelled it, p3 answered, p4 was cancelled by that answer
    for agent, uas in phones.items():
        assert handled(uas) == (1, 0), agent
    assert settled(client) == ZERO
    stream = events(client)
    offered = offers(stream)
    assert [e["agent"] for e in offered] == ["p1", "p2", "p3", "p4"]
    # one claim per tier: a tier's agents ring together, the tiers one after the other
    assert offered[0]["ts"] == offered[1]["ts"] < offered[2]["ts"] == offered[3]["ts"]
    position = {e["id"]: i for i, e in enumerate(stream)}
    (busy,) = of("failed", stream, agent="p1", reason="busy")
    (timed_out,) = of("failed", stream, agent="p2", reason="noanswer")
    assert max(position[busy["id"]], position[timed_out["id"]]) < position[offered[2]["id"]]
    assert int(offered[2]["ts"]) - int(offered[0]["ts"]) >= 900  # tier 1 rang its 1 s
    assert [e["agent"] for e in of("answered", stream)] == ["p3"]
    assert not of("failed", stream, agent="p4")  # p3's answer released p4, not a miss


# -- 2. least busy --------------------------------------------------------------------------


def test_least_busy_offers_the_agent_with_fewest_live_calls(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    kamailio = node()
    phones = {
        a: phone(tmp_path, start_phone, kamailio, a, "uas_answer.xml") for a in ("l1", "l2", "l3")
    }
    # l1 holds 2 calls, l2 1, l3 none (through one-agent groups; busy counts across groups)
    holds = [
        caller(tmp_path, kamailio, "821", who="hold", calls=2, talk_ms=4000),
        caller(tmp_path, kamailio, "822", who="hold", calls=1, talk_ms=4000),
    ]
    wait_for(lambda: (live(client, "l1"), live(client, "l2")) == (2, 1), what="the held calls")
    before = mark(client)

    result = dial(tmp_path, kamailio, "820")

    assert result.ok, result.errors or result.output
    call = events(client, before)
    # l1 comes first in position order, so only the load can have chosen l3
    assert [e["agent"] for e in offers(call)] == ["l3"]
    assert [e["agent"] for e in of("answered", call)] == ["l3"]
    for hold in holds:
        held = hold.wait()
        assert held.ok, held.errors or held.output
    assert settled(client) == ZERO
    # each BYE released its agent's live call: l1's two, l2's one, l3's one
    hangups = Counter(e["agent"] for e in of("released", events(client), reason="hangup"))
    assert hangups == {"l1": 2, "l2": 1, "l3": 1}
    assert {a: handled(uas) for a, uas in phones.items()} == {
        "l1": (2, 0),
        "l2": (1, 0),
        "l3": (1, 0),
    }


# -- 3. distributions -------------------------------------------------------------------------


def _distribute(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    number: str,
    calls: int,
) -> tuple[Counter[str], list[dict[str, str]]]:
    """`calls` short calls to `number` from one SIPp (30 calls/s, at most 10 at once); every
    call must be answered. Returns the calls per agent and the event stream."""
    kamailio = node()
    phones = {
        a: phone(tmp_path, start_phone, kamailio, a, "uas_answer.xml") for a in ("d1", "d2", "d3")
    }

    result = dial(
        tmp_path, kamailio, number, calls=calls, rate=30, limit=10, talk_ms=50, timeout=30
    )

    assert result.ok, result.errors or result.output
    assert (result.stats.successful, result.stats.failed) == (calls, 0)
    assert settled(client) == ZERO
    stream = events(client)
    answered = Counter(e["agent"] for e in of("answered", stream))
    assert sum(answered.values()) == calls
    assert {a: handled(uas) for a, uas in phones.items()} == {a: (answered[a], 0) for a in phones}
    return answered, stream


# Two Kamailio workers give stale snapshots in most runs: a stale pick is withdrawn and
# the group's round-robin cursor goes back with it, so the rotation stays exact.
def test_round_robin_is_exactly_cyclic(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    calls = 30
    answered, stream = _distribute(node, start_phone, tmp_path, client, "830", calls)

    # every agent is always free (max_calls 20), so each turn goes to the next in position
    # order, whichever worker claims it and however the calls overlap
    assert all(abs(answered[a] - calls / 3) <= 1 for a in ("d1", "d2", "d3")), answered
    # and the claims that stood (not withdrawn by a re-plan) follow d1, d2, d3, d1, ...
    turns = [e["agent"] for e in offers(stream)]
    start = ["d1", "d2", "d3"].index(turns[0])
    assert turns == [("d1", "d2", "d3")[(start + i) % 3] for i in range(calls)]


def test_random_gives_every_agent_its_share(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    calls = 90
    answered, _ = _distribute(node, start_phone, tmp_path, client, "831", calls)

    # each agent's count is Binomial(90, 1/3) (mean 30): outside [lo, hi] with probability
    # < 2e-7 per agent, so a fair random strategy fails this with probability < 1e-6
    lo, hi = binomial_bounds(calls, 1 / 3)
    assert (lo, hi) == (9, 54)
    assert all(lo <= answered[a] <= hi for a in ("d1", "d2", "d3")), answered


def test_weighted_random_follows_the_weights(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    calls = 150
    answered, _ = _distribute(node, start_phone, tmp_path, client, "832", calls)

    # weights 1:2:3, so each count is Binomial(150, w/6) (means 25, 50, 75) and each of
    # the six bounds fails a correct dispatcher with probability <= 1e-7. They are loose,
    # so the order of the lightest and the heaviest is checked too: P(d3 <= d1) is 7.6e-8
    # for the multinomial (1/6, 1/3, 1/2) but about 1/2 for a strategy that ignores the
    # weights. All together a correct dispatcher fails with probability < 1e-6.
    weights = {"d1": 1, "d2": 2, "d3": 3}
    for agent, weight in weights.items():
        lo, hi = binomial_bounds(calls, weight / 6)
        assert lo <= answered[agent] <= hi, (agent, (lo, hi), answered)
    assert answered["d3"] > answered["d1"], answered


# -- 4. sticky ------------------------------------------------------------------------------


@pytest.mark.timeshift
def test_sticky_agent_first_today_strategy_tomorrow_and_when_busy(
    start_kamailio: StartKamailio,
    start_phone: StartPhone,
    tmp_path: Path,
    clock_redis: RedisProcess,
    gateway_port: int,
) -> None:
    # The sticky day follows Redis' TIME (dispatcher/state/sticky.py): "tomorrow" is Redis'
    # clock moved on, and a node whose own clock says tomorrow still sees today's memory.
    tenant_yaml = TENANT_YAML.format(gateway_port=gateway_port)
    tenant_yaml = tenant_yaml.replace("timezone: UTC", f"timezone: {zone_at_noon()}")
    with StateStore(clock_redis.url, TENANT) as store:
        import_tenant(store, parse_tenant(tenant_yaml, "yaml"))
    client = redis.Redis.from_url(clock_redis.url)
    today = start_kamailio(tenant=TENANT, redis_url=clock_redis.url)
    skewed = start_kamailio(
        tenant=TENANT,
        redis_url=clock_redis.url,
        env={"DISPATCHER_CLOCK_OFFSET_MS": str(13 * HOUR_MS)},  # its clock: "tomorrow 01:00"
    )
    nodes = [today, skewed]
    # registered at one node: the other finds them in Redis (shared registrations)
    s1 = phone(tmp_path, start_phone, today, "s1", "uas_answer.xml")
    s2 = phone(tmp_path, start_phone, today, "s2", "uas_answer.xml")

    def first_offer(kamailio: KamailioProcess, hold: str | None = None) -> list[tuple[str, str]]:
        """Carol calls the sticky group (while `hold`'s agent holds a call from someone
        else); the (agent, reason) of each offer of her call."""
        held = None
        if hold is not None:
            held = caller(tmp_path, today, hold, who="hold", talk_ms=1500)
            agent = {"841": "s1", "842": "s2"}[hold]
            wait_for(lambda: live(client, agent) == 1, what=f"{agent} holding a call")
        before = mark(client)
        result = dial(tmp_path, kamailio, "840", who="carol")
        assert result.ok, result.errors or result.output
        offered = offers(events(client, before), group="sticky")
        if held is not None:
            assert held.wait().ok
        assert settled(client) == ZERO
        return [(e["agent"], e.get("reason", "")) for e in offered]

    # s1, first in order, is busy: carol's first call goes to s2, who answers
    assert first_offer(today, hold="841") == [("s2", "")]
    # same day, s1 free: s2 is offered first (and only), as carol's agent of the day...
    assert first_offer(today) == [("s2", "sticky")]
    # ...also by the node whose clock is 13 h ahead: the day is Redis' day
    assert first_offer(skewed) == [("s2", "sticky")]
    # the next day by Redis' clock: the strategy again (s1 answers: carol's agent now)
    clock_redis.clock.shift(13 * 3600)
    assert first_offer(today) == [("s1", "")]
    # carol's agent of the day, s1, is busy: the strategy's pick, without waiting for s1
    assert first_offer(today, hold="841") == [("s2", "")]

    assert handled(s1) == (3, 0)  # both holds and the next day's call
    assert handled(s2) == (4, 0)  # carol's calls on the first day and the one while s1 held
    for kamailio in nodes:
        assert not kamailio.python_errors(), kamailio.python_errors()
    client.close()


# -- 5. shared agent, two nodes ---------------------------------------------------------------


def test_agent_busy_in_one_group_is_not_rung_from_another_node(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    first, second = node(), node()
    # registered at the first node only: the second rings them too (shared registrations)
    phones = {
        a: phone(tmp_path, start_phone, first, a, "uas_answer.xml") for a in ("x1", "x2", "x3")
    }
    # x1 (max 1 call) takes a call of group A through the first node
    hold = caller(tmp_path, first, "850", who="hold", talk_ms=1500)
    wait_for(lambda: live(client, "x1") == 1, what="x1 on a call")
    before = mark(client)

    result = dial(tmp_path, second, "851")  # group B through the second node

    assert result.ok, result.errors or result.output
    call = events(client, before)
    assert [e["agent"] for e in offers(call)] == ["x3"]  # x1 comes first in B, busy
    assert hold.wait().ok
    assert settled(client) == ZERO
    assert {a: handled(uas) for a, uas in phones.items()} == {
        "x1": (1, 0),
        "x2": (0, 0),
        "x3": (1, 0),
    }


def test_burst_through_two_nodes_never_exceeds_max_calls(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    redis_url: str,
) -> None:
    first, second = node(), node()
    # registered at the second node only: the first rings them too (shared registrations)
    phones = {
        a: phone(tmp_path, start_phone, second, a, "uas_answer.xml") for a in ("x1", "x2", "x3")
    }
    samples: list[dict[str, int]] = []
    failures: list[AssertionError] = []
    done = threading.Event()

    def sample() -> None:
        """check_invariants (live + resv <= max per agent, counters consistent) every 5 ms."""
        with redis.Redis.from_url(redis_url) as own:
            while not done.is_set():
                try:
                    samples.append(check_invariants(own, TENANT))
                except AssertionError as exc:
                    failures.append(exc)
                    return
                time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # 3 agents with one call each, ~9 calls wanting them at once: x1 (first in both groups)
    # is claimed from both nodes, the others from one each; the rest get the groups' 480
    burst = [
        caller(tmp_path, first, "850", calls=30, rate=30, limit=10, talk_ms=300),
        caller(tmp_path, second, "851", calls=30, rate=30, limit=10, talk_ms=300),
    ]
    results = [uac.wait() for uac in burst]
    done.set()
    sampler.join(5)

    assert not failures, failures[0]
    assert len(samples) > 50
    assert max(s["full"] for s in samples) >= 2  # agents were at their limit meanwhile
    answered = 0
    for result in results:
        assert result.stats.successful + result.stats.failed == 30
        assert result.stats.failed == 0 or "480 Temporarily Unavailable" in result.errors
        answered += result.stats.successful
    assert settled(client) == ZERO
    stream = events(client)
    assert len(of("answered", stream)) == answered > 0
    # both groups got calls through their own node; x1 (first in both) took calls too
    assert {e["group"] for e in of("answered", stream)} == {"ga", "gb"}
    assert of("answered", stream, agent="x1")
    assert sum(handled(uas)[0] for uas in phones.values()) == answered


# -- 6. no-answer targets -------------------------------------------------------------------


def test_no_answer_forwards_to_the_gateway_and_overflows_to_another_group(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    gateway_port: int,
) -> None:
    kamailio = node()
    gateway = start_phone("uas_answer.xml", local_port=gateway_port)
    f1 = phone(tmp_path, start_phone, kamailio, "f1", "uas_noanswer.xml")
    f2 = phone(tmp_path, start_phone, kamailio, "f2", "uas_noanswer.xml")
    f3 = phone(tmp_path, start_phone, kamailio, "f3", "uas_answer.xml")

    forwarded = dial(tmp_path, kamailio, "860")
    before = mark(client)
    overflowed = dial(tmp_path, kamailio, "861")

    assert forwarded.ok, forwarded.errors or forwarded.output
    assert overflowed.ok, overflowed.errors or overflowed.output
    assert handled(gateway) == (1, 0)  # answered the forwarded call, got its BYE
    assert handled(f1) == handled(f2) == (1, 0)  # rang 1 s, cancelled by the ring timeout
    assert handled(f3) == (1, 0)
    assert settled(client) == ZERO
    overflow_call = events(client, before)
    later = {e["id"] for e in overflow_call}
    forward_call = [e for e in events(client) if e["id"] not in later]
    assert [e["agent"] for e in offers(forward_call)] == ["f1"]
    assert of("failed", forward_call, agent="f1", reason="noanswer")
    assert not of("answered", forward_call)  # the gateway answered: no agent's call
    assert [(e["agent"], e["group"]) for e in offers(overflow_call)] == [
        ("f2", "ovf"),
        ("f3", "ovf-target"),
    ]
    assert of("failed", overflow_call, agent="f2", reason="noanswer")
    assert [(e["agent"], e["group"]) for e in of("answered", overflow_call)] == [
        ("f3", "ovf-target")
    ]


# -- 7. CANCEL crossing the answer ------------------------------------------------------------
#
# Both ends of this race are small Python UAs rather than SIPp: SIPp sends one message per
# scheduler tick, so a CANCEL that arrives between a SIPp phone's 180 and its 200 is
# "unexpected" - SIPp auto-answers it 200 and drops the call without the 487 (seen in the
# first version of this test), and a caller's 200 that arrives while SIPp is about to send
# its CANCEL, or the CANCEL's 200 between its ACK and BYE, aborts the caller the same way.
# Here the phone sends 180 and 200 back to back and the caller CANCELs the moment the 180
# arrives, so the CANCEL meets the 200 inside Kamailio (whose reply route is claiming the
# answer in Redis at that time).


def _sip_parts(message: str) -> tuple[str, list[tuple[str, str]], str]:
    """(start line, [(header name, value)] in order, body) of a SIP message."""
    head, _, body = message.partition("\r\n\r\n")
    first, *lines = head.split("\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return first, headers, body


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for n, v in headers if n.lower() == name.lower()), "")


def _sip(start: str, headers: list[tuple[str, str]], body: str = "") -> bytes:
    lines = [start, *(f"{n}: {v}" for n, v in headers), f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


_SDP = (
    "".join(
        f"{line}\r\n"
        for line in ("v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0")
    )
    + "m=audio 6000 RTP/AVP 0\r\n"
)


class RacePhone:
    """An agent's phone on a UDP port of its own: every INVITE gets 180, then 200 after
    `answer_delay()` seconds (0: back to back, no CANCEL can get in between). A CANCEL that
    comes first gets 200 and the INVITE 487; one that crossed the 200 gets 200 and changes
    nothing (RFC 3261 9.2). ACKs are taken, BYEs answered 200. Counts what happened."""

    def __init__(self, answer_delay: Callable[[], float]) -> None:
        self.answer_delay = answer_delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.counts: Counter[str] = Counter()
        self._calls: dict[str, dict[str, Any]] = {}
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        for timer in self._timers:
            timer.join(2)
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _reply(
        self,
        request: tuple[str, list[tuple[str, str]], str],
        code: int,
        reason: str,
        to_tag: str,
        peer: Any,
        body: str = "",
    ) -> None:
        _, headers, _ = request
        keep = ("via", "record-route", "from", "call-id", "cseq")
        out = [(n, v) for n, v in headers if n.lower() in keep]
        to = _header(headers, "To")
        out.insert(3, ("To", to if ";tag=" in to else f"{to};tag={to_tag}"))
        out.append(("Contact", f"<sip:127.0.0.1:{self.port}>"))
        if body:
            out.append(("Content-Type", "application/sdp"))
        self.sock.sendto(_sip(f"SIP/2.0 {code} {reason}", out, body), peer)

    def _answer(self, call_id: str) -> None:
        with self._lock:
            call = self._calls[call_id]
            if call["state"] != "ringing":
                return
            call["state"] = "answered"
            self._reply(call["invite"], 200, "OK", call["tag"], call["peer"], _SDP)
            self.counts["answered"] += 1

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            request = _sip_parts(data.decode())
            method = request[0].split(" ", 1)[0]
            call_id = _header(request[1], "Call-ID")
            with self._lock:
                call = self._calls.get(call_id)
                if method == "INVITE" and call is None:
                    tag = uuid.uuid4().hex[:10]
                    call = {"invite": request, "tag": tag, "peer": peer, "state": "ringing"}
                    self._calls[call_id] = call
                    self.counts["invites"] += 1
                    self._reply(request, 180, "Ringing", tag, peer)
                    delay = self.answer_delay()
                    if delay <= 0:
                        call["state"] = "answered"
                        self._reply(request, 200, "OK", tag, peer, _SDP)
                        self.counts["answered"] += 1
                    else:
                        timer = threading.Timer(delay, self._answer, (call_id,))
                        self._timers.append(timer)
                        timer.start()
                elif method == "CANCEL" and call is not None:
                    self._reply(request, 200, "OK", call["tag"], peer)
                    if call["state"] == "ringing":
                        call["state"] = "cancelled"
                        self._reply(call["invite"], 487, "Request Terminated", call["tag"], peer)
                        self.counts["cancelled"] += 1
                    else:
                        self.counts["cancel_after_answer"] += 1
                elif method == "BYE" and call is not None:
                    self._reply(request, 200, "OK", call["tag"], peer)
                    self.counts["byes"] += 1


def race_call(kamailio: KamailioProcess, number: str, timeout: float = 5.0) -> str:
    """One call from a caller who CANCELs as soon as it hears the 180; "answered" (the 200
    won: ACK, BYE, 200) or "cancelled" (487, ACK). Retransmits nothing: loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        port = sock.getsockname()[1]
        proxy = (kamailio.listen_addr, kamailio.sip_port)
        call_id, tag, branch = (uuid.uuid4().hex for _ in range(3))
        ruri = f"sip:{number}@{kamailio.address}"
        base = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:racer@127.0.0.1:{port}>;tag={tag}"),
            ("To", f"<{ruri}>"),
            ("Call-ID", call_id),
        ]
        contact = ("Contact", f"<sip:racer@127.0.0.1:{port}>")
        sock.sendto(
            _sip(
                f"INVITE {ruri} SIP/2.0",
                [*base, ("CSeq", "1 INVITE"), contact, ("Content-Type", "application/sdp")],
                _SDP,
            ),
            proxy,
        )
        cancelled = answered = False
        while True:
            start, headers, _ = _sip_parts(sock.recv(65535).decode())
            code, cseq = int(start.split(" ")[1]), _header(headers, "CSeq")
            if code == 180 and not cancelled:
                sock.sendto(_sip(f"CANCEL {ruri} SIP/2.0", [*base, ("CSeq", "1 CANCEL")]), proxy)
                cancelled = True
            elif code == 200 and cseq.endswith("INVITE") and not answered:
                answered = True
                remote = _header(headers, "Contact").strip("<>")
                dialog = [
                    ("Route", _header(headers, "Record-Route")),
                    ("Max-Forwards", "70"),
                    base[2],
                    ("To", _header(headers, "To")),
                    ("Call-ID", call_id),
                ]
                for method, seq in (("ACK", 1), ("BYE", 2)):
                    via = ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}")
                    sock.sendto(
                        _sip(
                            f"{method} {remote} SIP/2.0",
                            [via, *dialog, ("CSeq", f"{seq} {method}")],
                        ),
                        proxy,
                    )
            elif code == 200 and cseq.endswith("BYE"):
                return "answered"
            elif code == 487:
                ack = [*base[:3], ("To", _header(headers, "To")), base[4], ("CSeq", "1 ACK")]
                sock.sendto(_sip(f"ACK {ruri} SIP/2.0", ack), proxy)
                return "cancelled"
            elif code >= 300:
                raise AssertionError(f"race call {call_id}: unexpected {start}")


@pytest.mark.parametrize(
    ("answer_ms", "expected"),
    [
        pytest.param(0, {"answered"}, id="200-right-after-180"),
        # 0-4 ms: about the time the CANCEL takes from the 180 to the phone, so some calls
        # are answered and some cancelled (the mix varies; every call must end cleanly)
        pytest.param(1, {"answered", "cancelled"}, id="200-0-to-1-ms-after-180"),
    ],
)
def test_cancel_crossing_the_answer_leaves_nothing_behind(
    node: Callable[..., KamailioProcess],
    tmp_path: Path,
    client: redis.Redis,
    answer_ms: int,
    expected: set[str],
) -> None:
    kamailio = node()
    rng = random.Random()
    phone_ = RacePhone(lambda: rng.uniform(0, answer_ms / 1000) if answer_ms else 0.0)
    try:
        register(tmp_path, kamailio, "c1", phone_.port)
        outcomes = Counter(race_call(kamailio, "870") for _ in range(20))
        wait_for(lambda: phone_.counts["byes"] == outcomes["answered"], what="the BYEs")
    finally:
        phone_.close()

    assert set(outcomes) <= expected, outcomes
    assert settled(client) == ZERO
    stream = events(client)
    answered = {e["call"] for e in of("answered", stream, agent="c1")}
    cancelled = {e["call"] for e in of("failed", stream, agent="c1", reason="cancelled")}
    # each call ended one way or the other, never both, never neither, as the caller saw it
    assert not answered & cancelled
    assert (len(answered), len(cancelled)) == (outcomes["answered"], outcomes["cancelled"])
    assert {e["call"] for e in of("released", stream, agent="c1", reason="hangup")} == answered
    wait_for(
        lambda: "dialog:active_dialogs = 0" in kamailio.rpc("stats.get_statistics", "dialog:"),
        what="no dialog left",
    )
    print(f"cancel race ({answer_ms} ms): {dict(outcomes)}; phone: {dict(phone_.counts)}")


# -- 8. dialog timeout ------------------------------------------------------------------------


def test_dialog_timeout_releases_a_call_nobody_hangs_up(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    kamailio = node(extra_defines={"DLG_TIMEOUT": 2})
    t1 = phone(tmp_path, start_phone, kamailio, "t1", "uas_answer.xml")
    gone = caller(tmp_path, kamailio, "880", talk_ms=600_000, timeout=700)
    wait_for(lambda: live(client, "t1") == 1, what="t1 on the call")
    answered_at = time.monotonic()
    # let the caller's ACK confirm the dialog (killed before it, the caller would leave an
    # unacknowledged dialog, which times out the same way)
    time.sleep(0.3)

    # the caller vanishes without a BYE
    assert gone.proc is not None
    gone.proc.kill()
    gone.proc.wait()
    # the dialog timer ticks in whole seconds, so a 2 s timeout fires after 1 to 3 s; under
    # a loaded machine it was seen firing late, hence the generous upper bound
    wait_for(lambda: live(client, "t1") == 0, timeout=20, what="the dialog timeout")

    assert 1.0 < time.monotonic() - answered_at < 20
    assert settled(client) == ZERO
    assert of("released", events(client), agent="t1", reason="hangup")
    # the dialog module ends both legs with a BYE (send_bye); the phone's scenario may or
    # may not have consumed it by now, so it is stopped either way
    assert t1.proc is not None
    with contextlib.suppress(ProcessLookupError):
        t1.proc.send_signal(signal.SIGKILL)
    t1.proc.wait()


def test_a_killed_node_leaves_no_agent_busy(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    """A call answered through node 1; every process of node 1 is killed (kill -9): its
    heartbeat lapses and node 2 releases the call (outcome lost, no wrap-up) within 10 s,
    so the agent takes the next call at once - through node 2."""
    first, second = node(), node()
    phone(tmp_path, start_phone, first, "l1", "uas_answer.xml")  # shared registrations
    held = caller(tmp_path, first, "821", talk_ms=60_000, timeout=90)
    wait_for(lambda: live(client, "l1") == 1, what="l1 answered through node 1")
    before = mark(client)
    killed = time.monotonic()
    assert first.proc is not None
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    wait_for(lambda: live(client, "l1") == 0, timeout=12, what="node 2 releasing the lost call")
    assert time.monotonic() - killed < 10
    (ended,) = of("ended", events(client, before))
    assert ended["outcome"] == "lost"
    assert int(client.hget(TenantKeys(TENANT).agent["wrapuntil"], "l1") or 0) <= int(
        client.time()[0] * 1000
    )
    again = caller(tmp_path, second, "821", talk_ms=100)
    assert again.wait().ok
    held.proc.kill()  # type: ignore[union-attr]


def test_a_node_that_restarts_releases_the_calls_it_held_before(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    """The only node is killed with a call up and started again (same node id): its dialogs
    died with it, so it releases what Redis says it held, at once - no other node needed."""
    only = node()
    phone(tmp_path, start_phone, only, "l2", "uas_answer.xml")
    held = caller(tmp_path, only, "822", talk_ms=60_000, timeout=90)
    wait_for(lambda: live(client, "l2") == 1, what="l2 answered")
    time.sleep(2.5)  # a restarted node releases what it answered > 2 s before its start
    before = mark(client)
    assert only.proc is not None
    os.killpg(only.proc.pid, signal.SIGKILL)
    only.proc.wait()
    held.proc.kill()  # type: ignore[union-attr]
    only.start()
    wait_for(lambda: live(client, "l2") == 0, timeout=8, what="the restarted node's release")
    (ended,) = of("ended", events(client, before))
    assert ended["outcome"] == "lost"
