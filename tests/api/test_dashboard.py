"""The dashboard's server side against a real uvicorn and Redis: the page and its files, the
calls read, tickets and the Server-Sent Events stream (order, ids, resume, auth, resources).

The browser end to end test is tests/sip/test_dashboard_browser.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from api_support import BOOTSTRAP, client, demo_doc, make_token
from redis_support import per_primary

from dispatcher.api import routes_dashboard
from dispatcher.api.app import create_app
from dispatcher.run.procs import ApiProcess, free_port
from dispatcher.settings import Settings
from dispatcher.state import StateStore
from dispatcher.state.connect import sync_client

pytestmark = pytest.mark.redis

STREAM = "/v1/tenants/demo/events/stream"
TICKET = "/v1/tenants/demo/events/ticket"


# --- a small SSE reader ----------------------------------------------------------------------


class Sse:
    """Messages of one open event stream, read line by line (each read waits at most the
    client's read timeout)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def next(self) -> dict[str, Any]:
        """The next message: {"event", "id", "data"} (data parsed as JSON)."""
        message: dict[str, Any] = {"event": "message", "id": None}
        data: list[str] = []
        for line in self.lines:
            if not line:
                if data:
                    message["data"] = orjson.loads("\n".join(data))
                    return message
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name in ("event", "id"):
                message[name] = value
        raise EOFError("the stream ended")

    def events(self, n: int) -> list[dict[str, Any]]:
        """The next `n` stream events (pings skipped)."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            message = self.next()
            if message["event"] == "message":
                out.append(message)
        return out


@contextmanager
def stream(
    server_url: str,
    *,
    token: str | None = BOOTSTRAP,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    tenant: str = "demo",
) -> Iterator[Sse]:
    """An open event stream; its `ready` message already read."""
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    timeout = httpx.Timeout(10, read=5)
    with (
        httpx.Client(base_url=server_url, timeout=timeout) as http,
        http.stream(
            "GET", f"/v1/tenants/{tenant}/events/stream", params=params, headers=sent
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = Sse(response)
        ready = sse.next()
        assert ready["event"] == "ready", ready
        yield sse


def stream_ids(redis_url: str) -> list[str]:
    with sync_client(redis_url) as r:
        return [entry_id.decode() for entry_id, _ in r.xrange("{t:demo}:events")]


def sse_connections(redis_url: str) -> int:
    with sync_client(redis_url) as r:
        return sum(
            1
            for clients in per_primary(r, "client_list")  # the stream's node of a Cluster
            for c in clients
            if c.get("name") == routes_dashboard.STREAM_CLIENT_NAME
        )


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# --- the page --------------------------------------------------------------------------------


def test_the_page_and_its_files_need_no_token(api_server: ApiProcess) -> None:
    with client(api_server, token=None) as http:
        page = http.get("/dashboard")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert 'src="dashboard/dashboard.js"' in page.text
        assert "<script>" not in page.text  # no inline script: the CSP forbids it
        for name, kind in [
            ("dashboard.js", "text/javascript"),
            ("dashboard.css", "text/css"),
            ("favicon.svg", "image/svg+xml"),
        ]:
            reply = http.get(f"/dashboard/{name}")
            assert reply.status_code == 200, name
            assert reply.headers["content-type"].startswith(kind)
        for name in ("dashboard.html.bak", "..%2Fapp.py", "routes_dashboard.py"):
            assert http.get(f"/dashboard/{name}").status_code == 404, name
        # the page is not part of the API's spec; the calls read and the stream are
        paths = http.get("/openapi.json").json()["paths"]
        assert "/dashboard" not in paths
        assert {"/v1/tenants/{tenant}/calls", "/v1/tenants/{tenant}/events/stream"} <= set(paths)


# --- calls -----------------------------------------------------------------------------------


def test_calls_lists_ringing_and_talking_legs_with_caller_and_group(
    admin: httpx.Client, redis_url: str
) -> None:
    assert admin.get("/v1/tenants/demo/calls").json()["calls"] == []
    with StateStore(redis_url, "demo") as store:
        claim = store.claim("c-1", "sales", "+4930111", ["alice", "bob"], 20_000, arrival=True)
        assert set(claim.claimed) == {"alice", "bob"}

        ringing = admin.get("/v1/tenants/demo/calls").json()
        (call,) = ringing["calls"]
        assert call["call"] == "c-1" and call["state"] == "ringing"
        assert call["group"] == "sales" and call["caller"] == "+4930111"
        assert call["answered_ms"] is None
        assert call["started_ms"] <= ringing["now_ms"]
        assert [(leg["agent"], leg["state"]) for leg in call["legs"]] == [
            ("alice", "ringing"),
            ("bob", "ringing"),
        ]
        for leg in call["legs"]:
            assert leg["deadline_ms"] == claim.now_ms + 20_000
            assert leg["since_ms"] == claim.now_ms

        store.answered("c-1", "sales", "bob")
        talking = admin.get("/v1/tenants/demo/calls").json()
        (call,) = talking["calls"]
        assert call["state"] == "in_progress" and call["caller"] == "+4930111"
        assert [(leg["agent"], leg["state"]) for leg in call["legs"]] == [("bob", "talking")]
        assert call["answered_ms"] == call["legs"][0]["since_ms"] >= call["started_ms"]
        assert call["legs"][0]["deadline_ms"] is None

        store.release("c-1", outcome="answered")
    assert admin.get("/v1/tenants/demo/calls").json()["calls"] == []


def test_calls_of_a_long_call_beyond_the_event_window_still_show(
    admin: httpx.Client, redis_url: str
) -> None:
    with StateStore(redis_url, "demo") as store:
        store.claim("old", "support", "+4940222", ["dave"], 20_000, arrival=True)
        store.answered("old", "support", "dave")
        with sync_client(redis_url) as r:  # its events trimmed away
            r.xtrim("{t:demo}:events", maxlen=0)
        (call,) = admin.get("/v1/tenants/demo/calls").json()["calls"]
        assert call["state"] == "in_progress" and call["group"] == "support"
        assert call["caller"] is None  # unknown, not wrong
        assert call["started_ms"] == call["answered_ms"]
        store.release("old")


def test_calls_needs_a_token_of_the_tenant_and_an_existing_tenant(
    admin: httpx.Client, api_server: ApiProcess
) -> None:
    assert admin.post("/v1/tenants", json=demo_doc("other")).status_code == 201
    other = make_token(admin, "other", "read-only")
    with client(api_server, token=None) as anonymous:
        assert anonymous.get("/v1/tenants/demo/calls").status_code == 401
    with client(api_server, token=other) as http:
        assert http.get("/v1/tenants/demo/calls").status_code == 403
        assert http.get("/v1/tenants/other/calls").status_code == 200
    assert admin.get("/v1/tenants/nobody/calls").status_code == 404


# --- the event stream ------------------------------------------------------------------------


def test_events_arrive_in_order_with_their_stream_ids(
    admin: httpx.Client, api_server: ApiProcess, redis_url: str
) -> None:
    before = stream_ids(redis_url)
    with stream(api_server.url) as sse:
        for agent in ("alice", "bob", "carol"):
            reply = admin.post(
                f"/v1/tenants/demo/agents/{agent}/state",
                json={"action": "pause", "reason": "lunch"},
            )
            assert reply.status_code == 200, reply.text
        # each change: state_changed, then its audit
        got = sse.events(6)
    new_ids = [i for i in stream_ids(redis_url) if i not in before]
    assert [m["id"] for m in got] == new_ids
    assert [m["data"]["id"] for m in got] == new_ids
    kinds = [(m["data"]["type"], m["data"].get("agent")) for m in got]
    assert kinds == [
        ("state_changed", "alice"),
        ("audit", None),
        ("state_changed", "bob"),
        ("audit", None),
        ("state_changed", "carol"),
        ("audit", None),
    ]
    assert got[0]["data"]["reason"] == "lunch" and int(got[0]["data"]["ts"]) > 0


def test_last_event_id_resumes_after_that_event(
    admin: httpx.Client, api_server: ApiProcess, redis_url: str
) -> None:
    for agent in ("alice", "bob"):
        admin.post(f"/v1/tenants/demo/agents/{agent}/state", json={"action": "logout"})
    ids = stream_ids(redis_url)
    assert len(ids) >= 4
    resume_after = ids[-4]
    # the header EventSource sends when it reconnects by itself
    with stream(api_server.url, headers={"Last-Event-ID": resume_after}) as sse:
        assert [m["id"] for m in sse.events(3)] == ids[-3:]
    # the query parameter the page uses when it reconnects with a new ticket
    with stream(api_server.url, params={"last_event_id": ids[-2]}) as sse:
        assert [m["id"] for m in sse.events(1)] == ids[-1:]
        admin.post("/v1/tenants/demo/agents/carol/state", json={"action": "logout"})
        (next_event,) = sse.events(1)
        assert next_event["data"]["type"] == "state_changed"
        assert next_event["data"]["agent"] == "carol"
    with client(api_server) as http:
        bad = http.get(STREAM, headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422


def test_the_stream_needs_a_token_or_a_one_time_ticket(
    admin: httpx.Client, api_server: ApiProcess
) -> None:
    assert admin.post("/v1/tenants", json=demo_doc("other")).status_code == 201
    other = make_token(admin, "other", "admin")
    reader = make_token(admin, "demo", "read-only")
    with client(api_server, token=None) as anonymous:
        assert anonymous.get(STREAM).status_code == 401
        assert anonymous.post(TICKET).status_code == 401
        assert anonymous.get(STREAM, params={"ticket": "x" * 43}).status_code == 401
        assert anonymous.get(STREAM, params={"ticket": "short"}).status_code == 422
    with client(api_server, token=other) as http:
        assert http.get(STREAM).status_code == 403
        assert http.post(TICKET).status_code == 403
        other_ticket = http.post("/v1/tenants/other/events/ticket").json()["ticket"]
    with client(api_server, token=reader) as http:
        issued = http.post(TICKET)
        assert issued.status_code == 201
        assert issued.json()["expires_in_s"] == routes_dashboard.TICKET_TTL_S
        ticket = issued.json()["ticket"]

    # a read-only token's ticket opens one stream, once
    with stream(api_server.url, token=None, params={"ticket": ticket}):
        pass
    with client(api_server, token=None) as anonymous:
        assert anonymous.get(STREAM, params={"ticket": ticket}).status_code == 401
        # a ticket is bound to its tenant
        assert anonymous.get(STREAM, params={"ticket": other_ticket}).status_code == 401

    # revoking the token makes its unused tickets worthless
    with client(api_server, token=reader) as http:
        ticket = http.post(TICKET).json()["ticket"]
    token_id = reader.split(".")[1]
    assert admin.delete(f"/v1/tenants/demo/tokens/{token_id}").status_code == 204
    with client(api_server, token=None) as anonymous:
        assert anonymous.get(STREAM, params={"ticket": ticket}).status_code == 401


def test_tickets_are_stored_only_as_digests_and_expire(admin: httpx.Client, redis_url: str) -> None:
    ticket = admin.post(TICKET).json()["ticket"]
    with sync_client(redis_url) as r:
        keys = [k.decode() for k in r.scan_iter("{t:demo}:ticket:*")]
        assert len(keys) == 1 and ticket not in keys[0]
        assert 0 < r.ttl(keys[0]) <= routes_dashboard.TICKET_TTL_S
        assert ticket.encode() not in r.get(keys[0])


def test_a_closed_stream_gives_back_its_redis_connection(
    admin: httpx.Client, api_server: ApiProcess, redis_url: str
) -> None:
    with stream(api_server.url), stream(api_server.url), stream(api_server.url):
        assert wait_for(lambda: sse_connections(redis_url) == 3)
    assert wait_for(lambda: sse_connections(redis_url) == 0), "connections left open"
    # and the server still streams
    with stream(api_server.url) as sse:
        admin.post("/v1/tenants/demo/agents/alice/state", json={"action": "logout"})
        assert sse.events(1)[0]["data"]["type"] == "state_changed"


# --- limits, heartbeats and revocation: an in-process server with small numbers --------------


@pytest.fixture
def small_server(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, admin: httpx.Client, tmp_path: Path
) -> Iterator[str]:
    """The API in a thread of this process with 2 streams at most and a 0.3 s heartbeat."""
    monkeypatch.setattr(routes_dashboard, "MAX_STREAMS", 2)
    monkeypatch.setattr(routes_dashboard, "HEARTBEAT_S", 0.3)
    settings = Settings(
        redis_url=redis_url,
        sip_port=5060,
        api_port=0,
        admin_token=BOOTSTRAP,
        tenant="demo",
        redis_timeout_ms=2000,
        clock_offset_ms=0,
        node="test:0",
        tenant_cache=16,
        trusted=("127.0.0.1/32",),
        auth_secret=None,
        auth_algorithms=("SHA-256", "MD5"),
        rtpengine_ng=None,
        prompts_dir=tmp_path / "prompts",
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_streams_per_process_are_bounded(small_server: str) -> None:
    with stream(small_server), stream(small_server):
        with httpx.Client(base_url=small_server, timeout=5) as http:
            refused = http.get(STREAM, headers={"Authorization": f"Bearer {BOOTSTRAP}"})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
    with stream(small_server) as sse:  # the slots came back
        assert sse.next()["event"] == "ping"


def test_heartbeats_and_a_revoked_token_ends_its_stream(
    small_server: str, admin: httpx.Client
) -> None:
    reader = make_token(admin, "demo", "read-only")
    with stream(small_server, token=reader) as sse:
        assert sse.next()["event"] == "ping"
        assert sse.next()["event"] == "ping"
        token_id = reader.split(".")[1]
        assert admin.delete(f"/v1/tenants/demo/tokens/{token_id}").status_code == 204
        messages = []
        with pytest.raises(EOFError):
            while True:
                messages.append(sse.next())
    assert messages[-1]["event"] == "revoked"
