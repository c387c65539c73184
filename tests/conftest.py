"""Shared fixtures: a real redis-server per test session, the demo tenant."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.run.procs import RedisProcess

# Suites whose every test is time-sensitive (Redis' clock, expiry, archive days): marked
# `timeshift`, so make test runs them again with the whole process tree a year ahead.
TIME_SENSITIVE_SUITES = ("state", "reports")

DEMO_FILE = Path(__file__).resolve().parents[1] / "dispatcher" / "demo" / "demo.yaml"
_DEMO_DATA: dict[str, Any] = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the time-sensitive suites (TIME_SENSITIVE_SUITES) `timeshift`."""
    for item in items:
        if item.path.parent.name in TIME_SENSITIVE_SUITES:
            item.add_marker(pytest.mark.timeshift)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A redis-server started by the tests on a free loopback port."""
    server = RedisProcess(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> Iterator[str]:
    """URL of the session's Redis, flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


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
