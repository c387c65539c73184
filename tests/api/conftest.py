"""Fixtures of the admin API tests: a real uvicorn serving the API on the session's Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from api_support import BOOTSTRAP, client, demo_doc

from dispatcher.run.procs import ApiProcess, RedisProcess


@pytest.fixture(scope="session")
def api_server(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """The admin API on the session's Redis; bootstrap token BOOTSTRAP."""
    server = ApiProcess(
        tmp_path_factory.mktemp("api"),
        env={
            "REDIS_URL": redis_server.url,
            "DISPATCHER_ADMIN_TOKEN": BOOTSTRAP,
            "REDIS_TIMEOUT_MS": "2000",
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def admin(redis_url: str, api_server: ApiProcess) -> Iterator[httpx.Client]:
    """A bootstrap-token client on a flushed Redis holding the demo tenant (version 1)."""
    with client(api_server) as http:
        reply = http.post("/v1/tenants", json=demo_doc())
        assert reply.status_code == 201, reply.text
        yield http
