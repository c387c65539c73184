"""The admin API behind Redis Sentinel (REDIS_SENTINELS): kill -9 the master while agent
state changes go through the API; they fail (503) for a bounded time, then go on on the
promoted replica, each applied at most once; an open event stream ends with `unavailable`
and a new one follows the new master."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest
from api_support import BOOTSTRAP, client, demo_doc
from failover import BOUND_S, state_changes, through_a_kill
from test_dashboard import stream

from dispatcher.run.procs import ApiProcess, RedisSentinelSet

pytestmark = [pytest.mark.redis, pytest.mark.ha]


def test_the_api_follows_a_failover(sentinels: RedisSentinelSet, tmp_path: Path) -> None:
    env = {
        "REDIS_URL": "",  # the Sentinels name the master
        "REDIS_SENTINELS": sentinels.sentinels,
        "REDIS_SENTINEL_MASTER": sentinels.service,
        "DISPATCHER_ADMIN_TOKEN": BOOTSTRAP,
        "REDIS_TIMEOUT_MS": "500",
    }
    with ApiProcess(tmp_path / "api", env=env) as api, client(api) as http:
        assert http.post("/v1/tenants", json=demo_doc()).status_code == 201

        def change(n: int) -> bool:
            """Pause alice (odd n, reason r<n>) or unpause her; 409 when an earlier change
            that failed was applied after all (its reply lost with the master): Redis
            answered, the API works."""
            action = {"action": "pause", "reason": f"r{n}"} if n % 2 else {"action": "unpause"}
            try:
                reply = http.post("/v1/tenants/demo/agents/alice/state", json=action)
            except httpx.TimeoutException:
                return False
            assert reply.status_code in (200, 409, 503), reply.text
            return reply.status_code != 503

        seen: list[str] = []
        with stream(api.url) as before:
            outage = through_a_kill(sentinels, change)
            with contextlib.suppress(EOFError):
                while "unavailable" not in seen:  # the changes before the kill, then the end
                    seen.append(before.next()["event"])
        assert seen[-1] == "unavailable", seen
        assert outage.failures > 0, "the kill reached no request"
        assert outage.gap_s <= BOUND_S, f"503 for {outage.gap_s:.2f} s (bound {BOUND_S} s)"

        with stream(api.url) as after:  # on the new master
            reply = http.post("/v1/tenants/demo/agents/bob/state", json={"action": "logout"})
            assert reply.status_code == 200, reply.text
            assert after.events(1)[0]["data"]["agent"] == "bob"

    reasons = state_changes(sentinels.address, "demo")
    assert reasons and max(reasons.values()) == 1, "a change applied twice"
