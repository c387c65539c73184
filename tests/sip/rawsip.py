"""Raw SIP for tests that send what SIPp will not: torture bytes, broken headers, odd Call-IDs.

`SipPeer` sends datagrams to Kamailio from a loopback address of its own and collects the
replies. Kamailio answers a request without `rport` at the *received* address (the source IP)
but at the port its top Via names, 5060 by default (RFC 3261 18.2.2), so a peer listens on
those ports too: an address of its own (127.x.y.z) keeps them clear of a `make run` Kamailio
on 127.0.0.1:5060, of other peers and of earlier tests' retransmissions.

`FakePhone` is an agent's phone that turns every INVITE down, and keeps what it was sent.
"""

from __future__ import annotations

import contextlib
import errno
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable

from dispatcher.run.sipprocs import KamailioProcess

# Ports a top Via of the RFC 4475 messages names (quotbal.dat: 5050), besides the rport ones.
VIA_PORTS = (5060, 5050)

_HEADER = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)  # a header name (token) and ':'
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(.*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


def call_id_of(message: bytes) -> bytes | None:
    """The first Call-ID (or compact i:) header value of `message`'s header section."""
    found = _CALL_ID.search(message.split(b"\r\n\r\n", 1)[0])
    return found.group(1) if found else None


def status_of(reply: bytes) -> int | None:
    """The status code of a SIP response, None for anything else."""
    found = _STATUS.match(reply)
    return int(found.group(1)) if found else None


def body_of(message: bytes) -> bytes:
    """Everything after the first empty line."""
    return message.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in message else b""


def _bind_all(host: str, ports: Iterable[int]) -> list[socket.socket]:
    """Non-blocking UDP sockets bound to host:port for each port (0: any), all or none."""
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            sockets.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sockets[-1].bind((host, port))
            sockets[-1].setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class SipPeer:
    """A SIP endpoint on a loopback address of its own that talks to `kamailio` over UDP.

    `exchange()` sends bytes as they are and returns the replies that carry their Call-ID.
    It knows Kamailio has handled them when the keepalive OPTIONS sent right after them is
    answered: the tests' Kamailio runs one UDP worker, which takes datagrams in order.
    """

    def __init__(self, kamailio: KamailioProcess, attempts: int = 20) -> None:
        self.kamailio = kamailio
        self.target = (kamailio.listen_addr, kamailio.sip_port)
        for _ in range(attempts):
            host = ".".join(("127", *(str(random.randint(low, 254)) for low in (64, 0, 1))))
            try:
                sockets = _bind_all(host, (0, *VIA_PORTS))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                    continue  # someone holds a port of that address, or 0.0.0.0:5060
                raise
            break
        else:
            raise RuntimeError(
                f"no address 127.x.y.z with UDP ports {VIA_PORTS} free in {attempts} tries: "
                "is all of 127.0.0.0/8 local here, is something bound to 0.0.0.0:5060?"
            )
        self.sock, *self.listeners = sockets
        self.host = host
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        for sock in (self.sock, *self.listeners):
            sock.close()

    def __enter__(self) -> SipPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        """One datagram, as is; OSError (EMSGSIZE) if UDP cannot carry it."""
        self.sock.sendto(data, self.target)

    def _drain(self) -> list[bytes]:
        got = []
        for sock in (self.sock, *self.listeners):
            while True:
                try:
                    got.append(sock.recv(65535))
                except BlockingIOError:
                    break
        return got

    def options_probe(self) -> bytes:
        """A keepalive OPTIONS to Kamailio itself, answered at this peer's port (rport)."""
        tag = uuid.uuid4().hex[:12]
        return (
            f"OPTIONS sip:{self.kamailio.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{self.host}>;tag={tag}\r\n"
            f"To: <sip:{self.kamailio.address}>\r\n"
            f"Call-ID: barrier-{tag}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def exchange(
        self, data: bytes, wait_final: float = 0.0, barrier_timeout: float = 3.0
    ) -> list[bytes]:
        """Send `data`; return the replies with its Call-ID (with none if it has none).

        With `wait_final`, wait up to that long for a final reply first (a call that rings a
        phone is answered after the phone's reply, not while Kamailio reads the INVITE).
        AssertionError if Kamailio does not answer the OPTIONS that follows within
        `barrier_timeout`: it is dead or stuck.
        """
        wanted = call_id_of(data)
        replies: list[bytes] = []

        def collect(datagrams: Iterable[bytes]) -> None:
            replies.extend(d for d in datagrams if call_id_of(d) == wanted)

        self.send(data)
        deadline = time.monotonic() + wait_final
        while time.monotonic() < deadline:
            collect(self._drain())
            if any((status_of(r) or 0) >= 200 for r in replies):
                break
            time.sleep(0.01)
        probe = self.options_probe()
        probe_id = call_id_of(probe)
        self.send(probe)
        deadline = time.monotonic() + barrier_timeout
        answered = False
        while not answered:
            got = self._drain()
            answered = any(call_id_of(d) == probe_id for d in got)
            collect(got)
            if not answered:
                assert time.monotonic() < deadline, (
                    f"Kamailio did not answer OPTIONS within {barrier_timeout}s after the "
                    f"message; alive: {self.kamailio.proc and self.kamailio.proc.poll() is None}"
                )
                time.sleep(0.005)
        return replies


def register_request(peer: SipPeer, user: str, contact: str, expires: int = 3600) -> bytes:
    """REGISTER sip:user@kamailio binding <sip:user@contact> (contact: host:port)."""
    tag = uuid.uuid4().hex[:12]
    address = peer.kamailio.address
    return (
        f"REGISTER sip:{address} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{address}>;tag={tag}\r\n"
        f"To: <sip:{user}@{address}>\r\n"
        f"Call-ID: reg-{tag}\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{contact}>\r\n"
        f"Expires: {expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def register(peer: SipPeer, user: str, contact: str, expires: int = 3600) -> list[bytes]:
    """Send `register_request`; the replies."""
    return peer.exchange(register_request(peer, user, contact, expires))


def invite(
    peer: SipPeer,
    user: str,
    call_id: bytes,
    *,
    max_forwards: bytes = b"70",
    extra_headers: bytes = b"",
    body: bytes = b"",
    content_length: bytes | None = None,
    via_proto: bytes = b"UDP",
) -> bytes:
    """An initial INVITE from bob at `peer` to sip:user@kamailio (raw bytes to edit further).

    `extra_headers` are CRLF-terminated lines; `content_length` None means the body's length,
    b"" leaves the header out.
    """
    branch = uuid.uuid4().hex[:16].encode()
    address = peer.kamailio.address.encode()
    host, port = peer.host.encode(), str(peer.port).encode()
    length = str(len(body)).encode() if content_length is None else content_length
    lines = [
        b"INVITE sip:" + user.encode() + b"@" + address + b" SIP/2.0",
        b"Via: SIP/2.0/" + via_proto + b" " + host + b":" + port + b";branch=z9hG4bK" + branch,
        b"Max-Forwards: " + max_forwards,
        b"From: <sip:bob@" + host + b">;tag=" + branch[:8],
        b"To: <sip:" + user.encode() + b"@" + address + b">",
        b"Call-ID: " + call_id,
        b"CSeq: 1 INVITE",
        b"Contact: <sip:bob@" + host + b":" + port + b">",
    ]
    if length:
        lines.append(b"Content-Length: " + length)
    return b"\r\n".join(lines) + b"\r\n" + extra_headers + b"\r\n" + body


# Headers a UAS copies into its response (RFC 3261 8.2.6.2), long and compact names.
_COPIED = {b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"}


def response_to(request: bytes, code: int, reason: str, to_tag: str) -> bytes:
    """A response to `request` copying its Via/From/To/Call-ID/CSeq lines (folds included)."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    out = [f"SIP/2.0 {code} {reason}".encode()]
    copying = False
    to_line = 0
    for line in head:
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the header before
            if copying:
                out[-1] += b"\r\n" + line
            continue
        found = _HEADER.match(line)
        name = found.group(1).lower() if found else b""
        copying = name in _COPIED
        if copying:
            out.append(line)
            if name in (b"to", b"t"):
                to_line = len(out) - 1
    if to_line:
        out[to_line] += f";tag={to_tag}".encode()
    return b"\r\n".join([*out, b"Content-Length: 0", b"", b""])


class FakePhone:
    """An agent's phone on `host`: answers every INVITE `code` (486 Busy Here by default),
    a CANCEL 200 and swallows ACKs; `invites` keeps each INVITE it got, as received."""

    def __init__(self, host: str, code: int = 486, reason: str = "Busy Here") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.contact = f"{host}:{self.sock.getsockname()[1]}"
        self.code, self.reason = code, reason
        self.invites: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-phone", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if data.startswith(b"INVITE "):
                self.invites.append(data)
                reply = response_to(data, self.code, self.reason, uuid.uuid4().hex[:8])
            elif data.startswith(b"CANCEL "):
                reply = response_to(data, 200, "OK", uuid.uuid4().hex[:8])
            else:
                continue
            with contextlib.suppress(OSError):
                self.sock.sendto(reply, source)

    def invites_for(self, call_id: bytes) -> list[bytes]:
        return [m for m in self.invites if call_id_of(m) == call_id]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.sock.close()
