"""`/metrics`: live gauges read from Redis, counters from the event streams, and the workers'
decision latency and Redis errors summed over processes (multiprocess mode)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from api_support import BOOTSTRAP, client, demo_doc, scrape, value

from dispatcher.run.procs import ApiProcess, RedisProcess, free_port
from dispatcher.state import StateStore
from dispatcher.state.connect import sync_client
from dispatcher.state.messages import Voicemail

pytestmark = pytest.mark.redis


def test_live_gauges(admin: httpx.Client, redis_url: str) -> None:
    with StateStore(redis_url, "demo") as store:
        store.claim("call-1", "sales", "", ["alice"], 30_000)
        store.answered("call-1", "sales", "alice")
        store.claim("call-2", "support", "", ["bob"], 30_000)
        store.set_state("carol", 1, "lunch")
    samples = scrape(admin)
    assert value(samples, "dispatcher_redis_up") == 1
    assert value(samples, "dispatcher_agents", tenant="demo", state="on_call") == 1
    assert value(samples, "dispatcher_agents", tenant="demo", state="ringing") == 1
    assert value(samples, "dispatcher_agents", tenant="demo", state="paused") == 1
    total = sum(
        value(samples, "dispatcher_agents", tenant="demo", state=state)
        for state in ("on_call", "ringing", "paused", "logged_out", "wrapup", "available")
    )
    assert total == len(demo_doc()["agents"])
    assert value(samples, "dispatcher_live_calls", tenant="demo", group="sales") == 1
    assert ("dispatcher_live_calls", (("group", "support"), ("tenant", "demo"))) in samples
    for group in demo_doc()["groups"]:
        labels = {"tenant": "demo", "group": group["id"]}
        assert ("dispatcher_queue_length", tuple(sorted(labels.items()))) in samples
        assert value(samples, "dispatcher_queue_longest_wait_seconds", **labels) == 0  # nobody
    assert value(samples, "dispatcher_config_version", tenant="demo") == 1


def test_calls_and_offers_by_outcome(admin: httpx.Client, redis_url: str) -> None:
    before = scrape(admin)
    with StateStore(redis_url, "demo") as store:
        store.claim("call-1", "sales", "", ["alice", "bob"], 30_000)
        store.failed("call-1", "alice", "busy")
        store.answered("call-1", "sales", "bob")
        store.release("call-1", outcome="answered")
        for call, outcome in (
            ("call-2", "answered"),
            ("call-3", "abandoned"),
            ("call-4", "no_answer"),
        ):
            store.claim(call, "orders", "", ["dave"], 30_000)
            store.release(call, outcome=outcome)
    after = scrape(admin)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("dispatcher_calls_total", tenant="demo", outcome="answered") == 2
    assert delta("dispatcher_calls_total", tenant="demo", outcome="abandoned") == 1
    assert delta("dispatcher_calls_total", tenant="demo", outcome="no_answer") == 1
    assert delta("dispatcher_offers_total", tenant="demo", outcome="busy") == 1
    assert delta("dispatcher_offers_total", tenant="demo", outcome="answered") == 1
    assert delta("dispatcher_events_total", tenant="demo", type="offered") == 5


def test_two_api_processes_report_the_same_counts(
    admin: httpx.Client, redis_url: str, tmp_path: Path
) -> None:
    """Counted in Redis by the library, not per API process: a second API process started
    after the calls reports exactly what the first does."""
    with StateStore(redis_url, "demo") as store:
        for n in range(3):
            store.claim(f"twin-{n}", "orders", "", ["dave"], 30_000)
            store.release(f"twin-{n}", outcome="abandoned")
    second = ApiProcess(
        tmp_path / "api2",
        env={"REDIS_URL": redis_url, "DISPATCHER_ADMIN_TOKEN": BOOTSTRAP},
    )
    second.start()
    try:
        with client(second) as other:
            mine, theirs = scrape(admin), scrape(other)
        for name, labels in (
            ("dispatcher_calls_total", {"tenant": "demo", "outcome": "abandoned"}),
            ("dispatcher_events_total", {"tenant": "demo", "type": "offered"}),
        ):
            assert value(mine, name, **labels) == value(theirs, name, **labels) >= 3
    finally:
        second.stop()


def test_queue_and_voicemail_counters(admin: httpx.Client, redis_url: str, tmp_path: Path) -> None:
    sales = next(g for g in demo_doc()["groups"] if g["id"] == "sales")
    queued = {**sales, "queue": {"max_length": 2}}
    assert admin.put("/v1/tenants/demo/groups/sales", json=queued).status_code == 200
    before = scrape(admin)
    with StateStore(redis_url, "demo") as store:
        for agent in ("bob", "carol"):
            store.set_state(agent, 1, "meeting")
        store.claim("busy", "sales", "", ["alice"], 60_000)  # nobody free: callers wait
        for call in ("q-1", "q-2"):
            assert store.queue_join(call, "sales", "", 0, "node-a", 60_000).status == "queued"
        assert store.queue_join("q-3", "sales", "", 0, "node-a", 60_000).status == "full"
        assert store.queue_leave("q-1", "abandoned") is not None
        assert store.queue_leave("q-2", "timeout") is not None
        assert store.queue_join("q-4", "sales", "", 0, "node-a", 60_000).status == "queued"
        assert store.queue_leave("q-4", "no_agents") is not None
        assert store.queue_join("q-5", "sales", "", 0, "node-a", 60_000).status == "queued"
        assert store.queue_leave("q-5", "answered") is not None  # neither abandoned nor overflow
        store.release("busy")
        for agent in ("alice", "bob", "carol"):
            store.set_state(agent, 2)
        assert store.queue_join("q-6", "sales", "", 0, "node-a", 60_000).status == "no_agents"
        for n in range(3):
            message = Voicemail(f"vm-{n}", "sales", "", 1, 1000, str(tmp_path / "m.wav"), "n")
            assert store.voicemail_put(message)
        support = Voicemail("vm-s", "support", "", 1, 1000, str(tmp_path / "s.wav"), "n")
        assert store.voicemail_put(support)
    after = scrape(admin)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sales_labels = {"tenant": "demo", "group": "sales"}
    assert delta("dispatcher_queue_abandoned_total", **sales_labels) == 1
    for reason, count in (("full", 1), ("timeout", 1), ("no_agents", 2)):
        assert delta("dispatcher_queue_overflows_total", **sales_labels, reason=reason) == count
    assert delta("dispatcher_voicemails_total", **sales_labels) == 3
    assert delta("dispatcher_voicemails_total", tenant="demo", group="support") == 1
    assert delta("dispatcher_events_total", tenant="demo", type="dequeued") == 4
    assert value(after, "dispatcher_queue_length", **sales_labels) == 0


WORKER = """
import sys
from dispatcher.sip.metrics import MeteredDecider
from dispatcher.state import StateStore, StateUnavailable

live = MeteredDecider(StateStore(sys.argv[1], "demo"))
for n in range(5):
    ctx, offer = live.start(f"call-{n}", "600", "")
    live.release(f"call-{n}")
dead = MeteredDecider(StateStore(sys.argv[2], "demo", socket_timeout=0.2, connect_timeout=0.2))
try:
    dead.start("call-x", "600", "")
except StateUnavailable:
    pass
"""


def test_worker_metrics_are_summed_over_processes(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    """Kamailio workers are processes of their own: their histogram and error counts reach
    the API through PROMETHEUS_MULTIPROC_DIR."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "REDIS_URL": redis_server.url}
    with sync_client(redis_server.url) as plain:
        plain.flushall()
    api = ApiProcess(tmp_path / "api", env={**env, "DISPATCHER_ADMIN_TOKEN": BOOTSTRAP})
    with api, client(api) as http:
        assert http.post("/v1/tenants", json=demo_doc()).status_code == 201
        dead_url = f"redis://127.0.0.1:{free_port()}/0"
        for _ in range(2):  # two worker processes
            subprocess.run(
                [sys.executable, "-c", WORKER, redis_server.url, dead_url],
                check=True,
                env={**os.environ, **env},
                timeout=60,
            )
        samples = scrape(http)
    count = value(samples, "dispatcher_decision_seconds_count", tenant="demo", step="start")
    assert count == 2 * 6  # 5 decisions and 1 failed one per worker
    assert value(samples, "dispatcher_decision_seconds_sum", tenant="demo", step="start") > 0
    assert (
        value(samples, "dispatcher_redis_errors_total", component="router", kind="unavailable") == 2
    )


def test_redis_down_is_503_and_counted(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis")
    with server:
        api = ApiProcess(
            tmp_path / "api",
            env={"REDIS_URL": server.url, "DISPATCHER_ADMIN_TOKEN": BOOTSTRAP},
        )
        with api, client(api) as http:
            assert http.post("/v1/tenants", json=demo_doc()).status_code == 201
            server.stop()
            reply = http.get("/v1/tenants/demo/groups")
            assert reply.status_code == 503 and reply.headers["retry-after"] == "5"
            assert http.get("/healthz").status_code == 503
            samples = scrape(http)
            assert value(samples, "dispatcher_redis_up") == 0
            errors = value(
                samples, "dispatcher_redis_errors_total", component="api", kind="unavailable"
            )
            assert errors >= 2
            # Redis back, empty (a restart): the library is loaded again on the next call
            server.start()
            assert http.get("/healthz").status_code == 200
            assert http.get("/v1/tenants/demo").status_code == 404
            assert http.post("/v1/tenants", json=demo_doc()).status_code == 201
