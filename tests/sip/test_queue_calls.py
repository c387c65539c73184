"""Queued callers and voicemail end to end: Kamailio + the KEMI router + real Redis + real
RTPengine; the agents' phones are SIPp UAS, the callers SIPp UAC whose RTP goes to a sink
that counts what the queue plays to them. Voicemail callers are raw SIP with a real RTP
stream: Kamailio answers them, RTPengine plays the greeting and the tone and records; the
message's WAV and metadata land where the admin API finds them."""

from __future__ import annotations

import io
import re
import socket
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rawsip import SipPeer, body_of, invite, status_of
from rtp import RtpHub, sdp_audio_address, sdp_offer, tone_frame
from test_group_strategies import (
    ZERO,
    handled,
    live,
    mark,
    of,
    phone,
    settled,
    wait_for,
)
from test_group_strategies import events as all_events

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.rtpengine import RtpengineProcess
from dispatcher.run.sipprocs import KamailioProcess, SippProcess
from dispatcher.state import StateStore, TenantKeys
from dispatcher.state.messages import Voicemail

pytestmark = [pytest.mark.sip, pytest.mark.redis]

SCENARIOS = Path(__file__).parent / "scenarios"
TENANT = "strategies"  # test_group_strategies' helpers read this tenant
KEYS = TenantKeys(TENANT)
TENANT_YAML = """
id: strategies
name: Queue tests
agents:
  - {id: q1, name: Q1, targets: {aor: q1}, state: available}
  - {id: q2, name: Q2, targets: {aor: q2}, state: logged_out}
groups:
  - id: queue
    extension: "900"
    name: Queued
    strategy: sequential
    sticky: false
    ring_timeout: 5
    members: [{agent: q1}]
    queue: {max_length: 3, max_wait: 30, announce_interval: 10, language: en,
            priority_callers: [{prefix: "+4930", priority: 5}],
            overflow: {full: {kind: reply, code: 486}, timeout: {kind: reply, code: 408}}}
  - id: short
    extension: "902"
    name: Short wait
    strategy: sequential
    sticky: false
    ring_timeout: 5
    members: [{agent: q1}]
    queue: {max_wait: 12, greeting: none, announce_interval: 10, language: de,
            overflow: {timeout: {kind: reply, code: 408, reason: Waited Too Long}}}
  - id: nobody
    extension: "903"
    name: Nobody logged in
    strategy: sequential
    members: [{agent: q2}]
    queue: {}
  - id: vmbox
    extension: "904"
    name: Voicemail only
    strategy: sequential
    members: [{agent: q2}]
    voicemail: {greeting: none}
    no_answer: {kind: voicemail}
  - id: vmshort
    extension: "905"
    name: Short messages
    strategy: sequential
    members: [{agent: q2}]
    voicemail: {max_length: 5}
    no_answer: {kind: voicemail}
  - id: hold
    extension: "901"
    name: Hold line
    strategy: sequential
    sticky: false
    members: [{agent: q1}]
"""


@pytest.fixture
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtpengineProcess]:
    server = RtpengineProcess(tmp_path_factory.mktemp("rtpe"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
    with redis.Redis.from_url(redis_url) as plain:
        yield plain


@pytest.fixture
def node(
    start_kamailio: Callable[..., KamailioProcess],
    redis_url: str,
    client: redis.Redis,
    rtpengine: RtpengineProcess,
    prompts_dir: Path,
) -> Iterator[Callable[..., KamailioProcess]]:
    nodes: list[KamailioProcess] = []

    def start(**options: Any) -> KamailioProcess:
        options.setdefault("rtpengine_ng", ("127.0.0.1", rtpengine.ng_port))
        # the raw voicemail callers' 127.x.y.z addresses as trunks (test_auth.py tests auth)
        options.setdefault("env", {"DISPATCHER_TRUSTED": "127.0.0.0/8"})
        kamailio = start_kamailio(
            tenant=TENANT,
            redis_url=redis_url,
            prompts_dir=prompts_dir,
            rtpengine_spool=rtpengine.spool_dir,
            **options,
        )
        nodes.append(kamailio)
        return kamailio

    yield start
    for kamailio in nodes:
        assert not kamailio.python_errors(), kamailio.python_errors()


@pytest.fixture
def hub() -> Iterator[RtpHub]:
    with RtpHub() as rtp:
        yield rtp


def queued_caller(
    tmp_path: Path,
    kamailio: KamailioProcess,
    rtp_port: int,
    scenario: str = "uac_queue.xml",
    who: str = "carol",
    talk_ms: int = 300,
) -> SippProcess:
    uac = SippProcess(
        tmp_path,
        SCENARIOS / scenario,
        kamailio.address,
        calls=1,
        duration_ms=talk_ms,
        service="900",
        keys={"caller": who, "rtp_port": rtp_port},
        timeout=60,
    )
    uac.start()
    return uac


def holding(tmp_path: Path, kamailio: KamailioProcess, talk_ms: int) -> SippProcess:
    """A call that keeps q1 busy for `talk_ms` (through the hold group)."""
    uac = SippProcess(
        tmp_path,
        SCENARIOS / "uac_call.xml",
        kamailio.address,
        calls=1,
        duration_ms=talk_ms,
        service="901",
        keys={"caller": "hold"},
        timeout=30,
    )
    uac.start()
    return uac


def test_a_caller_waits_hears_the_queue_and_reaches_the_agent_who_frees(
    node: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
    hub: RtpHub,
) -> None:
    kamailio = node()
    q1 = phone(tmp_path, start_phone, kamailio, "q1", "uas_answer.xml")
    hold = holding(tmp_path, kamailio, talk_ms=4000)
    wait_for(lambda: live(client, "q1") == 1, what="q1 on the hold call")
    before = mark(client)
    ear = hub.endpoint()
    carol = queued_caller(tmp_path, kamailio, ear.port)
    wait_for(lambda: ear.total().packets > 25, timeout=5, what="queue audio at the caller")
    assert hold.wait().ok  # the hold call ends: q1 is free and carol's node serves her
    result = carol.wait()
    assert result.ok, result.errors or result.output
    stream = all_events(client, before)
    (queued,) = of("queued", stream)
    assert (queued["group"], queued["position"]) == ("queue", "1")
    (left,) = of("dequeued", stream)
    assert left["reason"] == "answered" and int(left["wait_ms"]) > 2000
    assert ear.total().lost <= 1
    assert settled(client) == ZERO
    assert client.hlen(KEYS.queue["qe"]) == 0
    assert handled(q1) == (2, 0)


def refused_scenario(tmp_path: Path, code: int) -> Path:
    """uac_expect_404.xml made to expect `code`, with an SDP offer and an optional 183 (a
    caller that waited before the reply)."""
    text = (SCENARIOS / "uac_expect_404.xml").read_text()
    text = text.replace(
        '<recv response="404"/>',
        f'<recv response="183" optional="true"/>\n\n  <recv response="{code}" timeout="30000"/>',
    )
    text = text.replace("[branch-3]", "[branch-4]")
    text = text.replace(
        '      Content-Length: 0\n\n    ]]>\n  </send>\n\n  <recv response="100"',
        "      Content-Type: application/sdp\n      Content-Length: [len]\n\n"
        "      v=0\n      o=- 1 1 IN IP4 127.0.0.1\n      s=-\n      c=IN IP4 127.0.0.1\n"
        "      t=0 0\n      m=audio [rtp_port] RTP/AVP 0\n      a=rtpmap:0 PCMU/8000\n\n"
        '    ]]>\n  </send>\n\n  <recv response="100"',
        1,
    )
    path = tmp_path / f"uac_expect_{code}.xml"
    path.write_text(text)
    return path


def queue_keys_empty(client: redis.Redis) -> bool:
    return all(client.exists(KEYS.queue[name]) == 0 for name in ("q", "qe", "qlease", "qn"))


def test_callers_are_served_by_priority_then_arrival_and_a_full_queue_overflows(
    node: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
    hub: RtpHub,
) -> None:
    kamailio = node()
    q1 = phone(tmp_path, start_phone, kamailio, "q1", "uas_answer.xml")
    hold = holding(tmp_path, kamailio, talk_ms=5000)
    wait_for(lambda: live(client, "q1") == 1, what="q1 on the hold call")
    before = mark(client)
    callers = []
    for n, who in enumerate(("+4989001", "+4989002", "+4930999"), 1):  # the last: priority 5
        callers.append(queued_caller(tmp_path, kamailio, hub.endpoint().port, who=who))
        wait_for(
            lambda n=n: len(of("queued", all_events(client, before))) == n, what=f"{who} queued"
        )
    full = SippProcess(
        tmp_path,
        refused_scenario(tmp_path, 486),
        kamailio.address,
        calls=1,
        service="900",
        keys={"caller": "+4989004", "rtp_port": hub.endpoint().port},
        timeout=15,
    )
    full.start()
    assert full.wait().ok  # the queue holds 3: the fourth caller gets its overflow, 486
    assert hold.wait().ok
    for uac in callers:
        result = uac.wait()
        assert result.ok, result.errors or result.output
    stream = all_events(client, before)
    positions = [(e["caller"], e["position"]) for e in of("queued", stream)]
    assert positions == [("+4989001", "1"), ("+4989002", "2"), ("+4930999", "1")]
    served = [e["caller"] for e in of("dequeued", stream, reason="answered")]
    assert served == ["+4930999", "+4989001", "+4989002"]
    assert settled(client) == ZERO and queue_keys_empty(client)
    assert handled(q1) == (4, 0)


def test_a_caller_who_hangs_up_while_waiting_leaves_nothing_behind(
    node: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
    hub: RtpHub,
    rtpengine: RtpengineProcess,
) -> None:
    kamailio = node()
    phone(tmp_path, start_phone, kamailio, "q1", "uas_answer.xml")
    hold = holding(tmp_path, kamailio, talk_ms=4000)
    wait_for(lambda: live(client, "q1") == 1, what="q1 on the hold call")
    before = mark(client)
    ear = hub.endpoint()
    gone = queued_caller(tmp_path, kamailio, ear.port, "uac_queue_cancel.xml", talk_ms=1500)
    result = gone.wait()
    assert result.ok, result.errors or result.output  # 183, CANCEL, 200, 487, ACK
    assert ear.total().packets > 25
    stream = all_events(client, before)
    (left,) = of("dequeued", stream)
    assert left["reason"] == "abandoned" and int(left["wait_ms"]) >= 1000
    (ended,) = [e for e in of("ended", stream) if e["call"] == left["call"]]
    assert ended["outcome"] == "abandoned"
    assert queue_keys_empty(client)
    # nor in RTPengine: the music stops with the caller (the dialog event's own message
    # would name a from-tag RTPengine does not know)
    with rtpengine.client() as ng:
        wait_for(lambda: ng.list_calls() == [], timeout=3, what="RTPengine's call deleted")
    assert hold.wait().ok
    assert settled(client) == ZERO


def test_the_wait_is_announced_and_a_caller_past_max_wait_overflows(
    node: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
    hub: RtpHub,
) -> None:
    kamailio = node()
    phone(tmp_path, start_phone, kamailio, "q1", "uas_answer.xml")
    hold = holding(tmp_path, kamailio, talk_ms=16000)
    wait_for(lambda: live(client, "q1") == 1, what="q1 on the hold call")
    before = mark(client)
    ear = hub.endpoint()
    waiter = SippProcess(
        tmp_path,
        refused_scenario(tmp_path, 408),
        kamailio.address,
        calls=1,
        service="902",
        keys={"caller": "+4989005", "rtp_port": ear.port},
        timeout=30,
    )
    started = time.monotonic()
    waiter.start()
    assert waiter.wait().ok  # 183, music, the announcement at 10 s, then 408 at 12 s
    assert 11 < time.monotonic() - started < 16
    stream = all_events(client, before)
    (announced,) = of("announced", stream)
    assert announced["position"] == "1" and int(announced["wait_s"]) > 0
    (left,) = of("dequeued", stream)
    assert left["reason"] == "timeout"
    assert ear.total().packets > 400  # music and the announcement, 20 ms packets
    assert queue_keys_empty(client)
    assert hold.wait().ok


def test_a_group_nobody_is_logged_in_to_overflows_at_once(
    node: Callable[..., KamailioProcess], tmp_path: Path, client: redis.Redis, hub: RtpHub
) -> None:
    kamailio = node()
    refused = SippProcess(
        tmp_path,
        refused_scenario(tmp_path, 480),
        kamailio.address,
        calls=1,
        service="903",
        keys={"caller": "+4989006", "rtp_port": hub.endpoint().port},
        timeout=15,
    )
    refused.start()
    assert refused.wait().ok  # the group's no_answer: 480, no 183
    assert queue_keys_empty(client)


def test_a_caller_held_on_one_node_is_served_by_an_agent_freed_on_another(
    node: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
    hub: RtpHub,
) -> None:
    holder, other = node(), node()
    # q1's phone registers at the holder only: the other node rings it too (shared
    # registrations)
    q1 = phone(tmp_path, start_phone, holder, "q1", "uas_answer.xml")
    hold = holding(tmp_path, other, talk_ms=3000)  # q1 talks through the other node
    wait_for(lambda: live(client, "q1") == 1, what="q1 on the hold call")
    before = mark(client)
    carol = queued_caller(tmp_path, holder, hub.endpoint().port)
    wait_for(lambda: of("queued", all_events(client, before)), what="carol queued")
    assert hold.wait().ok
    assert carol.wait().ok
    stream = all_events(client, before)
    hung_up = of("released", stream, reason="hangup", agent="q1")[0]  # the hold call's end
    (offer,) = [e for e in of("offered", stream) if e["call"] != hung_up["call"]]
    # Redis' TIME stamps both: the release on one node to the claim on the other.
    assert int(offer["ts"]) - int(hung_up["ts"]) <= 300
    assert settled(client) == ZERO and queue_keys_empty(client)
    assert handled(q1) == (2, 0)


def test_without_rtpengine_a_caller_overflows_at_once_and_nothing_stays(
    start_kamailio: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    redis_url: str,
    prompts_dir: Path,
    tmp_path: Path,
    client: redis.Redis,
    hub: RtpHub,
) -> None:
    from dispatcher.run.procs import free_port

    kamailio = start_kamailio(
        tenant=TENANT,
        redis_url=redis_url,
        rtpengine_ng=("127.0.0.1", free_port(socket.SOCK_DGRAM)),  # nobody listens there
        prompts_dir=prompts_dir,
    )
    phone(tmp_path, start_phone, kamailio, "q1", "uas_answer.xml")
    hold = holding(tmp_path, kamailio, talk_ms=3000)
    wait_for(lambda: live(client, "q1") == 1, what="q1 on the hold call")
    for n in range(2):
        refused = SippProcess(
            tmp_path,
            refused_scenario(tmp_path, 486),
            kamailio.address,
            calls=1,
            service="900",
            keys={"caller": f"+498900{n}", "rtp_port": hub.endpoint().port},
            timeout=15,
        )
        started = time.monotonic()
        refused.start()
        assert refused.wait().ok  # the overflow for a full queue, without audio
        assert time.monotonic() - started < 3
        assert queue_keys_empty(client)
    assert hold.wait().ok
    assert settled(client) == ZERO
    outage = [line for line in kamailio.log_text().splitlines() if "no queue audio" in line]
    assert len(outage) == 1, outage  # logged once per outage, not per call


def test_rtpengine_dying_sends_its_held_callers_on_and_leaves_nothing(
    node: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
    hub: RtpHub,
    rtpengine: RtpengineProcess,
) -> None:
    """kill -9 RTPengine while a caller waits: the keeper's ping finds it gone and the caller
    gets the overflow for a full queue (486 here) within about two seconds, not silence
    until an agent frees; the queue in Redis is empty, the outage logged once."""
    kamailio = node()
    phone(tmp_path, start_phone, kamailio, "q1", "uas_answer.xml")
    hold = holding(tmp_path, kamailio, talk_ms=8000)
    wait_for(lambda: live(client, "q1") == 1, what="q1 on the hold call")
    ear = hub.endpoint()
    caller = SippProcess(
        tmp_path,
        refused_scenario(tmp_path, 486),
        kamailio.address,
        calls=1,
        service="900",
        keys={"caller": "+4989001", "rtp_port": ear.port},
        timeout=20,
    )
    caller.start()
    wait_for(lambda: ear.total().packets > 10, timeout=5, what="queue audio at the caller")
    killed = time.monotonic()
    rtpengine.kill()
    result = caller.wait()
    assert result.ok, result.errors or result.output
    assert time.monotonic() - killed < 3.5
    assert queue_keys_empty(client)
    assert hold.wait().ok
    assert settled(client) == ZERO
    outage = [line for line in kamailio.log_text().splitlines() if "no queue audio" in line]
    assert len(outage) == 1, outage


def test_a_phone_that_registers_is_recorded_and_serves_the_waiting_caller(
    node: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
    client: redis.Redis,
    hub: RtpHub,
) -> None:
    """q1 is available but its phone is not registered: a caller waits (someone is logged
    in). The REGISTER is recorded in Redis (the dashboard's "not registered") and rings the
    doorbell: the waiting caller reaches q1 at once, not at the next keeper round."""
    kamailio = node()
    assert client.hlen(KEYS.registrations) == 0
    ear = hub.endpoint()
    carol = queued_caller(tmp_path, kamailio, ear.port)
    wait_for(lambda: client.hlen(KEYS.queue["qe"]) == 1, what="carol queued")
    phone(tmp_path, start_phone, kamailio, "q1", "uas_answer.xml")
    # (recorded just after the 200 OK went out)
    wait_for(lambda: client.hexists(KEYS.registrations, "q1"), what="q1's registration")
    assert int(client.hget(KEYS.registrations, "q1") or 0) > time.time() * 1000 + 60_000
    result = carol.wait()
    assert result.ok, result.errors or result.output
    assert settled(client) == ZERO and client.hlen(KEYS.queue["qe"]) == 0


# --- voicemail ----------------------------------------------------------------------------

TO_TAG = re.compile(rb"^To:.*;tag=([^;\s]+)", re.MULTILINE | re.IGNORECASE)
CONTACT = re.compile(rb"^Contact:\s*<([^>]+)>", re.MULTILINE | re.IGNORECASE)


def leave_message(
    kamailio: KamailioProcess, hub: RtpHub, extension: str, talk_s: float, hang_up: bool = True
) -> tuple[SipPeer, bytes, list[bytes]]:
    """Call `extension`, talk `talk_s` seconds of tone into the answer, then BYE (or not):
    the peer, the call-id and every datagram it received."""
    ear = hub.endpoint()
    peer = SipPeer(kamailio)
    call_id = f"vm-{uuid.uuid4().hex[:10]}".encode()
    body = sdp_offer(ear.address).encode()
    request = invite(
        peer, extension, call_id, body=body, extra_headers=b"Content-Type: application/sdp\r\n"
    )
    replies = peer.exchange(request, wait_final=5)
    final = [r for r in replies if (status_of(r) or 0) >= 200]
    assert final and status_of(final[0]) == 200, replies
    answer = final[0]
    assert b"application/sdp" in answer and CONTACT.search(answer), answer
    to_tag = TO_TAG.search(answer)
    assert to_tag is not None
    head = request.split(b"\r\n\r\n", 1)[0].decode()
    from_line = next(line for line in head.split("\r\n") if line.startswith("From:"))
    to_line = next(line for line in head.split("\r\n") if line.startswith("To:"))
    in_dialog = (
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK{uuid.uuid4().hex[:10]};rport\r\n"
        f"Max-Forwards: 70\r\n{from_line}\r\n{to_line};tag={to_tag.group(1).decode()}\r\n"
        f"Call-ID: {call_id.decode()}\r\n"
    )
    target = CONTACT.search(answer).group(1).decode()  # type: ignore[union-attr]
    peer.send(
        f"ACK {target} SIP/2.0\r\n{in_dialog}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n".encode()
    )
    ear.send_stream(
        sdp_audio_address(body_of(answer).decode()), seconds=talk_s, payload=tone_frame(1000)
    )
    time.sleep(talk_s + 0.1)
    got = []
    if hang_up:
        bye = f"BYE {target} SIP/2.0\r\n{in_dialog}CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        got = peer.exchange(bye.encode(), wait_final=2)
    assert ear.total().packets > 10, "the caller heard neither greeting nor tone"
    return peer, call_id, got


@pytest.fixture
def vm_node(
    node: Callable[..., KamailioProcess],
    client: redis.Redis,
) -> Iterator[KamailioProcess]:
    yield node()


def test_a_caller_leaves_a_message_that_is_stored_with_its_metadata(
    vm_node: KamailioProcess,
    hub: RtpHub,
    client: redis.Redis,
    redis_url: str,
) -> None:
    before = mark(client)
    peer, _, bye_replies = leave_message(vm_node, hub, "904", talk_s=3.0)
    assert any(status_of(r) == 200 for r in bye_replies), bye_replies
    peer.close()
    with StateStore(redis_url, "strategies") as store:
        wait_for(lambda: store.voicemails(), timeout=5, what="the message in Redis")
        (message,) = store.voicemails()
    assert isinstance(message, Voicemail)
    assert (message.group, message.caller, message.heard) == ("vmbox", "bob", False)
    # 3 s of talk less the tone (0.5 s) and the keeper's step
    assert 1800 <= message.duration_ms <= 2900, message
    with wave.open(io.BytesIO(Path(message.file).read_bytes())) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 1)
        assert abs(wav.getnframes() / 8000 * 1000 - message.duration_ms) < 50
    (event,) = of("voicemail", all_events(client, before))
    assert event["message"] == message.id
    assert settled(client) == ZERO
    assert client.hlen(KEYS.queue["qe"]) == 0


def test_the_max_length_ends_the_message_with_a_bye_from_the_node(
    vm_node: KamailioProcess,
    hub: RtpHub,
    client: redis.Redis,
    redis_url: str,
) -> None:
    peer, _, _ = leave_message(vm_node, hub, "905", talk_s=7.0, hang_up=False)
    received = peer._drain()
    byes = [d for d in received if d.startswith(b"BYE ")]
    assert byes, "no BYE at the max length"
    peer.close()
    with StateStore(redis_url, "strategies") as store:
        wait_for(lambda: store.voicemails(), timeout=5, what="the message in Redis")
        (message,) = store.voicemails()
    assert 4500 <= message.duration_ms <= 5300, message  # max_length 5 s


def test_without_rtpengine_voicemail_is_refused_clearly(
    node: Callable[..., KamailioProcess],
    hub: RtpHub,
    client: redis.Redis,
) -> None:
    kamailio = node(rtpengine_ng=None)
    with SipPeer(kamailio) as peer:
        body = sdp_offer(hub.endpoint().address).encode()
        replies = peer.exchange(
            invite(
                peer,
                "904",
                b"vm-down-1",
                body=body,
                extra_headers=b"Content-Type: application/sdp\r\n",
            ),
            wait_final=3,
        )
    assert [status_of(r) for r in replies if (status_of(r) or 0) >= 200] == [480]
    assert b"Voicemail Unavailable" in replies[-1]
    assert settled(client) == ZERO
