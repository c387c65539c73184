"""Flood and scanner protection of the running Kamailio (issue 11 §4; ksr_route_reqinit,
dispatcher/sip/edge.py): pike's rate limit per source with the htable ban, scanner
User-Agents and Debian's SIPVicious (svmap, svwar), the size limit, and the failed-auth limits
on Kamailio's own htable.

All traffic stays on loopback: Kamailio on 127.0.0.1, each sender on a 127.x.y.z of its own
(rawsip.SipPeer), so pike tells them apart. The default PIKE_TRUSTED is 127.0.0.0/8 - this
host, as every other test is - so the flood tests narrow it to 127.0.0.1 (the start-up probe)
and lower the rate and ban time.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rawsip import SipPeer, call_id_of, invite, register_request, status_of
from test_group_strategies import handled, phone
from test_torture import redis_state

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.sipprocs import KamailioProcess, SippProcess
from dispatcher.state import StateStore

pytestmark = pytest.mark.sip

StartKamailio = Callable[..., KamailioProcess]
StartPhone = Callable[..., SippProcess]

DENSITY = 10
IPBAN_S = 4
FLOOD_DEFINES = {
    "PIKE_TRUSTED": '"127.0.0.1/32"',
    "PIKE_DENSITY": DENSITY,
    "PIKE_SAMPLING_S": 1,
    "PIKE_REMOVE_LATENCY_S": 2,
    "IPBAN_S": IPBAN_S,
}
FLOOD = 300
SCANNER_OFF = {"SCANNER_UA": '""'}

TENANT = "edge"
EXTENSION = "105"  # inside svwar's -e100-110
TENANT_YAML = f"""
id: {TENANT}
name: Edge protection
agents:
  - {{id: e1, name: E1, targets: {{aor: e1}}, state: available}}
groups:
  - id: scanned
    extension: "{EXTENSION}"
    name: In svwar's range
    strategy: ring_all
    sticky: false
    ring_timeout: 5
    members: [{{agent: e1}}]
    no_answer: {{kind: reply, code: 480}}
"""


def options(peer: SipPeer, call_id: str, headers: str = "", size: int | None = None) -> bytes:
    """An OPTIONS to Kamailio itself (its keepalive answers 200), answered at the peer's port
    (rport); `size` pads it with an X-Pad header to exactly that many octets."""
    tag = uuid.uuid4().hex[:12]
    head = (
        f"OPTIONS sip:{peer.kamailio.address} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {peer.host}:{peer.port};branch=z9hG4bK{tag};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{peer.host}>;tag={tag}\r\n"
        f"To: <sip:{peer.kamailio.address}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{headers}"
    )
    tail = "Content-Length: 0\r\n\r\n"
    if size is not None:
        pad = size - len(head) - len(tail) - len("X-Pad: \r\n")
        head += "X-Pad: " + "p" * pad + "\r\n"
    message = (head + tail).encode()
    assert size is None or len(message) == size
    return message


def read_replies(peer: SipPeer, wait: float, want: int | None = None) -> dict[bytes, int]:
    """Call-ID -> status of the replies arriving at the peer's port within `wait` s (stops
    early once `want` distinct Call-IDs are in)."""
    got: dict[bytes, int] = {}
    peer.sock.settimeout(0.02)
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline and (want is None or len(got) < want):
            try:
                data = peer.sock.recv(65535)
            except TimeoutError:
                continue
            call_id, status = call_id_of(data), status_of(data)
            if call_id is not None and status is not None:
                got[call_id] = status
    finally:
        peer.sock.setblocking(False)
    return got


def answered(peer: SipPeer, call_id: str, wait: float = 1.0) -> int | None:
    """Send one OPTIONS; its reply status, or None if none came within `wait` s."""
    peer.send(options(peer, call_id))
    return read_replies(peer, wait, want=1).get(call_id.encode())


def flood(peer: SipPeer, numbers: range, prefix: str) -> dict[bytes, int]:
    """OPTIONS "<prefix>-<n>" for each n, as fast as they go, read in bursts of 25 (a
    loopback socket's buffer holds about a hundred datagrams); Call-ID -> status of every
    reply."""
    got: dict[bytes, int] = {}
    for start in numbers[::25]:
        for n in range(start, min(start + 25, numbers.stop)):
            peer.send(options(peer, f"{prefix}-{n}"))
        got |= read_replies(peer, 0.01)
    return got | read_replies(peer, 0.5, want=len(numbers) - len(got))


def free_loopback_endpoint() -> tuple[str, int]:
    """A 127.x.y.z address (x >= 64, off 127.0.0.1) and a UDP port free on it right now."""
    host = ".".join(("127", *(str(random.randint(low, 254)) for low in (64, 0, 1))))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return host, sock.getsockname()[1]


def sipvicious(tool: str, *args: str) -> str:
    """Run svmap / svwar from a loopback address of its own to the end; its output."""
    host, port = free_loopback_endpoint()
    binary = shutil.which(tool) or f"/usr/bin/{tool}"
    done = subprocess.run(
        [binary, "-b", host, "-P", str(port), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


def streams(client: redis.Redis) -> dict[bytes, tuple[int, bytes | None]]:
    """Every stream in Redis (any tenant's events): its length and newest id."""
    heads = {}
    for key in client.scan_iter(_type="stream"):
        newest = client.xrevrange(key, count=1)
        heads[key] = (client.xlen(key), newest[0][0] if newest else None)
    return heads


def quiet_state(client: redis.Redis) -> dict[bytes, Any]:
    """redis_state once it stays the same for 0.3 s: what the phone's registration writes
    may land after its 200."""
    state = redis_state(client)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.3)
        state, before = redis_state(client), state
        if state == before:
            break
    return state


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """The tenant imported into the (flushed) Redis; a plain client on it."""
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
    with redis.Redis.from_url(redis_url) as plain:
        yield plain


# -- flood: pike per source, the ipban htable -------------------------------------------------


def test_a_flooding_source_is_banned_silently_while_others_are_answered(
    start_kamailio: StartKamailio,
) -> None:
    kamailio = start_kamailio(extra_defines=FLOOD_DEFINES)
    with SipPeer(kamailio) as flooder, SipPeer(kamailio) as other:
        started = time.monotonic()
        got = flood(flooder, range(FLOOD // 2), "flood")
        # another source is answered all the while, and so is the trusted 127.0.0.1
        assert answered(other, "other-during") == 200
        assert kamailio.answers_options()
        got |= flood(flooder, range(FLOOD // 2, FLOOD), "flood")
        flood_end = time.monotonic()

        replied = sorted(int(call_id.rsplit(b"-", 1)[1]) for call_id in got)
        # pike flags a source after 1 to 3 x DENSITY requests in a sampling unit (it learns
        # the address byte by byte); every request after that is dropped, none answered
        assert 0 < len(replied) <= 3 * DENSITY + 10, replied
        assert set(got.values()) == {200}
        assert max(replied) < FLOOD - 100, "the flood was not cut off"
        assert f"pike: {flooder.host} floods; banned for {IPBAN_S}s" in kamailio.log_text()
        assert answered(other, "other-after") == 200

        # still banned, even for a single request
        assert answered(flooder, "during-ban", wait=0.5) is None
        # The ban, set after `started`, lasts IPBAN_S to IPBAN_S + 1 s (htable counts whole
        # seconds); then the source is answered again - pike has forgotten the flood by then,
        # two sampling units without a request from it.
        time.sleep(max(0.0, started + IPBAN_S - 0.5 - time.monotonic()))
        polls = 0
        while answered(flooder, f"after-ban-{polls}", wait=0.25) is None:
            polls += 1
            assert time.monotonic() < flood_end + IPBAN_S + 2, "still banned"
        assert time.monotonic() - started >= IPBAN_S
    assert not kamailio.python_errors()


def test_the_default_trusts_loopback_so_tests_are_never_limited(
    start_kamailio: StartKamailio,
) -> None:
    """PIKE_TRUSTED defaults to 127.0.0.0/8: a source there may send any rate (the SIPp
    benchmarks send 1500 calls/s from 127.0.0.1), well past the default PIKE_DENSITY."""
    kamailio = start_kamailio()
    with SipPeer(kamailio) as peer:
        got = flood(peer, range(FLOOD), "trusted")

    assert len(got) == FLOOD
    assert set(got.values()) == {200}
    assert "floods; banned" not in kamailio.log_text()


# -- scanners ----------------------------------------------------------------------------


@pytest.mark.redis
def test_a_scanner_gets_no_reply_and_leaves_nothing_in_redis(
    start_kamailio: StartKamailio,
    start_phone: StartPhone,
    tmp_path: Path,
    redis_url: str,
    client: redis.Redis,
) -> None:
    # one worker: a reply would come before that to exchange()'s barrier OPTIONS
    kamailio = start_kamailio(tenant=TENANT, redis_url=redis_url, children=1)
    e1 = phone(tmp_path, start_phone, kamailio, "e1", "uas_busy.xml")
    with SipPeer(kamailio) as peer:
        before = quiet_state(client)
        heads = streams(client)
        scanner_invite = invite(
            peer, EXTENSION, b"scan-1", extra_headers=b"User-Agent: friendly-scanner\r\n"
        )

        assert peer.exchange(scanner_invite, wait_final=1.0) == []
        assert peer.exchange(options(peer, "scan-2", "User-Agent: sipvicious 0.3.3\r\n")) == []
        assert peer.exchange(options(peer, "scan-3", "User-Agent: VaxSIPUserAgent\r\n")) == []

        assert redis_state(client) == before
        assert streams(client) == heads
        assert handled(e1) == (0, 0)
        # The same requests without the scanner's User-Agent are answered: the INVITE by the
        # routes after REQINIT (the digest auth's 407, or the group's 480 where it lets the
        # caller through), the OPTIONS by the keepalive.
        call = invite(peer, EXTENSION, b"not-a-scan")
        assert peer.exchange(call, wait_final=5.0)
        assert peer.exchange(options(peer, "phone", "User-Agent: Linphone/5.2\r\n"))
    assert not kamailio.python_errors()


@pytest.mark.parametrize(("defines", "found"), [({}, False), (SCANNER_OFF, True)])
def test_svmap_finds_nothing(start_kamailio: StartKamailio, defines: dict, found: bool) -> None:
    """svmap identifies itself as friendly-scanner. With SCANNER_UA off, the same scan finds
    this Kamailio: the check, not the harness, hides it."""
    kamailio = start_kamailio(extra_defines=defines)

    output = sipvicious("svmap", kamailio.listen_addr, "-p", str(kamailio.sip_port))

    assert (kamailio.address in output) is found, output
    assert ("found nothing" in output) is not found, output
    assert not kamailio.python_errors()


@pytest.mark.redis
@pytest.mark.parametrize(("defines", "rings"), [({}, False), (SCANNER_OFF, True)])
def test_svwar_invite_scan_rings_no_phone(
    start_kamailio: StartKamailio,
    start_phone: StartPhone,
    tmp_path: Path,
    redis_url: str,
    client: redis.Redis,
    defines: dict,
    rings: bool,
) -> None:
    """svwar -m INVITE over 100-110 (the group is 105): unanswered, it gives up after its
    first probe. With SCANNER_UA off, the same scan rings e1 and finds 105."""
    kamailio = start_kamailio(tenant=TENANT, redis_url=redis_url, extra_defines=defines)
    e1 = phone(tmp_path, start_phone, kamailio, "e1", "uas_busy.xml")
    quiet_state(client)
    heads = streams(client)

    output = sipvicious(
        "svwar", "-e100-110", "-m", "INVITE", kamailio.listen_addr, "-p", str(kamailio.sip_port)
    )

    assert handled(e1) == ((1, 0) if rings else (0, 0)), output
    assert (f"| {EXTENSION} " in output) is rings, output
    if rings:
        assert streams(client) != heads
    else:
        assert "socket error: timed out" in output, output  # its first probe, unanswered
        assert streams(client) == heads
    assert not kamailio.python_errors()


# -- size ---------------------------------------------------------------------------------


def test_a_request_over_max_msg_size_gets_513(start_kamailio: StartKamailio) -> None:
    """MAX_MSG_SIZE (8192) octets pass; one more gets 513, up to the largest UDP datagram.
    Larger ones UDP cannot carry at all (EMSGSIZE at the sender, test_torture.py)."""
    kamailio = start_kamailio(children=1)  # replies in order (rawsip.SipPeer.exchange)
    with SipPeer(kamailio) as peer:
        for size, status in ((8192, 200), (8193, 513), (65_507, 513)):
            call_id = f"size-{size}"
            replies = peer.exchange(options(peer, call_id, size=size))
            assert [status_of(r) for r in replies] == [status], size
    assert b"Message Too Large" in replies[0]
    assert not kamailio.python_errors()


# -- failed authentications on the real htable ------------------------------------------

AUTH_DEFINES = {
    "AUTH_FAIL_LIMIT_SRC": 5,
    "AUTH_FAIL_LIMIT_USER": 3,
    "AUTH_FAIL_WINDOW_S": 60,
    "AUTH_BAN_S": 3,
}
KEMI_EDGE_AUTH = Path(__file__).parent / "kemi_edge_auth.py"


def register_status(peer: SipPeer, user: str, wrong: bool = False) -> int | None:
    request = register_request(peer, user, f"{peer.host}:{peer.port}")
    if wrong:  # kemi_edge_auth.py takes it for wrong credentials
        request = request.replace(b"Content-Length:", b"X-Test-Auth: wrong\r\nContent-Length:")
    # two workers: the reply may come after that to exchange()'s barrier OPTIONS
    replies = peer.exchange(request, wait_final=2.0)
    return status_of(replies[-1]) if replies else None


def test_failed_auth_limits_on_kamailios_htable(start_kamailio: StartKamailio) -> None:
    """edge.auth_failed / auth_blocked as the digest auth will call them (kemi_edge_auth.py),
    in two workers sharing the htable."""
    kamailio = start_kamailio(kemi_script=KEMI_EDGE_AUTH, extra_defines=AUTH_DEFINES)
    with SipPeer(kamailio) as office, SipPeer(kamailio) as elsewhere:
        assert [register_status(office, "alice", wrong=True) for _ in range(3)] == [401] * 3
        banned_at = time.monotonic()
        assert register_status(office, "alice") == 403  # right credentials, blocked user
        assert register_status(elsewhere, "alice") == 403  # from any source
        assert register_status(office, "bob") == 200  # the source: 3 failures of 5

        assert [register_status(office, "bob", wrong=True) for _ in range(2)] == [401] * 2
        assert register_status(office, "carol") == 403  # the source is blocked now
        assert register_status(elsewhere, "carol") == 200

        time.sleep(max(0.0, banned_at + AUTH_DEFINES["AUTH_BAN_S"] + 1.5 - time.monotonic()))
        assert register_status(elsewhere, "alice") == 200
    assert not kamailio.python_errors()
