"""Phones authenticate (digest, SHA-256 or MD5), trusted addresses need not, password
guessers are slowed and blocked. Real Kamailio and Redis; the phones are raw SIP from
addresses of their own (127.x.y.z: not this host, so not trusted)."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from rawsip import FakePhone, SipPeer, status_of

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.sipprocs import KamailioProcess
from dispatcher.sip.digest import Credentials, response
from dispatcher.state import StateStore, TenantKeys
from dispatcher.state.credentials import credential_record, ha1

pytestmark = [pytest.mark.sip, pytest.mark.redis]

TENANT = "authco"
PASSWORD = "correct horse battery"
TENANT_YAML = """
id: authco
name: Auth Co
agents:
  - {id: alice, name: Alice, targets: {aor: alice}, state: available}
groups:
  - id: sales
    extension: "600"
    name: Sales
    strategy: sequential
    ring_timeout: 2
    members: [{agent: alice}]
    no_answer: {kind: reply, code: 480}
"""
LIMITS = {"AUTH_FAIL_LIMIT_USER": 3, "AUTH_FAIL_LIMIT_SRC": 6, "AUTH_BAN_S": 60}
CHALLENGE = re.compile(rb"^(WWW|Proxy)-Authenticate: (Digest .*)$", re.MULTILINE)


@pytest.fixture
def node(
    start_kamailio: Callable[..., KamailioProcess], redis_url: str
) -> Iterator[KamailioProcess]:
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
        store.credential_put("alice", credential_record("alice", TENANT, PASSWORD))
    yield start_kamailio(tenant=TENANT, redis_url=redis_url, extra_defines=LIMITS)


def request(peer: SipPeer, method: str, user: str, auth: str = "", call_id: str = "") -> bytes:
    tag = uuid.uuid4().hex[:10]
    domain = peer.kamailio.address
    uri = f"sip:{domain}" if method == "REGISTER" else f"sip:600@{domain}"
    to = f"sip:{user}@{domain}" if method == "REGISTER" else uri
    header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK{tag};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag={tag}",
        f"To: <{to}>",
        f"Call-ID: {call_id or tag}",
        f"CSeq: {2 if auth else 1} {method}",
        f"Contact: <sip:{user}@{peer.host}:{peer.port}>",
        *([f"{header}: {auth}"] if auth else []),
        "Expires: 300",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def challenges(replies: list[bytes]) -> list[str]:
    return [m.group(2).decode().strip() for r in replies for m in CHALLENGE.finditer(r)]


def answer(challenge: str, method: str, uri: str, password: str, algorithm: str) -> str:
    """What a phone that knows `password` sends back for `challenge`."""
    fields = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    creds = Credentials(
        "alice", fields["realm"], fields["nonce"], uri, "", algorithm, "auth", "00000001", "abcd"
    )
    digest = response(creds, method, ha1("alice", fields["realm"], password, algorithm))
    return (
        f'Digest username="alice", realm="{fields["realm"]}", nonce="{fields["nonce"]}", '
        f'uri="{uri}", response="{digest}", algorithm={algorithm}, qop=auth, nc=00000001, '
        'cnonce="abcd"'
    )


def final(replies: list[bytes]) -> int | None:
    codes = [status_of(r) for r in replies if (status_of(r) or 0) >= 200]
    return codes[-1] if codes else None


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_a_phone_registers_with_its_password(node: KamailioProcess, algorithm: str) -> None:
    with SipPeer(node) as peer:
        first = peer.exchange(request(peer, "REGISTER", "alice"), wait_final=2)
        assert final(first) == 401
        offered = challenges(first)
        assert [c.split("algorithm=")[1].split(",")[0] for c in offered] == ["SHA-256", "MD5"]
        (chosen,) = [c for c in offered if f"algorithm={algorithm}," in c]
        auth = answer(chosen, "REGISTER", f"sip:{node.address}", PASSWORD, algorithm)
        assert final(peer.exchange(request(peer, "REGISTER", "alice", auth), wait_final=2)) == 200


def test_wrong_passwords_are_challenged_then_blocked_and_the_real_phone_keeps_working(
    node: KamailioProcess, redis_url: str
) -> None:
    with SipPeer(node) as guesser:
        for attempt in range(1, 5):
            offered = challenges(guesser.exchange(request(guesser, "REGISTER", "alice"), 2))
            auth = answer(
                offered[0], "REGISTER", f"sip:{node.address}", f"guess{attempt}", "SHA-256"
            )
            code = final(guesser.exchange(request(guesser, "REGISTER", "alice", auth), 2))
            assert code == (401 if attempt < 3 else 403), attempt
    # the same user from another address, with the right password: blocked too (per user)
    with SipPeer(node) as phone:
        offered = challenges(phone.exchange(request(phone, "REGISTER", "alice"), 2))
        auth = answer(offered[0], "REGISTER", f"sip:{node.address}", PASSWORD, "SHA-256")
        assert final(phone.exchange(request(phone, "REGISTER", "alice", auth), 2)) == 403
    # a trusted address (this host, 127.0.0.1: an SBC) is not asked
    with redis.Redis.from_url(redis_url) as client:
        assert client.xlen(TenantKeys(TENANT).events) >= 1  # the config import, nothing else


def test_an_invite_from_an_unknown_address_must_authenticate(
    node: KamailioProcess, redis_url: str
) -> None:
    before = len(redis.Redis.from_url(redis_url).xrange(TenantKeys(TENANT).events))
    with SipPeer(node) as peer:
        first = peer.exchange(request(peer, "INVITE", "alice", call_id="inv-1"), wait_final=2)
        assert final(first) == 407
        assert len(redis.Redis.from_url(redis_url).xrange(TenantKeys(TENANT).events)) == before
        offered = challenges(first)
        auth = answer(offered[1], "INVITE", f"sip:600@{node.address}", PASSWORD, "MD5")
        replies = peer.exchange(request(peer, "INVITE", "alice", auth, "inv-2"), wait_final=5)
        assert final(replies) == 480  # routed: the group's no-answer reply (alice has no phone)


def test_calling_as_someone_else_is_refused(node: KamailioProcess) -> None:
    with SipPeer(node) as peer:
        offered = challenges(peer.exchange(request(peer, "INVITE", "mallory", call_id="m1"), 2))
        auth = answer(offered[0], "INVITE", f"sip:600@{node.address}", PASSWORD, "SHA-256")
        # alice's password, but the From says mallory
        assert final(peer.exchange(request(peer, "INVITE", "mallory", auth, "m2"), 2)) == 403


def test_svcrack_is_blocked_before_it_finds_the_password(
    start_kamailio: Callable[..., KamailioProcess], redis_url: str, tmp_path: Path
) -> None:
    """SIPVicious' password cracker against alice, from an untrusted address, with a
    dictionary that holds the password after 30 guesses: the user is blocked after 3 and the
    password never works. The scanner filter is off here (SCANNER_UA ""), else svcrack's
    User-Agent alone would have its requests dropped."""
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
        store.credential_put("alice", credential_record("alice", TENANT, PASSWORD))
    node = start_kamailio(
        tenant=TENANT,
        redis_url=redis_url,
        extra_defines={**LIMITS, "SCANNER_UA": '""'},
        # svcrack sends from 127.0.0.1 whatever it binds to, and answers the first challenge
        # only, which it must know: MD5
        env={"DISPATCHER_TRUSTED": "", "DISPATCHER_AUTH_ALGORITHMS": "MD5,SHA-256"},
    )
    words = tmp_path / "words.txt"
    words.write_text("".join(f"guess{n}\n" for n in range(30)) + PASSWORD + "\n")
    host, port = node.address.split(":")
    source = "127.77.0.9"
    result = subprocess.run(
        [
            "svcrack",
            "-u",
            "alice",
            "-d",
            str(words),
            "-p",
            port,
            "-b",
            source,
            "-x",
            source,
            "--maximumtime",
            "5",
            host,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert PASSWORD not in result.stdout + result.stderr, result.stdout
    blocked = [
        line for line in node.log_text().splitlines() if "failed authentications block" in line
    ]
    assert blocked and "alice" in blocked[0], result.stdout + result.stderr


def from_this_host(node: KamailioProcess, message: bytes) -> list[int | None]:
    """Send `message` from 127.0.0.1 (a trusted address: no challenge); the reply codes up
    to the final one (3 s at most)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        via = f"127.0.0.1:{sock.getsockname()[1]}".encode()
        sock.sendto(message.replace(b"VIA-ADDRESS", via), (node.listen_addr, node.sip_port))
        codes: list[int | None] = []
        with contextlib.suppress(TimeoutError):
            while not codes or (codes[-1] or 0) < 200:
                codes.append(status_of(sock.recv(65535)))
    return codes


def test_no_open_relay_a_caller_cannot_send_kamailio_to_an_outside_uri(
    node: KamailioProcess,
) -> None:
    """A trusted caller that names an outside URI - in the Request-URI or a preloaded Route -
    gets 404 and nothing is sent there: only what an admin configured (forward targets) and
    registered phones are ever reached."""
    with SipPeer(node) as peer:
        victim = FakePhone(peer.host)
        try:
            for extra in ("", f"Route: <sip:{victim.contact};lr>\r\n"):
                tag = uuid.uuid4().hex[:8]
                message = (
                    f"INVITE sip:someone@{victim.contact} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP VIA-ADDRESS;branch=z9hG4bK{tag}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:alice@{node.address}>;tag={tag}\r\n"
                    f"To: <sip:someone@{victim.contact}>\r\n"
                    f"Call-ID: relay-{tag}\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
                ).encode()
                assert from_this_host(node, message)[-1:] == [404]
            assert victim.invites == []
        finally:
            victim.close()
