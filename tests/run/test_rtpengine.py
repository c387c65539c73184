"""RTPengine 10.5 (userspace only) as the queue's media server: the NG client, the process,
and probes that pin down the NG sequences the queue relies on, with real RTP on loopback.

The recipe these tests prove (see each test for the detail):

queue entry   offer   call-id, from-tag=caller, caller's SDP, via-branch=<queue branch>
              answer  to-tag=<queue's own tag>, silent SDP (c=127.0.0.1, port 9, sendrecv),
                      via-branch=<queue branch>           -> reply SDP goes in the 183
              play media  from-tag=caller, file=<AU mu-law 8 kHz>, repeat-times for music
ring agent    offer   same call-id and from-tag, caller's SDP, via-branch=<agent branch>
                                                          -> reply SDP goes in the INVITE
agent answers stop media  from-tag=caller (else the prompt keeps interleaving)
              answer  to-tag=<agent's tag>, agent's SDP, via-branch=<agent branch>,
                      flags=[port latching]               -> reply SDP goes in the 200
voicemail     start recording / stop recording (or delete); recording.wait_for_recording

Bencode and client unit tests need no server; the rest are marked `sip` (they start their
own rtpengine; a marker of its own, `rtpengine`, would fit better).
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
from rtp import (
    PTIME_S,
    Prompts,
    RtpEndpoint,
    RtpHub,
    sdp_audio_address,
    sdp_direction,
    sdp_offer,
    silent_sdp,
    sum_stats,
    tone_frame,
    tone_pcm,
    ulaw_encode,
    wait_until,
    write_au_ulaw,
    write_wav,
)

from dispatcher.media.ng import (
    BencodeError,
    NgClient,
    NgError,
    NgUnavailable,
    NgValue,
    bdecode,
    bencode,
)
from dispatcher.media.recording import (
    RecordingError,
    alaw_to_linear,
    caller_recording,
    discard_recording,
    g711_to_pcm,
    metadata_files,
    ulaw_to_linear,
    wait_for_recording,
)
from dispatcher.run.faketime import FaketimeError, inherited_offset_s, libfaketime
from dispatcher.run.procs import ProcessError
from dispatcher.run.rtpengine import RtpengineProcess

CALLER_TAG = "caller-tag"
QUEUE_TAG = "queue-tag"
QUEUE_BRANCH = "z9hG4bK-queue"

MOH, CALLER, AGENT = tone_frame(400), tone_frame(1000), tone_frame(2000)
NAMES = {MOH: "m", CALLER: "c", AGENT: "a"}


def new_call_id() -> str:
    return f"{uuid.uuid4().hex[:12]}@test"


def heard(endpoint: RtpEndpoint) -> str:
    """What an endpoint (record=True) received, one letter per packet (m, c, a; ? else),
    runs collapsed: "mx50 ax100"."""
    letters = "".join(NAMES.get(datagram[12:], "?") for _, datagram in endpoint.received)
    return " ".join(f"{k}x{len(list(run))}" for k, run in itertools.groupby(letters))


def enter_queue(ng: NgClient, caller: RtpEndpoint, call_id: str) -> tuple[str, str]:
    """The queue's first two NG commands; returns (offer reply SDP, answer reply SDP = 183)."""
    queue = {"via-branch": QUEUE_BRANCH}
    offer = ng.offer(call_id, CALLER_TAG, sdp_offer(caller.address), options=queue)
    early = ng.answer(call_id, CALLER_TAG, QUEUE_TAG, silent_sdp(), options=queue)
    return offer["sdp"], early["sdp"]


# --- bencode and the client without a server ----------------------------------------------


def test_bencode_round_trips_nested_values() -> None:
    value: NgValue = {
        "command": "offer",
        "flags": ["trust address", "port latching"],
        "n": -3,
        "b": {},
    }
    data = bencode(value)
    assert data.startswith(b"d1:bde7:command5:offer")  # keys sorted
    assert bdecode(data) == value
    assert bencode(b"\xff\x00") == b"2:\xff\x00"
    assert bdecode(b"2:\xff\x00").encode("utf-8", "surrogateescape") == b"\xff\x00"


@pytest.mark.parametrize("data", [b"", b"i12", b"5:abc", b"d3:keye", b"li1e", b"x", b"i1ei2e"])
def test_bdecode_rejects_malformed_input(data: bytes) -> None:
    with pytest.raises(BencodeError):
        bdecode(data)


def test_bencode_refuses_booleans_and_other_types() -> None:
    with pytest.raises(TypeError):
        bencode({"all": True})
    with pytest.raises(TypeError):
        bencode([1.5])  # type: ignore[list-item]


def test_client_gives_up_after_its_retransmissions() -> None:
    """A silent peer (a bound socket that never answers) costs (retries + 1) * timeout, and
    the client really retransmits the same cookie."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.settimeout(0)
        with NgClient(*silent.getsockname(), timeout=0.1, retries=2) as ng:
            started = time.monotonic()
            with pytest.raises(NgUnavailable, match="no reply to 3 attempts"):
                ng.ping()
            elapsed = time.monotonic() - started
        received = []
        with pytest.raises(BlockingIOError):
            while True:
                received.append(silent.recv(2048))
    assert 0.3 <= elapsed < 1.0
    assert len(received) == 3 and len({r.split(b" ")[0] for r in received}) == 1


# --- recording.py without a server: G.711 tables, pcap to WAV ------------------------------


def test_g711_tables_match_the_reference_values() -> None:
    assert [ulaw_to_linear(b) for b in (0x80, 0x00, 0xFF, 0x7F)] == [32124, -32124, 0, 0]
    assert [alaw_to_linear(b) for b in (0xAA, 0x2A, 0xD5, 0x55)] == [32256, -32256, 8, -8]
    assert g711_to_pcm(b"\x80\xff", 0) == struct.pack("<hh", 32124, 0)
    samples = range(-32000, 32000, 97)
    assert all(abs(ulaw_to_linear(ulaw_encode(x)) - x) <= max(4, abs(x) // 16) for x in samples)


def rtp_packet(seq: int, ts: int, payload: bytes, pt: int = 0, ssrc: int = 7) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def raw_pcap(packets: list[tuple[int, bytes]]) -> bytes:
    """A pcap (LINKTYPE_RAW, as RTPengine writes it) of UDP datagrams to 127.0.0.1:port."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for number, (port, payload) in enumerate(packets):
        udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
        loopback = socket.inet_aton("127.0.0.1")
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, loopback, loopback
        )
        out.append(struct.pack("<IIII", 1000 + number, 0, len(ip + udp), len(ip + udp)))
        out.append(ip + udp)
    return b"".join(out)


def spool_with(tmp_path: Path, call_id: str, packets: list[tuple[int, bytes]]) -> Path:
    """A spool folder as RTPengine leaves it after a recording of `packets`."""
    for folder in ("pcaps", "metadata"):
        (tmp_path / folder).mkdir()
    pcap = tmp_path / "pcaps" / "call-0123456789abcdef.pcap"
    pcap.write_bytes(raw_pcap(packets))
    meta = tmp_path / "metadata" / f"rtpengine-meta-{call_id}-0123456789abcdef.txt"
    meta.write_text(f"{pcap}\n\n")
    return tmp_path


def test_pcap_to_wav_orders_fills_gaps_and_skips_what_is_not_the_caller(tmp_path: Path) -> None:
    one, two, three = (bytes([0x80]) * 160, bytes([0x00]) * 160, bytes([0xAA]) * 160)
    packets = [
        (30000, rtp_packet(11, 1760, two)),  # arrives before the packet it follows
        (30000, rtp_packet(10, 1600, one)),
        (30000, rtp_packet(11, 1760, two)),  # a duplicate
        (30000, rtp_packet(12, 1920, b"\x01", pt=13)),  # comfort noise: its time stays
        (30000, rtp_packet(14, 2240, three, pt=8)),  # PCMA, after CN and a lost packet
        (30002, rtp_packet(99, 0, one, ssrc=9)),  # another port: not the caller
        (30001, b"\x81\xc8" + bytes(26)),  # RTCP
    ]
    spool = spool_with(tmp_path, "call", packets)
    recording = caller_recording(spool, "call", caller_port=30000)
    with wave.open(io.BytesIO(recording.wav)) as wav:
        pcm = wav.readframes(wav.getnframes())
    silence = bytes(2 * 320)  # the CN packet's 20 ms and the lost one's
    assert pcm == g711_to_pcm(one, 0) + g711_to_pcm(two, 0) + silence + g711_to_pcm(three, 8)
    assert recording.packets == 3 and recording.duration_s == pytest.approx(0.1)
    with pytest.raises(RecordingError, match="give caller_port"):
        caller_recording(spool, "call")  # two ports carried RTP, no SDP says which


def test_pcap_to_wav_refuses_codecs_it_cannot_decode(tmp_path: Path) -> None:
    spool = spool_with(tmp_path, "call", [(30000, rtp_packet(1, 0, bytes(160), pt=9))])
    with pytest.raises(RecordingError, match="payload type 9"):
        caller_recording(spool, "call")


# --- the process ------------------------------------------------------------------------


@pytest.mark.sip
def test_two_instances_run_side_by_side(
    start_rtpengine: Callable[..., RtpengineProcess], hub: RtpHub
) -> None:
    first, second = start_rtpengine(), start_rtpengine()
    assert first.ng_port != second.ng_port
    assert first.port_max < second.port_min or second.port_max < first.port_min
    caller = hub.endpoint()
    for server in (first, second):
        with server.client() as ng:
            assert ng.ping() < 0.5
            offer = ng.offer(new_call_id(), CALLER_TAG, sdp_offer(caller.address))
            assert ng.statistics()["currentstatistics"]["sessionstotal"] == 1
        assert server.port_min <= sdp_audio_address(offer["sdp"])[1] <= server.port_max


@pytest.mark.sip
def test_a_failed_start_quotes_the_log(start_rtpengine: Callable[..., RtpengineProcess]) -> None:
    with pytest.raises(ProcessError, match=r"exited with \d+.*rtpengine.log") as failure:
        start_rtpengine(extra_args=["--recording-format=nonsense"])
    assert "recording format" in str(failure.value)


# --- a) queue early media ---------------------------------------------------------------


@pytest.mark.sip
@pytest.mark.timeshift
def test_queue_plays_a_prompt_as_early_media(ng: NgClient, hub: RtpHub, prompts: Prompts) -> None:
    """offer + answer with a silent endpoint, then play media to the caller's tag: the
    answer reply is the 183's SDP (RTPengine's caller-side port, sendrecv), and the prompt
    arrives there on an even 20 ms cadence (AU mu-law; see test_wav_prompts_come_in_bursts).
    Also runs in make test's year-ahead pass (marker timeshift): rtpengine under faketime."""
    caller = hub.endpoint()
    call_id = new_call_id()
    offer_sdp, early_sdp = enter_queue(ng, caller, call_id)
    rtpengine_side = sdp_audio_address(early_sdp)
    assert rtpengine_side[0] == "127.0.0.1" and sdp_direction(early_sdp) == "sendrecv"
    assert sdp_audio_address(offer_sdp) != rtpengine_side  # the callee side has its own port

    assert ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_400)) == 1000
    assert wait_until(lambda: caller.total().packets >= 50, timeout=3.0)
    time.sleep(0.3)  # nothing after the end
    got = caller.stats_from(rtpengine_side)
    assert got.packets == 50 and got.lost == 0 and got.duplicates == 0
    assert got.audio == 50 and got.payload_types == {0}
    assert got.late <= 5, f"{got.late} packets more than 20 ms late (max {got.max_late_s:.3f}s)"
    assert 0.9 <= got.duration_s <= 1.1
    ng.delete(call_id)


@pytest.mark.sip
def test_wav_prompts_come_in_bursts(ng: NgClient, hub: RtpHub, prompts: Prompts) -> None:
    """An 8 kHz WAV plays at the right rate but bunched: ffmpeg reads WAV in 4096-byte
    packets (256 ms), and RTPengine's send-timer skew correction then sends 10 ms apart
    followed by ~100 ms gaps. Pinned here so a fixed RTPengine shows up."""
    caller = hub.endpoint()
    call_id = new_call_id()
    enter_queue(ng, caller, call_id)
    ng.play_media(call_id, CALLER_TAG, file=str(prompts.wav_400))
    assert wait_until(lambda: caller.total().packets >= 50, timeout=3.0)
    got = caller.total()
    assert got.lost == 0 and got.audio == 50
    assert got.max_gap_s > 0.05, "WAV playback is even now: prefer it over AU again?"
    ng.delete(call_id)


@pytest.mark.sip
@pytest.mark.parametrize(
    ("answer_sdp", "sdp_to_caller", "plays"),
    [
        (silent_sdp("127.0.0.1"), ("127.0.0.1", "sendrecv"), True),
        # a zero address passes through: the caller would see hold (c=0.0.0.0, sendonly)
        (silent_sdp("0.0.0.0"), ("0.0.0.0", "sendonly"), True),
        (sdp_offer(("127.0.0.1", 9), direction="sendonly"), ("127.0.0.1", "sendonly"), True),
        # recvonly/inactive answers forbid sending to the caller: play media fails
        (sdp_offer(("127.0.0.1", 9), direction="recvonly"), ("127.0.0.1", "recvonly"), False),
        (sdp_offer(("127.0.0.1", 9), direction="inactive"), ("127.0.0.1", "inactive"), False),
    ],
    ids=["sendrecv", "zero-address", "sendonly", "recvonly", "inactive"],
)
def test_what_the_silent_answer_decides(
    ng: NgClient,
    hub: RtpHub,
    prompts: Prompts,
    answer_sdp: str,
    sdp_to_caller: tuple[str, str],
    plays: bool,
) -> None:
    caller = hub.endpoint()
    call_id = new_call_id()
    ng.offer(call_id, CALLER_TAG, sdp_offer(caller.address))
    early = ng.answer(call_id, CALLER_TAG, QUEUE_TAG, answer_sdp)["sdp"]
    assert (sdp_audio_address(early)[0], sdp_direction(early)) == sdp_to_caller
    if plays:
        ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_400))
        assert wait_until(lambda: caller.total().packets >= 10, timeout=2.0)
    else:
        with pytest.raises(NgError, match="Failed to start media playback"):
            ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_400))
    ng.delete(call_id)


@pytest.mark.sip
def test_a_caller_that_sends_nothing_is_timed_out_despite_playback(
    start_rtpengine: Callable[..., RtpengineProcess], hub: RtpHub, prompts: Prompts
) -> None:
    """Played media does not count as media: with `timeout` seconds without a packet from
    the caller, RTPengine deletes the call while it plays. A caller that talks stays. Hence
    rtpengine.conf's timeout = 600 (longer than any queue wait)."""
    server = start_rtpengine(extra_args=["--timeout=2", "--silent-timeout=60"])
    silent, talking = hub.endpoint(), hub.endpoint()
    with server.client() as ng:
        for caller in (silent, talking):
            call_id = f"timeout-{caller.port}"
            _, early = enter_queue(ng, caller, call_id)
            if caller is talking:
                caller.send_stream(sdp_audio_address(early), seconds=6.0)
            ng.play_media(call_id, CALLER_TAG, file=str(prompts.long_400))
        started = time.monotonic()

        def gone(call_id: str) -> bool:
            try:
                ng.query(call_id)
            except NgError as error:
                return "Unknown call-id" in error.reason
            return False

        assert wait_until(lambda: gone(f"timeout-{silent.port}"), timeout=5.0)
        assert time.monotonic() - started < 3.5  # timeout 2 s, checked once a second
        assert not gone(f"timeout-{talking.port}")


# --- b) connecting the caller to an agent -------------------------------------------------


@pytest.mark.sip
def test_caller_meets_agent_after_the_prompt(ng: NgClient, hub: RtpHub, prompts: Prompts) -> None:
    """The agent's INVITE carries the reply of an offer on its own via-branch; its answer
    (with its real to-tag, the same via-branch and `port latching`) connects both ways,
    symmetric: each side receives from the very port it sends to, and the caller keeps the
    port of the 183."""
    caller, agent = hub.endpoint(record=True), hub.endpoint(record=True)
    call_id = new_call_id()
    _, early = enter_queue(ng, caller, call_id)
    caller_side = sdp_audio_address(early)
    caller.send_stream(caller_side, seconds=3.0, payload=CALLER)  # the caller talks throughout
    ng.play_media(call_id, CALLER_TAG, file=str(prompts.long_400))
    time.sleep(0.6)

    branch = {"via-branch": "z9hG4bK-agent-1"}
    invite = ng.offer(call_id, CALLER_TAG, sdp_offer(caller.address), options=branch)["sdp"]
    agent_side = sdp_audio_address(invite)
    ng.stop_media(call_id, CALLER_TAG)
    final = ng.answer(
        call_id,
        CALLER_TAG,
        "agent-tag",
        sdp_offer(agent.address),
        flags=["port latching"],
        options=branch,
    )["sdp"]
    assert sdp_audio_address(final) == caller_side, "the 200 must keep the 183's port"
    heard_before = heard(caller)
    caller.reset()
    agent.send_stream(agent_side, seconds=1.0, payload=AGENT)
    assert wait_until(lambda: caller.total().packets >= 50, timeout=3.0)
    time.sleep(0.2)

    assert heard_before.startswith("mx") and "a" not in heard_before
    assert heard(caller) == "ax50"
    assert set(caller.stats()) == {caller_side}
    assert heard(agent).startswith("cx") and set(agent.stats()) == {agent_side}
    assert agent.total().lost == 0 and caller.total().lost == 0
    assert agent.sent().packets == 50 and agent.sent().late == 0  # the harness kept time
    ng.delete(call_id)


@pytest.mark.sip
def test_a_prompt_still_playing_interleaves_with_the_agent(
    ng: NgClient, hub: RtpHub, prompts: Prompts
) -> None:
    """Answering does not stop playback: without `stop media` the caller gets prompt and
    agent packets alternately (two SSRCs on one stream)."""
    caller, agent = hub.endpoint(record=True), hub.endpoint()
    call_id = new_call_id()
    enter_queue(ng, caller, call_id)
    ng.play_media(call_id, CALLER_TAG, file=str(prompts.long_400))
    branch = {"via-branch": "z9hG4bK-agent-1"}
    invite = ng.offer(call_id, CALLER_TAG, sdp_offer(caller.address), options=branch)["sdp"]
    ng.answer(call_id, CALLER_TAG, "agent-tag", sdp_offer(agent.address), options=branch)
    caller.reset()
    agent.send_stream(sdp_audio_address(invite), packets=20, payload=AGENT)
    time.sleep(0.6)
    letters = heard(caller)
    assert "ax1 mx1 ax1" in letters, letters
    ng.delete(call_id)


@pytest.mark.sip
def test_answering_a_new_to_tag_without_a_branch_of_its_own_is_asymmetric(
    ng: NgClient, hub: RtpHub
) -> None:
    """The pitfall the via-branch avoids: the agent is offered the queue branch's port, but a
    second `answer` with a new to-tag makes a new party with new ports, and the caller's
    audio reaches the agent from one its SDP never named (a NAT in front of the agent may
    drop it); without `port latching` the caller's port changes too."""
    caller, agent = hub.endpoint(), hub.endpoint()
    call_id = new_call_id()
    invite = ng.offer(call_id, CALLER_TAG, sdp_offer(caller.address))["sdp"]
    early = ng.answer(call_id, CALLER_TAG, QUEUE_TAG, silent_sdp())["sdp"]
    final = ng.answer(call_id, CALLER_TAG, "agent-tag", sdp_offer(agent.address))["sdp"]
    assert sdp_audio_address(final) != sdp_audio_address(early)
    caller.send_stream(sdp_audio_address(final), packets=10)
    assert wait_until(lambda: agent.total().packets >= 10, timeout=2.0)
    assert set(agent.stats()) != {sdp_audio_address(invite)}
    ng.delete(call_id)


@pytest.mark.sip
def test_deleting_the_queue_branch_deletes_the_call(ng: NgClient, hub: RtpHub) -> None:
    call_id = new_call_id()
    enter_queue(ng, hub.endpoint(), call_id)
    ng.delete(call_id, from_tag=CALLER_TAG, to_tag=QUEUE_TAG)
    with pytest.raises(NgError, match="Unknown call-id"):
        ng.query(call_id)


# --- c) sequences of prompts --------------------------------------------------------------


@pytest.mark.sip
def test_prompts_in_sequence(ng: NgClient, hub: RtpHub, prompts: Prompts) -> None:
    """`play media` answers with the file's duration (ms); a second play after the end
    continues the stream (same SSRC, next sequence number, RTP clock moved on by the pause,
    marker set)."""
    caller = hub.endpoint(record=True)
    call_id = new_call_id()
    enter_queue(ng, caller, call_id)
    first = ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_400))
    assert first == 1000
    assert wait_until(lambda: caller.total().packets >= 50, timeout=3.0)
    time.sleep(0.1)
    assert ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_1000)) == 1000
    assert wait_until(lambda: caller.total().packets >= 100, timeout=3.0)
    assert heard(caller) == "mx50 cx50"  # 400 Hz, then 1000 Hz (the CALLER tone)
    stats = caller.total()
    assert stats.ssrc_changes == 0 and stats.lost == 0 and stats.duplicates == 0
    last_first, first_second = caller.received[49][1], caller.received[50][1]
    seq_a, ts_a = struct.unpack_from("!HI", last_first, 2)
    seq_b, ts_b = struct.unpack_from("!HI", first_second, 2)
    assert (seq_b - seq_a) & 0xFFFF == 1
    assert (ts_b - ts_a) & 0xFFFFFFFF > 160  # the pause between the prompts, in RTP time
    assert first_second[1] & 0x80  # marker: a new talkspurt
    ng.delete(call_id)


@pytest.mark.sip
def test_a_new_prompt_interrupts_the_running_one_at_once(
    ng: NgClient, hub: RtpHub, prompts: Prompts
) -> None:
    caller = hub.endpoint(record=True)
    call_id = new_call_id()
    enter_queue(ng, caller, call_id)
    ng.play_media(call_id, CALLER_TAG, file=str(prompts.long_400))
    assert wait_until(lambda: caller.total().packets >= 20, timeout=2.0)
    asked = time.monotonic()
    ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_1000))
    second = CALLER  # the 1000 Hz frame
    assert wait_until(lambda: any(d[12:] == second for _, d in caller.received), timeout=1.0)
    assert time.monotonic() - asked < 0.25  # a few ms when the host is idle
    assert wait_until(lambda: caller.total().packets >= 70, timeout=2.0)
    time.sleep(0.2)
    letters = "".join(NAMES.get(d[12:], "?") for _, d in caller.received)
    first, rest = letters.split(NAMES[second], 1)
    assert set(first) == {"m"} and set(rest) == {NAMES[second]}  # no mixing, no overlap
    ng.delete(call_id)


@pytest.mark.sip
def test_repeat_times_loops_seamlessly_and_stop_media_stops_at_once(
    ng: NgClient, hub: RtpHub, prompts: Prompts
) -> None:
    caller = hub.endpoint()
    call_id = new_call_id()
    enter_queue(ng, caller, call_id)
    with pytest.raises(NgError, match="Not currently playing media"):
        ng.stop_media(call_id, CALLER_TAG)  # nothing was ever played to this party
    assert ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_400), repeat_times=3) == 1000
    assert wait_until(lambda: caller.total().packets >= 150, timeout=5.0)
    time.sleep(0.2)
    looped = caller.total()
    assert looped.packets == 150 and looped.lost == 0 and looped.max_gap_s < 0.1

    caller.reset()
    ng.play_media(call_id, CALLER_TAG, file=str(prompts.long_400))
    assert wait_until(lambda: caller.total().packets >= 10, timeout=2.0)
    ng.stop_media(call_id, CALLER_TAG)
    stopped = caller.total().packets
    time.sleep(0.3)
    assert caller.total().packets <= stopped + 1
    ng.stop_media(call_id, CALLER_TAG)  # stopping again is fine once something played
    ng.delete(call_id)


@pytest.mark.sip
def test_play_media_errors(ng: NgClient, hub: RtpHub, prompts: Prompts) -> None:
    call_id = new_call_id()
    enter_queue(ng, hub.endpoint(), call_id)
    with pytest.raises(NgError, match="Failed to start media playback from file"):
        ng.play_media(call_id, CALLER_TAG, file="/nonexistent/prompt.au")
    with pytest.raises(NgError, match="no such tag"):
        ng.play_media(call_id, "nobody", file=str(prompts.tone_400))
    with pytest.raises(NgError, match="Unknown call-ID"):
        ng.play_media(new_call_id(), CALLER_TAG, file=str(prompts.tone_400))
    ng.delete(call_id)


@pytest.mark.sip
def test_an_ogg_vorbis_prompt_crashes_rtpengine(
    start_rtpengine: Callable[..., RtpengineProcess], hub: RtpHub, tmp_path: Path
) -> None:
    """10.5.3.5 segfaults on an Ogg Vorbis file ("vorbis extradata absent"): prompt uploads
    must be converted to a tested format, never played as uploaded."""
    sox = shutil.which("sox")
    if sox is None:
        pytest.skip("sox (Debian's sox) makes the Ogg Vorbis file")
    wav = write_wav(tmp_path / "tone.wav", tone_pcm(0.5))
    subprocess.run([sox, str(wav), str(tmp_path / "tone.ogg")], check=True)
    server = start_rtpengine()
    call_id = new_call_id()
    with server.client(timeout=0.3, retries=1) as ng:
        enter_queue(ng, hub.endpoint(), call_id)
        with pytest.raises(NgUnavailable):
            ng.play_media(call_id, CALLER_TAG, file=str(tmp_path / "tone.ogg"))
    assert server.proc is not None and server.proc.wait(timeout=2) == -signal.SIGSEGV
    with pytest.raises(ProcessError, match="killed by signal 11"):
        server.check()


# --- d) voicemail -------------------------------------------------------------------------


def numbered_frame(number: int) -> bytes:
    """A caller frame that says which one it is: a tone with the frame number in its first
    two bytes (as mu-law bytes above near-silence, so each frame is unique)."""
    return bytes([0x10 + (number >> 7 & 0x7F), 0x10 + (number & 0x7F)]) + CALLER[2:]


@pytest.mark.sip
def test_voicemail_records_what_the_caller_said(
    rtpengine: RtpengineProcess, ng: NgClient, hub: RtpHub, prompts: Prompts
) -> None:
    """Answered by the silent endpoint (nobody listens), greeting played, then `start
    recording`; after `stop recording` the WAV holds exactly the frames the caller sent
    while recording, decoded, in order."""
    caller = hub.endpoint()
    call_id = new_call_id()
    _, early = enter_queue(ng, caller, call_id)
    caller.send_stream(sdp_audio_address(early), seconds=3.0, payload=numbered_frame)
    ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_400))  # the greeting
    time.sleep(0.5)
    ng.start_recording(call_id)
    time.sleep(1.5)
    ng.stop_recording(call_id)
    recording = wait_for_recording(
        rtpengine.spool_dir, call_id, caller_port=sdp_audio_address(early)[1]
    )
    ng.delete(call_id)

    with wave.open(io.BytesIO(recording.wav)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        pcm = wav.readframes(wav.getnframes())
    assert 1.3 <= recording.duration_s <= 1.7
    assert recording.packets == round(recording.duration_s / PTIME_S)
    frames = [pcm[i : i + 320] for i in range(0, len(pcm), 320)]
    first = next(n for n in range(200) if g711_to_pcm(numbered_frame(n), 0) == frames[0])
    assert first >= 15  # the half second before `start recording` is not in it
    assert frames == [g711_to_pcm(numbered_frame(first + i), 0) for i in range(len(frames))]
    discard_recording(recording)
    assert not metadata_files(rtpengine.spool_dir, call_id)
    assert not recording.pcap_path.exists()


@pytest.mark.sip
def test_voicemail_recorded_from_the_offer_finds_the_caller_port_itself(
    rtpengine: RtpengineProcess, ng: NgClient, hub: RtpHub
) -> None:
    """With `record call: yes` in the offer the metadata holds the SDPs, and the recording
    is complete when the call is deleted."""
    caller = hub.endpoint()
    call_id = new_call_id()
    ng.offer(call_id, CALLER_TAG, sdp_offer(caller.address), options={"record call": "yes"})
    early = ng.answer(call_id, CALLER_TAG, QUEUE_TAG, silent_sdp())["sdp"]
    caller.send_stream(sdp_audio_address(early), packets=40, payload=CALLER)
    assert wait_until(lambda: not caller.sending, timeout=3.0)
    time.sleep(0.1)
    assert not metadata_files(rtpengine.spool_dir, call_id)  # not finished while it runs
    ng.delete(call_id)
    recording = wait_for_recording(rtpengine.spool_dir, call_id)
    assert recording.caller_port == sdp_audio_address(early)[1]
    assert recording.packets == 40 and recording.duration_s == pytest.approx(0.8)


@pytest.mark.sip
def test_no_recording_no_wav(rtpengine: RtpengineProcess) -> None:
    with pytest.raises(RecordingError, match="not finished"):
        wait_for_recording(rtpengine.spool_dir, new_call_id(), timeout=0.1)


# --- e) failure ---------------------------------------------------------------------------


@pytest.mark.sip
def test_kill_9_mid_playback(
    start_rtpengine: Callable[..., RtpengineProcess], hub: RtpHub, prompts: Prompts
) -> None:
    """On loopback a dead rtpengine fails the next request at once (ICMP port unreachable
    on the connected socket), the caller's RTP stops, and after a restart on the same ports
    the old calls are gone; new ones work."""
    server = start_rtpengine()
    caller = hub.endpoint()
    call_id = new_call_id()
    with server.client(timeout=0.5, retries=2) as ng:
        enter_queue(ng, caller, call_id)
        ng.play_media(call_id, CALLER_TAG, file=str(prompts.long_400))
        assert wait_until(lambda: caller.total().packets >= 10, timeout=2.0)
        killed = time.monotonic()
        server.kill()
        asked = time.monotonic()
        with pytest.raises(NgUnavailable, match="connection refused"):
            ng.query(call_id)
        assert time.monotonic() - asked < 0.05  # no timeout: the kernel answers at once
        time.sleep(0.2)
        assert caller.total().last_arrival < killed + 0.02

        server.restart()
        with pytest.raises(NgError, match="Unknown call-id"):
            ng.query(call_id)
        with pytest.raises(NgError, match="Unknown call-ID"):
            ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_400))
        assert ng.list_calls() == []
        caller.reset()
        again = new_call_id()
        enter_queue(ng, caller, again)
        ng.play_media(again, CALLER_TAG, file=str(prompts.tone_400))
        assert wait_until(lambda: caller.total().packets >= 50, timeout=3.0)


@pytest.mark.sip
def test_a_hung_rtpengine_costs_the_full_retransmission_budget(
    start_rtpengine: Callable[..., RtpengineProcess],
) -> None:
    server = start_rtpengine()
    with server.client(timeout=0.2, retries=1) as ng:
        os.kill(server.pid, signal.SIGSTOP)
        try:
            time.sleep(0.1)  # SIGSTOP reaches every thread
            started = time.monotonic()
            with pytest.raises(NgUnavailable, match="no reply to 2 attempts"):
                ng.ping()
            assert 0.4 <= time.monotonic() - started < 1.0
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert ng.ping() < 0.5  # the stale replies to the lost pings are skipped


# --- faketime -----------------------------------------------------------------------------


@pytest.mark.sip
def test_rtpengine_plays_under_libfaketime(
    start_rtpengine: Callable[..., RtpengineProcess], hub: RtpHub, prompts: Prompts
) -> None:
    """As in make test's year-ahead run: libfaketime preloaded, a year ahead."""
    try:
        preload = libfaketime()
    except FaketimeError as missing:
        pytest.skip(str(missing))
    server = start_rtpengine(env={"LD_PRELOAD": preload, "FAKETIME": "+365d"})
    caller = hub.endpoint()
    call_id = new_call_id()
    with server.client() as ng:
        enter_queue(ng, caller, call_id)
        ng.play_media(call_id, CALLER_TAG, file=str(prompts.tone_400))
        assert wait_until(lambda: caller.total().packets >= 50, timeout=3.0)
        stats = caller.total()
        assert stats.lost == 0 and stats.late <= 5
        created = ng.query(call_id)["created"]
    # a year ahead of the real clock, which this process may itself be shifted from
    assert created - time.time() == pytest.approx(365 * 86400 - inherited_offset_s(), abs=60)


# --- f) load ------------------------------------------------------------------------------


def probe_callers() -> list[int]:
    """DISPATCHER_RTPENGINE_PROBE="200,500,1000" makes the load test a probe at those sizes
    (for the figures in the report); by default it is a quick check with 50 callers."""
    spec = os.environ.get("DISPATCHER_RTPENGINE_PROBE", "")
    return [int(n) for n in spec.split(",") if n.strip()] or [50]


@pytest.mark.sip
@pytest.mark.parametrize("callers", probe_callers())
@pytest.mark.parametrize("prompt", ["au", "wav"])
def test_many_callers_hear_a_prompt(
    start_rtpengine: Callable[..., RtpengineProcess],
    hub: RtpHub,
    tmp_path: Path,
    callers: int,
    prompt: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every caller gets every packet; prints rtpengine's CPU per caller-second (from
    /proc/<pid>/stat) and the callers' lateness, for the report."""
    seconds = float(os.environ.get("DISPATCHER_RTPENGINE_PROBE_SECONDS", "2"))
    pcm = tone_pcm(10.0)
    file = (
        write_wav(tmp_path / "moh.wav", pcm)
        if prompt == "wav"
        else write_au_ulaw(tmp_path / "moh.au", pcm)
    )
    server = start_rtpengine(ports=4 * callers + 200)
    endpoints = [hub.endpoint() for _ in range(callers)]
    with server.client(timeout=2.0) as ng:
        for number, caller in enumerate(endpoints):
            enter_queue(ng, caller, f"load-{number}")
        for number in range(callers):
            ng.play_media(f"load-{number}", CALLER_TAG, file=str(file), repeat_times=100)
        time.sleep(0.5)  # past the start-up burst
        for caller in endpoints:
            caller.reset()
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = server.cpu_seconds() - cpu_before, time.monotonic() - started
        stats = [caller.total() for caller in endpoints]
    total = sum_stats(stats)
    expected = callers * wall / PTIME_S
    with capsys.disabled():
        print(
            f"\n{callers} callers, {prompt}: rtpengine {cpu / wall:.0%} of a core, "
            f"{cpu / (callers * wall) * 1000:.2f} ms CPU per caller-second; "
            f"{total.packets / expected:.1%} of the packets, "
            f"{total.late / max(total.packets, 1):.2%} late > 20 ms, "
            f"worst {total.max_late_s * 1000:.0f} ms late, longest gap "
            f"{total.max_gap_s * 1000:.0f} ms"
        )
    assert all(s.packets > 0 for s in stats), "a caller heard nothing"
    assert total.lost == 0 and total.duplicates == 0
    assert total.packets >= 0.9 * expected
