"""Registrations every node shares and a restart keeps: each node holds them all, replicated
over the nodes' DMQ bus, and writes them back to the dispatcher's Redis server (usrloc
db_mode 2 through db_redis, in the database after the dispatcher's), which a starting node
loads; real Kamailio nodes, phones and callers are SIPp.

Each phone registers at one node only; the other node must ring it, see its unregister,
and a restarted node must ring it without a new REGISTER - alone, from Redis' copy, and
beside a running peer, from the peer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from test_group_strategies import ZERO, caller, dial, handled, settled, wait_for
from test_kamailio import register

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.procs import ProcessError
from dispatcher.run.sipprocs import KamailioProcess, SippProcess, registrations_url_for, run_sipp
from dispatcher.state import StateStore, TenantKeys
from dispatcher.state.locations import write_row

pytestmark = [pytest.mark.sip, pytest.mark.redis]

SCENARIOS = Path(__file__).parent / "scenarios"
TENANT = "strategies"  # test_group_strategies' helpers read this tenant
KEYS = TenantKeys(TENANT)
TENANT_YAML = """
id: strategies
name: Shared registrations
agents:
  - {id: r1, name: R1, targets: {aor: r1}, state: available}
groups:
  - {id: ring, extension: "870", name: Ring R1, strategy: sequential, sticky: false,
     ring_timeout: 2, members: [{agent: r1}], no_answer: {kind: reply, code: 480}}
"""

StartPhone = Callable[..., SippProcess]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with StateStore(redis_url, TENANT) as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
    with redis.Redis.from_url(redis_url) as plain:
        yield plain


@pytest.fixture
def registrations(redis_url: str) -> Iterator[redis.Redis]:
    """usrloc's database: the dispatcher's Redis server, the next database index."""
    with redis.Redis.from_url(registrations_url_for(redis_url)) as plain:
        yield plain


@pytest.fixture
def node(
    start_kamailio: Callable[..., KamailioProcess], redis_url: str, client: redis.Redis
) -> Iterator[Callable[..., KamailioProcess]]:
    """Start a Kamailio node on the shared Redis; its Python errors are checked at teardown."""
    nodes: list[KamailioProcess] = []

    def start(**options: Any) -> KamailioProcess:
        # write-backs every second, not every 10 s: the tests read Redis' copy
        options.setdefault("extra_defines", {"UL_FLUSH_S": 1})
        kamailio = start_kamailio(tenant=TENANT, redis_url=redis_url, **options)
        nodes.append(kamailio)
        return kamailio

    yield start
    for kamailio in nodes:
        assert not kamailio.python_errors(), kamailio.python_errors()


def unregister(workdir: Path, kamailio: KamailioProcess, user: str, contact_port: int) -> None:
    """REGISTER sip:user@kamailio with its Contact at 127.0.0.1:contact_port and Expires: 0."""
    result = run_sipp(
        workdir,
        SCENARIOS / "register.xml",
        kamailio.address,
        calls=1,
        service=user,
        keys={"contact_port": contact_port, "expires": 0},
    )
    assert result.ok, result.errors or result.output


def contacts(registrations: redis.Redis, user: str) -> list[str]:
    """The contacts usrloc holds for `user`, under whichever domain the router saved it."""
    return [
        registrations.hget(entry, "contact").decode()
        for aor in registrations.scan_iter(f"location:usrdom::{user}:*")
        for entry in registrations.smembers(aor)
    ]


def test_a_phone_registered_at_one_node_is_rung_from_the_other(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    registrations: redis.Redis,
) -> None:
    first, second = node(), node()
    uas = start_phone("uas_answer.xml")
    register(tmp_path, first, "r1", uas.local_port)

    result = dial(tmp_path, second, "870")

    assert result.ok, result.errors or result.output
    assert handled(uas) == (1, 0)
    assert settled(client) == ZERO
    # the contact is written back to usrloc's database, keyed as kamailio.cfg's db_redis keys
    # say (by both nodes, under the same keys); none of it in the dispatcher's
    wait_for(
        lambda: contacts(registrations, "r1") == [f"sip:r1@127.0.0.1:{uas.local_port}"],
        what="the contact in Redis",
    )
    assert not list(client.scan_iter("location:*"))


def test_a_restarted_node_rings_a_phone_that_did_not_register_again(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    registrations: redis.Redis,
) -> None:
    """Alone: it loads the copy in Redis. Killed, not stopped: nothing flushed at exit."""
    kamailio = node()
    uas = start_phone("uas_answer.xml")
    register(tmp_path, kamailio, "r1", uas.local_port)
    wait_for(lambda: contacts(registrations, "r1"), what="the contact in Redis")
    kamailio.kill()
    kamailio.start()  # the same port, workdir and Redis

    result = dial(tmp_path, kamailio, "870")

    assert result.ok, result.errors or result.output
    assert handled(uas) == (1, 0)
    assert settled(client) == ZERO


def test_a_restarted_node_loads_every_row_and_rings_a_phone_once(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    registrations: redis.Redis,
) -> None:
    """2000 rows in Redis, one of them an older row of r1's contact (its phone registered
    again with a new Call-ID after a node had missed the first row): db_redis 5.6 loads a
    multiple of 1000 rows 1000 short, and both rows of the contact fork the call twice to
    the phone. The node drops the older row and pads the table before it loads."""
    kamailio = node()
    uas = start_phone("uas_answer.xml")
    register(tmp_path, kamailio, "r1", uas.local_port)
    wait_for(lambda: contacts(registrations, "r1"), what="the contact in Redis")
    kamailio.kill()
    (aor,) = registrations.scan_iter("location:usrdom::r1:*")
    (entry,) = registrations.smembers(aor)
    row = {k.decode(): v.decode() for k, v in registrations.hgetall(entry).items()}
    stale = {**row, "last_modified": int(row["last_modified"]) - 60}
    write_row(registrations, "older-r1", **_binding(stale))
    for i in range(1998):  # with r1's two rows: 2000
        write_row(
            registrations,
            f"filler-{i}",
            **_binding({**row, "username": f"u{i}", "contact": f"sip:u{i}@127.0.0.1:9"}),
        )
    assert sum(1 for _ in registrations.scan_iter("location:entry::*")) == 2000
    kamailio.start()

    assert kamailio.rpc_lookup("r1", row["domain"]) == [f"sip:r1@127.0.0.1:{uas.local_port}"]
    wait_for(lambda: _contacts_held(kamailio) == 1999, what="every row but the older loaded")
    assert not registrations.exists("location:entry::older-r1")
    result = dial(tmp_path, kamailio, "870")
    assert result.ok, result.errors or result.output
    assert handled(uas) == (1, 0)
    assert settled(client) == ZERO


def _binding(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "username": row["username"],
        "domain": row["domain"],
        "contact": row["contact"],
        "expires": int(row["expires"]),
        "last_modified": int(row["last_modified"]),
    }


def _contacts_held(kamailio: KamailioProcess) -> int:
    """usrloc's contacts (the pad row, loaded expired, goes at its first timer run)."""
    return kamailio.statistic("usrloc:location_contacts")


def test_a_restarted_node_learns_the_phones_from_its_peer(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    registrations: redis.Redis,
) -> None:
    """Beside a running peer it asks the peer (DMQ sync), even when Redis lost its copy."""
    first, second = node(), node()
    uas = start_phone("uas_answer.xml")
    register(tmp_path, second, "r1", uas.local_port)
    wait_for(lambda: contacts(registrations, "r1"), what="the contact in Redis")
    first.kill()
    registrations.flushdb()  # the copy in Redis is gone: only the peer knows r1 now
    first.start()
    first.wait_for_dmq_peers(second)
    wait_for(lambda: bool(first.rpc_lookup("r1")), what="r1 synced to the restarted node")

    result = dial(tmp_path, first, "870")

    assert result.ok, result.errors or result.output
    assert handled(uas) == (1, 0)
    assert settled(client) == ZERO


def test_a_restarted_node_takes_no_call_before_it_has_the_phones(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    registrations: redis.Redis,
    redis_url: str,
) -> None:
    """Callers retransmit their INVITEs while a node is down: when it is back they all come
    at once, before the peer's phones have reached it over DMQ. It takes none of them until
    it holds every phone Redis records as registered - they come again (RFC 3261 17.1.1.2)
    and are rung - instead of finding nobody to ring and answering 480 (bench/chaos.py's
    kamailio_kill: 116 calls got 480 in the 4 s after a restart)."""
    with StateStore(redis_url, TENANT) as store:  # a line for every call: they come at once
        roomy = TENANT_YAML.replace("state: available}", "state: available, max_calls: 8}")
        import_tenant(store, parse_tenant(roomy, "yaml"))
    first, second = node(), node()
    uas = start_phone("uas_answer.xml")
    register(tmp_path, second, "r1", uas.local_port)
    wait_for(lambda: client.hexists(KEYS.registrations, "r1"), what="r1's registration")
    first.kill()
    calls = caller(tmp_path, first, "870", calls=8, rate=8, talk_ms=100, timeout=30)
    time.sleep(1.5)  # the calls' INVITEs go unanswered meanwhile, retransmitted
    assert second.proc is not None
    os.killpg(second.proc.pid, signal.SIGSTOP)  # a peer slow to send the phones (under load)
    try:
        registrations.flushdb()  # only the peer knows r1: no copy to load at start
        first.dmq_seed = second.dmq_address
        # (start returns once the node takes calls: here only after the peer goes on)
        starting = threading.Thread(target=first.start)
        starting.start()
        wait_for(first.answers_options, what="the node up")
        time.sleep(1.0)  # the INVITEs waiting for it come in now
    finally:
        os.killpg(second.proc.pid, signal.SIGCONT)
    starting.join(15)

    result = calls.wait()

    assert result.ok, result.errors or result.output
    assert "480" not in result.errors
    assert handled(uas) == (8, 0)
    assert settled(client) == ZERO


def test_an_unregister_at_one_node_removes_the_phone_for_the_other(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
    registrations: redis.Redis,
) -> None:
    first, second = node(), node()
    uas = start_phone("uas_answer.xml")
    register(tmp_path, first, "r1", uas.local_port)
    wait_for(lambda: contacts(registrations, "r1"), what="the contact in Redis")
    # (recorded just after the 200 OK went out)
    wait_for(lambda: client.hexists(KEYS.registrations, "r1"), what="r1's registration")
    wait_for(lambda: bool(second.rpc_lookup("r1")), what="r1 replicated to the second node")

    unregister(tmp_path, second, "r1", uas.local_port)

    wait_for(lambda: not first.rpc_lookup("r1"), what="the unregister replicated")
    # the dispatcher's record of it (the dashboard's "not registered") went with it
    wait_for(lambda: not client.hexists(KEYS.registrations, "r1"), what="r1 unrecorded")
    result = dial(tmp_path, first, "870")  # r1 has no phone now: the group's no-answer
    assert (result.stats.successful, result.stats.failed) == (0, 1)
    assert "480 Temporarily Unavailable" in result.errors
    assert handled(uas) == (0, 0)
    assert settled(client) == ZERO
    # gone from Redis' copy at the next write-back, mappings included
    wait_for(lambda: not registrations.keys("location:*"), what="the contact out of Redis")


def test_registrations_need_a_tcp_redis(tmp_path: Path) -> None:
    # db_redis connects with hiredis' redisConnectWithTimeout(host, port) only
    with pytest.raises(ProcessError, match="TCP only"):
        KamailioProcess(tmp_path, redis_url=f"unix://{tmp_path}/redis.sock?db=0")
    node = KamailioProcess(
        tmp_path,
        redis_url=f"unix://{tmp_path}/redis.sock?db=0",
        registrations_url="redis://:pass@127.0.0.1:6390/1",
    )
    assert node.registrations_url == "redis://:pass@127.0.0.1:6390/1"
    assert registrations_url_for("redis://:pass@127.0.0.1:6390/0") == node.registrations_url


def forged_kdmq(source: tuple[str, int], target: tuple[str, int], phone_port: int) -> bytes:
    """A KDMQ of dmq_usrloc (action 1: insert or update a contact) that binds r1 to a phone
    at `phone_port`, as a peer node would send it after a REGISTER."""
    now = int(time.time())
    body = json.dumps(
        {
            "action": 1,
            "aor": f"r1@{TENANT}",
            "ruid": f"forged-{uuid.uuid4().hex[:8]}",
            "c": f"sip:r1@127.0.0.1:{phone_port}",
            "received": "",
            "path": "",
            "callid": uuid.uuid4().hex,
            "user_agent": "forger",
            "instance": "",
            "expires": now + 300,
            "cseq": 1,
            "flags": 0,
            "cflags": 0,
            "q": -1,
            "last_modified": now,
            "methods": 0xFFFFFFFF,
            "reg_id": 0,
            "server_id": 0,
        }
    ).encode()
    host, port = target
    tag = uuid.uuid4().hex[:10]
    head = (
        f"KDMQ sip:usrloc@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch=z9hG4bK{tag}\r\n"
        f"From: <sip:{source[0]}:{source[1]}>;tag={tag}\r\n"
        f"To: <sip:usrloc@{host}:{port}>\r\n"
        f"Call-ID: {tag}\r\nCSeq: 1 KDMQ\r\nMax-Forwards: 1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def send_from(source_host: str, target: tuple[str, int], build: Callable[..., bytes]) -> bytes:
    """Send build(source, target) from `source_host`; the reply, or b"" after 0.5 s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_host, 0))
        sock.settimeout(0.5)
        sock.sendto(build(sock.getsockname(), target), target)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return b""


def test_only_peers_on_the_dmq_port_can_replicate_registrations(
    node: Callable[..., KamailioProcess], start_phone: StartPhone, tmp_path: Path
) -> None:
    """A KDMQ inserts registrations: one from outside DMQ_PEERS, or at the SIP port, is
    dropped unanswered - nobody can bind an agent's calls to a phone of theirs. The same
    message from a peer on the DMQ port binds (so the refusals are not a bad message)."""
    kamailio = node(extra_defines={"UL_FLUSH_S": 1, "DMQ_PEERS": '"127.0.0.1/32"'})
    thief = start_phone("uas_answer.xml")

    def forged(source: tuple[str, int], target: tuple[str, int]) -> bytes:
        return forged_kdmq(source, target, thief.local_port)

    sip_port = (kamailio.listen_addr, kamailio.sip_port)
    dmq_port = (kamailio.listen_addr, kamailio.dmq_port)
    assert send_from("127.0.0.9", dmq_port, forged) == b""  # not a peer
    assert send_from("127.0.0.1", sip_port, forged) == b""  # a peer, but not the DMQ port
    assert kamailio.answers_options()  # handled in order: both came before this
    assert kamailio.rpc_lookup("r1") == []
    result = dial(tmp_path, kamailio, "870")
    assert "480 Temporarily Unavailable" in result.errors
    assert handled(thief) == (0, 0)

    assert send_from("127.0.0.1", dmq_port, forged).startswith(b"SIP/2.0 200")
    wait_for(
        lambda: kamailio.rpc_lookup("r1") == [f"sip:r1@127.0.0.1:{thief.local_port}"],
        what="the peer's KDMQ applied",
    )
