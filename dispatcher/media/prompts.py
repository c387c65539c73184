"""The default prompts callers hear, generated on this machine, and announcements built from them.

Callers in a group's queue hear the queue greeting once, then music on hold in a loop,
interrupted every interval by their position and estimated wait; callers reaching voicemail
hear the voicemail greeting and the tone. `ensure_default_prompts(directory)` generates the
set with Debian's espeak-ng (voices de and en) and sox, once: later calls read its manifest.
Every file is in the playback format (`audio.py`: WAV, PCM s16le, mono, 8000 Hz), levels
normalised to -3 dBFS peak and silence trimmed, with short fixed pauses, so that parts
concatenated into a sentence sound like one. The names, per language `de` and `en`:

    {lang}/queue_greeting            "all our agents are busy, please hold"
    {lang}/voicemail_greeting        "please leave a message after the tone"
    {lang}/you_are_number            "Sie sind an Position" / "You are number"
    {lang}/number/{1..99}            "drei." / "three"
    en/in_the_queue                  "in the queue." (German needs no such part)
    {lang}/more_than_99_waiting      the position sentence for positions above 99
    {lang}/wait_about                "Die geschätzte Wartezeit beträgt etwa" / "... is about"
    {lang}/minutes/{1..60}           "eine Minute." / "zwei Minuten." / "one minute." ...
    {lang}/wait_less_than_a_minute   the whole sentence "... weniger als eine Minute."
    {lang}/wait_more_than_60_minutes the whole sentence "... mehr als sechzig Minuten."
    music_on_hold                    24 s, loops seamlessly (synthesized with sox)
    voicemail_tone                   1 kHz, 0.5 s

On disk: `DIR/set-<version>/` holds the files (`de/number/3.wav`, `music_on_hold.wav`, ...)
and `manifest.json` (version, format, tool versions, generation time; per prompt its file,
SHA-256, size, frames and text); `DIR/.lock` serialises generators.

"Less than a minute" (and "more than 60 minutes") is a sentence of its own rather than a part
after `wait_about`: German says "beträgt weniger als eine Minute", never "beträgt etwa weniger
als ...", and one part instead of two joins sounds better.

`announcement()` names the parts of one announcement; `compose()` concatenates WAV files with
the stdlib (no sox at run time); `SentenceCache` builds each distinct sentence once.
Command line: `python -m dispatcher.media.prompts generate DIR` and `... say de 3 2 OUT.wav`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import wave
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final, Literal

from dispatcher.media.audio import (
    PLAYBACK_CHANNELS,
    PLAYBACK_RATE,
    PLAYBACK_SAMPLE_WIDTH,
    require_tools,
    run_tool,
)

# Bump when the generating code changes in a way the recipe below does not capture; the
# recipe itself (texts, voices, effects, music) is part of the version through its digest.
GENERATOR_VERSION = 1

LANGUAGES = ("de", "en")
MAX_POSITION = 99
MAX_MINUTES = 60
LESS_THAN_A_MINUTE: Final = "less_than_a_minute"
MORE_THAN_60_MINUTES: Final = "more_than_60_minutes"
Estimate = int | Literal["less_than_a_minute", "more_than_60_minutes"] | None

MUSIC_ON_HOLD = "music_on_hold"
VOICEMAIL_TONE = "voicemail_tone"

MANIFEST_FILE = "manifest.json"
_LOCK_FILE = ".lock"
_TMP_PREFIX = ".tmp-"
_SET_PREFIX = "set-"

# --- what is said ------------------------------------------------------------------------------

_DE_UNITS = ("", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun")
_DE_TEENS = (
    *("zehn", "elf", "zwölf", "dreizehn", "vierzehn"),
    *("fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn"),
)
_DE_TENS = (
    *("", "", "zwanzig", "dreißig", "vierzig"),
    *("fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"),
)
_EN_UNITS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_EN_TEENS = (
    *("ten", "eleven", "twelve", "thirteen", "fourteen"),
    *("fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
)
_EN_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def _german(n: int) -> str:
    """1..99 in German words: "eins", "zwölf", "einundzwanzig" (one word, "ein" + "und")."""
    tens, units = divmod(n, 10)
    if tens == 0:
        return _DE_UNITS[units]
    if tens == 1:
        return _DE_TEENS[units]
    if units == 0:
        return _DE_TENS[tens]
    return ("ein" if units == 1 else _DE_UNITS[units]) + "und" + _DE_TENS[tens]


def _english(n: int) -> str:
    """1..99 in English words: "one", "twelve", "twenty-one"."""
    tens, units = divmod(n, 10)
    if tens == 0:
        return _EN_UNITS[units]
    if tens == 1:
        return _EN_TEENS[units]
    return _EN_TENS[tens] + (f"-{_EN_UNITS[units]}" if units else "")


def _minutes(language: str, n: int) -> str:
    if language == "de":
        return "eine Minute." if n == 1 else f"{_german(n)} Minuten."
    return "one minute." if n == 1 else f"{_english(n)} minutes."


# A comma ends a part that the sentence continues after: espeak-ng then speaks it with a
# clause's (rising) intonation instead of a sentence's falling one.
_TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "queue_greeting": "Willkommen. Im Moment sind alle unsere Mitarbeiter im Gespräch. "
        "Bitte bleiben Sie in der Leitung, wir sind gleich für Sie da.",
        "voicemail_greeting": "Bitte hinterlassen Sie nach dem Signalton eine Nachricht.",
        "you_are_number": "Sie sind an Position,",
        "more_than_99_waiting": f"Vor Ihnen warten mehr als {_german(MAX_POSITION)} Anrufer.",
        "wait_about": "Die geschätzte Wartezeit beträgt etwa,",
        "wait_less_than_a_minute": "Die geschätzte Wartezeit beträgt weniger als eine Minute.",
        "wait_more_than_60_minutes": "Die geschätzte Wartezeit beträgt mehr als "
        f"{_german(MAX_MINUTES)} Minuten.",
    },
    "en": {
        "queue_greeting": "Welcome. All our agents are busy at the moment. "
        "Please hold the line, we will be with you shortly.",
        "voicemail_greeting": "Please leave a message after the tone.",
        "you_are_number": "You are number,",
        "in_the_queue": "in the queue.",
        "more_than_99_waiting": f"More than {_english(MAX_POSITION)} callers are waiting "
        "ahead of you.",
        "wait_about": "The estimated waiting time is about,",
        "wait_less_than_a_minute": "The estimated waiting time is less than a minute.",
        "wait_more_than_60_minutes": "The estimated waiting time is more than "
        f"{_english(MAX_MINUTES)} minutes.",
    },
}

# The position sentence, per language: its parts, _NUMBER standing for the position's number.
_NUMBER = "number"
_POSITION_SENTENCE: dict[str, tuple[str, ...]] = {
    "de": ("you_are_number", _NUMBER),  # "Sie sind an Position drei."
    "en": ("you_are_number", _NUMBER, "in_the_queue"),  # "You are number three in the queue."
}

# Silence around a spoken part, in seconds. Sentence-initial parts get a short lead-in (the
# first syllable is not lost while RTPengine's stream starts); parts inside a sentence a gap
# like a word boundary; sentence ends a pause before what follows.
_LEAD = 0.15
_WORD_GAP = 0.06
_SENTENCE_END = 0.5


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt of the default set: how it is made. `text` is what espeak-ng says."""

    name: str
    kind: Literal["speech", "music", "tone"]
    language: str | None = None
    text: str | None = None
    lead: float = 0.0
    tail: float = 0.0


def _speech(language: str, name: str, text: str, *, first: bool, last: bool) -> Prompt:
    return Prompt(
        name=f"{language}/{name}",
        kind="speech",
        language=language,
        text=text,
        lead=_LEAD if first else 0.0,
        tail=_SENTENCE_END if last else _WORD_GAP,
    )


def _default_prompts() -> tuple[Prompt, ...]:
    prompts: list[Prompt] = []
    for language in LANGUAGES:
        texts = _TEXTS[language]
        words = _german if language == "de" else _english
        sentence = _POSITION_SENTENCE[language]
        for name in ("queue_greeting", "voicemail_greeting"):
            prompts.append(_speech(language, name, texts[name], first=True, last=True))
        for index, part in enumerate(sentence):
            first, last = index == 0, index == len(sentence) - 1
            if part == _NUMBER:
                for n in range(1, MAX_POSITION + 1):
                    text = words(n) + ("." if last else ",")
                    prompts.append(_speech(language, f"number/{n}", text, first=first, last=last))
            else:
                prompts.append(_speech(language, part, texts[part], first=first, last=last))
        for name in (
            "more_than_99_waiting",
            "wait_less_than_a_minute",
            "wait_more_than_60_minutes",
        ):
            prompts.append(_speech(language, name, texts[name], first=True, last=True))
        prompts.append(_speech(language, "wait_about", texts["wait_about"], first=True, last=False))
        for n in range(1, MAX_MINUTES + 1):
            prompts.append(
                _speech(language, f"minutes/{n}", _minutes(language, n), first=False, last=True)
            )
    prompts.append(Prompt(name=MUSIC_ON_HOLD, kind="music"))
    prompts.append(Prompt(name=VOICEMAIL_TONE, kind="tone"))
    return tuple(prompts)


PROMPTS: tuple[Prompt, ...] = _default_prompts()

# --- how it is made ----------------------------------------------------------------------------

_VOICES = {"de": ("de", 150), "en": ("en", 155)}  # espeak-ng voice, words per minute
_PLAYBACK = (
    *("-t", "wav", "-e", "signed-integer", "-b", str(8 * PLAYBACK_SAMPLE_WIDTH)),
    *("-c", str(PLAYBACK_CHANNELS), "-r", str(PLAYBACK_RATE)),
)
# -D: no dither (silence stays digital zero); -R: repeatable (pluck's noise, any dither).
_SOX_FLAGS = ("-D", "-R")
# Rumble off; leading and trailing silence (below -55 dBFS) trimmed; peak at -3 dBFS.
_SPEECH_EFFECTS = (
    *("highpass", "100"),
    *("silence", "1", "0.01", "-55d", "reverse", "silence", "1", "0.01", "-55d", "reverse"),
    *("rate", str(PLAYBACK_RATE), "gain", "-n", "-3"),
)


# Music on hold: eight chords of 3 s (Cmaj7 Am7 Dm7 G | Em7 Am7 Fmaj7 G7), each a soft sine pad
# that crossfades into the next and a plucked arpeggio in eighths; a little reverb; the last
# chord's tail is folded onto the start so the loop has no seam. Voiced within 220-660 Hz, where
# narrow-band phones pass it. Its peak is -12 dBFS, lower than speech's -3, because sustained
# tones sound louder than speech at the same peak: its RMS, -23 dBFS, sits a little under the
# announcements' (-22 dBFS with their pauses), so an announcement stands out from the music.
@dataclass(frozen=True, slots=True)
class _MusicRecipe:
    chords: tuple[tuple[str, ...], ...] = (
        ("C4", "E4", "G4", "B4"),
        ("A3", "E4", "G4", "C5"),
        ("D4", "F4", "A4", "C5"),
        ("B3", "D4", "G4", "D5"),
        ("E4", "G4", "B4", "D5"),
        ("A3", "C4", "E4", "G4"),
        ("F4", "A4", "C5", "E5"),
        ("B3", "D4", "F4", "G4"),
    )
    chord_seconds: float = 3.0
    crossfade: float = 0.8
    pad_volume: float = 0.4
    arpeggio: tuple[int, ...] = (0, 1, 2, 3, 1, 2, 3, 2)  # note indexes, one per eighth
    eighth: float = 0.375
    pluck_release: float = 1.5
    pluck_lowpass: int = 2200
    reverb: tuple[str, ...] = ("40", "50", "70")  # reverberance %, HF damping %, room scale %
    peak_db: float = -12


@dataclass(frozen=True, slots=True)
class _ToneRecipe:
    hertz: int = 1000
    seconds: float = 0.5
    ramp: float = 0.01  # fade in and out, so the tone starts and ends without a click
    peak_db: float = -10  # RMS -13 dBFS: as loud as speech, not louder


_MUSIC = _MusicRecipe()
_TONE = _ToneRecipe()


def generator_version() -> str:
    """The version a prompt set is generated at: GENERATOR_VERSION and a digest of the recipe.

    Any change of a text, voice, effect or of the music changes it, and so regenerates sets.
    """
    return f"{GENERATOR_VERSION}-{_recipe_digest(PROMPTS, _MUSIC, _TONE)}"


@functools.lru_cache(maxsize=4)
def _recipe_digest(prompts: tuple[Prompt, ...], music: _MusicRecipe, tone: _ToneRecipe) -> str:
    recipe = {
        "prompts": [asdict(prompt) for prompt in prompts],
        "voices": _VOICES,
        "sox": [_SOX_FLAGS, _PLAYBACK, _SPEECH_EFFECTS],
        "music": asdict(music),
        "tone": asdict(tone),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def _make_speech(tools: Mapping[str, str], prompt: Prompt, out: Path) -> None:
    assert prompt.language is not None and prompt.text is not None
    voice, speed = _VOICES[prompt.language]
    # -b 1: the text is UTF-8 ("fünf", "geschätzte").
    spoken = run_tool(
        [tools["espeak-ng"], "-v", voice, "-s", str(speed), "-b", "1", "--stdout", prompt.text]
    )
    pad = ("pad", f"{prompt.lead:g}", f"{prompt.tail:g}")
    run_tool(
        [tools["sox"], *_SOX_FLAGS, "-t", "wav", "-", *_PLAYBACK, str(out), *_SPEECH_EFFECTS, *pad],
        stdin=spoken,
    )


def _make_tone(tools: Mapping[str, str], out: Path) -> None:
    tone = _TONE
    length, ramp = f"{tone.seconds:g}", f"{tone.ramp:g}"
    synth = ("synth", length, "sine", str(tone.hertz), "fade", "h", ramp, length, ramp)
    gain = ("gain", "-n", f"{tone.peak_db:g}")
    run_tool([tools["sox"], *_SOX_FLAGS, "-n", *_PLAYBACK, str(out), *synth, *gain])


def _make_music(tools: Mapping[str, str], out: Path) -> None:
    sox = [tools["sox"], *_SOX_FLAGS]
    music = _MUSIC
    slot, fade = music.chord_seconds, music.crossfade
    total = slot * len(music.chords)
    # Scratch files inside the set's temporary folder: a killed generator leaves them there,
    # where the next generation removes them, not in /tmp.
    with tempfile.TemporaryDirectory(prefix=".music-", dir=out.parent) as scratch:
        work = Path(scratch)
        mix: list[str] = []
        for index, notes in enumerate(music.chords):
            pad, arpeggio, chord = (work / f"{kind}{index}.wav" for kind in ("pad", "arp", "chord"))
            # With a null input of N channels, synth gives each channel its own tone; the
            # channels are then mixed to mono (remix -).
            sines = [x for note in notes for x in ("sine", note)]
            run_tool(
                [*sox, "-c", str(len(notes)), "-n", str(pad), "synth", f"{slot + fade:g}", *sines,
                 "remix", "-", "fade", "h", f"{fade:g}", f"{slot + fade:g}", f"{fade:g}",
                 "vol", f"{music.pad_volume:g}"]
            )  # fmt: skip
            plucks = [x for i in music.arpeggio for x in ("pluck", notes[i])]
            onsets = [f"{k * music.eighth:g}" for k in range(len(music.arpeggio))]
            run_tool(
                [*sox, "-c", str(len(music.arpeggio)), "-n", str(arpeggio), "synth", f"{slot:g}",
                 *plucks, "fade", "h", "0", f"{slot:g}", f"{music.pluck_release:g}",
                 "delay", *onsets, "remix", "-", "lowpass", str(music.pluck_lowpass)]
            )  # fmt: skip
            run_tool(
                [*sox, "-m", "-v", "1", str(pad), "-v", "1", str(arpeggio), str(chord),
                 "pad", f"{index * slot:g}"]
            )  # fmt: skip
            mix += ["-v", "1", str(chord)]
        full, body, tail = work / "full.wav", work / "body.wav", work / "tail.wav"
        run_tool([*sox, "-m", *mix, str(full), "reverb", *music.reverb, "gain", "-n"])
        run_tool([*sox, str(full), str(body), "trim", "0", f"{total:g}"])
        run_tool([*sox, str(full), str(tail), "trim", f"{total:g}"])
        # The tail (the last chord's fade and the reverb after 24 s) is mixed onto the start,
        # where the loop plays it after the last chord.
        run_tool(
            [*sox, "-m", "-v", "1", str(body), "-v", "1", str(tail), *_PLAYBACK, str(out),
             "highpass", "150", "gain", "-n", f"{music.peak_db:g}"]
        )  # fmt: skip


def _make(tools: Mapping[str, str], prompt: Prompt, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if prompt.kind == "speech":
        _make_speech(tools, prompt, out)
    elif prompt.kind == "tone":
        _make_tone(tools, out)
    else:
        _make_music(tools, out)


# --- the set on disk ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptFile:
    """One generated prompt: its file (in the playback format) and what it says."""

    name: str
    path: Path
    sha256: str
    size: int
    frames: int
    text: str | None

    @property
    def seconds(self) -> float:
        return self.frames / PLAYBACK_RATE


@dataclass(frozen=True, slots=True)
class Manifest:
    """A generated prompt set: its folder, generator version and files by prompt name."""

    directory: Path
    version: str
    prompts: Mapping[str, PromptFile]
    generation_seconds: float
    tools: Mapping[str, str]

    def path(self, name: str) -> Path:
        """The file of prompt `name`; KeyError naming it if the set has no such prompt."""
        try:
            return self.prompts[name].path
        except KeyError:
            raise KeyError(f"no prompt {name!r} in the set at {self.directory}") from None

    def paths(self, names: Sequence[str]) -> list[Path]:
        """The files of `names`, in order (e.g. of an `announcement()`)."""
        return [self.path(name) for name in names]


def _prompt_file(set_dir: Path, name: str, entry: Mapping[str, object]) -> PromptFile:
    relative = str(entry["file"])
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ValueError(f"prompt file {relative!r} outside the set")
    text = entry.get("text")
    return PromptFile(
        name=name,
        path=set_dir / relative,
        sha256=str(entry["sha256"]),
        size=int(entry["size"]),  # type: ignore[call-overload]
        frames=int(entry["frames"]),  # type: ignore[call-overload]
        text=None if text is None else str(text),
    )


def _set_dir(root: Path, version: str) -> Path:
    return root / f"{_SET_PREFIX}{version}"


def load_manifest(directory: str | os.PathLike[str], *, verify: bool = False) -> Manifest | None:
    """The prompt set of this generator version in `directory`, or None if there is none that
    is usable: no manifest, a file missing or of another size (or, with `verify`, another
    checksum). Never generates and needs neither espeak-ng nor sox.

    Cost: reads the manifest (about 60 kB) and stats every file (335), a few ms;
    `verify` also reads and hashes every file (about 8 MB), some 20 ms more.
    """
    version = generator_version()
    set_dir = _set_dir(Path(directory), version)
    try:
        doc = json.loads((set_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        if doc["version"] != version:
            return None
        prompts = {name: _prompt_file(set_dir, name, e) for name, e in doc["prompts"].items()}
        if set(prompts) != {prompt.name for prompt in PROMPTS}:
            return None
        for prompt in prompts.values():
            if prompt.path.stat().st_size != prompt.size:
                return None
            if verify and _sha256(prompt.path) != prompt.sha256:
                return None
        return Manifest(
            directory=set_dir,
            version=version,
            prompts=prompts,
            generation_seconds=float(doc["generation_seconds"]),
            tools={str(k): str(v) for k, v in doc["tools"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def ensure_default_prompts(directory: str | os.PathLike[str]) -> Manifest:
    """The default prompt set in `directory`, generated first if missing or out of date.

    Idempotent: when `directory` already holds a usable set of this generator version, this
    only reads its manifest (`load_manifest`, a few ms; no espeak-ng or sox needed). Otherwise
    it generates the whole set (335 files, about 7 s of CPU in some 670 espeak-ng and sox runs,
    spread over the cores: 5-17 s wall on a 2-core machine shared with other work; espeak-ng
    and sox required, else `MissingToolError`) into a temporary folder in `directory`,
    manifest last, and renames that folder to `set-<version>`: the rename commits the set, so
    a reader never sees half of one, and a killed generator leaves only a temporary folder
    that the next generation removes. Concurrent callers (processes or threads) are serialised
    by an flock on `directory/.lock` and re-check under it, so the set is generated once.

    Each version has its own folder, so during a rolling deploy processes of the old and the
    new version each find theirs; the newest other version is kept, older ones are removed.
    """
    root = Path(directory)
    manifest = load_manifest(root)
    if manifest is not None:
        return manifest
    tools = require_tools("espeak-ng", "sox")
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / _LOCK_FILE):
        manifest = load_manifest(root)  # another process may have generated it meanwhile
        if manifest is not None:
            return manifest
        _generate(root, tools)
    manifest = load_manifest(root)
    if manifest is None:
        raise RuntimeError(f"the prompt set just generated in {root} is not readable")
    return manifest


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed, also if the process dies
        yield
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tool_versions(tools: Mapping[str, str]) -> dict[str, str]:
    espeak = run_tool([tools["espeak-ng"], "--version"]).decode("utf-8", "replace")
    sox = run_tool([tools["sox"], "--version"]).decode("utf-8", "replace")
    # "eSpeak NG text-to-speech: 1.51  Data at: ...", "/usr/bin/sox:      SoX v14.4.2"
    return {"espeak-ng": espeak.split("Data at")[0].strip(), "sox": sox.split(":", 1)[-1].strip()}


def _generate(root: Path, tools: Mapping[str, str]) -> None:
    """Generate the set of this version into `root`; the caller holds the lock."""
    started = time.perf_counter()
    for leftover in root.glob(f"{_TMP_PREFIX}*"):  # of a generator that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    version = generator_version()
    work = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
    try:
        files = {prompt.name: work / f"{prompt.name}.wav" for prompt in PROMPTS}
        # Music first: its dozen sox runs in a row are the longest job. One process per core
        # (espeak-ng and sox are single-threaded); threads only wait on them.
        ordered = sorted(PROMPTS, key=lambda prompt: prompt.kind != "music")
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            for job in [pool.submit(_make, tools, p, files[p.name]) for p in ordered]:
                job.result()
        entries = {}
        for prompt in PROMPTS:
            path = files[prompt.name]
            with wave.open(str(path), "rb") as reader:
                frames = reader.getnframes()
            entries[prompt.name] = {
                "file": f"{prompt.name}.wav",
                "sha256": _sha256(path),
                "size": path.stat().st_size,
                "frames": frames,
                "text": prompt.text,
            }
        doc = {
            "version": version,
            "format": {"encoding": "pcm_s16le", "sample_rate": PLAYBACK_RATE, "channels": 1},
            "tools": _tool_versions(tools),
            "generation_seconds": round(time.perf_counter() - started, 3),
            "prompts": entries,
        }
        text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
        (work / MANIFEST_FILE).write_text(text, encoding="utf-8")
        target = _set_dir(root, version)
        if target.exists():  # a damaged set of this version: moved aside, then removed
            target.rename(Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root)) / "damaged")
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # only if something failed before the rename
    for leftover in root.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    others = sorted(
        (path for path in root.glob(f"{_SET_PREFIX}*") if path != target),
        key=lambda path: _mtime(path / MANIFEST_FILE),
        reverse=True,
    )
    for old in others[1:]:
        shutil.rmtree(old, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# --- announcements -----------------------------------------------------------------------------


def announcement(language: str, position: int, estimate: Estimate) -> list[str]:
    """Names of the prompts that say a caller's position and estimated wait, in order.

    `position` counts from 1 (the next caller to be served); above 99 the caller hears that
    more than 99 callers wait ahead. `estimate` is whole minutes 1..60, LESS_THAN_A_MINUTE,
    MORE_THAN_60_MINUTES (what `dispatcher.queue.estimate` announces from an hour on), or None
    for no wait announced. ValueError for a language, position or estimate outside these.

        announcement("de", 3, 2) == ["de/you_are_number", "de/number/3",
                                     "de/wait_about", "de/minutes/2"]
        # Sie sind an Position drei. Die geschätzte Wartezeit beträgt etwa zwei Minuten.
    """
    if language not in LANGUAGES:
        raise ValueError(f"language {language!r} not one of {', '.join(LANGUAGES)}")
    if isinstance(position, bool) or not isinstance(position, int) or position < 1:
        raise ValueError(f"position {position!r} must be a whole number from 1")
    if position > MAX_POSITION:
        parts = [f"{language}/more_than_99_waiting"]
    else:
        parts = [
            f"{language}/{_NUMBER}/{position}" if part == _NUMBER else f"{language}/{part}"
            for part in _POSITION_SENTENCE[language]
        ]
    if estimate is None:
        return parts
    if estimate == LESS_THAN_A_MINUTE:
        return [*parts, f"{language}/wait_less_than_a_minute"]
    if estimate == MORE_THAN_60_MINUTES:
        return [*parts, f"{language}/wait_more_than_60_minutes"]
    if isinstance(estimate, bool) or not isinstance(estimate, int):
        raise ValueError(
            f"estimate {estimate!r} must be whole minutes, {LESS_THAN_A_MINUTE!r}, "
            f"{MORE_THAN_60_MINUTES!r} or None"
        )
    if not 1 <= estimate <= MAX_MINUTES:
        raise ValueError(
            f"estimate {estimate} minutes outside 1..{MAX_MINUTES}; below a minute is "
            f"{LESS_THAN_A_MINUTE!r}, above {MAX_MINUTES} {MORE_THAN_60_MINUTES!r}"
        )
    return [*parts, f"{language}/wait_about", f"{language}/minutes/{estimate}"]


def compose(paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str]) -> None:
    """Concatenate WAV files of one format (channels, sample width, rate) into `out_path`.

    Uses the stdlib `wave` module only, no sox. The output is written to a temporary file
    beside `out_path` and renamed over it, so a reader sees the old file or the whole new one.
    ValueError names the first file that is no readable WAV or differs in format from the
    first. Cost: reads and writes every sample once, O(total length).
    """
    if not paths:
        raise ValueError("compose needs at least one file")
    first: tuple[int, int, int] | None = None
    chunks: list[bytes] = []
    for path in paths:
        try:
            with wave.open(os.fspath(path), "rb") as reader:
                params = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
                chunks.append(reader.readframes(reader.getnframes()))
        except (wave.Error, EOFError) as error:
            raise ValueError(
                f"{os.fspath(path)}: not a WAV file compose can read ({error})"
            ) from error
        if first is None:
            first = params
        elif params != first:
            raise ValueError(
                f"{os.fspath(path)}: {_describe(params)}, but the first part is {_describe(first)}"
            )
    assert first is not None
    out = Path(out_path)
    fd, staged = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle, wave.open(handle, "wb") as writer:
            writer.setnchannels(first[0])
            writer.setsampwidth(first[1])
            writer.setframerate(first[2])
            writer.writeframes(b"".join(chunks))
        os.replace(staged, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise


def _describe(params: tuple[int, int, int]) -> str:
    channels, width, rate = params
    return f"{channels} channel(s), {8 * width}-bit, {rate} Hz"


class SentenceCache:
    """Composed sentences on disk, one file per distinct content, each built once.

    A sentence's file is named by the SHA-256 of its parts' contents in order, so the same
    parts give the same file across processes, restarts and prompt sets, and a part whose
    content changes (a re-generated set, an admin's upload) gives a new one. Parts' digests
    are remembered per file (by inode, size and mtime), so a cached sentence costs one stat
    per part and one for the result. Concurrent builders of one sentence each write a whole
    file and rename it into place. Each announcement is about 5 s, 80 kB; the folder holds at
    most every position x estimate ever announced per language (2 x 100 x 62 for the default
    set) and may be emptied at any time.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._digests: dict[str, tuple[tuple[int, int, int], str]] = {}

    def _digest(self, path: str) -> str:
        stat = os.stat(path)
        signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        known = self._digests.get(path)
        if known is not None and known[0] == signature:
            return known[1]
        digest = _sha256(Path(path))
        self._digests[path] = (signature, digest)
        return digest

    def sentence(self, paths: Sequence[str | os.PathLike[str]]) -> Path:
        """The file of `paths` concatenated (`compose`), built if not cached yet."""
        names = [os.fspath(path) for path in paths]
        key = hashlib.sha256("\n".join(self._digest(name) for name in names).encode())
        out = self.directory / f"{key.hexdigest()[:32]}.wav"
        if not out.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            compose(names, out)
        return out


# --- command line ------------------------------------------------------------------------------


def _default_prompt_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dispatcher" / "prompts"


def _estimate(text: str) -> Estimate:
    if text == "none":
        return None
    if text == "less":
        return LESS_THAN_A_MINUTE
    if text == "more":
        return MORE_THAN_60_MINUTES
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: whole minutes, 'less' (than a minute), 'more' (than 60) or 'none'"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dispatcher.media.prompts",
        description="Generate the default prompts; compose an announcement to listen to.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="generate the default set into DIR")
    generate.add_argument("directory", type=Path, metavar="DIR")
    say = commands.add_parser("say", help="compose one announcement into OUT.wav")
    say.add_argument("language", choices=LANGUAGES)
    say.add_argument("position", type=int)
    say.add_argument(
        "estimate",
        type=_estimate,
        help="minutes 1..60, 'less' (than a minute), 'more' (than 60 minutes) or 'none'",
    )
    say.add_argument("out", type=Path, metavar="OUT.wav")
    say.add_argument(
        "--prompts",
        type=Path,
        default=_default_prompt_dir(),
        metavar="DIR",
        help="the prompt set to use, generated there if needed (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.command == "generate":
            existing = load_manifest(args.directory)
            manifest = existing or ensure_default_prompts(args.directory)
            elapsed = time.perf_counter() - started
            audio = sum(prompt.seconds for prompt in manifest.prompts.values())
            what = "up to date" if existing else "generated"
            print(
                f"{what}: {len(manifest.prompts)} prompts ({audio:.0f} s of audio, version "
                f"{manifest.version}) in {manifest.directory}\n"
                f"generation took {manifest.generation_seconds:.1f} s; this run {elapsed:.2f} s"
            )
        else:
            names = announcement(args.language, args.position, args.estimate)
            manifest = ensure_default_prompts(args.prompts)
            compose(manifest.paths(names), args.out)
            with wave.open(str(args.out), "rb") as reader:
                seconds = reader.getnframes() / reader.getframerate()
            said = " ".join((manifest.prompts[name].text or "").rstrip(",") for name in names)
            print(f"wrote {args.out} ({seconds:.2f} s): {said}")
            print(f"parts: {' + '.join(names)}; took {time.perf_counter() - started:.2f} s")
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
