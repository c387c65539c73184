"""What a queued caller hears, as files RTPengine plays: the group's greeting, its music on
hold, and the announcement of the caller's position and estimated wait.

Prompts are `default` (the set `dispatcher.media.prompts` generates in the node's prompts
folder), `none`, or the id of a prompt uploaded for the tenant through the API. An uploaded
prompt is in Redis under its digest (`dispatcher.state.messages`); the node fetches it once
into `<prompts>/tenants/<tenant>/<digest>.wav`, so a replaced prompt is a new file and no
node plays a stale one. Which digest a prompt id has is asked at most every PROMPT_CHECK_S.
Sentences are composed once per distinct content (`SentenceCache`). Every file is played
from its mu-law AU copy (`dispatcher.media.audio.playable`: WAV plays in bursts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatcher.config.model import Group
from dispatcher.media import prompts
from dispatcher.media.audio import playable, write_atomically
from dispatcher.sip.media import CallMedia
from dispatcher.state import StateError, StateStore

# An upload reaches the callers of a node within this many seconds.
PROMPT_CHECK_S = 10.0

# Music on hold is played this many times in a row; the keeper restarts it long before.
MUSIC_REPEAT = 1000


class Announcer:
    """The prompt files of one node (`directory`), for one process."""

    def __init__(
        self,
        directory: Path,
        log: Any,
        store_of: Callable[[str], StateStore] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.log = log  # ksr.err-like: a missing prompt is logged, once per prompt
        self.store_of = store_of  # the tenant's store, where uploaded prompts are
        self.clock = clock
        self._manifest: prompts.Manifest | None = None
        self._sentences = prompts.SentenceCache(self.directory / "sentences")
        self._missing: set[tuple[str, str]] = set()
        self._digests: dict[str, tuple[float, dict[str, str]]] = {}

    def manifest(self) -> prompts.Manifest:
        if self._manifest is None:
            self._manifest = prompts.ensure_default_prompts(self.directory)
        return self._manifest

    def _digest(self, tenant: str, prompt_id: str) -> str | None:
        now = self.clock()
        checked = self._digests.get(tenant)
        if checked is None or now - checked[0] >= PROMPT_CHECK_S:
            assert self.store_of is not None
            checked = (now, self.store_of(tenant).prompt_digests())
            self._digests[tenant] = checked
        return checked[1].get(prompt_id)

    def _custom(self, tenant: str, prompt_id: str) -> Path | None:
        """The uploaded prompt's file, fetched when new; None (logged once) when there is
        no such upload or Redis cannot say: the default plays rather than silence."""
        why = "not uploaded"
        try:
            digest = self._digest(tenant, prompt_id) if self.store_of else None
            if digest is not None:
                path = self.directory / "tenants" / tenant / f"{digest}.wav"
                if path.exists():
                    return path
                audio = self.store_of(tenant).prompt_audio(digest)  # type: ignore[misc]
                if audio is not None:
                    write_atomically(path, audio)
                    return path
        except (StateError, OSError) as exc:
            why = f"not fetched ({exc})"
        if (tenant, prompt_id) not in self._missing:
            self._missing.add((tenant, prompt_id))
            self.log(
                f"dispatcher: prompt {prompt_id!r} of tenant {tenant} {why}; the default plays\n"
            )
        return None

    def prompt(self, tenant: str, ref: str, default: str) -> Path:
        """The file of prompt `ref`: the tenant's upload, or the default set's `default`
        (for "default", and when the upload is missing: logged once by `_custom`)."""
        if ref != "default":
            custom = self._custom(tenant, ref)
            if custom is not None:
                return custom
        return self.manifest().path(default)

    def greeting(self, tenant: str, group: Group) -> Path | None:
        queue = group.queue
        if queue is None or queue.greeting == "none":
            return None
        return self.prompt(tenant, queue.greeting, f"{queue.language}/queue_greeting")

    def music(self, tenant: str, group: Group) -> Path:
        ref = group.queue.music if group.queue is not None else "default"
        return self.prompt(tenant, ref, prompts.MUSIC_ON_HOLD)

    def announcement(self, group: Group, position: int, estimate: prompts.Estimate) -> Path | None:
        """The composed sentence for `position` and `estimate` in the group's language, or
        None when the group announces neither."""
        queue = group.queue
        if queue is None or not (queue.announce_position or queue.announce_wait):
            return None
        parts = prompts.announcement(
            queue.language, position, estimate if queue.announce_wait else None
        )
        if not queue.announce_position:
            parts = [p for p in parts if "/wait_" in p or "/minutes/" in p]
            if not parts:
                return None
        return playable(self._sentences.sentence(self.manifest().paths(parts)))

    def start(
        self, media: CallMedia, call_id: str, from_tag: str, group: Group, tenant: str
    ) -> int:
        """Play the greeting (or, without one, the music); ms until the music is due."""
        greeting = self.greeting(tenant, group)
        if greeting is None:
            self.play_music(media, call_id, from_tag, group, tenant)
            return 0
        duration = media.play(call_id, from_tag, str(playable(greeting)))
        return duration or 0

    def play_music(
        self, media: CallMedia, call_id: str, from_tag: str, group: Group, tenant: str
    ) -> bool:
        return (
            media.play(call_id, from_tag, str(playable(self.music(tenant, group))), MUSIC_REPEAT)
            is not None
        )
