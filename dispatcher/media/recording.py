"""Voicemail recordings: the caller's audio of a call RTPengine recorded, as a WAV.

RTPengine 10.5 without its kernel module can only record with `recording-method = pcap`
(the `proc` method and rtpengine-recording need /proc/rtpengine): it writes every packet it
*receives* on a recorded call to <spool>/pcaps/<call>-<random>.pcap (raw IP, LINKTYPE_RAW),
and when the recording ends (`stop recording`, or the call is deleted) it moves the call's
metadata to <spool>/metadata/rtpengine-meta-<call>-<random>.txt - so that file's presence
means the pcap is complete. Its first line is the pcap's path; SDP blocks follow when the
recording was on during an offer or answer (`record call: yes` at the offer).

The caller's audio is the RTP that arrived on RTPengine's caller-side port (the m= port of
the SDP RTPengine gave the caller, i.e. of the `answer` reply). Packets are put in RTP order
per SSRC, gaps in the RTP clock (DTX, lost packets) become silence, and G.711 (PCMU, PCMA) is
decoded with the tables below to 16-bit PCM, 8 kHz mono - audioop is deprecated (PEP 594).

Imports nothing of the package.
"""

from __future__ import annotations

import io
import struct
import sys
import time
import wave
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SAMPLE_RATE = 8000
MAX_GAP_S = 5.0  # a longer jump in the RTP clock is a restart, not a pause to keep
PCMU, PCMA, CN, TELEPHONE_EVENT = 0, 8, 13, 101


class RecordingError(RuntimeError):
    """The recording is missing, incomplete or holds no audio this module can decode."""


@dataclass(frozen=True, slots=True)
class Recording:
    """The caller's audio of one recorded call."""

    call_id: str
    wav: bytes  # RIFF WAV, 16-bit PCM, 8 kHz, mono
    duration_s: float
    packets: int  # RTP packets decoded
    caller_port: int  # RTPengine's port the audio arrived on
    metadata_path: Path
    pcap_path: Path


# --- G.711 ----------------------------------------------------------------------------------


def ulaw_to_linear(byte: int) -> int:
    """One G.711 mu-law byte as a 16-bit linear sample (ITU-T G.711, bias 0x84)."""
    byte = ~byte & 0xFF
    magnitude = (((byte & 0x0F) << 3) + 0x84) << ((byte & 0x70) >> 4)
    return 0x84 - magnitude if byte & 0x80 else magnitude - 0x84


def alaw_to_linear(byte: int) -> int:
    """One G.711 A-law byte as a 16-bit linear sample."""
    byte ^= 0x55
    exponent, mantissa = (byte & 0x70) >> 4, byte & 0x0F
    magnitude = (
        (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return magnitude if byte & 0x80 else -magnitude


def _byte_tables(decode: dict[int, int]) -> tuple[bytes, bytes]:
    """Translation tables G.711 byte -> low byte and -> high byte of the little-endian
    sample, so a payload decodes with two bytes.translate calls (C speed)."""
    samples = [decode[b] & 0xFFFF for b in range(256)]
    return bytes(s & 0xFF for s in samples), bytes(s >> 8 for s in samples)


_TABLES = {
    PCMU: _byte_tables({b: ulaw_to_linear(b) for b in range(256)}),
    PCMA: _byte_tables({b: alaw_to_linear(b) for b in range(256)}),
}
_SILENCE_SAMPLE = b"\x00\x00"


def g711_to_pcm(payload: bytes, payload_type: int) -> bytes:
    """G.711 bytes (PCMU or PCMA) as 16-bit little-endian PCM. O(len(payload))."""
    low, high = _TABLES[payload_type]
    out = bytearray(2 * len(payload))
    out[0::2] = payload.translate(low)
    out[1::2] = payload.translate(high)
    return bytes(out)


def pcm_wav(pcm: bytes, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit little-endian mono PCM as a RIFF WAV file."""
    if sys.byteorder != "little":  # wave writes frames as given; WAV wants little-endian
        raise RecordingError("PCM is assembled little-endian; this host is not")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


# --- spool files ----------------------------------------------------------------------------


def metadata_files(spool_dir: Path, call_id: str) -> list[Path]:
    """The finished recordings' metadata files of `call_id`, oldest first. RTPengine names
    them after the call-id URI-escaped (g_uri_escape_string: all but A-Z a-z 0-9 - . _ ~)
    plus a dash and 16 random hex digits. O(files in metadata/)."""
    prefix = f"rtpengine-meta-{quote(call_id, safe='')}-"
    found = [
        path
        for path in (Path(spool_dir) / "metadata").glob("rtpengine-meta-*.txt")
        if path.name.startswith(prefix) and len(path.name) == len(prefix) + 16 + 4
    ]
    return sorted(found, key=lambda path: path.stat().st_mtime_ns)


def read_metadata(path: Path) -> tuple[Path, list[tuple[str, str]]]:
    """(pcap path, [(SDP mode, SDP), ...]) of a pcap-method metadata file."""
    text = Path(path).read_text(errors="replace")
    pcap, _, rest = text.partition("\n")
    sdps: list[tuple[str, str]] = []
    for block in rest.split("\nSDP mode: ")[1:]:
        mode, _, after = block.partition("\n")
        # "SDP before RTP packet: N", a blank line, then the SDP up to the next block
        body = after.split("\n\n", 1)[1] if "\n\n" in after else ""
        # the SDP ends where the next block starts (no blank line) or at a blank line
        for end in ("\nTimestamp started ms:", "\nLabel:", "\n\n"):
            body = body.split(end, 1)[0]
        sdps.append((mode.strip(), body + "\n"))
    return Path(pcap.strip()), sdps


def _sdp_audio_port(sdp: str) -> int | None:
    for line in sdp.splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    return None


def read_pcap(path: Path) -> Iterator[tuple[float, int, bytes]]:
    """(capture time, UDP destination port, UDP payload) of each UDP packet in a pcap file
    with raw IPv4/IPv6 (LINKTYPE_RAW, RTPengine's default) or Ethernet frames. O(file)."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise RecordingError(f"{path}: not a pcap file")
    fraction = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    link_header = {101: 0, 12: 0, 14: 0, 1: 14}.get(linktype)
    if link_header is None:
        raise RecordingError(f"{path}: link type {linktype} not supported")
    record = struct.Struct(endian + "IIII")
    pos = 24
    while pos + 16 <= len(data):
        seconds, fraction_part, captured, _ = record.unpack_from(data, pos)
        frame = data[pos + 16 : pos + 16 + captured]
        pos += 16 + captured
        packet = frame[link_header:]
        udp = _udp_of(packet)
        if udp is not None:
            yield seconds + fraction_part * fraction, udp[0], udp[1]


def _udp_of(packet: bytes) -> tuple[int, bytes] | None:
    """(destination port, payload) of an IPv4/IPv6 UDP packet; None for anything else."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        header = 4 * (packet[0] & 0x0F)
        if len(packet) < header + 8 or packet[9] != 17:
            return None
    elif version == 6:
        header = 40
        if len(packet) < header + 8 or packet[6] != 17:
            return None
    else:
        return None
    dst_port, length = struct.unpack_from("!HH", packet, header + 2)
    return dst_port, packet[header + 8 : header + max(length, 8)]


# --- RTP to PCM ---------------------------------------------------------------------------


def _rtp_fields(payload: bytes) -> tuple[int, int, int, int, bytes] | None:
    """(payload type, seq, timestamp, ssrc, media) of an RTP packet; None if not RTP."""
    if len(payload) < 12 or payload[0] >> 6 != 2:
        return None
    first, mpt = payload[0], payload[1]
    if 72 <= mpt & 0x7F <= 79:  # RTCP (RFC 5761: 200-207 with the marker bit)
        return None
    seq, ts, ssrc = struct.unpack_from("!HII", payload, 2)
    header = 12 + 4 * (first & 0x0F)
    if first & 0x10 and len(payload) >= header + 4:
        header += 4 + 4 * int.from_bytes(payload[header + 2 : header + 4], "big")
    media = payload[header:]
    if first & 0x20 and media:
        media = media[: -media[-1]]
    return mpt & 0x7F, seq, ts, ssrc, media


def rtp_to_pcm(datagrams: Iterable[bytes]) -> tuple[bytes, int]:
    """Decode the RTP datagrams of one direction, in arrival order, to 16-bit PCM; returns
    (pcm, packets decoded).

    Per SSRC the packets are sorted by extended sequence number and duplicates dropped; a
    jump in the RTP clock up to MAX_GAP_S becomes silence. SSRCs follow each other in
    arrival order. CN and telephone-event are skipped (their time is the gap they leave);
    another codec raises RecordingError. O(packets log packets)."""
    runs: list[tuple[int, list[tuple[int, int, int, bytes]]]] = []  # (ssrc, [(ext, ts, pt, media)])
    by_ssrc: dict[int, list[tuple[int, int, int, bytes]]] = {}
    last_seq: dict[int, int] = {}
    for datagram in datagrams:
        fields = _rtp_fields(datagram)
        if fields is None:
            continue
        pt, seq, ts, ssrc, media = fields
        run = by_ssrc.get(ssrc)
        if run is None:
            run = by_ssrc[ssrc] = []
            runs.append((ssrc, run))
            ext = seq
        else:
            prev = last_seq[ssrc]
            delta = (seq - prev) & 0xFFFF
            ext = prev + delta if delta < 0x8000 else prev - (0x10000 - delta)
        last_seq[ssrc] = max(last_seq.get(ssrc, ext), ext)
        run.append((ext, ts, pt, media))
    pcm = bytearray()
    decoded = 0
    for _, run in runs:
        run.sort(key=lambda item: item[0])
        next_ts: int | None = None
        previous_ext: int | None = None
        for ext, ts, pt, media in run:
            if ext == previous_ext:
                continue  # duplicate
            previous_ext = ext
            if pt in (CN, TELEPHONE_EVENT):
                continue
            if pt not in _TABLES:
                raise RecordingError(f"payload type {pt} is not G.711 (PCMU 0, PCMA 8)")
            if next_ts is not None:
                gap = (ts - next_ts) & 0xFFFFFFFF
                if 0 < gap <= MAX_GAP_S * SAMPLE_RATE:
                    pcm += _SILENCE_SAMPLE * gap
            pcm += g711_to_pcm(media, pt)
            next_ts = (ts + len(media)) & 0xFFFFFFFF
            decoded += 1
    return bytes(pcm), decoded


# --- the recording of a call --------------------------------------------------------------


def caller_recording(spool_dir: Path, call_id: str, *, caller_port: int | None = None) -> Recording:
    """The caller's audio of `call_id`'s latest finished recording in `spool_dir`.

    `caller_port` is RTPengine's caller-side port (the m= port of the SDP the caller got,
    from the `answer` reply). Without it, the last answer SDP in the metadata gives it (the
    recording was on at the answer); else, when RTP arrived on one port only - a voicemail
    where nobody but the caller sends - that one. RecordingError when there is no finished
    recording, the port is ambiguous, or nothing decodable arrived. O(pcap size).
    """
    found = metadata_files(spool_dir, call_id)
    if not found:
        raise RecordingError(f"no finished recording of call {call_id!r} in {spool_dir}")
    metadata = found[-1]
    pcap, sdps = read_metadata(metadata)
    if not pcap.is_absolute():
        pcap = Path(spool_dir) / pcap
    if not pcap.exists():
        raise RecordingError(f"{metadata} names {pcap}, which does not exist")
    udp = list(read_pcap(pcap))
    if caller_port is None:
        answers = [_sdp_audio_port(sdp) for mode, sdp in sdps if mode == "answer"]
        caller_port = next((port for port in reversed(answers) if port), None)
    if caller_port is None:
        rtp_ports = {port for _, port, payload in udp if _rtp_fields(payload) is not None}
        if len(rtp_ports) != 1:
            raise RecordingError(
                f"RTP arrived on ports {sorted(rtp_ports)}: give caller_port for {call_id!r}"
            )
        caller_port = rtp_ports.pop()
    pcm, decoded = rtp_to_pcm(payload for _, port, payload in udp if port == caller_port)
    if not decoded:
        raise RecordingError(f"no G.711 audio from the caller (port {caller_port}) in {pcap}")
    return Recording(
        call_id=call_id,
        wav=pcm_wav(pcm),
        duration_s=len(pcm) / 2 / SAMPLE_RATE,
        packets=decoded,
        caller_port=caller_port,
        metadata_path=metadata,
        pcap_path=pcap,
    )


def wait_for_recording(
    spool_dir: Path,
    call_id: str,
    *,
    caller_port: int | None = None,
    timeout: float = 5.0,
    interval: float = 0.05,
) -> Recording:
    """`caller_recording` once the recording is finished (its metadata file appeared),
    polling every `interval` s for at most `timeout` s; RecordingError after that."""
    deadline = time.monotonic() + timeout
    while not metadata_files(spool_dir, call_id):
        if time.monotonic() > deadline:
            raise RecordingError(f"recording of {call_id!r} not finished after {timeout}s")
        time.sleep(interval)
    return caller_recording(spool_dir, call_id, caller_port=caller_port)


def discard_recording(recording: Recording) -> None:
    """Delete the recording's spool files (its pcap and metadata) once its WAV is stored
    elsewhere: RTPengine never removes them."""
    recording.pcap_path.unlink(missing_ok=True)
    recording.metadata_path.unlink(missing_ok=True)
