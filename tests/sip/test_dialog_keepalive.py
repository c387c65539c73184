"""In-dialog keepalives end a group call whose agent's phone is gone, and only that call.

Kamailio + KEMI router + real Redis. The router marks every group call's dialog with the
properties ka-src/ka-dst, so once answered the dialog module sends OPTIONS inside the dialog
to both ends every DLG_KA_INTERVAL seconds. An end that does not answer one within FR_TIMER
(408) counts as failed; after DLG_KA_FAILED_LIMIT failures in a row the module sets the
dialog's remaining lifetime to 10 s (fixed in 5.6), and then ends it like a dialog timeout:
BYEs to both ends (send_bye); the first of them (tm:local-request) releases the agent, and
dialog:end, when 5.6 does not skip it, changes nothing more.

Kamailio 5.6 refuses ka_interval below 30 s, so one keepalive round takes 30 s and the test
about 45 s: both calls run at once, the one whose phone goes silent and the control whose
ends keep answering. Both ends are small Python UAs (the message helpers of the CANCEL race
in test_group_strategies): SIPp answers no OPTIONS inside a dialog it did not expect.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from state_support import check_invariants
from test_group_strategies import _SDP, _header, _sip, _sip_parts, wait_for
from test_kamailio import register

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.sipprocs import KamailioProcess
from dispatcher.state import StateStore, TenantKeys

pytestmark = [pytest.mark.sip, pytest.mark.redis]

TENANT = "keepalive"
TENANT_YAML = """
id: keepalive
name: Keepalive tests
agents:
  - {id: k1, name: K1, targets: {aor: k1}, state: available, wrapup: 60}
  - {id: k2, name: K2, targets: {aor: k2}, state: available}
groups:
  - {id: lost, extension: "890", name: Lost phone, strategy: sequential, sticky: false,
     ring_timeout: 5, members: [{agent: k1}]}
  - {id: kept, extension: "891", name: Kept phone, strategy: sequential, sticky: false,
     ring_timeout: 5, members: [{agent: k2}]}
"""
KA_INTERVAL_S = 30  # the lowest Kamailio 5.6 accepts
# The dialog module's fixed lifetime of a dialog whose keepalives failed (dlg_ka_cb_all).
KA_FAILED_LIFETIME_S = 10
DEFINES = {
    "DLG_KA_INTERVAL": KA_INTERVAL_S,
    "DLG_KA_FAILED_LIMIT": 1,
    # a keepalive nobody answers fails (408) after 1 s, not 32
    "FR_TIMER": 1000,
}
ZERO = {"live": 0, "resv": 0, "reservations": 0, "live_calls": 0}


class Endpoint:
    """One end of a call on a UDP port of its own: a caller (`call`, `hang_up`) or an
    agent's phone, which answers every INVITE 180 then 200 at once. Inside a dialog it
    answers OPTIONS and BYE 200 - until `silent` is set: then it answers no request at all,
    like a phone that lost its network. `got` counts the requests it received, answered or
    not, by method."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.silent = False
        self.got: Counter[str] = Counter()
        self._replies: queue.Queue[tuple[str, list[tuple[str, str]]]] = queue.Queue()
        self._dialog: list[tuple[str, str]] = []  # a caller's dialog headers, for its BYE
        self._remote = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _serve(self) -> None:
        to_tag = uuid.uuid4().hex[:10]
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            start, headers, _ = _sip_parts(data.decode())
            if start.startswith("SIP/2.0 "):
                self._replies.put((start, headers))
                continue
            method = start.split(" ", 1)[0]
            self.got[method] += 1
            if self.silent or method == "ACK":
                continue
            keep = ("via", "record-route", "from", "call-id", "cseq")
            out = [(n, v) for n, v in headers if n.lower() in keep]
            to = _header(headers, "To")
            out.insert(3, ("To", to if ";tag=" in to else f"{to};tag={to_tag}"))
            out.append(("Contact", f"<sip:127.0.0.1:{self.port}>"))
            if method == "INVITE":
                self.sock.sendto(_sip("SIP/2.0 180 Ringing", out), peer)
                sdp = [*out, ("Content-Type", "application/sdp")]
                self.sock.sendto(_sip("SIP/2.0 200 OK", sdp, _SDP), peer)
            elif method in ("OPTIONS", "BYE"):
                self.sock.sendto(_sip("SIP/2.0 200 OK", out), peer)

    def _request(
        self, kamailio: KamailioProcess, start: str, headers: list[tuple[str, str]]
    ) -> None:
        via = ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex}")
        message = _sip(start, [via, ("Max-Forwards", "70"), *headers])
        self.sock.sendto(message, (kamailio.listen_addr, kamailio.sip_port))

    def _final(self, method: str, timeout: float = 5.0) -> tuple[str, list[tuple[str, str]]]:
        deadline = time.monotonic() + timeout
        while True:
            start, headers = self._replies.get(timeout=max(deadline - time.monotonic(), 0.01))
            if int(start.split(" ")[1]) >= 200 and _header(headers, "CSeq").endswith(method):
                return start, headers

    def call(self, kamailio: KamailioProcess, number: str) -> None:
        """Call `number` and wait until it is answered (200, then ACK)."""
        ruri = f"sip:{number}@{kamailio.address}"
        base = [
            ("From", f"<sip:caller@127.0.0.1:{self.port}>;tag={uuid.uuid4().hex[:10]}"),
            ("To", f"<{ruri}>"),
            ("Call-ID", uuid.uuid4().hex),
        ]
        self._request(
            kamailio,
            f"INVITE {ruri} SIP/2.0",
            [
                *base,
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:caller@127.0.0.1:{self.port}>"),
                ("Content-Type", "application/sdp"),
            ],
        )
        start, headers = self._final("INVITE")
        assert start.startswith("SIP/2.0 200 "), start
        self._remote = _header(headers, "Contact").strip("<>")
        self._dialog = [
            ("Route", _header(headers, "Record-Route")),
            base[0],
            ("To", _header(headers, "To")),
            base[2],
        ]
        self._request(kamailio, f"ACK {self._remote} SIP/2.0", [*self._dialog, ("CSeq", "1 ACK")])

    def hang_up(self, kamailio: KamailioProcess) -> None:
        """BYE the answered call; wait for its 200."""
        self._request(kamailio, f"BYE {self._remote} SIP/2.0", [*self._dialog, ("CSeq", "2 BYE")])
        start, _ = self._final("BYE")
        assert start.startswith("SIP/2.0 200 "), start


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """The tenant imported into the (flushed) Redis; a plain client on it."""
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
    with redis.Redis.from_url(redis_url) as plain:
        yield plain


@pytest.fixture
def endpoints() -> Iterator[Callable[[], Endpoint]]:
    """Make Endpoints; all are closed after the test."""
    made: list[Endpoint] = []

    def make() -> Endpoint:
        made.append(Endpoint())
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.close()


def agent_column(client: redis.Redis, column: str, agent: str) -> int:
    return int(client.hget(TenantKeys(TENANT).agent[column], agent) or 0)


def events(client: redis.Redis, kind: str, **match: str) -> list[dict[str, str]]:
    """The tenant's events of `kind` whose fields equal `match`, oldest first."""
    out = []
    for _, fields in client.xrange(TenantKeys(TENANT).events):
        event = {k.decode(): v.decode() for k, v in fields.items()}
        if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
            out.append(event)
    return out


def settled(client: redis.Redis, timeout: float = 3.0) -> dict[str, int]:
    """The state totals once the last release has landed."""
    deadline = time.monotonic() + timeout
    while True:
        totals = check_invariants(client, TENANT)
        if all(totals[k] == 0 for k in ZERO) or time.monotonic() > deadline:
            return {k: totals[k] for k in ZERO}
        time.sleep(0.05)


# -- the test --------------------------------------------------------------------------------


def test_keepalives_end_the_call_of_a_silent_phone_and_keep_an_answering_one(
    start_kamailio: Callable[..., KamailioProcess],
    redis_url: str,
    client: redis.Redis,
    endpoints: Callable[[], Endpoint],
    tmp_path: Path,
) -> None:
    kamailio = start_kamailio(tenant=TENANT, redis_url=redis_url, extra_defines=DEFINES)
    lost_phone, kept_phone, lost_caller, kept_caller = (endpoints() for _ in range(4))
    register(tmp_path, kamailio, "k1", lost_phone.port)
    register(tmp_path, kamailio, "k2", kept_phone.port)

    lost_caller.call(kamailio, "890")
    kept_caller.call(kamailio, "891")
    answered_at = time.monotonic()
    assert agent_column(client, "live", "k1") == agent_column(client, "live", "k2") == 1
    # k1's phone is gone right after the answer: it answers no keepalive, nor the BYE
    lost_phone.silent = True

    wait_for(
        lambda: agent_column(client, "live", "k1") == 0,
        timeout=2 * KA_INTERVAL_S,
        what="the keepalive to end k1's call",
    )
    ended_after = time.monotonic() - answered_at
    # The first keepalive (30 s) went unanswered (408 at 31 s), the dialog ended 10 s later:
    # about 41 s. Both module timers count whole seconds, so each may fire up to 1 s early;
    # the upper bound leaves room for a loaded machine, yet with the cfg's default
    # DLG_KA_FAILED_LIMIT of 2 a second keepalive (60 s) would have had to fail too (~71 s).
    assert KA_INTERVAL_S + KA_FAILED_LIFETIME_S - 2 < ended_after < 2 * KA_INTERVAL_S
    assert lost_phone.got["OPTIONS"] >= 1
    # the module ended both legs: a BYE to the caller, who answered it, and one to the phone
    wait_for(lambda: lost_caller.got["BYE"] == 1 and lost_phone.got["BYE"] >= 1, what="BYEs")
    assert lost_caller.got["OPTIONS"] >= 1  # the caller's end was kept alive too
    (released,) = events(client, "released", agent="k1")
    assert released["reason"] == "hangup"
    assert len(events(client, "answered", agent="k1")) == 1
    # wrap-up started at the release (k1 has 60 s of it)
    assert agent_column(client, "wrapuntil", "k1") == agent_column(client, "idle", "k1") + 60_000
    assert abs(agent_column(client, "idle", "k1") - int(released["ts"])) < 1000

    # the control: both ends answered their keepalives and the call is still up
    assert kept_phone.got["OPTIONS"] >= 1 and kept_caller.got["OPTIONS"] >= 1
    assert agent_column(client, "live", "k2") == 1
    assert kept_phone.got["BYE"] == kept_caller.got["BYE"] == 0
    assert not events(client, "released", agent="k2")
    kept_caller.hang_up(kamailio)
    assert kept_phone.got["BYE"] == 1
    wait_for(lambda: agent_column(client, "live", "k2") == 0, what="k2's release")
    assert [e["reason"] for e in events(client, "released", agent="k2")] == ["hangup"]

    assert settled(client) == ZERO
    assert len(events(client, "released", agent="k1")) == 1  # nothing released it again
    assert [e["outcome"] for e in events(client, "ended")] == ["answered", "answered"]
    wait_for(
        lambda: "dialog:active_dialogs = 0" in kamailio.rpc("stats.get_statistics", "dialog:"),
        what="no dialog left",
    )
    assert not kamailio.python_errors(), kamailio.python_errors()
    print(
        f"keepalive: k1's call ended {ended_after:.1f} s after the answer; requests got: "
        f"lost phone {dict(lost_phone.got)}, kept phone {dict(kept_phone.got)}"
    )
