"""The default prompts: generation, the manifest, announcements, composing, the command line."""

from __future__ import annotations

import array
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from dispatcher.media import prompts
from dispatcher.media.audio import MissingToolError, inspect_audio
from dispatcher.media.prompts import (
    LESS_THAN_A_MINUTE,
    MORE_THAN_60_MINUTES,
    MUSIC_ON_HOLD,
    PROMPTS,
    VOICEMAIL_TONE,
    Manifest,
    SentenceCache,
    announcement,
    compose,
    ensure_default_prompts,
    load_manifest,
)

RATE = 8000
TEXTS = {prompt.name: prompt.text for prompt in PROMPTS}
# A few prompts of each kind: generated in well under a second, for the tests that generate
# again and again (versions, damage, races).
SMALL_SET = tuple(
    p for p in PROMPTS if p.name in {"de/number/3", "en/in_the_queue", VOICEMAIL_TONE}
)


def samples(path: Path) -> array.array[int]:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, RATE)
        return array.array("h", reader.readframes(reader.getnframes()))


def write_wav(path: Path, frames: bytes, *, rate: int = RATE, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return path


def spoken(names: list[str]) -> str:
    """What the parts say, joined as a listener hears it (the commas only shape intonation)."""
    return " ".join((TEXTS[name] or "").rstrip(",") for name in names)


@pytest.fixture
def small_set(monkeypatch: pytest.MonkeyPatch) -> tuple[prompts.Prompt, ...]:
    monkeypatch.setattr(prompts, "PROMPTS", SMALL_SET)
    return SMALL_SET


# --- the generated set -------------------------------------------------------------------------


@pytest.mark.slow
def test_every_prompt_is_generated_in_the_playback_format(prompt_set: Manifest) -> None:
    assert set(prompt_set.prompts) == {prompt.name for prompt in PROMPTS}
    assert prompt_set.generation_seconds < 60
    for name, prompt in prompt_set.prompts.items():
        data = prompt.path.read_bytes()
        info = inspect_audio(data)
        assert info.is_playback_format, name
        assert (info.frames, len(data)) == (prompt.frames, prompt.size), name
        assert prompt.text == TEXTS[name]
    assert load_manifest(prompt_set.directory.parent, verify=True) == prompt_set


@pytest.mark.slow
def test_speech_is_trimmed_padded_and_normalised(prompt_set: Manifest) -> None:
    for prompt in PROMPTS:
        if prompt.kind != "speech":
            continue
        audio = samples(prompt_set.path(prompt.name))
        sound = [i for i, value in enumerate(audio) if abs(value) > 60]  # above -55 dBFS
        lead = sound[0] / RATE
        tail = (len(audio) - 1 - sound[-1]) / RATE
        # espeak-ng's own silence is gone: what is left is the recipe's pause, give or take
        # the quiet start and end of a word.
        assert prompt.lead <= lead <= prompt.lead + 0.03, prompt.name
        assert prompt.tail <= tail <= prompt.tail + 0.03, prompt.name
        assert 0.69 * 32768 <= max(max(audio), -min(audio)) <= 0.72 * 32768, prompt.name  # -3 dB
        assert 0.2 < len(audio) / RATE < 10, prompt.name


@pytest.mark.slow
def test_music_on_hold_loops_without_a_seam(prompt_set: Manifest) -> None:
    music = samples(prompt_set.path(MUSIC_ON_HOLD))
    assert 20 <= len(music) / RATE <= 30

    def level(part: array.array[int]) -> float:
        return (sum(x * x for x in part) / len(part)) ** 0.5

    window = RATE // 10
    levels = [level(music[i : i + window]) for i in range(0, len(music) - window + 1, window)]
    # Never silent, never a jump in loudness: also not across the loop, end to start.
    assert min(levels) > 0.5 * max(levels)
    assert 0.7 < level(music[-window:]) / level(music[:window]) < 1.4
    steps = [abs(b - a) for a, b in itertools.pairwise(music)]
    assert abs(music[0] - music[-1]) <= max(steps)
    # Quieter than speech, whose peaks are at -3 dBFS.
    assert max(abs(x) for x in music) < 0.5 * 32768


@pytest.mark.slow
def test_voicemail_tone_is_half_a_second_of_1khz(prompt_set: Manifest) -> None:
    tone = samples(prompt_set.path(VOICEMAIL_TONE))
    assert len(tone) == RATE // 2
    crossings = sum(1 for a, b in itertools.pairwise(tone) if (a < 0) != (b < 0))
    assert 990 <= crossings / 2 / 0.5 <= 1010  # Hz


# --- idempotence, versions, damage, races ------------------------------------------------------


@pytest.mark.slow
def test_second_call_reads_the_manifest_without_tools(
    prompt_set: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p.path: p.path.stat().st_mtime_ns for p in prompt_set.prompts.values()}
    monkeypatch.setenv("PATH", str(tmp_path))  # neither espeak-ng nor sox
    started = time.perf_counter()
    again = ensure_default_prompts(prompt_set.directory.parent)
    assert time.perf_counter() - started < 0.5
    assert again == prompt_set
    assert {p.path: p.path.stat().st_mtime_ns for p in again.prompts.values()} == before


def test_manifest_records_version_and_checksums(small_set: object, tmp_path: Path) -> None:
    manifest = ensure_default_prompts(tmp_path)
    assert manifest.directory == tmp_path / f"set-{manifest.version}"
    doc = json.loads((manifest.directory / "manifest.json").read_text(encoding="utf-8"))
    assert doc["version"] == manifest.version == prompts.generator_version()
    assert doc["format"] == {"encoding": "pcm_s16le", "sample_rate": 8000, "channels": 1}
    assert set(doc["tools"]) == {"espeak-ng", "sox"}
    for name, entry in doc["prompts"].items():
        assert entry["sha256"] == prompts._sha256(manifest.path(name))
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_new_generator_version_regenerates(
    small_set: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_default_prompts(tmp_path)
    monkeypatch.setattr(prompts, "GENERATOR_VERSION", prompts.GENERATOR_VERSION + 1)
    assert load_manifest(tmp_path) is None
    second = ensure_default_prompts(tmp_path)
    assert second.version != first.version
    assert second.directory != first.directory


def test_old_and_new_versions_coexist_during_a_deploy(
    small_set: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = prompts.GENERATOR_VERSION
    sets: dict[int, tuple[Manifest, int]] = {}
    for step in (0, 1, 0, 1):  # processes of the old and the new version, starting in turn
        monkeypatch.setattr(prompts, "GENERATOR_VERSION", base + step)
        manifest = ensure_default_prompts(tmp_path)
        written = (manifest.directory / "manifest.json").stat().st_mtime_ns
        # Each version finds its own set again: nothing regenerated, nothing removed.
        assert sets.setdefault(step, (manifest, written)) == (manifest, written)
    monkeypatch.setattr(prompts, "GENERATOR_VERSION", base + 2)
    third = ensure_default_prompts(tmp_path)
    # The newest other version stays, the older one goes.
    remaining = {path.name for path in tmp_path.glob("set-*")}
    assert remaining == {third.directory.name, sets[1][0].directory.name}


def test_a_changed_text_regenerates(
    small_set: tuple[prompts.Prompt, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = ensure_default_prompts(tmp_path)
    changed = tuple(
        dataclasses.replace(p, text="vier.") if p.name == "de/number/3" else p for p in small_set
    )
    monkeypatch.setattr(prompts, "PROMPTS", changed)
    new = ensure_default_prompts(tmp_path)
    assert new.version != old.version
    assert new.prompts["de/number/3"].text == "vier."


@pytest.mark.parametrize("damage", ["delete", "truncate", "garble manifest"])
def test_a_damaged_set_is_regenerated(small_set: object, tmp_path: Path, damage: str) -> None:
    old = ensure_default_prompts(tmp_path)
    victim = old.path("de/number/3")
    if damage == "delete":
        victim.unlink()
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])
    else:
        (old.directory / "manifest.json").write_text("{not json", encoding="utf-8")
    assert load_manifest(tmp_path) is None
    new = ensure_default_prompts(tmp_path)
    assert new.path("de/number/3").stat().st_size == old.prompts["de/number/3"].size


def test_verify_notices_a_changed_file_of_the_same_size(small_set: object, tmp_path: Path) -> None:
    manifest = ensure_default_prompts(tmp_path)
    victim = manifest.path(VOICEMAIL_TONE)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert load_manifest(tmp_path) == manifest  # sizes only: cheap, misses this
    assert load_manifest(tmp_path, verify=True) is None


RACER = """
import pathlib, sys, time
import dispatcher.media.prompts as p

p.PROMPTS = tuple(x for x in p.PROMPTS if x.name in {names!r})
generate = p._generate
def counted(*args):
    print("generated", flush=True)
    return generate(*args)
p._generate = counted
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
print(p.ensure_default_prompts(sys.argv[1]).directory)
"""


def test_concurrent_processes_generate_once(small_set: object, tmp_path: Path) -> None:
    script = RACER.format(names={p.name for p in SMALL_SET})
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "prompts"), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    time.sleep(0.3)  # all three imported and waiting
    go.touch()
    outputs = [racer.communicate(timeout=60)[0].split("\n") for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0]
    assert sum(lines.count("generated") for lines in outputs) == 1
    assert len({lines[-2] for lines in outputs}) == 1  # the same set for everyone
    root = tmp_path / "prompts"
    assert len(list(root.glob("set-*"))) == 1 and not list(root.glob(".tmp-*"))
    assert load_manifest(root) is not None


@pytest.mark.slow
def test_a_killed_generator_leaves_no_half_set(small_set: object, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    # The whole set, in a session of its own so that kill -9 also takes its espeak-ng and sox.
    generator = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.media.prompts", "generate", str(root)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(list(root.glob(".tmp-*/**/*.wav"))) < 20:
            assert time.monotonic() < deadline and generator.poll() is None
            time.sleep(0.02)
    finally:
        os.killpg(generator.pid, signal.SIGKILL)
        generator.wait()
    assert list(root.glob(".tmp-*")) and not list(root.glob("set-*"))
    assert load_manifest(root) is None
    manifest = ensure_default_prompts(root)  # the next caller clears the remains
    assert not list(root.glob(".tmp-*"))
    assert [p.name for p in root.glob("set-*")] == [manifest.directory.name]


# --- missing tools -----------------------------------------------------------------------------


def test_missing_tools_are_named_with_their_debian_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(MissingToolError) as raised:
        ensure_default_prompts(tmp_path / "prompts")
    assert raised.value.tools == ["espeak-ng", "sox"]
    assert "apt-get install espeak-ng sox" in str(raised.value)
    assert not (tmp_path / "prompts").exists()


def test_missing_sox_alone_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    espeak = Path("/usr/bin/espeak-ng")
    (bin_dir / "espeak-ng").symlink_to(espeak)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(MissingToolError, match=r"not found on PATH: sox; .*Debian package sox"):
        ensure_default_prompts(tmp_path / "prompts")


# --- announcements -----------------------------------------------------------------------------

ANNOUNCEMENTS: list[tuple[str, int, prompts.Estimate, str]] = [
    ("de", 1, None, "Sie sind an Position eins."),
    ("de", 2, 1, "Sie sind an Position zwei. Die geschätzte Wartezeit beträgt etwa eine Minute."),
    ("de", 21, 2, "Sie sind an Position einundzwanzig. "
     "Die geschätzte Wartezeit beträgt etwa zwei Minuten."),
    ("de", 99, LESS_THAN_A_MINUTE, "Sie sind an Position neunundneunzig. "
     "Die geschätzte Wartezeit beträgt weniger als eine Minute."),
    ("de", 100, 60, "Vor Ihnen warten mehr als neunundneunzig Anrufer. "
     "Die geschätzte Wartezeit beträgt etwa sechzig Minuten."),
    ("de", 5000, None, "Vor Ihnen warten mehr als neunundneunzig Anrufer."),
    ("de", 7, MORE_THAN_60_MINUTES, "Sie sind an Position sieben. "
     "Die geschätzte Wartezeit beträgt mehr als sechzig Minuten."),
    ("en", 1, LESS_THAN_A_MINUTE, "You are number one in the queue. "
     "The estimated waiting time is less than a minute."),
    ("en", 2, 1, "You are number two in the queue. "
     "The estimated waiting time is about one minute."),
    ("en", 21, 21, "You are number twenty-one in the queue. "
     "The estimated waiting time is about twenty-one minutes."),
    ("en", 99, None, "You are number ninety-nine in the queue."),
    ("en", 100, MORE_THAN_60_MINUTES, "More than ninety-nine callers are waiting ahead of you. "
     "The estimated waiting time is more than sixty minutes."),
    ("en", 100, 2, "More than ninety-nine callers are waiting ahead of you. "
     "The estimated waiting time is about two minutes."),
]  # fmt: skip


@pytest.mark.parametrize(("language", "position", "estimate", "said"), ANNOUNCEMENTS)
def test_announcement_says_the_right_thing(
    language: str, position: int, estimate: prompts.Estimate, said: str
) -> None:
    assert spoken(announcement(language, position, estimate)) == said


def test_announcement_parts_in_order() -> None:
    assert announcement("de", 3, 2) == [
        "de/you_are_number",
        "de/number/3",
        "de/wait_about",
        "de/minutes/2",
    ]
    assert announcement("en", 3, None) == ["en/you_are_number", "en/number/3", "en/in_the_queue"]
    assert announcement("en", 101, LESS_THAN_A_MINUTE) == [
        "en/more_than_99_waiting",
        "en/wait_less_than_a_minute",
    ]


def test_every_announcement_uses_existing_prompts() -> None:
    names = {prompt.name for prompt in PROMPTS}
    estimates: list[prompts.Estimate] = [
        None,
        LESS_THAN_A_MINUTE,
        MORE_THAN_60_MINUTES,
        *range(1, 61),
    ]
    for language in ("de", "en"):
        for position in range(1, 102):
            for estimate in estimates:
                assert set(announcement(language, position, estimate)) <= names


def test_german_minutes_agree_in_number() -> None:
    assert TEXTS["de/minutes/1"] == "eine Minute."
    assert TEXTS["de/minutes/2"] == "zwei Minuten."
    assert TEXTS["de/minutes/31"] == "einunddreißig Minuten."
    assert TEXTS["en/minutes/1"] == "one minute."
    assert TEXTS["en/minutes/60"] == "sixty minutes."
    german = {TEXTS[f"de/number/{n}"] for n in (16, 17, 30, 77)}
    assert german == {"sechzehn.", "siebzehn.", "dreißig.", "siebenundsiebzig."}


@pytest.mark.parametrize(
    ("language", "position", "estimate", "message"),
    [
        ("fr", 1, None, "language 'fr' not one of de, en"),
        ("de", 0, None, "position 0 must be a whole number from 1"),
        ("de", -2, None, "position -2"),
        ("de", True, None, "position True"),
        ("de", 2.0, None, "position 2.0"),
        ("de", 1, 0, "estimate 0 minutes outside 1..60"),
        ("de", 1, 61, "estimate 61 minutes outside 1..60; .* above 60 'more_than_60_minutes'"),
        ("en", 1, True, "estimate True must be whole minutes"),
        ("en", 1, "2", "estimate '2' must be whole minutes"),
        ("en", 1, 1.5, "estimate 1.5 must be whole minutes"),
    ],
)
def test_announcement_refuses_what_it_cannot_say(
    language: str, position: object, estimate: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        announcement(language, position, estimate)  # type: ignore[arg-type]


# --- compose and the sentence cache ------------------------------------------------------------


def test_compose_concatenates_samples(tmp_path: Path) -> None:
    parts = [write_wav(tmp_path / f"p{i}.wav", bytes([i]) * (2 * 100 * (i + 1))) for i in range(3)]
    out = tmp_path / "out.wav"
    compose(parts, out)
    with wave.open(str(out), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, RATE)
        assert reader.getnframes() == 100 + 200 + 300
        assert reader.readframes(600) == b"\x00" * 200 + b"\x01" * 400 + b"\x02" * 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav", "p0.wav", "p1.wav", "p2.wav"]


def test_compose_refuses_mixed_formats(tmp_path: Path) -> None:
    narrow = write_wav(tmp_path / "narrow.wav", b"\x00\x00" * 10)
    wide = write_wav(tmp_path / "wide.wav", b"\x00\x00" * 10, rate=16000)
    stereo = write_wav(tmp_path / "stereo.wav", b"\x00\x00" * 10, channels=2)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"ID3 this is an mp3")
    with pytest.raises(ValueError, match=r"wide.wav: 1 channel\(s\), 16-bit, 16000 Hz, but the "):
        compose([narrow, wide], tmp_path / "out.wav")
    with pytest.raises(ValueError, match=r"stereo.wav: 2 channel\(s\)"):
        compose([narrow, stereo], tmp_path / "out.wav")
    with pytest.raises(ValueError, match=r"junk\.wav: not a WAV file compose can read"):
        compose([narrow, junk], tmp_path / "out.wav")
    with pytest.raises(ValueError, match="at least one file"):
        compose([], tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()
    assert not list(tmp_path.glob(".*"))


@pytest.mark.slow
def test_composed_announcement_lasts_as_long_as_its_parts(
    prompt_set: Manifest, tmp_path: Path
) -> None:
    for language, position, estimate, _ in ANNOUNCEMENTS:
        names = announcement(language, position, estimate)
        out = tmp_path / "sentence.wav"
        compose(prompt_set.paths(names), out)
        expected = sum(prompt_set.prompts[name].frames for name in names)
        assert len(samples(out)) == expected
        assert inspect_audio(out.read_bytes()).is_playback_format
        joined = b"".join(samples(prompt_set.path(name)).tobytes() for name in names)
        assert samples(out).tobytes() == joined


@pytest.mark.slow
def test_each_distinct_sentence_is_built_once(
    prompt_set: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[list[str]] = []

    def counting(paths: list[str], out: Path) -> None:
        built.append(paths)
        compose(paths, out)

    monkeypatch.setattr(prompts, "compose", counting)
    cache = SentenceCache(tmp_path / "sentences")
    first = cache.sentence(prompt_set.paths(announcement("de", 3, 2)))
    again = cache.sentence(prompt_set.paths(announcement("de", 3, 2)))
    other = cache.sentence(prompt_set.paths(announcement("de", 3, 1)))
    assert first == again != other
    assert len(built) == 2
    # Another process (a new cache) finds the file by content: nothing is built.
    assert (
        SentenceCache(tmp_path / "sentences").sentence(prompt_set.paths(announcement("de", 3, 2)))
        == first
    )
    assert len(built) == 2
    assert len(samples(first)) == sum(
        prompt_set.prompts[n].frames for n in announcement("de", 3, 2)
    )


def test_sentence_cache_follows_content_not_names(tmp_path: Path) -> None:
    part = write_wav(tmp_path / "part.wav", b"\x01\x00" * 80)
    cache = SentenceCache(tmp_path / "sentences")
    before = cache.sentence([part, part])
    write_wav(part, b"\x02\x00" * 80)  # an admin replaced the part
    os.utime(part, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    after = cache.sentence([part, part])
    assert before != after
    assert samples(after).tobytes() == b"\x02\x00" * 160


# --- command line ------------------------------------------------------------------------------


def test_generate_says_what_it_did(
    small_set: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert prompts.main(["generate", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    assert first.startswith("generated: 3 prompts") and "generation took" in first
    assert prompts.main(["generate", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("up to date: 3 prompts")


@pytest.mark.slow
def test_say_composes_one_announcement(prompt_set: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "say.wav"
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher.media.prompts", "say", "de", "3", "2", str(out),
         "--prompts", str(prompt_set.directory.parent)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Sie sind an Position drei. Die geschätzte Wartezeit beträgt etwa zwei Minuten." in (
        done.stdout
    )
    names = announcement("de", 3, 2)
    assert len(samples(out)) == sum(prompt_set.prompts[name].frames for name in names)


def test_say_refuses_a_bad_estimate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        prompts.main(["say", "de", "3", "soon", str(tmp_path / "x.wav")])
    assert exited.value.code == 2
    assert "'soon': whole minutes, 'less' (than a minute), 'more'" in capsys.readouterr().err


def test_say_reports_missing_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code = prompts.main(["say", "en", "1", "none", str(tmp_path / "x.wav"), "--prompts",
                         str(tmp_path / "p")])  # fmt: skip
    assert code == 1
    assert "error: not found on PATH: espeak-ng, sox" in capsys.readouterr().err
