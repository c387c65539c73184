"""The backstop of shared state: a live call no node ended (its release lost, its node gone)
is released by the keepers once it outlives the dialog timeout plus a margin, whatever the
dialog module does. Real Kamailio and Redis; the stale call is made in Redis directly (a
claim and an answer nobody will ever release)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.run.sipprocs import KamailioProcess
from dispatcher.state import StateStore, TenantKeys

pytestmark = [pytest.mark.sip, pytest.mark.redis]

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
