"""Shared by the admin API tests: the bootstrap token, the demo tenant, HTTP clients, WAV
files, the audit trail."""

from __future__ import annotations

import io
import math
import struct
import wave
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.run.procs import ApiProcess
from dispatcher.state import StateStore

BOOTSTRAP = "test-bootstrap-token"
DEMO = Path(__file__).resolve().parents[2] / "dispatcher" / "demo" / "demo.yaml"


def demo_doc(tenant: str = "demo") -> dict[str, Any]:
    """The demo tenant file as plain data, with id `tenant`; a copy under another id leaves
    out the demo's domains and DIDs (inbound rules): a name belongs to one tenant only."""
    doc = {**yaml.safe_load(DEMO.read_text()), "id": tenant}
    if tenant != "demo":
        for names in ("inbound", "domains", "dids"):
            doc.pop(names, None)
    return doc


def client(server: ApiProcess, token: str | None = BOOTSTRAP) -> httpx.Client:
    """An HTTP client of the API sending `token` (None: no Authorization header)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def make_token(http: httpx.Client, tenant: str, role: str) -> str:
    """A new token of `tenant` with `role`, created through the API."""
    reply = http.post(f"/v1/tenants/{tenant}/tokens", json={"role": role, "label": "test"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["token"])


def tone(seconds: float, rate: int = 8000) -> bytes:
    """PCM s16le mono samples of a 400 Hz tone at `rate`."""
    frames = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 400 * n / rate))) for n in range(frames)
    )


def wav(samples: bytes, rate: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    """A WAV file of `samples` (written by the stdlib: the canonical 44-byte header)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(samples)
    return out.getvalue()


def audit_events(redis_url: str, tenant: str = "demo") -> list[dict[str, str]]:
    """The tenant's audit events, oldest first."""
    with StateStore(redis_url, tenant) as store:
        return [e for e in store.events(1000) if e["type"] == "audit"]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: httpx.Client) -> Samples:
    """Every sample of one `/metrics` scrape by (name, sorted labels)."""
    reply = http.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when the scrape has none."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
