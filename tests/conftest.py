"""Shared fixtures: a real redis-server per test session (or, with --redis-cluster, a real
three-primary Redis Cluster), the demo tenant."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.run.procs import RedisClusterSet, RedisProcess, RedisSentinelSet
from dispatcher.state.connect import sync_client

# Suites whose every test is time-sensitive (Redis' clock, expiry, archive days): marked
# `timeshift`, so make test runs them again with the whole process tree a year ahead.
TIME_SENSITIVE_SUITES = ("state", "reports")

DEMO_FILE = Path(__file__).resolve().parents[1] / "dispatcher" / "demo" / "demo.yaml"
_DEMO_DATA: dict[str, Any] = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))


def pytest_addoption(parser: pytest.Parser) -> None:
    """--redis-cluster: the session's Redis (`redis_server`, `redis_url`) is a Cluster."""
    parser.addoption(
        "--redis-cluster",
        action="store_true",
        help="run against a three-primary Redis Cluster the tests start (make test's "
        "cluster pass: the state, decision, API and SIP smoke suites)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the time-sensitive suites (TIME_SENSITIVE_SUITES) `timeshift`, but not the
    tests that start Redis HA sets of their own (`ha`: their servers' timing is what they
    test, and one pass is enough)."""
    for item in items:
        if item.path.parent.name in TIME_SENSITIVE_SUITES and not item.get_closest_marker("ha"):
            item.add_marker(pytest.mark.timeshift)


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisProcess | RedisClusterSet]:
    """A redis-server started by the tests on a free loopback port; with --redis-cluster
    a Redis Cluster of three primaries (both have `url` and `stop`)."""
    workdir = Path(tmp_path_factory.mktemp("redis"))
    server = RedisClusterSet(workdir) if request.config.getoption("--redis-cluster") else None
    with server or RedisProcess(workdir) as started:
        yield started


@pytest.fixture
def redis_url(redis_server: RedisProcess | RedisClusterSet) -> Iterator[str]:
    """Address of the session's Redis (a redis+cluster:// one with --redis-cluster),
    flushed before each test (every primary of a Cluster)."""
    client = sync_client(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[RedisSentinelSet]:
    """A Redis master with a replica and three Sentinels of this test alone, with the fast
    failover timings of `failover` (tests/support), free to kill."""
    from failover import sentinel_set

    with sentinel_set(tmp_path / "ha") as started:
        yield started


@pytest.fixture
def clock_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test whose clock the test moves (`clock_redis.clock.shift(s)`):
    Redis' TIME and its key expiry follow at once."""
    server = RedisProcess(tmp_path / "clock-redis", movable_clock=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prompts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default prompts (espeak-ng, sox), generated once for the session (about 6 s of
    CPU): the media tests read them, the SIP tests' Kamailio nodes play them."""
    from dispatcher.media.prompts import ensure_default_prompts

    directory = tmp_path_factory.mktemp("prompts")
    ensure_default_prompts(directory)
    return directory


@pytest.fixture
def demo_file() -> Path:
    """Path of the demo tenant shipped with the package."""
    return DEMO_FILE


@pytest.fixture
def demo() -> dict[str, Any]:
    """The demo tenant as decoded YAML, a fresh copy per test so tests may change it."""
    return copy.deepcopy(_DEMO_DATA)
