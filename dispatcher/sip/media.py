"""A queued (or voicemail) caller's media through RTPengine, as Kamailio's worker does it.

Kamailio's rtpengine module does what fits its SIP messages: `rtpengine_offer` rewrites the
caller's INVITE (so the agents it is relayed to later get RTPengine's SDP), `rtpengine_answer`
the agent's 2xx (the caller then talks to the agent through RTPengine), `play_media` /
`stop_media` / `rtpengine_delete` with explicit `call-id=` and `from-tag=` flags, which work in
any process (the keeper's timer process included). The one step it cannot take is answering
the caller before anyone else does: its functions read the SDP of the message at hand, and the
answer the caller needs for early media is RTPengine's reply to a local, silent endpoint
(port 9). That `answer` goes over RTPengine's NG protocol directly (`dispatcher.media.ng`).

Every step reports failure instead of raising: the router then applies its documented fallback
(the caller goes to the overflow target without audio) and logs the outage once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from dispatcher.media.ng import NgClient, NgError, NgUnavailable

# The caller's early media is answered by a silent local endpoint: RTPengine sends the
# caller's audio to the discard port, and plays prompts toward the caller.
SILENT_SDP = (
    "v=0\r\n"
    "o=dispatcher 1 1 IN IP4 127.0.0.1\r\n"
    "s=queue\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 9 RTP/AVP 0 8\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
)
# How the INVITE's SDP is rewritten: RTPengine's own address in the origin and session lines,
# plain RTP toward the agents (phones on the LAN side).
OFFER_FLAGS = "replace-origin replace-session-connection ICE=remove RTP/AVP"
ANSWER_FLAGS = "replace-origin replace-session-connection ICE=remove"
# The pseudo-variable the module fills with a played file's duration (kamailio.cfg's
# modparam "rtpengine" "media_duration").
DURATION_PV = "$avp(dsp_media_ms)"


def local_tag(call_id: str) -> str:
    """The to-tag of the silent endpoint that answers `call_id`'s early media (stable, so a
    retried answer is the same answer)."""
    return "q" + hashlib.blake2b(call_id.encode(), digest_size=6).hexdigest()


class CallMedia:
    """RTPengine for the calls of one Kamailio process: `ksr` is app_python3's KSR module,
    `ng` an NG client of the same RTPengine as the module's rtpengine_sock."""

    def __init__(self, ksr: Any, ng: NgClient) -> None:
        self.ksr = ksr
        self.ng = ng
        self.last_error = ""

    def anchor(self, call_id: str, from_tag: str) -> str | None:
        """On the caller's INVITE: route its media through RTPengine and answer it with the
        silent endpoint; returns the SDP for the caller's 183 (or 200), None on failure
        (`last_error` says why). Cost: two NG round trips (offer, answer)."""
        if self.ksr.rtpengine.rtpengine_offer(OFFER_FLAGS) < 0:
            self.last_error = "rtpengine_offer failed (RTPengine unreachable or refused)"
            return None
        try:
            reply = self.ng.answer(call_id, from_tag, local_tag(call_id), SILENT_SDP)
        except (NgError, NgUnavailable) as exc:
            self.last_error = f"answer for early media failed: {exc}"
            self.delete(call_id)
            return None
        sdp = reply.get("sdp")
        if not isinstance(sdp, str | bytes) or not sdp:
            self.last_error = f"answer for early media without SDP: {reply!r}"
            self.delete(call_id)
            return None
        return sdp.decode() if isinstance(sdp, bytes) else sdp

    def play(self, call_id: str, from_tag: str, path: str, repeat: int = 1) -> int | None:
        """Play `path` to the caller `repeat` times (replacing what it hears); the file's
        duration in ms, or None on failure. One NG round trip."""
        flags = f"call-id={call_id} from-tag={from_tag} file={path}"
        if repeat > 1:
            flags += f" repeat-times={repeat}"
        self.ksr.pv.unset(DURATION_PV)
        if self.ksr.rtpengine.play_media(flags) < 0:
            self.last_error = f"play_media {path} failed"
            return None
        duration = self.ksr.pv.get(DURATION_PV)
        return int(duration) if duration not in (None, "") and int(duration) > 0 else 0

    def stop(self, call_id: str, from_tag: str) -> None:
        """Stop the caller's playback (nothing happens when none runs)."""
        self.ksr.rtpengine.stop_media(f"call-id={call_id} from-tag={from_tag}")

    def connect(self) -> bool:
        """On an agent's 2xx of a queued call: answer the caller's offer with the agent's SDP,
        so caller and agent talk through RTPengine. One NG round trip."""
        return bool(self.ksr.rtpengine.rtpengine_answer(ANSWER_FLAGS) > 0)

    def delete(self, call_id: str) -> None:
        """The call is over: RTPengine frees its ports. One NG round trip, over NG itself:
        from a dialog event route the module would send the faked message's from-tag,
        which RTPengine ignores ("Tag '123' in delete message not found"), keeping the
        call - and playing music to a caller long gone - until its timeout."""
        try:
            self.ng.delete(call_id, delete_delay=0)
        except NgUnavailable as exc:
            self.last_error = f"delete of {call_id} failed: {exc}"
        except NgError as exc:
            if "Unknown call-id" not in exc.reason:  # deleted already (e.g. by the keeper)
                self.last_error = f"delete of {call_id} failed: {exc}"
