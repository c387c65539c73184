"""Measuring what a Redis failover costs its clients: run an attempt in a loop, kill the
master, and time how long the attempts fail (the Sentinel suites of state, API, CLI, SIP)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dispatcher.run.procs import RedisSentinelSet
from dispatcher.state import StateStore

# The Sentinels' timings in these tests: a master silent for DOWN_AFTER_MS is down.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
# Calls fail for at most the detection (DOWN_AFTER_MS) plus this: the Sentinels agree
# (quorum 2), elect a leader, promote the replica and name it (about 1.3 s measured on the
# 2-core machine beside other work), and the clients reconnect to it.
FAILOVER_S = 2.0
BOUND_S = DOWN_AFTER_MS / 1000 + FAILOVER_S


def sentinel_set(workdir: Path) -> RedisSentinelSet:
    """A Sentinel set with the timings above (not started)."""
    return RedisSentinelSet(
        workdir, down_after_ms=DOWN_AFTER_MS, failover_timeout_ms=FAILOVER_TIMEOUT_MS
    )


@dataclass(frozen=True, slots=True)
class Outage:
    """What the attempts saw: `gap_s` from the kill until the first attempt of the run of
    successes that lasted `quiet_s` (0 when none failed), the attempts made, how many failed,
    and the mean duration of a successful attempt."""

    gap_s: float
    attempts: int
    failures: int
    attempt_s: float


def through_a_kill(
    sentinels: RedisSentinelSet,
    attempt: Callable[[int], bool],
    *,
    before: int = 5,
    quiet_s: float = 1.0,
    timeout_s: float = 30.0,
    before_kill: Callable[[], None] | None = None,
) -> Outage:
    """Call `attempt(n)` (True: it succeeded) `before` times, all succeeding, then
    `before_kill()` (e.g. wait until what the attempts sent without waiting has landed),
    kill -9 the master, and go on until the attempts have succeeded for `quiet_s` in a row,
    at most `timeout_s` after the kill (AssertionError then)."""
    n = 0
    for _ in range(before):
        n += 1
        assert attempt(n), f"attempt {n} failed before the kill"
    if before_kill is not None:
        before_kill()
    old = sentinels.current_master()
    killed_at = time.monotonic()
    old.kill()
    failures, last_failure, recovered_at = 0, None, None
    spent, succeeded = 0.0, 0
    while True:
        now = time.monotonic()
        assert now - killed_at < timeout_s, f"still failing {timeout_s} s after the kill"
        n += 1
        ok = attempt(n)
        took = time.monotonic() - now
        if not ok:
            failures += 1
            last_failure, recovered_at = now, None
            time.sleep(0.02)  # what a client does between retries; keeps the loop polite
            continue
        spent, succeeded = spent + took, succeeded + 1
        recovered_at = recovered_at or now
        if time.monotonic() - recovered_at >= quiet_s:
            break
    gap = recovered_at - killed_at if last_failure is not None else 0.0
    outage = Outage(gap, n, failures, spent / succeeded)
    print(f"failover: {outage}")  # the measured bound, shown with pytest -rP
    return outage


def state_changes(address: str, tenant: str) -> Counter[str]:
    """How often each agent state change (by its pause reason) is in the tenant's events:
    a change the clients made once must be there at most once."""
    with StateStore(address, tenant) as store:
        return Counter(
            e["reason"]
            for e in store.events(100_000)
            if e["type"] == "state_changed" and e.get("reason")
        )
