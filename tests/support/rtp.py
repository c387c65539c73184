"""RTP endpoints for the media tests and probes: callers, agents' phones, silent peers.

`RtpHub` runs one selector loop (epoll) in one background thread for any number of
`RtpEndpoint`s - a thousand callers cost one thread, not a thousand. Each endpoint is a UDP
socket on 127.0.0.1 (a free port unless given); it can send a PCMU stream (payload type 0,
20 ms packets on an absolute schedule, so it does not drift) and counts what it receives per
source address in a `StreamStats`: packets, sequence (lost, duplicated, reordered), arrival
against the 20 ms cadence the RTP timestamps promise (late packets), and payload (audio or
silence).

Cost: the loop takes its lock once per wake-up, not per packet; a stats snapshot copies one
small object per source.
"""

from __future__ import annotations

import contextlib
import copy
import heapq
import math
import os
import random
import re
import selectors
import socket
import struct
import threading
import time
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from dispatcher.media.recording import alaw_to_linear, ulaw_to_linear

Address = tuple[str, int]
Payload = bytes | Callable[[int], bytes]  # a fixed frame, or frame number -> frame

PCMU = 0
PCMA = 8
CLOCK_RATE = 8000
PTIME_S = 0.020
SAMPLES_PER_PACKET = int(CLOCK_RATE * PTIME_S)  # 160 bytes of G.711 per packet
LATE_S = 0.020  # a packet more than one packet time behind its schedule is late
_RTP_HEADER = struct.Struct("!BBHII")


# --- G.711 --------------------------------------------------------------------------------


def ulaw_encode(sample: int) -> int:
    """A 16-bit linear sample as a G.711 mu-law byte."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = magnitude.bit_length() - 8
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


# Bytes that decode to near silence (|sample| <= 64, about -54 dBFS): deleting them from a
# payload (bytes.translate, C speed) tells silence from audio without decoding in Python.
_QUIET = 64
QUIET_BYTES = {
    PCMU: bytes(b for b in range(256) if abs(ulaw_to_linear(b)) <= _QUIET),
    PCMA: bytes(b for b in range(256) if abs(alaw_to_linear(b)) <= _QUIET),
}
SILENCE_FRAME = bytes([0xFF]) * SAMPLES_PER_PACKET  # PCMU digital silence


def tone_frame(frequency: float = 400.0, amplitude: int = 8000) -> bytes:
    """One 20 ms PCMU frame of a sine. At a multiple of 50 Hz (400, 1000, 2000 Hz) a frame
    holds whole periods: every frame is the same and the tone runs on across frames."""
    return bytes(
        ulaw_encode(round(amplitude * math.sin(2 * math.pi * frequency * n / CLOCK_RATE)))
        for n in range(SAMPLES_PER_PACKET)
    )


def tone_pcm(
    seconds: float, frequency: float = 400.0, amplitude: int = 8000, rate: int = CLOCK_RATE
) -> bytes:
    """`seconds` of a sine as 16-bit little-endian PCM at `rate` (for a prompt file)."""
    count = round(seconds * rate)
    samples = (
        round(amplitude * math.sin(2 * math.pi * frequency * n / rate)) for n in range(count)
    )
    return b"".join(struct.pack("<h", s) for s in samples)


def write_au_ulaw(path: Path, pcm: bytes) -> Path:
    """A Sun AU file (mu-law, 8 kHz, mono) of 16-bit little-endian PCM: the prompt format
    RTPengine 10.5 plays with an even 20 ms cadence (its ffmpeg reads it in small packets;
    a WAV comes in 4096-byte packets, which it sends in bursts)."""
    data = bytes(ulaw_encode(sample) for (sample,) in struct.iter_unpack("<h", pcm))
    header = struct.pack(">4sIIIII", b".snd", 24, len(data), 1, CLOCK_RATE, 1)  # 1: mu-law
    path.write_bytes(header + data)
    return path


def write_wav(path: Path, pcm: bytes, rate: int = CLOCK_RATE) -> Path:
    """A 16-bit PCM mono WAV of little-endian `pcm` at `rate`."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


@dataclass(frozen=True)
class Prompts:
    """Prompt files of the media tests: tones, so what arrives can be recognised."""

    tone_400: Path  # 1 s, 400 Hz, AU mu-law 8 kHz (the format that plays evenly)
    tone_1000: Path  # 1 s, 1000 Hz, AU
    long_400: Path  # 10 s, 400 Hz, AU: still playing when a test interrupts it
    wav_400: Path  # 1 s, 400 Hz, 16-bit PCM 8 kHz WAV

    @classmethod
    def make(cls, folder: Path) -> Prompts:
        return cls(
            tone_400=write_au_ulaw(folder / "tone-400.au", tone_pcm(1.0, 400)),
            tone_1000=write_au_ulaw(folder / "tone-1000.au", tone_pcm(1.0, 1000)),
            long_400=write_au_ulaw(folder / "long-400.au", tone_pcm(10.0, 400)),
            wav_400=write_wav(folder / "tone-400.wav", tone_pcm(1.0, 400)),
        )


# --- statistics ---------------------------------------------------------------------------


@dataclass(slots=True)
class StreamStats:
    """What one endpoint received from one source address.

    Sequence numbers are followed per SSRC (a new SSRC - another prompt source, the agent's
    phone - starts a new run; `ssrc_changes` counts them); `lost` = expected - received over
    all runs, where a run expects every number from its first to its highest. Timing: each
    run's schedule is anchored on its earliest packet (arrival - RTP time since the run's
    first packet, minimised); `late` counts packets that arrived more than LATE_S behind that
    schedule, `max_late_s` is the worst. Duplicates are detected within the first 65536
    numbers of a run.
    """

    packets: int = 0
    octets: int = 0  # bytes of the datagrams
    audio: int = 0  # packets with payload louder than near-silence
    silent: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    max_late_s: float = 0.0
    max_gap_s: float = 0.0  # longest time between two packets
    first_arrival: float = 0.0  # time.monotonic()
    last_arrival: float = 0.0
    ssrc: int | None = None
    ssrc_changes: int = 0
    payload_types: set[int] = field(default_factory=set)
    marker_bits: int = 0
    # per-run state
    _lost_done: int = 0  # lost in finished runs (other SSRCs before this one)
    _base_seq: int = 0
    _high_seq: int = -1  # extended, relative to the run's first packet
    _unique: int = 0
    _seen: bytearray = field(default_factory=lambda: bytearray(8192))
    _base_ts: int = 0
    _high_ts: int = 0  # extended RTP timestamp, relative
    _anchor: float = 0.0

    @property
    def lost(self) -> int:
        return self._lost_done + self._high_seq + 1 - self._unique

    @property
    def duration_s(self) -> float:
        return self.last_arrival - self.first_arrival

    def copy(self) -> StreamStats:
        clone = copy.copy(self)
        clone.payload_types = set(self.payload_types)
        clone._seen = bytearray(0)  # a snapshot needs no duplicate map
        return clone

    def add(self, packet: bytes, now: float) -> None:
        """Count one received datagram (O(1))."""
        if len(packet) < 12 or packet[0] >> 6 != 2:
            return  # not RTP (RTCP goes to the odd port; anything else is ignored)
        first, mpt, seq, ts, ssrc = _RTP_HEADER.unpack_from(packet)
        header = 12 + 4 * (first & 0x0F)
        if first & 0x10 and len(packet) >= header + 4:  # header extension
            header += 4 + 4 * int.from_bytes(packet[header + 2 : header + 4], "big")
        payload = packet[header:]
        if first & 0x20 and payload:  # padding
            payload = payload[: -payload[-1]]
        pt = mpt & 0x7F
        if self.packets == 0 or ssrc != self.ssrc:
            if self.packets:
                self.ssrc_changes += 1
                self._lost_done += self._high_seq + 1 - self._unique
            else:
                self.first_arrival = now
            self.ssrc = ssrc
            self._base_seq, self._high_seq, self._unique = seq, 0, 0
            self._seen = bytearray(8192)
            self._base_ts, self._high_ts, self._anchor = ts, 0, now
        else:
            self.max_gap_s = max(self.max_gap_s, now - self.last_arrival)
        self.packets += 1
        self.octets += len(packet)
        self.last_arrival = now
        self.payload_types.add(pt)
        self.marker_bits += mpt >> 7
        # sequence: extend the 16-bit number around the highest seen so far
        delta = (seq - self._base_seq - self._high_seq) & 0xFFFF
        rel = self._high_seq + delta if delta < 0x8000 else self._high_seq - (0x10000 - delta)
        if 0 <= rel < 0x10000:
            bit = 1 << (rel & 7)
            if self._seen[rel >> 3] & bit:
                self.duplicates += 1
                return
            self._seen[rel >> 3] |= bit
        if rel < self._high_seq:
            self.reordered += 1
        else:
            self._high_seq = rel
        self._unique += 1
        # timing against the RTP clock
        tdelta = (ts - self._base_ts - self._high_ts) & 0xFFFFFFFF
        rel_ts = (
            self._high_ts + tdelta if tdelta < 0x80000000 else self._high_ts - (1 << 32) + tdelta
        )
        self._high_ts = max(self._high_ts, rel_ts)
        offset = rel_ts / CLOCK_RATE
        self._anchor = min(self._anchor, now - offset)
        lateness = now - offset - self._anchor
        if lateness > LATE_S:
            self.late += 1
        self.max_late_s = max(self.max_late_s, lateness)
        # payload
        if len(payload.translate(None, QUIET_BYTES.get(pt, b""))) > len(payload) // 10:
            self.audio += 1
        else:
            self.silent += 1


@dataclass(frozen=True, slots=True)
class SendStats:
    """What an endpoint sent: packets, and how late its own loop was (a sender that falls
    behind would make the far end's lateness figures meaningless)."""

    packets: int
    late: int  # sent more than LATE_S after their due time
    max_late_s: float


# --- endpoints ----------------------------------------------------------------------------


class _Stream:
    """An outgoing PCMU stream: `count` packets to `dest`, one every PTIME_S from `start`."""

    __slots__ = (
        "count", "dest", "due", "late", "max_late", "payload", "sent", "seq", "ssrc", "start",
        "ts",
    )  # fmt: skip

    def __init__(self, dest: Address, payload: Payload, count: int, start: float) -> None:
        self.dest = dest
        self.payload = payload
        self.count = count
        self.start = start
        self.due = start
        self.sent = 0
        self.late = 0
        self.max_late = 0.0
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.ssrc = random.getrandbits(32)


class RtpEndpoint:
    """One UDP socket of an `RtpHub`. `address` is what its SDP advertises."""

    def __init__(self, hub: RtpHub, sock: socket.socket, record: bool) -> None:
        self.hub = hub
        self.sock = sock
        self.address: Address = sock.getsockname()
        self.record = record
        self.received: list[tuple[Address, bytes]] = []  # with record=True: every datagram
        self._stats: dict[Address, StreamStats] = {}
        self._stream: _Stream | None = None
        self._sent = SendStats(0, 0, 0.0)

    @property
    def port(self) -> int:
        return self.address[1]

    def send_stream(
        self,
        dest: Address,
        *,
        seconds: float | None = None,
        packets: int | None = None,
        payload: Payload = SILENCE_FRAME,
        start_in: float = 0.0,
    ) -> None:
        """Send PCMU to `dest`: `packets` packets (or `seconds` worth), 20 ms apart, the first
        `start_in` seconds from now. Replaces a stream still running."""
        if (seconds is None) == (packets is None):
            raise ValueError("give seconds or packets")
        count = packets if packets is not None else round((seconds or 0.0) / PTIME_S)
        stream = _Stream(dest, payload, count, time.monotonic() + start_in)
        self.hub._schedule(self, stream)

    @property
    def sending(self) -> bool:
        return self._stream is not None

    def sent(self) -> SendStats:
        """What this endpoint sent so far (all its streams)."""
        with self.hub._lock:
            stream = self._stream
            if stream is None:
                return self._sent
            return SendStats(
                self._sent.packets + stream.sent,
                self._sent.late + stream.late,
                max(self._sent.max_late_s, stream.max_late),
            )

    def stats(self) -> dict[Address, StreamStats]:
        """A snapshot of what arrived, per source address."""
        with self.hub._lock:
            return {source: stats.copy() for source, stats in self._stats.items()}

    def stats_from(self, source: Address) -> StreamStats:
        """A snapshot of what arrived from `source` (all zero if nothing)."""
        with self.hub._lock:
            stats = self._stats.get(source)
            return stats.copy() if stats is not None else StreamStats()

    def total(self) -> StreamStats:
        """Everything received, from any source, summed (timing: the worst source)."""
        return sum_stats(self.stats().values())

    def reset(self) -> None:
        """Forget what arrived so far."""
        with self.hub._lock:
            self._stats.clear()
            self.received.clear()

    def _receive(self, now: float) -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP error from an earlier send (far end not there)
                continue
            stats = self._stats.get(source)
            if stats is None:
                stats = self._stats[source] = StreamStats()
            stats.add(data, now)
            if self.record:
                self.received.append((source, data))


def sum_stats(parts: Iterable[StreamStats]) -> StreamStats:
    """Many streams' stats as one: counts summed, timing the worst."""
    total = StreamStats()
    for part in parts:
        if part.packets and (not total.first_arrival or part.first_arrival < total.first_arrival):
            total.first_arrival = part.first_arrival
        total.last_arrival = max(total.last_arrival, part.last_arrival)
        total.packets += part.packets
        total.octets += part.octets
        total.audio += part.audio
        total.silent += part.silent
        total.duplicates += part.duplicates
        total.reordered += part.reordered
        total.late += part.late
        total._lost_done += part.lost
        total.max_late_s = max(total.max_late_s, part.max_late_s)
        total.max_gap_s = max(total.max_gap_s, part.max_gap_s)
        total.payload_types |= part.payload_types
        total.ssrc_changes += part.ssrc_changes
    return total


class RtpHub:
    """Runs every endpoint's I/O in one thread around one selector; start it (or use it as a
    context manager) before streams are due. `close` stops the loop and closes the sockets."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._endpoints: list[RtpEndpoint] = []
        self._due: list[tuple[float, int, RtpEndpoint]] = []  # (due, tiebreak, endpoint)
        self._tiebreak = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None
        self._running = False

    def endpoint(self, port: int = 0, *, record: bool = False) -> RtpEndpoint:
        """A new endpoint on 127.0.0.1:`port` (0: a free one). With `record`, every datagram
        is also kept in `received` (for content checks; memory grows with the call)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        sock.bind(("127.0.0.1", port))
        sock.setblocking(False)
        endpoint = RtpEndpoint(self, sock, record)
        with self._lock:
            self._endpoints.append(endpoint)
            self._selector.register(sock, selectors.EVENT_READ, endpoint)
        return endpoint

    def start(self) -> None:
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="rtp-hub", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for endpoint in self._endpoints:
            self._selector.unregister(endpoint.sock)
            endpoint.sock.close()
        self._endpoints.clear()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _schedule(self, endpoint: RtpEndpoint, stream: _Stream) -> None:
        with self._lock:
            _retire(endpoint)
            if stream.count > 0:
                endpoint._stream = stream
                self._tiebreak += 1
                heapq.heappush(self._due, (stream.due, self._tiebreak, endpoint))
        self._wake()

    def _loop(self) -> None:
        while self._running:
            with self._lock:
                timeout = max(0.0, self._due[0][0] - time.monotonic()) if self._due else 0.5
            events = self._selector.select(min(timeout, 0.5))
            now = time.monotonic()
            with self._lock:
                for key, _ in events:
                    if key.data is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                    else:
                        key.data._receive(now)
                self._send_due(time.monotonic())

    def _send_due(self, now: float) -> None:
        """Send every packet that is due (lock held)."""
        while self._due and self._due[0][0] <= now:
            due, _, endpoint = heapq.heappop(self._due)
            stream = endpoint._stream
            if stream is None or stream.due != due:
                continue  # replaced or stopped since it was scheduled
            payload = stream.payload(stream.sent) if callable(stream.payload) else stream.payload
            marker = 0x80 if stream.sent == 0 else 0
            header = _RTP_HEADER.pack(0x80, marker | PCMU, stream.seq, stream.ts, stream.ssrc)
            # an ICMP error from an earlier packet may surface here; this one still counts
            with contextlib.suppress(OSError):
                endpoint.sock.sendto(header + payload, stream.dest)
            lateness = now - due
            if lateness > LATE_S:
                stream.late += 1
            stream.max_late = max(stream.max_late, lateness)
            stream.sent += 1
            stream.seq = (stream.seq + 1) & 0xFFFF
            stream.ts = (stream.ts + SAMPLES_PER_PACKET) & 0xFFFFFFFF
            if stream.sent >= stream.count:
                _retire(endpoint)
                continue
            stream.due = stream.start + stream.sent * PTIME_S
            self._tiebreak += 1
            heapq.heappush(self._due, (stream.due, self._tiebreak, endpoint))


def _retire(endpoint: RtpEndpoint) -> None:
    """Fold the endpoint's current stream (if any) into its send totals (hub lock held)."""
    stream = endpoint._stream
    if stream is not None:
        endpoint._sent = SendStats(
            endpoint._sent.packets + stream.sent,
            endpoint._sent.late + stream.late,
            max(endpoint._sent.max_late_s, stream.max_late),
        )
        endpoint._stream = None


# --- SDP ----------------------------------------------------------------------------------


def sdp_offer(
    address: Address,
    *,
    session_id: int | None = None,
    direction: str = "sendrecv",
    payload_types: tuple[int, ...] = (PCMU,),
) -> str:
    """A minimal audio SDP for an endpoint at `address` (offer or answer alike): G.711 with
    the given payload types, 20 ms ptime, `direction` (sendrecv, recvonly, sendonly,
    inactive). CRLF line ends, as SIP wants."""
    host, port = address
    sid = session_id if session_id is not None else random.getrandbits(31)
    names = {PCMU: "PCMU/8000", PCMA: "PCMA/8000", 101: "telephone-event/8000"}
    lines = [
        "v=0",
        f"o=- {sid} {sid} IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, payload_types))}",
        *(f"a=rtpmap:{pt} {names[pt]}" for pt in payload_types if pt in names),
        *(["a=fmtp:101 0-16"] if 101 in payload_types else []),
        "a=ptime:20",
        f"a={direction}",
    ]
    return "\r\n".join(lines) + "\r\n"


def silent_sdp(host: str = "127.0.0.1", port: int = 9) -> str:
    """The SDP of a peer that never sends and whose packets go nowhere: port 9 (discard)."""
    return sdp_offer((host, port), session_id=1)


_CONNECTION = re.compile(r"^c=IN IP[46] (\S+)", re.MULTILINE)
_AUDIO = re.compile(r"^m=audio (\d+) ", re.MULTILINE)
_DIRECTION = re.compile(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", re.MULTILINE)


def sdp_audio_address(sdp: str) -> Address:
    """Where the SDP's first audio stream wants RTP: (connection address, m= port)."""
    media = _AUDIO.search(sdp)
    if media is None:
        raise ValueError(f"no m=audio line in SDP:\n{sdp}")
    # the connection line of the media section, else the session's
    connections = list(_CONNECTION.finditer(sdp))
    after = [c for c in connections if c.start() > media.start()]
    chosen = (
        after[0] if after else next(c for c in reversed(connections) if c.start() < media.start())
    )
    return chosen.group(1), int(media.group(1))


def sdp_direction(sdp: str) -> str:
    """The SDP's direction attribute (sendrecv when none is given, RFC 4566)."""
    found = _DIRECTION.search(sdp)
    return found.group(1) if found else "sendrecv"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
