"""Checks for uploaded audio, and its conversion to the format prompts are played in.

Uploads (a group's greeting, music on hold, announcements) come from admins through the API and
are untrusted: `inspect_audio` parses the RIFF structure itself, bounds-checks every size it
reads and refuses anything it cannot play with an `AudioError` that names the problem. Accepted
are WAV files holding mono PCM 16-bit at 8000, 16000 or 48000 Hz, or G.711 (A-law, µ-law) at
8000 Hz. `to_playback_format` turns an accepted upload into the playback format: WAV, PCM signed
16-bit little-endian, mono, 8000 Hz — G.711's rate, so RTPengine only has to encode to the
caller's codec and resamples nothing for G.711 callers.

The playback format and the errors about external tools (`ToolError`, `MissingToolError`) live
here because the prompt generator (`prompts.py`) shares them.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# The playback format: what the prompt generator writes and `to_playback_format` returns.
PLAYBACK_RATE = 8000
PLAYBACK_CHANNELS = 1
PLAYBACK_SAMPLE_WIDTH = 2  # bytes: PCM signed 16-bit little-endian

# 10 MiB holds 600 s of the playback format (8000 Hz x 2 bytes = 16 kB/s, 9.6 MB) with room for
# the header, and twice that of G.711; at 16 or 48 kHz the byte limit is reached first (about
# 327 s and 109 s). The API holds an upload in memory while it checks it, so the limit bounds
# that memory; it should also refuse a larger request body before reading it.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Ten minutes covers a long piece of music on hold (which loops anyway); a greeting or an
# announcement is seconds long. Anything longer is a mistake (a whole album, a recording left
# running) that would only fill the disk.
MAX_UPLOAD_SECONDS = 600.0

Encoding = Literal["pcm_s16le", "alaw", "ulaw"]

PCM_RATES = (8000, 16000, 48000)
G711_RATE = 8000

# A file of more chunks than this is not a WAV any tool writes; the bound keeps the cost of
# walking a hostile file (10 MiB of empty chunks) small.
MAX_CHUNKS = 1000

# Data chunk sizes written by tools that cannot seek back to fix the header (writing to a
# pipe): ffmpeg leaves 0xFFFFFFFF, sox 0x7FFFF000. Both mean "up to the end of the file".
_UNKNOWN_LENGTHS = (0xFFFFFFFF, 0x7FFFF000)

_FORMAT_PCM = 0x0001
_FORMAT_ALAW = 0x0006
_FORMAT_ULAW = 0x0007
_FORMAT_EXTENSIBLE = 0xFFFE
# WAVE_FORMAT_EXTENSIBLE names the encoding by a GUID whose first two bytes are the format tag
# and whose remaining 14 are this fixed suffix (KSDATAFORMAT_SUBTYPE_*, mmreg.h).
_GUID_SUFFIX = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "µ-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0050: "MPEG",
    0x0055: "MPEG layer 3 (MP3)",
    0x0064: "G.726 ADPCM",
    0x00FF: "AAC",
    0x0161: "Windows Media Audio",
    0x1610: "AAC (HE)",
    0xF1AC: "FLAC",
}

# What an upload that is no WAV at all probably is, by its first bytes: for the message only.
_MAGIC = (
    (b"ID3", "MP3"),
    (b"\xff\xfb", "MP3"),
    (b"\xff\xf3", "MP3"),
    (b"\xff\xf2", "MP3"),
    (b"OggS", "Ogg"),
    (b"fLaC", "FLAC"),
    (b"FORM", "AIFF"),
    (b".snd", "Sun/NeXT AU"),
    (b"#!AMR", "AMR"),
    (b"caff", "Core Audio (CAF)"),
    (b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
)


# program -> the Debian package that installs it
DEBIAN_PACKAGES = {"sox": "sox", "espeak-ng": "espeak-ng"}


class AudioError(ValueError):
    """An upload is not audio we can play; the message names the problem.

    `code` is a short stable name of the kind of problem (`not_wav`, `header`, `encoding`,
    `channels`, `sample_rate`, `too_long`, `too_large`, `empty`, `truncated`), for the API's
    error body.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class ToolError(RuntimeError):
    """An external program (sox, espeak-ng) failed; the message carries its error output."""


class MissingToolError(ToolError):
    """Programs the media code runs are not installed; the message names the Debian packages."""

    def __init__(self, tools: Sequence[str]) -> None:
        self.tools = list(tools)
        self.packages = [DEBIAN_PACKAGES.get(tool, tool) for tool in self.tools]
        what = ", ".join(self.tools)
        plural = "s" if len(self.packages) > 1 else ""
        super().__init__(
            f"not found on PATH: {what}; install the Debian package{plural} "
            f"{', '.join(self.packages)} (apt-get install {' '.join(self.packages)})"
        )


def require_tools(*tools: str) -> dict[str, str]:
    """The absolute path of each program, found on PATH; `MissingToolError` lists any missing."""
    found = {tool: shutil.which(tool) for tool in tools}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        raise MissingToolError(missing)
    return {tool: path for tool, path in found.items() if path is not None}


def run_tool(argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 120) -> bytes:
    """Run a program, return its standard output; `ToolError` with its stderr if it fails."""
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"{argv[0]} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise ToolError(f"{' '.join(argv)} failed with exit code {done.returncode}: {detail}")
    return done.stdout


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What `inspect_audio` found in an accepted upload.

    `data_offset` and `data_size` locate the samples in the upload: whole frames only
    (a trailing partial frame is not counted), always within the upload's bytes.
    """

    encoding: Encoding
    sample_rate: int
    channels: int
    frames: int
    data_offset: int
    data_size: int

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate

    @property
    def is_playback_format(self) -> bool:
        """Whether the samples are already the playback format (8000 Hz mono PCM 16-bit)."""
        return self.encoding == "pcm_s16le" and self.sample_rate == PLAYBACK_RATE


def _plausible_chunk_id(chunk_id: bytes) -> bool:
    # RIFF chunk ids are four printable ASCII characters ("fmt ", "data", "LIST", "id3 ").
    return len(chunk_id) == 4 and all(0x20 <= byte <= 0x7E for byte in chunk_id)


def _shown(raw: bytes) -> str:
    """Bytes from an untrusted header, safe to put in a message."""
    return raw.decode("latin-1").encode("unicode_escape").decode("ascii")


def _not_wav(data: bytes) -> AudioError:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return AudioError(f"not a WAV file: looks like {kind}", "not_wav")
    if data.startswith(b"RIFX"):
        return AudioError("not a WAV file we read: big-endian RIFX; save it as RIFF", "not_wav")
    if data.startswith(b"RF64"):
        return AudioError("not a WAV file we read: RF64 (64-bit WAV); save it as RIFF", "not_wav")
    return AudioError("not a WAV file: it does not start with a RIFF/WAVE header", "not_wav")


@dataclass(slots=True)
class _Chunks:
    fmt: bytes | None = None  # the fmt chunk's body
    data_offset: int = 0
    data_size: int | None = None  # bytes as found, bounded by the upload
    data_claimed: int = 0  # what the data chunk's header says, if more than the file holds


def _walk_chunks(data: bytes) -> _Chunks:
    """Find the fmt and data chunks, in any order, among any others (LIST, fact, cue ...).

    The RIFF size is not used to bound the walk: tools write it wrong (too small after an
    edit, a placeholder when streaming), and every chunk is bounded by the upload's own length
    instead. A chunk of odd size is followed by a pad byte (RIFF rule); writers that forget it
    are recognised by a plausible chunk id one byte earlier.
    """
    found = _Chunks()
    pos = 12
    end = len(data)
    for _ in range(MAX_CHUNKS):
        if end - pos < 8:
            if end > pos and (found.fmt is None or found.data_size is None):
                raise AudioError(
                    f"truncated: the file ends {end - pos} bytes into a chunk header at byte {pos}",
                    "truncated",
                )
            return found  # the end, or a few stray bytes after the audio
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if not _plausible_chunk_id(chunk_id):
            if found.fmt is not None and found.data_size is not None:
                return found  # junk appended after the audio (a raw ID3 tag, zeros)
            raise AudioError(
                f"RIFF header damaged: no valid chunk at byte {pos} (id '{_shown(chunk_id)}')",
                "header",
            )
        if chunk_id == b"data":
            if found.data_size is not None:
                raise AudioError("RIFF header damaged: more than one data chunk", "header")
            available = end - body
            if size > available:
                # Reported after the fmt checks: "unsupported encoding" helps more than
                # "truncated" when both are true.
                if size not in _UNKNOWN_LENGTHS:
                    found.data_claimed = size
                size = available
            found.data_offset, found.data_size = body, size
        elif size > end - body:
            if found.fmt is not None and found.data_size is not None:
                return found  # cut-off metadata after the audio: the audio is whole
            what = "fmt" if chunk_id == b"fmt " else f"'{_shown(chunk_id)}'"
            raise AudioError(
                f"truncated {what} chunk at byte {pos}: its header says {size} bytes, "
                f"the file holds {end - body}",
                "truncated",
            )
        elif chunk_id == b"fmt ":
            if found.fmt is not None:
                raise AudioError("RIFF header damaged: more than one fmt chunk", "header")
            found.fmt = data[body : body + size]
        pos = body + size
        if size % 2 and pos < end:
            padded = pos + 1
            if _plausible_chunk_id(data[padded : padded + 4]) or not _plausible_chunk_id(
                data[pos : pos + 4]
            ):
                pos = padded
    if end - pos >= 8:
        raise AudioError(f"RIFF header damaged: more than {MAX_CHUNKS} chunks", "header")
    return found


def _encoding(fmt: bytes) -> tuple[Encoding, int, int]:
    """(encoding, channels, sample rate) from a fmt chunk's body, or the AudioError why not."""
    if len(fmt) < 16:
        raise AudioError(
            f"RIFF header damaged: fmt chunk of {len(fmt)} bytes, at least 16 needed", "header"
        )
    tag, channels, rate, _byte_rate, _block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _FORMAT_EXTENSIBLE:
        # cbSize, valid bits, channel mask, then the sub-format GUID (WAVEFORMATEXTENSIBLE).
        if len(fmt) < 40:
            raise AudioError(
                f"RIFF header damaged: WAVE_FORMAT_EXTENSIBLE fmt chunk of {len(fmt)} bytes, "
                "40 needed",
                "header",
            )
        guid = fmt[24:40]
        if guid[2:] != _GUID_SUFFIX:
            raise AudioError(
                f"unsupported encoding: WAVE_FORMAT_EXTENSIBLE sub-format {guid.hex()}",
                "encoding",
            )
        (tag,) = struct.unpack_from("<H", guid)
    encoding: Encoding
    if tag == _FORMAT_PCM:
        if bits != 16:
            raise AudioError(f"unsupported encoding PCM {bits}-bit; PCM must be 16-bit", "encoding")
        encoding = "pcm_s16le"
    elif tag in (_FORMAT_ALAW, _FORMAT_ULAW):
        name = _FORMAT_NAMES[tag]
        if bits != 8:
            raise AudioError(f"unsupported encoding {name} {bits}-bit; G.711 is 8-bit", "encoding")
        encoding = "alaw" if tag == _FORMAT_ALAW else "ulaw"
    else:
        name = _FORMAT_NAMES.get(tag, "unknown")
        raise AudioError(
            f"unsupported encoding {name} (format tag {tag:#06x}); use PCM 16-bit, A-law or µ-law",
            "encoding",
        )
    if channels == 0:
        raise AudioError("RIFF header damaged: 0 channels", "header")
    if channels != 1:
        raise AudioError(f"{channels} channels, mono required", "channels")
    if encoding == "pcm_s16le" and rate not in PCM_RATES:
        rates = ", ".join(str(r) for r in PCM_RATES)
        raise AudioError(f"sample rate {rate} Hz not one of {rates} Hz", "sample_rate")
    if encoding != "pcm_s16le" and rate != G711_RATE:
        raise AudioError(
            f"sample rate {rate} Hz not {G711_RATE} Hz, the only rate of G.711 "
            f"({_FORMAT_NAMES[tag]})",
            "sample_rate",
        )
    return encoding, channels, rate


def inspect_audio(
    data: bytes,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_seconds: float = MAX_UPLOAD_SECONDS,
) -> AudioInfo:
    """Check an uploaded file; its `AudioInfo` if we can play it, else `AudioError`.

    Accepted: RIFF/WAVE with mono PCM signed 16-bit at 8000, 16000 or 48000 Hz, or mono G.711
    A-law / µ-law (format tags 6 / 7, also inside WAVE_FORMAT_EXTENSIBLE) at 8000 Hz, at most
    `max_bytes` long and `max_seconds` of audio. Chunks may come in any order and with others
    between them; sizes in the header are checked against the upload's length, never trusted.
    A data chunk size left as a placeholder by a tool writing to a pipe counts as "to the end of
    the file"; any other data chunk that claims more bytes than the file holds is refused as
    truncated. Cost: O(number of chunks), at most MAX_CHUNKS; the samples are not read.
    """
    if not data:
        raise AudioError("empty: the upload holds no data", "empty")
    if len(data) > max_bytes:
        raise AudioError(f"larger than {max_bytes} bytes ({len(data)} bytes)", "too_large")
    if not data.startswith(b"RIFF"):
        raise _not_wav(data)
    if len(data) < 12:
        raise AudioError(
            f"RIFF header damaged: {len(data)} bytes, a WAV header has at least 12", "header"
        )
    if data[8:12] != b"WAVE":
        raise AudioError(
            f"not a WAV file: a RIFF file of form '{_shown(data[8:12])}', not 'WAVE'", "not_wav"
        )
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size < 4:
        raise AudioError(
            f"RIFF header damaged: RIFF size {riff_size} cannot even hold 'WAVE'", "header"
        )
    chunks = _walk_chunks(data)
    if chunks.fmt is None:
        raise AudioError("RIFF header damaged: no fmt chunk", "header")
    encoding, channels, rate = _encoding(chunks.fmt)
    if chunks.data_size is None:
        raise AudioError("no data chunk: the file holds no audio", "empty")
    if chunks.data_claimed:
        raise AudioError(
            f"truncated data chunk: its header says {chunks.data_claimed} bytes, "
            f"the file holds {chunks.data_size}",
            "truncated",
        )
    frame_size = channels * (PLAYBACK_SAMPLE_WIDTH if encoding == "pcm_s16le" else 1)
    frames = chunks.data_size // frame_size
    if frames == 0:
        raise AudioError("empty: the data chunk holds no audio", "empty")
    seconds = frames / rate
    if seconds > max_seconds:
        raise AudioError(f"longer than {max_seconds:g} s ({seconds:.1f} s)", "too_long")
    return AudioInfo(
        encoding=encoding,
        sample_rate=rate,
        channels=channels,
        frames=frames,
        data_offset=chunks.data_offset,
        data_size=frames * frame_size,
    )


def playback_wav(samples: bytes) -> bytes:
    """A WAV file of the playback format around `samples` (8000 Hz mono s16le)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(PLAYBACK_CHANNELS)
        writer.setsampwidth(PLAYBACK_SAMPLE_WIDTH)
        writer.setframerate(PLAYBACK_RATE)
        writer.writeframes(samples)
    return out.getvalue()


_SOX_INPUT = {
    "pcm_s16le": ("-e", "signed-integer", "-b", "16", "-L"),
    "alaw": ("-e", "a-law", "-b", "8"),
    "ulaw": ("-e", "u-law", "-b", "8"),
}
_SOX_OUTPUT = (
    *("-t", "raw", "-e", "signed-integer", "-b", str(8 * PLAYBACK_SAMPLE_WIDTH), "-L"),
    *("-c", str(PLAYBACK_CHANNELS), "-r", str(PLAYBACK_RATE)),
)


def to_playback_format(data: bytes, info: AudioInfo) -> bytes:
    """The upload `data` (as accepted by `inspect_audio`, which gave `info`) as a WAV file of
    the playback format: PCM signed 16-bit little-endian, mono, 8000 Hz.

    Only the samples are used (fmt, LIST and other chunks are dropped), so the result is a
    plain 44-byte-header WAV whatever the upload looked like. Samples already at 8000 Hz
    PCM 16-bit are copied without a subprocess. Others go through sox (Debian's `sox`; else
    `MissingToolError`) as raw samples on its stdin and stdout, no temporary files: G.711 is
    decoded, 16 and 48 kHz are resampled with sox's default (high quality) `rate`, guarded
    against clipping (`-G`) and not dithered (`-D`, so digital silence stays silent).
    Cost: one sox run, about 40 ms per minute of 16 kHz audio and 80 ms of 48 kHz (2-core
    machine); the output is 16 kB per second of audio.
    """
    end = info.data_offset + info.data_size
    if info.data_offset < 12 or end > len(data):
        raise ValueError("info does not describe this data: run inspect_audio on it")
    samples = data[info.data_offset : end]
    if info.is_playback_format:
        return playback_wav(samples)
    sox = require_tools("sox")["sox"]
    raw_in = ["-t", "raw", *_SOX_INPUT[info.encoding], "-c", "1", "-r", str(info.sample_rate)]
    converted = run_tool([sox, "-D", "-G", *raw_in, "-", *_SOX_OUTPUT, "-"], stdin=samples)
    return playback_wav(converted[: len(converted) - len(converted) % PLAYBACK_SAMPLE_WIDTH])


# --- what RTPengine plays: the playback format as G.711 mu-law in a Sun AU file -----------
#
# RTPengine 10.5 (through ffmpeg) reads a WAV file in 4096-byte packets and then sends their
# RTP 10 ms apart with ~100 ms gaps (tests/run/test_rtpengine.py pins it), more than a phone's
# jitter buffer hides; an AU file of mu-law samples plays at an even 20 ms. Prompts are kept as
# WAV (the format above, what uploads become) and played from an AU copy beside each file.

AU_SUFFIX = ".au"
_AU_ULAW, _AU_HEADER_BYTES = 1, 24


def _ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = magnitude.bit_length() - 8
    return ~(sign | (exponent << 4) | ((magnitude >> (exponent + 3)) & 0x0F)) & 0xFF


_ULAW_OF: bytes | None = None  # mu-law byte of every 16-bit sample, built on first use


def ulaw_au(samples: bytes) -> bytes:
    """Playback-format samples (8000 Hz mono s16le) as a Sun AU file of G.711 mu-law."""
    global _ULAW_OF
    if _ULAW_OF is None:
        _ULAW_OF = bytes(_ulaw(s) for s in range(-32768, 32768))
    table = _ULAW_OF
    body = bytes(table[s + 32768] for s in memoryview(samples).cast("h"))
    header = struct.pack(
        ">4s5I", b".snd", _AU_HEADER_BYTES, len(body), _AU_ULAW, PLAYBACK_RATE, PLAYBACK_CHANNELS
    )
    return header + body


def playable(wav: Path) -> Path:
    """The AU copy RTPengine plays of a playback-format WAV, written beside it (atomically)
    when missing or older than the WAV. OSError when the WAV cannot be read."""
    au = wav.with_suffix(AU_SUFFIX)
    try:
        if au.stat().st_mtime_ns >= wav.stat().st_mtime_ns:
            return au
    except FileNotFoundError:
        pass
    with wave.open(str(wav), "rb") as reader:
        if (reader.getframerate(), reader.getnchannels(), reader.getsampwidth()) != (
            PLAYBACK_RATE,
            PLAYBACK_CHANNELS,
            PLAYBACK_SAMPLE_WIDTH,
        ):
            raise ValueError(f"{wav}: not the playback format (8000 Hz mono 16-bit)")
        samples = reader.readframes(reader.getnframes())
    write_atomically(au, ulaw_au(samples))
    return au


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file (and its folder) so that no reader, RTPengine included, ever sees half
    of it: a temporary file beside it, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise
