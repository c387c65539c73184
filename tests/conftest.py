"""Shared fixtures: a real redis-server per test session, the demo tenant."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.run.procs import RedisProcess

DEMO_FILE = Path(__file__).resolve().parents[1] / "dispatcher" / "demo" / "demo.yaml"
_DEMO_DATA: dict[str, Any] = yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8"))


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
def demo_file() -> Path:
    """Path of the demo tenant shipped with the package."""
    return DEMO_FILE


@pytest.fixture
def demo() -> dict[str, Any]:
    """The demo tenant as decoded YAML, a fresh copy per test so tests may change it."""
    return copy.deepcopy(_DEMO_DATA)
