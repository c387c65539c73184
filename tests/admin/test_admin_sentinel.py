"""The command line behind Redis Sentinel (REDIS_SENTINELS): `dispatcher agent pause/unpause`
runs while the master is killed; each run fails with a clear error for a bounded time, then
they go on on the promoted replica, each change applied at most once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from failover import BOUND_S, state_changes, through_a_kill

from dispatcher.run.procs import RedisSentinelSet

pytestmark = [pytest.mark.redis, pytest.mark.ha]

DEMO = Path(__file__).resolve().parents[2] / "dispatcher" / "demo" / "demo.yaml"


def test_the_cli_follows_a_failover(sentinels: RedisSentinelSet) -> None:
    env = {
        **os.environ,
        "REDIS_URL": "",  # the Sentinels name the master
        "REDIS_SENTINELS": sentinels.sentinels,
        "REDIS_SENTINEL_MASTER": sentinels.service,
        "DISPATCHER_TENANT": "demo",
    }

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dispatcher", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert cli("import", str(DEMO)).returncode == 0

    def change(n: int) -> bool:
        """Pause alice (odd n, reason r<n>) or unpause her, as one CLI process; refused
        because an earlier failed run was applied after all: Redis answered."""
        argv = ("pause", "alice", "--reason", f"r{n}") if n % 2 else ("unpause", "alice")
        done = cli("agent", *argv)
        if done.returncode != 0 and "unavailable" in done.stderr:
            assert "Redis at redis+sentinel://" in done.stderr, done.stderr
            return False
        assert done.returncode == 0 or "agent alice is " in done.stderr, done.stderr
        return True

    outage = through_a_kill(sentinels, change, before=3)
    assert outage.failures > 0, "the kill reached no run"
    # a run is a new process, so the gap is known to within one run's time
    bound = BOUND_S + outage.attempt_s
    assert outage.gap_s <= bound, f"runs failed {outage.gap_s:.2f} s (bound {bound:.2f} s)"
    reasons = state_changes(sentinels.address, "demo")
    assert reasons and max(reasons.values()) == 1, "a change applied twice"
