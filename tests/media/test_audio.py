"""Upload checks: every refusal with its message, the accepted formats, fuzzing, conversion."""

from __future__ import annotations

import itertools
import math
import os
import struct
import subprocess
import wave
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.media.audio import (
    MAX_CHUNKS,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_SECONDS,
    PCM_RATES,
    AudioError,
    AudioInfo,
    MissingToolError,
    inspect_audio,
    to_playback_format,
)

# --- building WAV files byte by byte -----------------------------------------------------------


def chunk(chunk_id: bytes, body: bytes, *, size: int | None = None, pad: bool = True) -> bytes:
    """A RIFF chunk; `size` overrides the true length, `pad=False` omits the odd-size pad byte."""
    header = chunk_id + struct.pack("<I", len(body) if size is None else size)
    return header + body + (b"\x00" if pad and len(body) % 2 else b"")


def fmt_body(tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16) -> bytes:
    block = channels * max(1, bits // 8)
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


def fmt(tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16) -> bytes:
    return chunk(b"fmt ", fmt_body(tag, channels, rate, bits))


def extensible(
    sub_tag: int, *, bits: int = 16, rate: int = 8000, suffix: bytes | None = None
) -> bytes:
    guid = struct.pack("<H", sub_tag) + (
        b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71" if suffix is None else suffix
    )
    body = fmt_body(0xFFFE, 1, rate, bits) + struct.pack("<HHI", 22, bits, 4) + guid
    return chunk(b"fmt ", body)


def riff(*chunks: bytes, size: int | None = None, form: bytes = b"WAVE") -> bytes:
    body = form + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def tone(rate: int, seconds: float, hertz: float = 440, amplitude: float = 0.5) -> bytes:
    n = int(rate * seconds)
    peak = amplitude * 32767
    return struct.pack(
        f"<{n}h", *(round(peak * math.sin(2 * math.pi * hertz * k / rate)) for k in range(n))
    )


def pcm(rate: int = 8000, frames: int = 800) -> bytes:
    return riff(fmt(rate=rate), chunk(b"data", b"\x01\x00" * frames))


def g711(tag: int, frames: int = 800, rate: int = 8000) -> bytes:
    fact = chunk(b"fact", struct.pack("<I", frames))
    return riff(fmt(tag, rate=rate, bits=8), fact, chunk(b"data", b"\xd5" * frames))


def samples(wav: bytes) -> list[int]:
    info = inspect_audio(wav)
    assert info.is_playback_format and info.data_offset == 44
    return list(struct.unpack(f"<{info.frames}h", wav[44 : 44 + info.data_size]))


def rms(values: list[int]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) / 32767


# --- refusals ----------------------------------------------------------------------------------

REFUSED = [
    ("empty", b"", "empty", "empty: the upload holds no data"),
    ("mp3", b"ID3\x04\x00\x00" + b"\x00" * 100, "not_wav", "not a WAV file: looks like MP3"),
    ("mp3 frame", b"\xff\xfb\x90\x64" + b"\x00" * 100, "not_wav", "looks like MP3"),
    ("ogg", b"OggS\x00\x02" + b"\x00" * 60, "not_wav", "not a WAV file: looks like Ogg"),
    ("flac", b"fLaC\x00\x00\x00\x22", "not_wav", "not a WAV file: looks like FLAC"),
    ("text", b"hello, this is a text file", "not_wav",
     "not a WAV file: it does not start with a RIFF/WAVE header"),
    ("rifx", b"RIFX\x00\x00\x00\x24WAVEfmt ", "not_wav", "big-endian RIFX"),
    ("rf64", b"RF64\xff\xff\xff\xffWAVEds64", "not_wav", "RF64 (64-bit WAV)"),
    ("avi", riff(chunk(b"avih", b"\x00" * 56), form=b"AVI "), "not_wav",
     "not a WAV file: a RIFF file of form 'AVI ', not 'WAVE'"),
    ("short header", b"RIFF\x04\x00", "header",
     "RIFF header damaged: 6 bytes, a WAV header has at least 12"),
    ("riff size 0", pcm()[:4] + b"\x00\x00\x00\x00" + pcm()[8:], "header",
     "RIFF header damaged: RIFF size 0 cannot even hold 'WAVE'"),
    ("no chunks", riff(), "header", "RIFF header damaged: no fmt chunk"),
    ("no fmt", riff(chunk(b"data", b"\x00" * 100)), "header", "RIFF header damaged: no fmt chunk"),
    ("no data", riff(fmt(), chunk(b"LIST", b"INFO")), "empty",
     "no data chunk: the file holds no audio"),
    ("garbage chunk", riff(b"\x00\x01\x02\x03\x10\x00\x00\x00" + b"\x00" * 16, fmt()), "header",
     r"RIFF header damaged: no valid chunk at byte 12 (id '\x00\x01\x02\x03')"),
    ("short fmt", riff(chunk(b"fmt ", fmt_body()[:14]), chunk(b"data", b"\x00" * 8)), "header",
     "RIFF header damaged: fmt chunk of 14 bytes, at least 16 needed"),
    ("two fmt", riff(fmt(), fmt(), chunk(b"data", b"\x00" * 8)), "header",
     "RIFF header damaged: more than one fmt chunk"),
    ("two data", riff(fmt(), chunk(b"data", b"\x00" * 8), chunk(b"data", b"\x00" * 8)), "header",
     "RIFF header damaged: more than one data chunk"),
    ("truncated fmt", riff(chunk(b"fmt ", fmt_body(), size=40)), "truncated",
     "truncated fmt chunk at byte 12: its header says 40 bytes, the file holds 16"),
    ("truncated list", riff(chunk(b"LIST", b"INFOxx", size=1000)), "truncated",
     "truncated 'LIST' chunk at byte 12: its header says 1000 bytes, the file holds 6"),
    ("truncated data", riff(fmt(), chunk(b"data", b"\x00" * 100, size=16000)), "truncated",
     "truncated data chunk: its header says 16000 bytes, the file holds 100"),
    ("pcm 8-bit", riff(fmt(bits=8), chunk(b"data", b"\x80" * 8)), "encoding",
     "unsupported encoding PCM 8-bit; PCM must be 16-bit"),
    ("pcm 24-bit", riff(fmt(bits=24), chunk(b"data", b"\x00" * 9)), "encoding",
     "unsupported encoding PCM 24-bit; PCM must be 16-bit"),
    ("float", riff(fmt(3, bits=32), chunk(b"data", b"\x00" * 8)), "encoding",
     "unsupported encoding IEEE float (format tag 0x0003); use PCM 16-bit, A-law or µ-law"),
    ("mp3 in wav", riff(fmt(0x55, bits=0), chunk(b"data", b"\x00" * 8)), "encoding",
     "unsupported encoding MPEG layer 3 (MP3) (format tag 0x0055)"),
    ("gsm in wav", riff(fmt(0x31, bits=0), chunk(b"data", b"\x00" * 8)), "encoding",
     "unsupported encoding GSM 6.10 (format tag 0x0031)"),
    ("unknown tag", riff(fmt(0x1234), chunk(b"data", b"\x00" * 8)), "encoding",
     "unsupported encoding unknown (format tag 0x1234)"),
    ("extensible float", riff(extensible(3, bits=32), chunk(b"data", b"\x00" * 8)), "encoding",
     "unsupported encoding IEEE float (format tag 0x0003)"),
    ("extensible other guid", riff(extensible(1, suffix=b"\x11" * 14), chunk(b"data", b"\x00" * 8)),
     "encoding", "unsupported encoding: WAVE_FORMAT_EXTENSIBLE sub-format 0100" + "11" * 14),
    ("extensible short",
     riff(chunk(b"fmt ", fmt_body(0xFFFE) + b"\x16\x00"), chunk(b"data", b"\x00" * 8)),
     "header", "RIFF header damaged: WAVE_FORMAT_EXTENSIBLE fmt chunk of 18 bytes, 40 needed"),
    ("a-law 16-bit", riff(fmt(6, bits=16), chunk(b"data", b"\x00" * 8)), "encoding",
     "unsupported encoding A-law 16-bit; G.711 is 8-bit"),
    ("stereo", riff(fmt(channels=2), chunk(b"data", b"\x00" * 8)), "channels",
     "2 channels, mono required"),
    ("6 channels", riff(fmt(channels=6), chunk(b"data", b"\x00" * 24)), "channels",
     "6 channels, mono required"),
    ("0 channels", riff(fmt(channels=0), chunk(b"data", b"\x00" * 8)), "header",
     "RIFF header damaged: 0 channels"),
    ("44.1 kHz", pcm(rate=44100), "sample_rate",
     "sample rate 44100 Hz not one of 8000, 16000, 48000 Hz"),
    ("22.05 kHz", pcm(rate=22050), "sample_rate",
     "sample rate 22050 Hz not one of 8000, 16000, 48000 Hz"),
    ("a-law 16 kHz", g711(6, rate=16000), "sample_rate",
     "sample rate 16000 Hz not 8000 Hz, the only rate of G.711 (A-law)"),
    ("µ-law 48 kHz", g711(7, rate=48000), "sample_rate",
     "sample rate 48000 Hz not 8000 Hz, the only rate of G.711 (µ-law)"),
    ("empty data", riff(fmt(), chunk(b"data", b"")), "empty",
     "empty: the data chunk holds no audio"),
    ("half a frame", riff(fmt(), chunk(b"data", b"\x01")), "empty",
     "empty: the data chunk holds no audio"),
    ("too many chunks",
     riff(*[chunk(b"JUNK", b"")] * (MAX_CHUNKS + 1), fmt(), chunk(b"data", b"\x00\x00")),
     "header", f"RIFF header damaged: more than {MAX_CHUNKS} chunks"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "code", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_refusal_names_the_problem(data: bytes, code: str, message: str) -> None:
    with pytest.raises(AudioError) as raised:
        inspect_audio(data)
    assert message in str(raised.value)
    assert raised.value.code == code


def test_refuses_more_bytes_than_allowed() -> None:
    data = pcm(frames=1000)
    with pytest.raises(
        AudioError, match=rf"^larger than 1000 bytes \({len(data)} bytes\)$"
    ) as raised:
        inspect_audio(data, max_bytes=1000)
    assert raised.value.code == "too_large"
    assert inspect_audio(data, max_bytes=len(data)).frames == 1000
    big = b"\x00" * (MAX_UPLOAD_BYTES + 1)
    with pytest.raises(AudioError, match=rf"^larger than {MAX_UPLOAD_BYTES} bytes"):
        inspect_audio(big)  # by default; and before anything is parsed


def test_refuses_more_seconds_than_allowed() -> None:
    with pytest.raises(AudioError, match=r"^longer than 1.5 s \(2.0 s\)$") as raised:
        inspect_audio(pcm(frames=16000), max_seconds=1.5)
    assert raised.value.code == "too_long"
    ten_minutes = int(MAX_UPLOAD_SECONDS * 8000)
    assert inspect_audio(g711(7, frames=ten_minutes)).seconds == MAX_UPLOAD_SECONDS
    with pytest.raises(AudioError, match=r"^longer than 600 s \(600.1 s\)$"):
        inspect_audio(g711(7, frames=ten_minutes + 800))


def test_defaults_hold_ten_minutes_of_the_playback_format() -> None:
    ten_minutes = pcm(frames=int(MAX_UPLOAD_SECONDS * 8000))
    assert len(ten_minutes) <= MAX_UPLOAD_BYTES
    assert inspect_audio(ten_minutes).seconds == MAX_UPLOAD_SECONDS


def test_refusal_of_truncated_data_prefers_the_encoding_problem() -> None:
    cut = riff(fmt(3, bits=32), chunk(b"data", b"\x00" * 10, size=4000))
    with pytest.raises(AudioError, match="unsupported encoding IEEE float"):
        inspect_audio(cut)


# pcm(frames=400): RIFF header 0-12, fmt chunk 12-36, data chunk header 36-44, samples 44-844.
CUTS = [
    (4, "RIFF header damaged: 4 bytes, a WAV header has at least 12"),
    (11, "RIFF header damaged: 11 bytes, a WAV header has at least 12"),
    (12, "RIFF header damaged: no fmt chunk"),
    (16, "truncated: the file ends 4 bytes into a chunk header at byte 12"),
    (20, "truncated fmt chunk at byte 12: its header says 16 bytes, the file holds 0"),
    (30, "truncated fmt chunk at byte 12: its header says 16 bytes, the file holds 10"),
    (36, "no data chunk: the file holds no audio"),
    (40, "truncated: the file ends 4 bytes into a chunk header at byte 36"),
    (44, "truncated data chunk: its header says 800 bytes, the file holds 0"),
    (45, "truncated data chunk: its header says 800 bytes, the file holds 1"),
    (843, "truncated data chunk: its header says 800 bytes, the file holds 799"),
]


@pytest.mark.parametrize(("cut", "message"), CUTS)
def test_a_file_cut_short_is_refused_precisely(cut: int, message: str) -> None:
    with pytest.raises(AudioError) as raised:
        inspect_audio(pcm(frames=400)[:cut])
    assert str(raised.value) == message


# --- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", PCM_RATES)
def test_accepts_pcm16_mono(rate: int) -> None:
    info = inspect_audio(pcm(rate=rate, frames=rate // 2))
    assert info == AudioInfo("pcm_s16le", rate, 1, rate // 2, 44, rate)
    assert info.seconds == 0.5
    assert info.is_playback_format == (rate == 8000)


@pytest.mark.parametrize(("tag", "encoding"), [(6, "alaw"), (7, "ulaw")])
def test_accepts_g711(tag: int, encoding: str) -> None:
    info = inspect_audio(g711(tag, frames=8000))
    assert (info.encoding, info.sample_rate, info.frames, info.seconds) == (encoding, 8000, 8000, 1)
    assert not info.is_playback_format


@pytest.mark.parametrize(("sub_tag", "bits", "encoding"), [(1, 16, "pcm_s16le"), (7, 8, "ulaw")])
def test_accepts_wave_format_extensible(sub_tag: int, bits: int, encoding: str) -> None:
    info = inspect_audio(riff(extensible(sub_tag, bits=bits), chunk(b"data", b"\x00" * 160)))
    assert info.encoding == encoding and info.frames == 160 * 8 // bits


ODD_BUT_FINE = [
    ("data before fmt", riff(chunk(b"data", b"\x01\x00" * 50), fmt())),
    ("LIST chunks around", riff(chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00sox!\x00\x00"), fmt(),
                                chunk(b"LIST", b"adtl"), chunk(b"data", b"\x01\x00" * 50),
                                chunk(b"LIST", b"INFO"))),
    ("odd chunk with pad", riff(chunk(b"junk", b"abc"), fmt(), chunk(b"data", b"\x01\x00" * 50))),
    ("odd chunk, pad forgotten", riff(chunk(b"junk", b"abc", pad=False), fmt(),
                                      chunk(b"data", b"\x01\x00" * 50))),
    ("fmt of 18 bytes",
     riff(chunk(b"fmt ", fmt_body() + b"\x00\x00"), chunk(b"data", b"\x01\x00" * 50))),
    ("fact and cue", riff(fmt(), chunk(b"fact", b"\x32\x00\x00\x00"), chunk(b"cue ", b"\x00" * 4),
                          chunk(b"data", b"\x01\x00" * 50))),
    ("riff size too big", riff(fmt(), chunk(b"data", b"\x01\x00" * 50), size=10**6)),
    ("riff size too small", riff(fmt(), chunk(b"data", b"\x01\x00" * 50), size=30)),
    ("riff size unknown", riff(fmt(), chunk(b"data", b"\x01\x00" * 50), size=0xFFFFFFFF)),
    ("data size from ffmpeg on a pipe",
     riff(fmt(), chunk(b"data", b"\x01\x00" * 50, size=0xFFFFFFFF))),
    ("data size from sox on a pipe",
     riff(fmt(), chunk(b"data", b"\x01\x00" * 50, size=0x7FFFF000))),
    ("odd data size", riff(fmt(), chunk(b"data", b"\x01\x00" * 50 + b"\x01"))),
    ("junk after the audio",
     riff(fmt(), chunk(b"data", b"\x01\x00" * 50)) + b"ID3\x03" + b"\x00" * 50),
    ("zeros after the audio", riff(fmt(), chunk(b"data", b"\x01\x00" * 50)) + b"\x00" * 7),
    ("cut-off metadata after the audio", riff(fmt(), chunk(b"data", b"\x01\x00" * 50),
                                              chunk(b"LIST", b"INFO", size=4000))),
]  # fmt: skip


@pytest.mark.parametrize("data", [r[1] for r in ODD_BUT_FINE], ids=[r[0] for r in ODD_BUT_FINE])
def test_accepts_odd_but_sound_structure(data: bytes) -> None:
    info = inspect_audio(data)
    assert (info.encoding, info.sample_rate, info.frames) == ("pcm_s16le", 8000, 50)
    assert data[info.data_offset : info.data_offset + info.data_size] == b"\x01\x00" * 50


@pytest.mark.parametrize(
    ("options", "encoding", "rate"),
    [
        (["-e", "signed-integer", "-b", "16", "-r", "8000"], "pcm_s16le", 8000),
        (["-e", "signed-integer", "-b", "16", "-r", "16000"], "pcm_s16le", 16000),
        (["-e", "signed-integer", "-b", "16", "-r", "48000"], "pcm_s16le", 48000),
        (["-e", "a-law", "-r", "8000"], "alaw", 8000),
        (["-e", "u-law", "-r", "8000"], "ulaw", 8000),
    ],
)
@pytest.mark.parametrize("to_pipe", [False, True], ids=["file", "pipe"])
def test_accepts_what_sox_writes(
    options: list[str], encoding: str, rate: int, to_pipe: bool, tmp_path: Path
) -> None:
    out = tmp_path / "sox.wav"
    target = ["-t", "wav", "-"] if to_pipe else [str(out)]
    done = subprocess.run(
        ["sox", "-n", "-c", "1", *options, *target, "synth", "0.5", "sine", "440"],
        capture_output=True, check=True,
    )  # fmt: skip
    data = done.stdout if to_pipe else out.read_bytes()
    info = inspect_audio(data)
    assert (info.encoding, info.sample_rate, info.frames) == (encoding, rate, rate // 2)


# --- fuzzing: nothing but AudioError, and sound results ----------------------------------------


def check_result(data: bytes) -> AudioInfo | None:
    """inspect_audio's answer, or None for an AudioError; any other exception fails."""
    try:
        info = inspect_audio(data)
    except AudioError as error:
        assert str(error) and error.code
        return None
    width = 2 if info.encoding == "pcm_s16le" else 1
    assert info.channels == 1 and info.frames >= 1
    assert info.data_size == info.frames * width
    assert info.data_offset >= 12 and info.data_offset + info.data_size <= len(data)
    assert info.sample_rate in (PCM_RATES if width == 2 else (8000,))
    assert info.seconds <= MAX_UPLOAD_SECONDS
    return info


@given(st.binary(max_size=4096))
def test_random_bytes_raise_only_audio_error(data: bytes) -> None:
    check_result(data)


@given(st.binary(max_size=4), st.binary(max_size=4096))
def test_random_bytes_after_a_riff_header_raise_only_audio_error(size: bytes, rest: bytes) -> None:
    check_result(b"RIFF" + size.ljust(4, b"\x00") + b"WAVE" + rest)


chunk_ids = st.sampled_from([b"fmt ", b"data", b"LIST", b"fact", b"JUNK"]) | st.binary(
    min_size=4, max_size=4
)
fmt_bodies = st.builds(
    lambda tag, channels, rate, bits, tail: (
        struct.pack("<HHIIHH", tag, channels, rate, 0, 0, bits) + tail
    ),
    st.sampled_from([1, 3, 6, 7, 0xFFFE]) | st.integers(0, 0xFFFF),
    st.sampled_from([0, 1, 2]) | st.integers(0, 0xFFFF),
    st.sampled_from([8000, 16000, 48000, 44100]) | st.integers(0, 2**32 - 1),
    st.sampled_from([8, 16, 24]) | st.integers(0, 0xFFFF),
    st.binary(max_size=40),
)
sizes = st.none() | st.sampled_from([0, 1, 0xFFFFFFFF, 0x7FFFF000]) | st.integers(0, 2**32 - 1)


@st.composite
def riff_files(draw: st.DrawFn) -> bytes:
    """Plausible RIFF files: real and random chunk ids, fmt bodies near valid ones, sizes that
    are right, placeholders or anything, pad bytes present or not, cut anywhere."""
    chunks = [
        chunk(cid, draw(fmt_bodies) if cid == b"fmt " else draw(st.binary(max_size=64)),
              size=draw(sizes), pad=draw(st.booleans()))
        for cid in draw(st.lists(chunk_ids, max_size=6))
    ]  # fmt: skip
    data = riff(*chunks, size=draw(sizes))
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@settings(max_examples=400)
@given(riff_files())
def test_random_riff_structures_raise_only_audio_error(data: bytes) -> None:
    check_result(data)


@settings(max_examples=200)
@given(
    st.sampled_from(
        [
            pcm(frames=100),
            g711(6, frames=100),
            riff(extensible(1), chunk(b"data", b"\x02\x00" * 100)),
        ]
    ),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8),
    st.integers(0, 300),
)
def test_damaged_wavs_raise_only_audio_error(
    base: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(base)
    for offset, value in edits:
        data[offset % len(data)] = value
    check_result(bytes(data[: len(data) - cut]))


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from([pcm(8000, 160), pcm(16000, 320), pcm(48000, 960), g711(6, 160), g711(7, 160)]),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4),
)
def test_whatever_is_accepted_converts(base: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(base)
    for offset, value in edits:
        data[offset] = value
    info = check_result(bytes(data))
    if info is not None:
        converted = to_playback_format(bytes(data), info)
        out = inspect_audio(converted)
        assert out.is_playback_format
        assert abs(out.frames - info.seconds * 8000) <= 2


# --- conversion to the playback format ---------------------------------------------------------


def test_playback_format_is_copied_without_sox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sox: none needed
    samples_in = tone(8000, 0.25)
    upload = riff(chunk(b"LIST", b"INFO"), chunk(b"data", samples_in), fmt())
    out = to_playback_format(upload, inspect_audio(upload))
    assert len(out) == 44 + len(samples_in) and out[44:] == samples_in
    assert samples(out) == list(struct.unpack(f"<{2000}h", samples_in))


@pytest.mark.parametrize("rate", [16000, 48000])
def test_resampled_to_8khz_keeps_pitch_and_level(rate: int) -> None:
    upload = riff(fmt(rate=rate), chunk(b"data", tone(rate, 1.0, hertz=440, amplitude=0.5)))
    out = samples(to_playback_format(upload, inspect_audio(upload)))
    assert abs(len(out) - 8000) <= 2
    crossings = sum(1 for a, b in itertools.pairwise(out) if (a < 0) != (b < 0))
    assert 435 <= crossings / 2 <= 445  # Hz, over one second
    assert abs(20 * math.log10(rms(out) / (0.5 / math.sqrt(2)))) < 0.5  # dB


def test_resampling_filters_what_8khz_cannot_carry() -> None:
    upload = riff(fmt(rate=48000), chunk(b"data", tone(48000, 0.5, hertz=6000, amplitude=0.5)))
    out = samples(to_playback_format(upload, inspect_audio(upload)))
    assert rms(out[400:-400]) < 0.001  # 6 kHz is above 8 kHz's Nyquist: gone, not aliased


@pytest.mark.parametrize(
    ("tag", "codes", "expected"),
    [
        # G.711's decoding tables (ITU-T G.711): the extremes, zero and a small step.
        (7, b"\x80\x00\xff\x7f\xf0", (32124, -32124, 0, 0, 120)),
        (6, b"\xaa\x2a\xd5\x55\x80", (32256, -32256, 8, -8, 5504)),
    ],
    ids=["ulaw", "alaw"],
)
def test_g711_is_decoded_by_the_standard_tables(
    tag: int, codes: bytes, expected: tuple[int, ...]
) -> None:
    upload = riff(fmt(tag, bits=8), chunk(b"data", codes))
    assert tuple(samples(to_playback_format(upload, inspect_audio(upload)))) == expected


def test_conversion_needs_sox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    upload = pcm(rate=16000)
    with pytest.raises(MissingToolError, match=r"not found on PATH: sox; .*apt-get install sox"):
        to_playback_format(upload, inspect_audio(upload))


def test_conversion_refuses_info_of_another_upload() -> None:
    long_info = inspect_audio(pcm(frames=4000))
    with pytest.raises(ValueError, match="info does not describe this data"):
        to_playback_format(pcm(frames=10), long_info)


# --- what RTPengine plays: the AU copy ------------------------------------------------------


def test_the_playable_copy_is_mu_law_au_and_follows_its_wav(tmp_path: Path) -> None:
    from dispatcher.media.audio import playable, playback_wav

    samples = struct.pack("<4h", 0, 1000, -1000, 32767)
    wav = tmp_path / "greeting.wav"
    wav.write_bytes(playback_wav(samples))
    au = playable(wav)
    data = au.read_bytes()
    magic, offset, size, encoding, rate, channels = struct.unpack(">4s5I", data[:24])
    assert (magic, offset, size, encoding, rate, channels) == (b".snd", 24, 4, 1, 8000, 1)
    assert data[24:] == bytes([0xFF, 0xCE, 0x4E, 0x80])  # G.711 mu-law of the four samples
    assert playable(wav) == au and au.read_bytes() == data  # kept while the WAV is older
    os.utime(wav, ns=(au.stat().st_mtime_ns + 10**9,) * 2)
    wav.write_bytes(playback_wav(samples[:2]))
    os.utime(wav, ns=(au.stat().st_mtime_ns + 10**9,) * 2)
    assert len(playable(wav).read_bytes()) == 25  # a replaced WAV: a new copy


def test_a_wav_not_in_the_playback_format_is_refused(tmp_path: Path) -> None:
    from dispatcher.media.audio import playable

    wav = tmp_path / "stereo.wav"
    with wave.open(str(wav), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\0" * 8)
    with pytest.raises(ValueError, match="not the playback format"):
        playable(wav)
