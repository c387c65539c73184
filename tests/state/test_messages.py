"""Voicemail metadata and uploaded prompts in Redis (state.messages)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from state_support import AGENTS, TENANT

from dispatcher.state import StateError, StateStore
from dispatcher.state.connect import sync_client
from dispatcher.state.messages import MAX_PROMPT_BYTES, Voicemail, prompt_digest

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_url: str) -> Iterator[StateStore]:
    with StateStore(redis_url, TENANT) as state:
        state.put_config(b"{}", AGENTS, (("g1", ("a1", "a2")),))
        yield state


def message(number: int, started_ms: int, group: str = "g1") -> Voicemail:
    return Voicemail(
        id=f"m{number}",
        group=group,
        caller=f"+4930{number}",
        started_ms=started_ms,
        duration_ms=4_000,
        file=f"/var/vm/m{number}.wav",
        node="n1",
    )


def test_messages_are_listed_newest_first_and_announced(store: StateStore) -> None:
    now = int(time.time() * 1000)
    assert store.voicemail_put(message(1, now - 2000))
    assert store.voicemail_put(message(2, now - 1000))
    assert not store.voicemail_put(message(2, now))  # the same id twice: stored once
    assert [m.id for m in store.voicemails()] == ["m2", "m1"]
    assert store.voicemail("m1") == message(1, now - 2000)
    assert store.voicemail("nope") is None
    (event,) = [e for e in store.events() if e["type"] == "voicemail"][-1:]
    assert (event["message"], event["group"], event["duration_ms"]) == ("m2", "g1", "4000")


def test_heard_and_deleted(store: StateStore) -> None:
    now = int(time.time() * 1000)
    store.voicemail_put(message(1, now))
    before = store.voicemail_update("m1", message(1, now).marked(True), {"actor": "t1"})
    assert before is not None and not before.heard
    assert store.voicemail("m1").heard  # type: ignore[union-attr]
    assert store.voicemail_update("m1", None) is not None
    assert store.voicemails() == [] and store.voicemail_update("m1", None) is None


def test_retention_deletes_only_what_is_older(store: StateStore, redis_url: str) -> None:
    now = int(time.time() * 1000)
    for n, age in enumerate((10_000, 5_000, 1_000)):
        store.voicemail_put(message(n, now - age))
    gone = store.voicemail_expire(now - 4_000)
    assert sorted(m.id for m in gone) == ["m0", "m1"]
    assert [m.id for m in store.voicemails()] == ["m2"]
    with sync_client(redis_url) as plain:
        assert plain.zcard(store.keys.voicemail_index) == 1


def test_a_replaced_prompt_drops_audio_nobody_uses(store: StateStore, redis_url: str) -> None:
    first, second = b"RIFF-one", b"RIFF-two"
    assert store.prompt_put("greeting", first) is None
    assert store.prompt_put("hold", first) is None  # same audio, two ids
    assert store.prompt_put("greeting", second) == prompt_digest(first)
    assert store.prompt_audio(prompt_digest(first)) == first  # "hold" still uses it
    assert store.prompt_put("hold", None) == prompt_digest(first)
    assert store.prompt_audio(prompt_digest(first)) is None
    assert store.prompt_digests() == {"greeting": prompt_digest(second)}
    with sync_client(redis_url) as plain:
        assert plain.hlen(store.keys.prompt_data) == 1


def test_bad_prompts_and_keys_are_refused(store: StateStore, redis_url: str) -> None:
    with pytest.raises(ValueError, match="bytes"):
        store.prompt_put("greeting", b"")
    with pytest.raises(ValueError, match="bytes"):
        store.prompt_put("greeting", b"x" * (MAX_PROMPT_BYTES + 1))
    other = StateStore(redis_url, "other")
    keys = [*store.keys.base, other.keys.prompts, other.keys.prompt_data]
    # the library refuses them; a Cluster refuses keys of two hash tags before it runs
    with pytest.raises(StateError, match=r"not the prompts key|don.t hash to the same slot"):
        store._fcall("disp_prompt_put", keys, ["greeting", "d", b"a"])
    other.close()
