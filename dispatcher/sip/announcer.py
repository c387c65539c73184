"""What a queued caller hears, as files RTPengine plays: the group's greeting, its music on
hold, and the announcement of the caller's position and estimated wait.

Prompts are `default` (the set `dispatcher.media.prompts` generates in the node's prompts
folder), `none`, or the id of a prompt uploaded for the tenant, which the node keeps under
`<prompts>/tenants/<tenant>/<id>.wav` (`dispatcher.media.store` puts it there). Sentences are
composed once per distinct content (`SentenceCache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dispatcher.config.model import Group
from dispatcher.media import prompts
from dispatcher.sip.media import CallMedia

# Music on hold is played this many times in a row; the keeper restarts it long before.
MUSIC_REPEAT = 1000


class Announcer:
    """The prompt files of one node (`directory`), for one process."""

    def __init__(self, directory: Path, log: Any) -> None:
        self.directory = Path(directory)
        self.log = log  # ksr.err-like: a missing prompt is logged, once per prompt
        self._manifest: prompts.Manifest | None = None
        self._sentences = prompts.SentenceCache(self.directory / "sentences")
        self._missing: set[str] = set()

    def manifest(self) -> prompts.Manifest:
        if self._manifest is None:
            self._manifest = prompts.ensure_default_prompts(self.directory)
        return self._manifest

    def _custom(self, tenant: str, prompt_id: str) -> Path | None:
        path = self.directory / "tenants" / tenant / f"{prompt_id}.wav"
        if path.exists():
            return path
        if (tenant, prompt_id) not in self._missing:
            self._missing.add((tenant, prompt_id))  # type: ignore[arg-type]
            self.log(
                f"dispatcher: prompt {prompt_id!r} of tenant {tenant} not on this node; "
                "the default plays\n"
            )
        return None

    def greeting(self, tenant: str, group: Group) -> Path | None:
        queue = group.queue
        if queue is None or queue.greeting == "none":
            return None
        if queue.greeting != "default":
            custom = self._custom(tenant, queue.greeting)
            if custom is not None:
                return custom
        return self.manifest().path(f"{queue.language}/queue_greeting")

    def music(self, tenant: str, group: Group) -> Path:
        queue = group.queue
        if queue is not None and queue.music != "default":
            custom = self._custom(tenant, queue.music)
            if custom is not None:
                return custom
        return self.manifest().path(prompts.MUSIC_ON_HOLD)

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
        return self._sentences.sentence(self.manifest().paths(parts))

    def start(
        self, media: CallMedia, call_id: str, from_tag: str, group: Group, tenant: str
    ) -> int:
        """Play the greeting (or, without one, the music); ms until the music is due."""
        greeting = self.greeting(tenant, group)
        if greeting is None:
            self.play_music(media, call_id, from_tag, group, tenant)
            return 0
        duration = media.play(call_id, from_tag, str(greeting))
        return duration or 0

    def play_music(
        self, media: CallMedia, call_id: str, from_tag: str, group: Group, tenant: str
    ) -> bool:
        return (
            media.play(call_id, from_tag, str(self.music(tenant, group)), MUSIC_REPEAT) is not None
        )
