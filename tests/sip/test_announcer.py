"""What a queued caller hears, as files: defaults, uploads fetched from Redis by digest, and
the fallback to the default when an upload is missing (logged once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatcher.config.model import Group
from dispatcher.media.audio import AU_SUFFIX, playback_wav
from dispatcher.sip.announcer import Announcer
from dispatcher.state import StateStore

pytestmark = pytest.mark.redis


def group(**queue: object) -> Group:
    return Group.model_validate(
        {
            "id": "sales",
            "extension": "600",
            "name": "Sales",
            "strategy": "sequential",
            "members": [],
            "queue": {"language": "en", **queue},
        }
    )


@pytest.fixture
def store(redis_url: str) -> Iterator[StateStore]:
    with StateStore(redis_url, "acme") as state:
        yield state


def test_uploads_are_fetched_by_digest_and_a_replacement_is_a_new_file(
    store: StateStore, prompts_dir: Path, tmp_path: Path
) -> None:
    clock = [0.0]
    log: list[str] = []
    announcer = Announcer(
        prompts_dir, log.append, store_of=lambda _t: store, clock=lambda: clock[0]
    )
    first = playback_wav(b"\x01\x00" * 800)
    store.prompt_put("welcome", first)
    path = announcer.greeting("acme", group(greeting="welcome"))
    assert path is not None and path.read_bytes() == first
    assert path.parent == prompts_dir / "tenants" / "acme"
    store.prompt_put("welcome", playback_wav(b"\x02\x00" * 800))
    assert announcer.greeting("acme", group(greeting="welcome")) == path  # checked every 10 s
    clock[0] += 10.0
    replaced = announcer.greeting("acme", group(greeting="welcome"))
    assert replaced is not None and replaced != path
    assert replaced.read_bytes() == playback_wav(b"\x02\x00" * 800)
    assert log == []


def test_a_missing_upload_plays_the_default_and_is_logged_once(
    store: StateStore, prompts_dir: Path
) -> None:
    log: list[str] = []
    announcer = Announcer(prompts_dir, log.append, store_of=lambda _t: store)
    for _ in range(3):
        path = announcer.greeting("acme", group(greeting="nothing-here"))
        assert path == announcer.manifest().path("en/queue_greeting")
    assert len(log) == 1 and "'nothing-here'" in log[0] and "not uploaded" in log[0]
    assert announcer.greeting("acme", group(greeting="none")) is None


def test_announcements_are_composed_and_played_as_au(prompts_dir: Path) -> None:
    announcer = Announcer(prompts_dir, print)
    sentence = announcer.announcement(group(), 3, 2)
    assert sentence is not None and sentence.suffix == AU_SUFFIX and sentence.stat().st_size > 1000
    assert announcer.announcement(group(announce_position=False, announce_wait=False), 3, 2) is None
