"""A caller that sees every 2xx of its forked INVITE: one dialog per answering phone.

SIPp keeps one dialog per call (its [last_To:] is the last reply's), so the callers of the
simultaneous-answer tests are this small UA: it sends one INVITE through Kamailio, ACKs each
2xx the moment it arrives (a retransmitted 2xx again, RFC 3261 13.2.2.4), and ends each
dialog with a BYE when told to - the extra ones at once, as a correct phone does, or all of
them later, as a caller that keeps several (baresip did). A BYE from a phone is answered
200. Messages are built with the helpers of the CANCEL race (test_group_strategies).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from test_group_strategies import _SDP, _header, _sip, _sip_parts

from dispatcher.run.sipprocs import KamailioProcess


@dataclass
class Dialog:
    """One dialog of the call, made by one 2xx (its To tag)."""

    to: str
    tag: str
    contact: str
    route: str
    order: int  # 1 for the first 2xx that arrived
    cseq: int = 1
    ended: threading.Event = field(default_factory=threading.Event)


class ForkedCaller:
    """One call from `caller` to `number` through `kamailio`; `dialogs` by To tag, in the
    order their 2xx arrived."""

    def __init__(self, kamailio: KamailioProcess, number: str, caller: str = "bob") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.proxy = (kamailio.listen_addr, kamailio.sip_port)
        self.call_id = f"fork-{uuid.uuid4().hex}"
        self.tag = uuid.uuid4().hex[:12]
        self.ruri = f"sip:{number}@{kamailio.address}"
        self.from_ = f"<sip:{caller}@127.0.0.1:{self.port}>;tag={self.tag}"
        self.dialogs: dict[str, Dialog] = {}
        self.final: int | None = None
        self.byes_from_phones = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> ForkedCaller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _via(self) -> tuple[str, str]:
        return ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex}")

    def invite(self) -> None:
        headers = [
            self._via(),
            ("Max-Forwards", "70"),
            ("From", self.from_),
            ("To", f"<{self.ruri}>"),
            ("Call-ID", self.call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:caller@127.0.0.1:{self.port}>"),
            ("Content-Type", "application/sdp"),
        ]
        self.sock.sendto(_sip(f"INVITE {self.ruri} SIP/2.0", headers, _SDP), self.proxy)

    def wait_answers(self, count: int, timeout: float = 5.0, settle: float = 0.3) -> list[Dialog]:
        """The dialogs once `count` 2xx came (or `timeout` passed), waiting `settle` more
        for late ones; in arrival order."""
        deadline = time.monotonic() + timeout
        while len(self.dialogs) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(settle)
        with self._lock:
            return sorted(self.dialogs.values(), key=lambda d: d.order)

    def bye(self, dialog: Dialog, timeout: float = 3.0) -> None:
        """End `dialog` and wait for the 200 to the BYE."""
        dialog.cseq += 1
        self._in_dialog("BYE", dialog, dialog.cseq)
        if not dialog.ended.wait(timeout):
            raise AssertionError(f"no 200 for the BYE of dialog {dialog.tag}")

    def _in_dialog(self, method: str, dialog: Dialog, cseq: int) -> None:
        headers = [self._via(), ("Max-Forwards", "70")]
        if dialog.route:
            headers.append(("Route", dialog.route))
        headers += [
            ("From", self.from_),
            ("To", dialog.to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        self.sock.sendto(_sip(f"{method} {dialog.contact} SIP/2.0", headers), self.proxy)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            start, headers, _ = _sip_parts(data.decode())
            if start.startswith("SIP/2.0 "):
                self._response(int(start.split(" ")[1]), headers)
            elif start.startswith("BYE "):
                self._bye_from_phone(headers, peer)

    def _response(self, code: int, headers: list[tuple[str, str]]) -> None:
        cseq = _header(headers, "CSeq")
        to = _header(headers, "To")
        tag = to.partition(";tag=")[2].split(";")[0]
        if cseq.endswith("BYE") and code == 200:
            with self._lock:
                dialog = self.dialogs.get(tag)
            if dialog is not None:
                dialog.ended.set()
            return
        if not cseq.endswith("INVITE") or code < 200:
            return
        if code >= 300:
            self.final = code
            ack = [self._via(), ("Max-Forwards", "70"), ("From", self.from_), ("To", to)]
            ack += [("Call-ID", self.call_id), ("CSeq", "1 ACK")]
            self.sock.sendto(_sip(f"ACK {self.ruri} SIP/2.0", ack), self.proxy)
            return
        with self._lock:
            dialog = self.dialogs.get(tag)
            if dialog is None:
                dialog = Dialog(
                    to=to,
                    tag=tag,
                    contact=_header(headers, "Contact").strip("<>").split(">")[0],
                    route=_header(headers, "Record-Route"),
                    order=len(self.dialogs) + 1,
                )
                self.dialogs[tag] = dialog
                self.final = self.final or code
        self._in_dialog("ACK", dialog, 1)  # every 2xx, a retransmitted one too

    def _bye_from_phone(self, headers: list[tuple[str, str]], peer: tuple[str, int]) -> None:
        keep = ("via", "from", "to", "call-id", "cseq")
        reply = [(n, v) for n, v in headers if n.lower() in keep]
        self.sock.sendto(_sip("SIP/2.0 200 OK", reply), peer)
        tag = _header(headers, "From").partition(";tag=")[2].split(";")[0]
        with self._lock:
            dialog = self.dialogs.get(tag)
            self.byes_from_phones += 1
        if dialog is not None:
            dialog.ended.set()
