"""Voicemail of a tenant's groups: list, read, listen, mark heard or new, delete.

A message is a record in Redis (`state.messages.Voicemail`) and a WAV file on the disk of the
node that recorded it (`node`, `file`). Any token of the tenant reads messages and their
audio; admin and supervisor tokens mark them (`auth.HEARD_ROLES`); admin tokens delete them.
The audio is served from this machine's disk: 410 Gone when the file is not here (recorded on
another node, or its file removed).
"""

from __future__ import annotations

import logging
import stat
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import FileResponse

from dispatcher.admin.ops import NotFound
from dispatcher.config.model import ID_PATTERN
from dispatcher.state.messages import Voicemail

from . import config_io
from .auth import HeardAccess, ReadAccess, TenantAccess, WriteAccess
from .schemas import HeardChange, VoicemailList, VoicemailOut

log = logging.getLogger("dispatcher.api")

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["voicemail"])

MessageId = Annotated[str, Path(pattern=ID_PATTERN, description="message id")]
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# Recordings are WAV files named by the node that wrote them; anything else in a record is
# not served or deleted (a record is written by nodes, but a wrong path must not reach
# arbitrary files of this machine).
_RECORDING_SUFFIX = ".wav"


def _out(tenant: str, message: Voicemail) -> VoicemailOut:
    started = datetime.fromtimestamp(message.started_ms / 1000, UTC)
    return VoicemailOut(
        id=message.id,
        group=message.group,
        caller=message.caller,
        started_ms=message.started_ms,
        started_at=started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        duration_s=message.duration_ms / 1000,
        heard=message.heard,
        node=message.node,
        audio_url=f"/v1/tenants/{tenant}/voicemail/{message.id}/audio",
    )


def _recording_path(message: Voicemail) -> FilePath | None:
    """The message's file, None when the record names no absolute WAV path."""
    path = FilePath(message.file)
    return path if path.is_absolute() and path.suffix == _RECORDING_SUFFIX else None


async def _message(access: TenantAccess, message_id: str) -> Voicemail:
    message = await access.store.voicemail(message_id)
    if message is None:
        raise NotFound(f"voicemail message {message_id!r} does not exist")
    return message


@router.get("/voicemail", summary="The voicemail messages, newest first")
async def list_voicemail(
    access: ReadAccess,
    group: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="only this group's messages")
    ] = None,
    heard: Annotated[
        bool | None, Query(description="false: only new messages; true: only heard ones")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> VoicemailList:
    """Messages of every group of the tenant (or one), with the unheard count per group.
    Cost: 2 round trips, O(messages of the tenant)."""
    await config_io.load(access.store)  # 404 for a tenant without config
    messages = await access.store.voicemails()
    new_by_group: dict[str, int] = {}
    for message in messages:
        if not message.heard:
            new_by_group[message.group] = new_by_group.get(message.group, 0) + 1
    matching = [
        m
        for m in messages
        if (group is None or m.group == group) and (heard is None or m.heard == heard)
    ]
    return VoicemailList(
        messages=[_out(access.tenant, m) for m in matching[:limit]],
        total=len(matching),
        new_by_group=dict(sorted(new_by_group.items())),
    )


@router.get("/voicemail/{message_id}", summary="One voicemail message")
async def get_voicemail(access: ReadAccess, message_id: MessageId) -> VoicemailOut:
    return _out(access.tenant, await _message(access, message_id))


@router.get(
    "/voicemail/{message_id}/audio",
    summary="A message's recording (WAV)",
    response_class=FileResponse,
    responses={
        200: {"content": {"audio/wav": {}}, "description": "the recording"},
        410: {"description": "the recording's file is not on this machine"},
    },
)
async def get_voicemail_audio(
    access: ReadAccess, message_id: MessageId, request: Request
) -> FileResponse:
    """The WAV file from this machine's disk (1 round trip, then the file)."""
    message = await _message(access, message_id)
    path = _recording_path(message)
    try:
        info = await anyio.Path(path).stat() if path is not None else None
    except OSError:
        info = None
    if path is None or info is None or not stat.S_ISREG(info.st_mode):
        here: str = request.app.state.settings.node
        where = (
            f"it was recorded on node {message.node!r}, this API runs on {here!r}"
            if message.node != here
            else "its file is gone from this node"
        )
        raise HTTPException(
            status.HTTP_410_GONE, f"the recording of voicemail {message_id!r} is not here: {where}"
        )
    return FileResponse(
        path,
        media_type="audio/wav",
        filename=f"{message.id}.wav",
        content_disposition_type="inline",
        stat_result=info,
    )


@router.post("/voicemail/{message_id}/heard", summary="Mark a message heard, or new again")
async def mark_voicemail(
    access: HeardAccess, message_id: MessageId, change: HeardChange
) -> VoicemailOut:
    """Admin and supervisor tokens. Marking it as it already is changes nothing (no audit).
    Cost: 1 round trip, 2 when it changes."""
    message = await _message(access, message_id)
    if message.heard == change.heard:
        return _out(access.tenant, message)
    marked = message.marked(change.heard)
    action = "voicemail.heard" if change.heard else "voicemail.new"
    audit = access.audit(action, f"voicemail:{message_id}", message.group)
    if await access.store.voicemail_update(message_id, marked, audit) is None:
        raise NotFound(f"voicemail message {message_id!r} does not exist")
    return _out(access.tenant, marked)


@router.delete(
    "/voicemail/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a message and its recording",
)
async def delete_voicemail(
    access: WriteAccess, message_id: MessageId, request: Request
) -> Response:
    """The record first, then the file on this machine; a file already gone is no error.
    The record goes first so that no listing ever offers a message whose audio is gone
    (1 FCALL, then the file)."""
    audit = access.audit("voicemail.delete", f"voicemail:{message_id}", "")
    message = await access.store.voicemail_update(message_id, None, audit)
    if message is None:
        raise NotFound(f"voicemail message {message_id!r} does not exist")
    path = _recording_path(message)
    deleted = False
    if path is not None:
        try:
            await anyio.Path(path).unlink()
            deleted = True
        except FileNotFoundError:
            pass
        except OSError as exc:  # the record is gone; a file left behind is only disk space
            log.warning("voicemail %s: its file could not be deleted: %s", message_id, exc)
    here: str = request.app.state.settings.node
    if not deleted and message.node != here:
        # Only the node whose disk holds the file can delete it; it stays there.
        log.warning(
            "voicemail %s deleted; its recording may stay on node %s (this is %s)",
            message_id,
            message.node,
            here,
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
