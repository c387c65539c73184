"""Registrations every node shares and a restart keeps: usrloc db_mode 3 on the dispatcher's
Redis server (db_redis, in the database after the dispatcher's), real Kamailio nodes, phones
and callers are SIPp.

Each phone registers at one node only; the other node must ring it, see its unregister,
and a restarted node must ring it without a new REGISTER.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from test_group_strategies import ZERO, dial, handled, settled, wait_for
from test_kamailio import register

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.procs import ProcessError
from dispatcher.run.sipprocs import KamailioProcess, SippProcess, registrations_url_for, run_sipp
from dispatcher.state import StateStore, TenantKeys

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
    # the contact is in usrloc's database, keyed as kamailio.cfg's db_redis keys say; none of
    # it in the dispatcher's
    assert contacts(registrations, "r1") == [f"sip:r1@127.0.0.1:{uas.local_port}"]
    assert not list(client.scan_iter("location:*"))


def test_a_restarted_node_rings_a_phone_that_did_not_register_again(
    node: Callable[..., KamailioProcess],
    start_phone: StartPhone,
    tmp_path: Path,
    client: redis.Redis,
) -> None:
    kamailio = node()
    uas = start_phone("uas_answer.xml")
    register(tmp_path, kamailio, "r1", uas.local_port)
    kamailio.stop()
    kamailio.start()  # the same port, workdir and Redis

    result = dial(tmp_path, kamailio, "870")

    assert result.ok, result.errors or result.output
    assert handled(uas) == (1, 0)
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
    assert contacts(registrations, "r1")
    # (recorded just after the 200 OK went out)
    wait_for(lambda: client.hexists(KEYS.registrations, "r1"), what="r1's registration")

    unregister(tmp_path, second, "r1", uas.local_port)

    assert contacts(registrations, "r1") == []
    # the dispatcher's record of it (the dashboard's "not registered") went with it
    wait_for(lambda: not client.hexists(KEYS.registrations, "r1"), what="r1 unrecorded")
    result = dial(tmp_path, first, "870")  # r1 has no phone now: the group's no-answer
    assert (result.stats.successful, result.stats.failed) == (0, 1)
    assert "480 Temporarily Unavailable" in result.errors
    assert handled(uas) == (0, 0)
    assert settled(client) == ZERO
    assert not registrations.keys("location:*")  # mappings included


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
