"""`make test` runs the time-sensitive tests (marker `timeshift`) a second time with the whole
process tree a year ahead: pytest under Debian's faketime, and every redis-server and
Kamailio the tests start inherit it. This checks that the shift reaches them all, so a fixed
date that a real server also sees cannot come back unnoticed (shared/STYLE.md).

In that run the Makefile passes the real time as DISPATCHER_TEST_REAL_EPOCH; without it (the
first run) the clocks must simply agree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime

import pytest
import redis

from dispatcher.run.procs import RedisProcess
from dispatcher.run.sipprocs import KamailioProcess

pytestmark = [pytest.mark.timeshift, pytest.mark.redis, pytest.mark.sip]

YEAR_S = 365 * 86_400
REAL_EPOCH = os.environ.get("DISPATCHER_TEST_REAL_EPOCH")


def expected_now() -> float:
    """Where this run's clocks should stand: a year ahead of the real time in the year-ahead
    run (the real clock moved on since the Makefile read it, by less than the run lasts)."""
    if REAL_EPOCH is None:
        return time.time()
    return float(REAL_EPOCH) + YEAR_S


def test_pytest_redis_and_kamailio_share_the_shifted_clock(
    redis_server: RedisProcess, start_kamailio: Callable[..., KamailioProcess]
) -> None:
    # Within an hour: the year-ahead run starts minutes after the Makefile read the epoch.
    assert abs(time.time() - expected_now()) < 3600, "pytest's clock is not where it should be"
    with redis.Redis.from_url(redis_server.url) as client:
        seconds, _ = client.time()
    assert abs(seconds - time.time()) < 5, "Redis' TIME differs from pytest's clock"
    kamailio = start_kamailio(tenant="clock")
    # core.uptime's now is ctime text in Kamailio's local time, whole seconds.
    now = datetime.strptime(kamailio.rpc("core.uptime")["now"].strip(), "%a %b %d %H:%M:%S %Y")
    assert abs(now.timestamp() - time.time()) < 5, "Kamailio's clock differs from pytest's"
