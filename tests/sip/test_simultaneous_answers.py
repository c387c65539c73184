"""Phones that answer a ring-all call at the same instant (issue 12 section 2).

Kamailio relays every 2xx of the forked INVITE (RFC 3261 16.7), so the caller gets one
dialog per answering phone. What Redis counts must follow those dialogs: each answering
agent is counted while its dialog lasts; an extra dialog the caller ends at once (ACK +
BYE, as a correct phone does) releases that agent only, never the agent of the dialog kept;
a caller that keeps several leaves nobody counted once they end, whichever order it ends
them in. The phones are SIPp UAS that answer the moment the INVITE arrives (no 180): the
three 2xx leave within the same millisecond. The caller is `ForkedCaller` (SIPp keeps one
dialog per call). After each step the agents' counters, the live hash, the node map and
the event stream are checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from forked_caller import Dialog, ForkedCaller
from state_support import check_invariants, imported_tenant
from test_group_strategies import events, mark, of, wait_for
from test_kamailio import register

from dispatcher.run.baresip import BaresipPhone
from dispatcher.run.sipprocs import KamailioProcess, SippProcess
from dispatcher.state import TenantKeys
from dispatcher.state.keys import FIELD_SEPARATOR

pytestmark = [pytest.mark.sip, pytest.mark.redis]

TENANT = "strategies"  # test_group_strategies' helpers read this tenant's stream
KEYS = TenantKeys(TENANT)
AGENTS = ("a1", "a2", "a3")
TENANT_YAML = """
id: strategies
name: Simultaneous answers
agents:
  - {id: a1, name: A1, targets: {aor: a1}, state: available}
  - {id: a2, name: A2, targets: {aor: a2}, state: available}
  - {id: a3, name: A3, targets: {aor: a3}, state: available}
groups:
  - {id: all, extension: "700", name: Ring all, strategy: ring_all, sticky: false,
     ring_timeout: 5, members: [{agent: a1}, {agent: a2}, {agent: a3}]}
"""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with imported_tenant(redis_url, TENANT_YAML) as plain:
        yield plain


@pytest.fixture
def kamailio(
    start_kamailio: Callable[..., KamailioProcess], redis_url: str, client: redis.Redis
) -> Iterator[KamailioProcess]:
    node = start_kamailio(tenant=TENANT, redis_url=redis_url, children=4)
    yield node
    assert not node.python_errors(), node.python_errors()


@pytest.fixture
def phones(
    kamailio: KamailioProcess, start_phone: Callable[..., SippProcess], tmp_path: Path
) -> dict[str, SippProcess]:
    """One auto-answering SIPp phone per agent, registered."""
    out = {}
    for agent in AGENTS:
        out[agent] = start_phone("uas_answer_at_once.xml")
        register(tmp_path, kamailio, agent, out[agent].local_port)
    return out


def agent_of(phones: dict[str, SippProcess], dialog: Dialog) -> str:
    """The agent whose phone made `dialog`: SIPp's To tag starts with its pid."""
    for agent, uas in phones.items():
        assert uas.proc is not None
        if dialog.tag.startswith(f"{uas.proc.pid}SIPpTag"):
            return agent
    raise AssertionError(f"no phone made dialog {dialog.tag}")


def counted(client: redis.Redis, call_id: str) -> dict[str, Any]:
    """What Redis counts for the call: agents with a live call, the call's live entries,
    the node holding it; the invariants checked on the same state."""
    check_invariants(client, TENANT)
    live = {k.decode(): int(v) for k, v in client.hgetall(KEYS.agent["live"]).items()}
    entries = sorted(
        f.decode().rpartition(FIELD_SEPARATOR)[2]
        for f in client.hkeys(KEYS.live)
        if f.decode().startswith(call_id + FIELD_SEPARATOR)
    )
    return {
        "agents": sorted(a for a, n in live.items() if n),
        "entries": entries,
        "node": bool(client.hexists(KEYS.lnode, call_id)),
    }


def expect(client: redis.Redis, call_id: str, agents: list[str], what: str) -> None:
    """Wait until exactly `agents` are counted on the call (the releases are deferred)."""
    want = {"agents": sorted(agents), "entries": sorted(agents), "node": bool(agents)}
    wait_for(lambda: counted(client, call_id) == want, timeout=3, what=what)


def tracked_tag(kamailio: KamailioProcess, call_id: str) -> str:
    """The callee tag of the dialog Kamailio's dialog module tracks for the call."""
    for dialog in kamailio.rpc("dlg.list") or []:
        if dialog.get("call-id") == call_id:
            return str(dialog["callee"]["tag"])
    raise AssertionError(f"the dialog module has no dialog for {call_id}")


def answered_at_once(caller: ForkedCaller, phones: dict[str, SippProcess]) -> list[Dialog]:
    caller.invite()
    dialogs = caller.wait_answers(len(AGENTS))
    assert caller.final == 200
    assert sorted(agent_of(phones, d) for d in dialogs) == sorted(AGENTS), "three 2xx"
    return dialogs


def test_a_correct_caller_ending_the_extra_dialogs_leaves_the_kept_agent_counted(
    kamailio: KamailioProcess, phones: dict[str, SippProcess], client: redis.Redis
) -> None:
    with ForkedCaller(kamailio, "700") as caller:
        kept, *extra = answered_at_once(caller, phones)
        for dialog in extra:  # ACKed on arrival; ended at once
            caller.bye(dialog)
        keeper = agent_of(phones, kept)
        expect(client, caller.call_id, [keeper], "the extra dialogs' agents released")
        stream = events(client)
        answered = of("answered", stream, call=caller.call_id)
        assert sorted(e["agent"] for e in answered) == sorted(AGENTS)
        # the 2xx left the phones within the same moment (Redis' ms of each answer)
        stamps = [int(e["ts"]) for e in answered]
        assert max(stamps) - min(stamps) < 200, stamps
        hangups = of("released", stream, call=caller.call_id, reason="hangup")
        assert sorted(e["agent"] for e in hangups) == sorted(agent_of(phones, d) for d in extra)
        assert not of("ended", stream, call=caller.call_id)
        assert caller.call_id in kamailio.rpc("dlg.list").__repr__()  # the call goes on

        caller.bye(kept)
        expect(client, caller.call_id, [], "the call released")
    (ended,) = of("ended", events(client), call=caller.call_id)
    assert ended["outcome"] == "answered"
    assert [e["agent"] for e in of("released", events(client), reason="hangup")][-1] == keeper


@pytest.mark.parametrize("order", ["extras_first", "tracked_first"])
def test_a_caller_keeping_every_dialog_has_them_all_counted_until_each_ends(
    kamailio: KamailioProcess, phones: dict[str, SippProcess], client: redis.Redis, order: str
) -> None:
    with ForkedCaller(kamailio, "700") as caller:
        dialogs = answered_at_once(caller, phones)
        # all three dialogs last: all three agents are on the call
        expect(client, caller.call_id, list(AGENTS), "every answering agent counted")
        tracked = tracked_tag(kamailio, caller.call_id)
        dialogs.sort(key=lambda d: (d.tag == tracked) == (order == "extras_first"))
        left = [agent_of(phones, d) for d in dialogs]
        for dialog in dialogs:
            caller.bye(dialog)
            left.remove(agent_of(phones, dialog))
            expect(client, caller.call_id, left, f"{left} counted after a BYE ({order})")
            if left:
                assert not of("ended", events(client), call=caller.call_id)
    (ended,) = of("ended", events(client), call=caller.call_id)
    assert ended["outcome"] == "answered"
    released = of("released", events(client), call=caller.call_id, reason="hangup")
    assert sorted(e["agent"] for e in released) == sorted(AGENTS)
    wait_for(
        lambda: "dialog:active_dialogs = 0" in kamailio.rpc("stats.get_statistics", "dialog:"),
        what="no dialog left",
    )


def test_real_phones_answering_at_once_leave_nobody_counted_after_the_call(
    kamailio: KamailioProcess, tmp_path: Path, client: redis.Redis
) -> None:
    """baresip everywhere: three agents' phones on auto-answer and a caller's phone.

    What baresip 1.0 does as the caller (the run that found issue 12): it takes the first
    2xx and never ACKs the others, so the phones that sent them stay off-hook, sending their
    audio (the caller hears all three), retransmitting their 200 for 64*T1 = 32 s and then
    hanging up with a BYE (RFC 3261 13.3.1.4). Each agent is counted exactly that long:
    the kept one until the caller hangs up, the others until their phones give up - and
    nobody after."""
    agents = {a: BaresipPhone(tmp_path / a, a, kamailio.address) for a in AGENTS}
    caller = BaresipPhone(tmp_path / "caller", "bob", kamailio.address, auto_answer=False)
    try:
        for phone_ in [*agents.values(), caller]:
            phone_.start()
        before = mark(client)
        caller.dial(f"sip:700@{kamailio.address}")
        caller.wait_event("CALL_ESTABLISHED")
        wait_for(lambda: len(of("answered", events(client, before))) == 3, what="3 answers")
        (call_id,) = {e["call"] for e in of("answered", events(client, before))}
        # the kept phone reports its ACK a moment after the caller reports the call up
        wait_for(lambda: any(map(_established, agents.values())), what="the ACKed phone")
        (kept,) = [a for a, p in agents.items() if _established(p)]
        expect(client, call_id, list(AGENTS), "every phone that answered counted")
        time.sleep(1.0)
        assert [a for a, p in agents.items() if _established(p)] == [kept]  # no ACK for others
        assert counted(client, call_id)["agents"] == list(AGENTS)

        caller.command("hangup")  # a BYE on the one dialog it has
        others = sorted(set(AGENTS) - {kept})
        expect(client, call_id, others, "the kept agent released, the others still off-hook")
        for agent in others:  # 32 s after their 200, without an ACK, they hang up
            agents[agent].wait_event("CALL_CLOSED", timeout=40)
        expect(client, call_id, [], "nobody counted once every dialog ended")
    finally:
        for phone_ in [caller, *agents.values()]:
            phone_.stop()
    (ended,) = of("ended", events(client), call=call_id)
    assert ended["outcome"] == "answered"


def _established(phone_: BaresipPhone) -> bool:
    return any(e["type"] == "CALL_ESTABLISHED" for e in phone_.events)
