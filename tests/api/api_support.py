"""Shared by the admin API tests: the bootstrap token, the demo tenant, HTTP clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from dispatcher.run.procs import ApiProcess

BOOTSTRAP = "test-bootstrap-token"
DEMO = Path(__file__).resolve().parents[2] / "dispatcher" / "demo" / "demo.yaml"


def demo_doc(tenant: str = "demo") -> dict[str, Any]:
    """The demo tenant file as plain data, with id `tenant`."""
    return {**yaml.safe_load(DEMO.read_text()), "id": tenant}


def client(server: ApiProcess, token: str | None = BOOTSTRAP) -> httpx.Client:
    """An HTTP client of the API sending `token` (None: no Authorization header)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def make_token(http: httpx.Client, tenant: str, role: str) -> str:
    """A new token of `tenant` with `role`, created through the API."""
    reply = http.post(f"/v1/tenants/{tenant}/tokens", json={"role": role, "label": "test"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["token"])
