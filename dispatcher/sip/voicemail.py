"""Group voicemail inside Kamailio: the caller is answered, hears the mailbox's greeting and
a tone, and what it says is recorded through RTPengine until it hangs up or the mailbox's
max length is reached.

The worker that applies a `voicemail` target (`Voicemail.answer`) anchors the caller's media
in RTPengine (the same silent local endpoint as a queued caller's early media,
`dispatcher.sip.media`), starts the greeting and answers the INVITE itself: `200 OK` with
RTPengine's SDP and a Contact of this node. Here the call is answered (and billed): the
caller is leaving a message, which is what it paid for. The node is the caller's peer from
then on: the caller's ACK is absorbed, its BYE is answered here (`on_bye`), and at the max
length this node sends the BYE (tm's t_uac_send).

What happens next is the keeper's (`tick`, in the keeper's timer process): after the greeting
the tone, after the tone `start recording`; when the call ends, RTPengine deletes the call,
which finishes its pcap recording (`dispatcher.media.recording` turns the caller's stream into
a WAV), the WAV goes to the node's voicemail folder (DISPATCHER_VOICEMAIL) and the message's
metadata to Redis (`StateStore.voicemail_put`, event `voicemail`), where the admin API lists
and serves it. A caller that hangs up before the tone leaves no message. Retention: the
keeper deletes a mailbox's messages older than its retention_days (Redis first, then the file).

RTPengine unreachable when a caller would leave a message: 480 "Voicemail Unavailable" at
once (logged once per outage), never a silent answer.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from dispatcher.config.model import VoicemailBox
from dispatcher.media import prompts
from dispatcher.media.audio import playable, write_atomically
from dispatcher.media.ng import NgError, NgUnavailable
from dispatcher.media.recording import RecordingError, discard_recording, wait_for_recording
from dispatcher.sip import held as held_calls
from dispatcher.sip.names import DLG_ANSWER, FLT_DLG
from dispatcher.state import StateError
from dispatcher.state.messages import Voicemail as Message

if TYPE_CHECKING:
    from dispatcher.sip.routing import Router

HTABLE = "dspvm"
GREETING, TONE, RECORDING, ENDED = "greeting", "tone", "recording", "ended"
# Retention is applied this often (per node; each deletes what is due, once).
RETENTION_EVERY_S = 60.0
# How long the keeper waits for RTPengine to finish a recording's files after the delete.
FINISH_TIMEOUT_S = 2.0
_SDP_PORT = re.compile(r"^m=audio (\d+) ", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class VoicemailCall:
    """A caller leaving a message at this node: the dialog's two ends (for the BYE), the
    RTPengine port facing the caller (to pick its stream out of the recording), and where
    it is: greeting, tone, recording (since `recording_ms`) or ended."""

    call_id: str
    tenant: str
    mailbox: str
    caller: str
    from_tag: str
    to_tag: str
    caller_uri: str  # the caller's From URI (our BYE's To)
    local_uri: str  # the INVITE's To URI (our BYE's From)
    contact: str  # the caller's Contact (our BYE's Request-URI)
    source: str  # sip:<ip>:<port> the INVITE came from (our BYE's next hop)
    caller_port: int
    max_length_s: int
    started_ms: int
    next_ms: int  # when the current step (greeting, tone) ends
    state: str = GREETING
    recording_ms: int = 0

    def encode(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def decode(cls, text: str) -> VoicemailCall:
        """Inverse of `encode`; ValueError on anything else."""
        try:
            return cls(**orjson.loads(text))
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"not a voicemail call: {text[:80]!r}") from exc


def message_id(call_id: str) -> str:
    """A message's id: stable per call (a retried store is the same message), id-safe."""
    return "vm" + hashlib.blake2b(call_id.encode(), digest_size=10).hexdigest()


class Voicemail:
    """The voicemail side of one process's `Router` (workers and the keeper alike)."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._next_retention = 0.0

    @property
    def ksr(self) -> Any:
        return self.router.ksr

    # -- in a worker: the INVITE and the BYE ------------------------------------------------

    def answer(self, call_id: str, caller: str, mailbox: str, in_failure: bool) -> bool:
        """Answer the INVITE for a message to `mailbox` (a group id); False when RTPengine
        cannot take it (the caller then gets 480, logged once per outage)."""
        router, ksr = self.router, self.ksr
        media = router.media
        from_tag = _pv(ksr, "$ft")
        sdp = media.anchor(call_id, from_tag) if media is not None else None
        if sdp is None or media is None:
            router.media_down(media.last_error if media else "no RTPengine configured")
            return False
        router.media_up()
        group = router.decider.view().groups.get(mailbox)
        box = (group.voicemail if group is not None else None) or VoicemailBox()
        greeting_ms = 0
        path = self.greeting(router.decider.store.tenant, box)
        if path is not None:
            greeting_ms = media.play(call_id, from_tag, str(playable(path))) or 0
        # A one-agent wave's dialog:start must not take this 200 for that agent's answer.
        ksr.pv.unset(DLG_ANSWER)
        if not in_failure:
            # No dialog for the dialog module to track: this node is the caller's peer, and
            # the message's end releases the call (`_store`).
            ksr.resetflag(FLT_DLG)
            ksr.tm.t_newtran()
        port = _SDP_PORT.search(sdp)
        local = f"sip:voicemail@{_pv(ksr, '$Ri')}:{_pv(ksr, '$Rp')}"
        ksr.hdr.append_to_reply(f"Contact: <{local}>\r\n")
        ksr.textops.set_reply_body(sdp, "application/sdp")
        ksr.tm.t_reply(200, "OK")
        now = router.decider.clock_ms()
        self.put(
            VoicemailCall(
                call_id=call_id,
                tenant=router.decider.store.tenant,
                mailbox=mailbox,
                caller=caller,
                from_tag=from_tag,
                to_tag=_pv(ksr, "$ltt(t)"),
                caller_uri=_pv(ksr, "$fu"),
                local_uri=_pv(ksr, "$tu"),
                contact=_contact_uri(_pv(ksr, "$ct")) or _pv(ksr, "$fu"),
                source=f"sip:{_pv(ksr, '$si')}:{_pv(ksr, '$sp')}",
                caller_port=int(port.group(1)) if port else 0,
                max_length_s=box.max_length,
                started_ms=now,
                next_ms=now + greeting_ms,
            )
        )
        return True

    def greeting(self, tenant: str, box: VoicemailBox) -> Path | None:
        announcer = self.router.announcer
        if announcer is None or box.greeting == "none":
            return None
        return announcer.prompt(tenant, box.greeting, f"{box.language}/voicemail_greeting")

    def on_bye(self) -> bool:
        """An in-dialog BYE: True (answered 200) when it ends a message this node records."""
        ksr = self.ksr
        record = self.get(_pv(ksr, "$ci"))
        if record is None:
            return False
        ksr.sl.sl_send_reply(200, "OK")
        if record.state != ENDED:
            self._stop_recording(record)
            self.put(replace(record, state=ENDED))
        return True

    def _stop_recording(self, record: VoicemailCall) -> None:
        """The message ends now, not when the keeper next looks (a quarter second later)."""
        media = self.router.media
        if record.state == RECORDING and media is not None:
            try:
                media.ng.stop_recording(record.call_id)
            except (NgError, NgUnavailable) as exc:
                self.ksr.err(f"dispatcher: voicemail {record.call_id}: {exc}\n")

    # -- in the keeper: the steps of each message -------------------------------------------

    def tick(self) -> None:
        """Move every message this node records on: tone, recording, max length, storing;
        and apply retention now and then."""
        now = self.router.decider.clock_ms()
        for record in self.every():
            try:
                self.router.use(record.tenant)
                self._step(record, now)
            except (StateError, NgError, NgUnavailable, OSError, RecordingError) as exc:
                self.ksr.err(f"dispatcher: voicemail {record.call_id}: {exc}\n")
                if record.state == ENDED:
                    self.drop(record.call_id)  # not retried forever
        if time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_EVERY_S
            for tenant in self.router.tenants.known():
                self.router.use(tenant)
                self._retention(now)

    def _step(self, record: VoicemailCall, now: int) -> None:
        router = self.router
        media = router.media
        assert media is not None
        if record.state == GREETING and now >= record.next_ms:
            tone = router.announcer.manifest().path(prompts.VOICEMAIL_TONE)  # type: ignore[union-attr]
            tone_ms = media.play(record.call_id, record.from_tag, str(playable(tone))) or 0
            self.put(replace(record, state=TONE, next_ms=now + tone_ms))
        elif record.state == TONE and now >= record.next_ms:
            media.ng.start_recording(record.call_id)
            self.put(replace(record, state=RECORDING, recording_ms=now))
        elif record.state == RECORDING and now >= record.recording_ms + record.max_length_s * 1000:
            self._stop_recording(record)
            self._bye(record)
            self.put(replace(record, state=ENDED))
        elif record.state == ENDED:
            self._store(record)

    def _bye(self, record: VoicemailCall) -> None:
        """The max length is reached: this node ends the call (tm sends the BYE)."""
        headers = (
            f"From: <{record.local_uri}>;tag={record.to_tag}\r\n"
            f"To: <{record.caller_uri}>;tag={record.from_tag}\r\n"
            f"Call-ID: {record.call_id}\r\n"
            "CSeq: 1 BYE\r\n"
            'Reason: Q.850;cause=16;text="voicemail max length"\r\n'
        )
        if self.ksr.tm.t_uac_send("BYE", record.contact, record.source, "", headers, "") < 0:
            self.ksr.err(f"dispatcher: voicemail {record.call_id}: the BYE could not be sent\n")

    def _store(self, record: VoicemailCall) -> None:
        """The call is over: RTPengine deletes it (finishing the recording), the WAV goes to
        the voicemail folder and the message to Redis."""
        router = self.router
        self.drop(record.call_id)
        assert router.media is not None
        # Over NG, not the module: the recording is finished only when the call is freed.
        router.media.ng.delete(record.call_id, delete_delay=0)
        router.decider.release(record.call_id, outcome="no_answer")
        spool = router.settings.rtpengine_spool
        if not record.recording_ms or spool is None:
            return  # hung up before the tone: no message
        recording = wait_for_recording(
            spool, record.call_id, caller_port=record.caller_port or None, timeout=FINISH_TIMEOUT_S
        )
        mid = message_id(record.call_id)
        path = router.settings.voicemail_dir / record.tenant / record.mailbox / f"{mid}.wav"
        write_atomically(path, recording.wav)
        discard_recording(recording)
        router.decider.store.voicemail_put(
            Message(
                id=mid,
                group=record.mailbox,
                caller=record.caller,
                started_ms=record.recording_ms,
                duration_ms=round(recording.duration_s * 1000),
                file=str(path),
                node=router.settings.node,
            )
        )

    def _retention(self, now: int) -> None:
        """Delete the messages past their mailbox's retention (the shortest any mailbox of
        the tenant has decides the batch; each message is checked against its own)."""
        router = self.router
        try:
            groups = router.decider.view().groups
            store = router.decider.store
            days = {
                gid: (g.voicemail or VoicemailBox()).retention_days for gid, g in groups.items()
            }
            if not days:
                return
            for message in store.voicemails():
                keep = days.get(message.group, max(days.values()))
                expired = message.started_ms < now - keep * 86_400_000
                if expired and store.voicemail_update(message.id, None) is not None:
                    Path(message.file).unlink(missing_ok=True)
        except StateError as exc:
            self.ksr.err(f"dispatcher: voicemail retention: {exc}\n")

    # -- the node's htable of the messages being recorded -----------------------------------

    def put(self, record: VoicemailCall) -> None:
        self.ksr.htable.sht_sets(HTABLE, record.call_id, record.encode())

    def get(self, call_id: str) -> VoicemailCall | None:
        text = self.ksr.htable.sht_get(HTABLE, call_id) if call_id else None
        return VoicemailCall.decode(str(text)) if text else None

    def drop(self, call_id: str) -> None:
        self.ksr.htable.sht_rm(HTABLE, call_id)

    def every(self) -> list[VoicemailCall]:
        return [VoicemailCall.decode(text) for text in held_calls.values(self.ksr, HTABLE)]


def _pv(ksr: Any, name: str) -> str:
    value = ksr.pv.get(name)
    return "" if value is None else str(value)


def _contact_uri(contact: str) -> str:
    """The URI of a Contact header value (`<sip:...>;expires=...` or a bare URI)."""
    if "<" in contact:
        return contact.split("<", 1)[1].split(">", 1)[0]
    return contact.split(";", 1)[0].strip()
