"""Schemathesis hooks of test_api_schemathesis (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

import io
import struct
import wave
from typing import Any

import schemathesis
from hypothesis import strategies as st


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """A generated group or agent body gets the path's id, so the case reaches the config
    validation and the Redis write instead of stopping at the id check."""
    ids = case.path_parameters or {}
    if "/members/" in case.path or not isinstance(case.body, dict) or "id" not in case.body:
        return
    path_id = ids.get("group_id") or ids.get("agent_id")
    if isinstance(path_id, str):
        case.body["id"] = path_id


def _wav(frames: bytes, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return out.getvalue()


_TONE = b"".join(struct.pack("<h", (i % 40 - 20) * 800) for i in range(800))
_VALID = _wav(_TONE)

# Prompt uploads (audio/wav bodies, which schemathesis cannot make up itself): valid WAVs, the
# same cut short or with a damaged header, and arbitrary bytes, so the cases reach the audio
# checks, the conversion (16 kHz goes through sox) and the Redis write.
schemathesis.openapi.media_type(
    "audio/wav",
    st.one_of(
        st.sampled_from([_VALID, _wav(_TONE, 16000), _VALID[:30], _VALID[:44]]),
        st.binary(max_size=64).map(lambda tail: _VALID[:40] + tail),
        st.binary(max_size=256),
    ),
)
