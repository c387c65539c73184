"""What the tenant's media leaves in Redis: voicemail messages and uploaded prompts.

Voicemail: `{t:T}:vm` maps a message id to its record (JSON, `Voicemail`), `{t:T}:vmi`
orders the ids by recording start (listing, retention). The WAV itself is a file on the
node that recorded it (`Voicemail.file`); deleting a message is the caller's cue to delete
the file.

Prompts: `{t:T}:prompts` maps a prompt id to the SHA-256 of its audio, `{t:T}:promptdata`
the digest to the audio (playback WAV). A node plays a prompt from a file named by its
digest, fetched once: a replaced prompt is a new digest, so no node plays a stale one.

The request builders and reply parsers here are shared by the synchronous `StateStore` and
the admin API's asyncio store, like the ones at the end of `store`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from .keys import TenantKeys, validate_id

Audit = Mapping[str, str]
# Largest audio a prompt may hold (bytes, the playback WAV: 8 kHz 16-bit mono is 16 kB/s):
# the 600 s an upload may last (dispatcher.media.audio.MAX_UPLOAD_SECONDS) and its header.
MAX_PROMPT_BYTES = 600 * 16_000 + 44
EXPIRE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Voicemail:
    """One voicemail message: who left it for which group, when, how long, where the WAV
    is (a path on node `node`), and whether someone has heard it."""

    id: str
    group: str
    caller: str
    started_ms: int
    duration_ms: int
    file: str
    node: str
    heard: bool = False

    def encode(self) -> bytes:
        """The record as stored in `{t:T}:vm`."""
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | str) -> Voicemail:
        """Inverse of `encode`; ValueError for a record that is not one."""
        try:
            doc = orjson.loads(raw)
            return cls(
                id=str(doc["id"]),
                group=str(doc["group"]),
                caller=str(doc["caller"]),
                started_ms=int(doc["started_ms"]),
                duration_ms=int(doc["duration_ms"]),
                file=str(doc["file"]),
                node=str(doc["node"]),
                heard=bool(doc.get("heard", False)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a voicemail record: {exc}") from exc

    def marked(self, heard: bool) -> Voicemail:
        """The same message, heard or new."""
        return replace(self, heard=heard)


def _audit(audit: Audit | None) -> list[bytes]:
    return [orjson.dumps({k: str(v) for k, v in audit.items()})] if audit else []


def voicemail_keys(keys: TenantKeys) -> list[str]:
    """KEYS of the disp_voicemail_* functions."""
    return [*keys.base, keys.voicemail, keys.voicemail_index]


def voicemail_put_request(keys: TenantKeys, message: Voicemail) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of disp_voicemail_put."""
    validate_id(message.id, "message id")
    validate_id(message.group, "group id")
    args = [
        message.id,
        message.encode(),
        message.started_ms,
        message.group,
        message.caller,
        message.duration_ms,
    ]
    return voicemail_keys(keys), args


def voicemail_update_request(
    keys: TenantKeys, message_id: str, record: Voicemail | None, audit: Audit | None
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of disp_voicemail_update; `record` None deletes the message."""
    validate_id(message_id, "message id")
    body = record.encode() if record is not None else b""
    return voicemail_keys(keys), [message_id, body, *_audit(audit)]


def voicemail_expire_request(
    keys: TenantKeys, before_ms: int, limit: int = EXPIRE_BATCH
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of disp_voicemail_expire."""
    return voicemail_keys(keys), [int(before_ms), int(limit)]


def parse_voicemail(raw: bytes | None) -> Voicemail | None:
    """A stored record, or None for a missing one (a false reply)."""
    return Voicemail.decode(raw) if raw else None


def parse_voicemails(raws: Sequence[bytes | None]) -> list[Voicemail]:
    """The records that are there (an id listed without a record is skipped)."""
    return [Voicemail.decode(raw) for raw in raws if raw]


def prompt_digest(audio: bytes) -> str:
    """The name a prompt's audio is stored and cached under."""
    return hashlib.sha256(audio).hexdigest()


def prompt_put_request(
    keys: TenantKeys, prompt_id: str, audio: bytes | None, audit: Audit | None
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of disp_prompt_put; `audio` None deletes the prompt. ValueError for
    audio that is empty or larger than MAX_PROMPT_BYTES."""
    validate_id(prompt_id, "prompt id")
    if audio is not None and not 0 < len(audio) <= MAX_PROMPT_BYTES:
        raise ValueError(f"prompt audio must be 1..{MAX_PROMPT_BYTES} bytes, got {len(audio)}")
    digest = prompt_digest(audio) if audio is not None else ""
    keys_ = [*keys.base, keys.prompts, keys.prompt_data]
    return keys_, [prompt_id, digest, audio or b"", *_audit(audit)]
