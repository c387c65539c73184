"""The backstop of shared state: a live call no node ended (its release lost, its node gone)
is released by the keepers once it outlives the dialog timeout plus a margin, whatever the
dialog module does. Real Kamailio and Redis; the stale call is made in Redis directly (a
claim and an answer nobody will ever release)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from test_group_strategies import wait_for
from test_kamailio import register

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.procs import RedisProcess
from dispatcher.run.sipprocs import KamailioProcess, SippProcess
from dispatcher.state import StateStore, TenantKeys

pytestmark = [pytest.mark.sip, pytest.mark.redis]

BENCH_SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"

TENANT_YAML = """
id: backstop
name: Backstop
agents: [{id: carol, name: Carol, targets: {aor: carol}, state: available}]
groups:
  - {id: sales, extension: "600", name: Sales, strategy: sequential, members: [{agent: carol}]}
"""


def test_a_live_call_nobody_ends_is_released_after_the_dialog_timeout_and_margin(
    start_kamailio: Callable[..., KamailioProcess], redis_url: str
) -> None:
    with StateStore(redis_url, "backstop") as store:
        import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
        assert store.claim("lost-1", "sales", "", ["carol"], 60_000).claimed == ("carol",)
        store.answered("lost-1", "sales", "carol")
        assert store.agent_counters("carol")["live"] == 1
        started = time.monotonic()
        start_kamailio(
            tenant="backstop",
            redis_url=redis_url,
            extra_defines={"DLG_TIMEOUT": 2, "LIVE_MARGIN_S": 1, "LIVE_SWEEP_S": 1},
        )
        deadline = time.monotonic() + 15
        while store.agent_counters("carol")["live"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.agent_counters("carol")["live"] == 0
        assert time.monotonic() - started >= 3  # not before timeout + margin
    with redis.Redis.from_url(redis_url) as client:
        ended = [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in client.xrange(TenantKeys("backstop").events)
            if fields[b"type"] == b"ended"
        ]
        assert [(e["call"], e.get("outcome")) for e in ended] == [("lost-1", "expired")]
        assert client.hlen(TenantKeys("backstop").live) == 0


TIMER_TENANT_YAML = """
id: dlgtimer
name: Dialog timer
agents:
  - {id: t1, name: T1, targets: {aor: t1}, state: available, max_calls: 100}
groups:
  - {id: g, extension: "700", name: G, strategy: sequential, sticky: false,
     members: [{agent: t1}]}
"""


def test_dialog_timeouts_send_their_byes_while_redis_is_stopped(
    start_kamailio: Callable[..., KamailioProcess],
    start_phone: Callable[..., SippProcess],
    tmp_path: Path,
) -> None:
    """The dialog timer never waits on Redis: 20 calls that time out while Redis is stopped
    (SIGSTOP) all get their BYEs at once - releasing them from the timer process cost a
    reconnect that waited its full timeout each, 10 s for these 20 - and once Redis goes on,
    the keeper's releases land and nothing stays live."""
    with RedisProcess(tmp_path / "redis") as server:
        with StateStore(server.url, "dlgtimer") as store:
            import_tenant(store, parse_tenant(TIMER_TENANT_YAML, "yaml"))
        kamailio = start_kamailio(
            tenant="dlgtimer",
            redis_url=server.url,
            extra_defines={"DLG_TIMEOUT": 3, "DLG_KA_INTERVAL": 0},
        )
        phone = start_phone("uas_answer.xml")
        register(tmp_path, kamailio, "t1", phone.local_port)
        callers = SippProcess(
            tmp_path,
            BENCH_SCENARIOS / "uac_no_bye.xml",
            kamailio.address,
            calls=20,
            rate=50,
            limit=20,
            service="700",
            timeout=30,
        )
        client = redis.Redis.from_url(server.url)
        callers.start()
        wait_for(lambda: client.hlen(TenantKeys("dlgtimer").live) == 20, what="20 live calls")
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            # every BYE within the 3 s timeout plus 4 s, Redis stopped all along
            result = callers.wait(timeout=7)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert result.ok, result.errors or result.output
        assert result.stats.successful == 20
        wait_for(lambda: client.hlen(TenantKeys("dlgtimer").live) == 0, what="releases")
        client.close()
        assert not kamailio.python_errors()
