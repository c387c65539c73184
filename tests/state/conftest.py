"""Fixtures of the shared-state tests: a store on the session's (flushed) Redis."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from state_support import AGENTS, GROUPS, TENANT

from dispatcher.run.procs import RedisProcess
from dispatcher.state import StateStore
from dispatcher.state.connect import sync_client


@pytest.fixture
def store(redis_url: str) -> Iterator[StateStore]:
    """A store of tenant `acme` with the AGENTS/GROUPS config put (version 1)."""
    with StateStore(redis_url, TENANT) as state:
        state.put_config(b'{"tenant": "acme"}', AGENTS, GROUPS)
        yield state


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the same Redis, for reading keys directly."""
    with sync_client(redis_url) as plain:
        yield plain


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test alone, free to restart, stop or freeze."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()
