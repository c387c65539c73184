"""A tenant's uploaded prompts (queue greeting, music on hold, voicemail greeting): upload,
list, download, delete.

An upload is the raw audio as the request body. It is untrusted: `media.audio.inspect_audio`
checks it (WAV, mono PCM 16-bit at 8, 16 or 48 kHz, or G.711 at 8 kHz), `to_playback_format`
turns it into the playback format (WAV, 8000 Hz mono 16-bit), and only that is stored, with
one FCALL that replaces the prompt's digest and audio together: an upload that fails any
check leaves the previous prompt exactly as it was. Groups name prompts by id in
`queue.greeting`, `queue.music` and `voicemail.greeting`; `default` and `none` mean the
generated set and no prompt there, so they cannot be uploaded.

Limits: the request body at most `audio.MAX_UPLOAD_BYTES` (413, before the body is read when
Content-Length says so), the stored audio at most `messages.MAX_PROMPT_BYTES` (422, about two
minutes of the playback format); an upload is held in memory while it is checked.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Path, Request, Response, status

from dispatcher.admin.ops import NotFound, StillReferenced
from dispatcher.config.model import ID_PATTERN, Tenant
from dispatcher.media.audio import (
    MAX_UPLOAD_BYTES,
    PLAYBACK_CHANNELS,
    PLAYBACK_RATE,
    PLAYBACK_SAMPLE_WIDTH,
    AudioError,
    MissingToolError,
    ToolError,
    inspect_audio,
    to_playback_format,
)
from dispatcher.state.messages import MAX_PROMPT_BYTES, prompt_digest

from . import config_io
from .auth import ReadAccess, WriteAccess
from .schemas import PromptInfo, PromptList

log = logging.getLogger("dispatcher.api")

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["prompts"])

PromptId = Annotated[str, Path(pattern=ID_PATTERN, description="prompt id")]
# Prompt references that name no upload (config.model.Queue): the generated set, no prompt.
RESERVED_IDS = frozenset({"default", "none"})
# The stored audio is `audio.playback_wav`'s output: the canonical 44-byte header, then the
# samples, so its duration follows from its size without reading it.
WAV_HEADER_BYTES = 44
_BYTES_PER_SECOND = PLAYBACK_RATE * PLAYBACK_CHANNELS * PLAYBACK_SAMPLE_WIDTH
_AUDIO_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the audio file: WAV, mono PCM 16-bit (8000, 16000 or 48000 Hz) or "
        f"G.711 A-law/µ-law (8000 Hz); at most {MAX_UPLOAD_BYTES} bytes",
        "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _info(prompt_id: str, digest: str, size: int) -> PromptInfo:
    seconds = max(0, size - WAV_HEADER_BYTES) / _BYTES_PER_SECOND
    return PromptInfo(id=prompt_id, digest=digest, bytes=size, duration_s=round(seconds, 3))


def _unprocessable(message: str, code: str, where: str = "body") -> HTTPException:
    """A 422 in the API's problem format (app.py), `type` the AudioError code."""
    loc, field = (["path", "prompt_id"], "prompt_id") if where == "path" else (["body"], "")
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": loc, "field": field, "msg": message, "type": code}],
    )


def _too_large() -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"an upload may be at most {MAX_UPLOAD_BYTES} bytes",
    )


async def _body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it passes MAX_UPLOAD_BYTES: checked on
    Content-Length before anything is read, and on the bytes read (a chunked body has no
    Content-Length, and a client may send more than it said)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_UPLOAD_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _converted(upload: bytes) -> bytes:
    """The upload in the playback format; AudioError when it is none we can play or when
    the result is over MAX_PROMPT_BYTES. Runs sox for other rates and G.711 (in a thread)."""
    info = inspect_audio(upload)
    playback = to_playback_format(upload, info)
    if len(playback) > MAX_PROMPT_BYTES:
        most = (MAX_PROMPT_BYTES - WAV_HEADER_BYTES) / _BYTES_PER_SECOND
        raise AudioError(
            f"too long for a prompt: {info.seconds:.1f} s is {len(playback)} bytes stored "
            f"(8000 Hz mono 16-bit), the limit is {MAX_PROMPT_BYTES} bytes ({most:.0f} s)",
            "too_large",
        )
    return playback


@router.put(
    "/prompts/{prompt_id}",
    summary="Upload a prompt (the audio file is the body)",
    status_code=status.HTTP_200_OK,
    openapi_extra=_AUDIO_BODY,
    responses={
        201: {"description": "a new prompt"},
        413: {"description": f"a body over {MAX_UPLOAD_BYTES} bytes"},
        422: {"description": "not audio we can play; `type` names the problem"},
    },
)
async def put_prompt(
    access: WriteAccess, prompt_id: PromptId, request: Request, response: Response
) -> PromptInfo:
    """201 for a new prompt, 200 when it replaced one (the old audio goes once no other
    prompt uses it). Nodes play the new audio from their next call on."""
    if prompt_id in RESERVED_IDS:
        raise _unprocessable(
            f"{prompt_id!r} is reserved (default: the generated prompts, none: no prompt)",
            "reserved",
            where="path",
        )
    await config_io.load(access.store)  # 404 for a tenant without config, before the body
    upload = await _body(request)
    try:
        playback = await anyio.to_thread.run_sync(_converted, upload)
    except AudioError as exc:
        raise _unprocessable(str(exc), exc.code) from None
    except MissingToolError as exc:
        log.error("prompt upload: %s", exc)
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR, f"this server cannot convert audio: {exc}"
        ) from None
    except ToolError as exc:
        raise _unprocessable(f"the audio could not be converted: {exc}", "conversion") from None
    audit = access.audit("prompt.put", f"prompt:{prompt_id}", f"{len(playback)} bytes")
    previous = await access.store.prompt_put(prompt_id, playback, audit)
    info = _info(prompt_id, prompt_digest(playback), len(playback))
    if previous is None:
        response.status_code = status.HTTP_201_CREATED
    return info


@router.get("/prompts", summary="The uploaded prompts")
async def list_prompts(access: ReadAccess) -> PromptList:
    """Ids, digests, sizes and durations; the audio is not read (2 round trips)."""
    await config_io.load(access.store)
    sizes = await access.store.prompt_sizes()
    return PromptList(
        prompts=[_info(pid, digest, size) for pid, (digest, size) in sorted(sizes.items())]
    )


@router.get(
    "/prompts/{prompt_id}",
    summary="A prompt's audio (WAV, the playback format)",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}, "description": "the stored WAV"}},
)
async def get_prompt(access: ReadAccess, prompt_id: PromptId) -> Response:
    """The stored WAV; its ETag is the digest (1-2 round trips)."""
    found = await access.store.prompt_audio(prompt_id)
    if found is None:
        raise NotFound(f"prompt {prompt_id!r} does not exist")
    digest, audio = found
    return Response(
        audio,
        media_type="audio/wav",
        headers={
            "ETag": f'"{digest}"',
            "Content-Disposition": f'inline; filename="{prompt_id}.wav"',
        },
    )


def prompt_references(tenant: Tenant, prompt_id: str) -> list[str]:
    """Where the tenant's config names the prompt: `groups[i].queue.music (group 'x')`, ..."""
    references = []
    for index, group in enumerate(tenant.groups):
        named = {}
        if group.queue is not None:
            named = {"queue.greeting": group.queue.greeting, "queue.music": group.queue.music}
        named["voicemail.greeting"] = group.voicemail.greeting
        references += [
            f"groups[{index}].{field} (group {group.id!r})"
            for field, ref in named.items()
            if ref == prompt_id
        ]
    return references


@router.delete(
    "/prompts/{prompt_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a prompt",
    responses={409: {"description": "a group of the current config still names it"}},
)
async def delete_prompt(access: WriteAccess, prompt_id: PromptId) -> Response:
    """409 naming the groups while the current config still names it (3 round trips)."""
    _, tenant = await config_io.load(access.store)
    if await access.store.prompt_digest(prompt_id) is None:
        raise NotFound(f"prompt {prompt_id!r} does not exist")
    references = prompt_references(tenant, prompt_id)
    if references:
        raise StillReferenced(f"prompt {prompt_id!r}", references)
    audit = access.audit("prompt.delete", f"prompt:{prompt_id}")
    if await access.store.prompt_put(prompt_id, None, audit) is None:
        raise NotFound(f"prompt {prompt_id!r} does not exist")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
