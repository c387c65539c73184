"""A worker's calls through Decider and StateStore (real Redis), then their report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.tenant_file import parse_tenant
from dispatcher.reports.archive import Archiver
from dispatcher.reports.events import FOLLOW_MS, read_events
from dispatcher.reports.figures import Period, compute
from dispatcher.sip.decision import Decider, Exhausted, Offer
from dispatcher.state import AVAILABLE, AgentLimits, StateStore
from dispatcher.state.connect import sync_client
from dispatcher.state.messages import Voicemail

pytestmark = pytest.mark.redis

TENANT_YAML = """
id: acme
name: Acme
agents:
  - {id: a1, name: A1, targets: {aor: a1}, state: available}
  - {id: a2, name: A2, targets: {aor: a2}, state: available}
groups:
  - id: sales
    extension: "600"
    name: Sales
    strategy: ring_all
    sticky: false
    members: [{agent: a1}, {agent: a2}]
    no_answer: {kind: reply, code: 480}
"""


@pytest.fixture
def store(redis_url: str) -> Iterator[StateStore]:
    with StateStore(redis_url, "acme") as state:
        import_tenant(state, parse_tenant(TENANT_YAML, "yaml"))
        yield state


def offer(decider: Decider, call: str):
    started = decider.start(call, "600", "+4930")
    assert started is not None
    ctx, first = started
    assert first == Offer("sales", ("a1", "a2"), 20, False)
    return ctx


def redis_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_report_of_calls_with_known_outcomes(
    store: StateStore, redis_url: str, tmp_path: Path
) -> None:
    client = sync_client(redis_url, decode_responses=True)
    start = redis_ms(client)
    decider = Decider(store)

    answered = offer(decider, "e1")  # a1 answers after 50 ms, talks 30 ms
    time.sleep(0.05)
    decider.answered(answered, "a1")
    time.sleep(0.03)
    decider.release("e1", outcome="answered")

    nobody = offer(decider, "e2")  # a1 busy, a2 no answer: the no-answer target
    decider.failed(nobody, "a1", "busy")
    decider.failed(nobody, "a2", "noanswer")
    assert isinstance(decider.next(nobody), Exhausted)
    decider.release("e2", outcome="no_answer")

    gave_up = offer(decider, "e3")  # the caller cancels at once
    decider.failed(gave_up, "a1", "cancelled")
    decider.failed(gave_up, "a2", "cancelled")
    decider.release("e3", outcome="abandoned")
    decider.release("e3", outcome="abandoned")  # dialog:failed after a request-route release

    quick = offer(decider, "e4")  # a2 answers after 20 ms
    time.sleep(0.02)
    decider.answered(quick, "a2")
    decider.release("e4", outcome="answered")

    offer(decider, "e5")  # still ringing

    end = redis_ms(client) + 1
    period = Period(start, end, "hour")

    def report(archive: Path | None = None) -> dict:
        events = read_events(client, "acme", start, end + FOLLOW_MS, archive)
        return compute(events, period, tenant="acme").as_dict()

    figures = report()
    [sales] = figures["groups"]
    total = sales["total"]
    assert {k: total[k] for k in ("offered", "answered", "abandoned", "unanswered", "pending")} == {
        "offered": 5,
        "answered": 2,
        "abandoned": 1,
        "unanswered": 1,
        "pending": 1,
    }
    # both answers within 20 s; e3 gave up within the 5 s grace: 2 / (5 - 1)
    assert (total["answered_in_sl"], total["short_abandoned"]) == (2, 1)
    assert total["service_level"] == 0.5
    assert 0.02 <= total["tta_p50_s"] < 0.05 <= total["tta_p90_s"] < 1
    assert total["handled"] == 2 and 0 <= total["aht_s"] < 1
    agents = {a["agent"]: a["total"] for a in figures["agents"]}
    assert {a: (t["offers"], t["answered"], t["missed"]) for a, t in agents.items()} == {
        "a1": (5, 1, 1),
        "a2": (5, 1, 1),
    }
    assert (agents["a1"]["missed_busy"], agents["a2"]["missed_noanswer"]) == (1, 1)
    assert 0.05 <= agents["a1"]["tta_p50_s"] < 1 and agents["a1"]["handled"] == 1
    ended = [e for e in client.xrange(store.keys.events) if e[1]["type"] == "ended"]
    assert [(f["call"], f["outcome"]) for _, f in ended] == [
        ("e1", "answered"),
        ("e2", "no_answer"),
        ("e3", "abandoned"),
        ("e4", "answered"),
    ]

    Archiver(client, "acme", tmp_path, keep_hours=0).run()
    assert client.xlen(store.keys.events) == 0
    assert report(tmp_path) == figures
    client.close()


@pytest.fixture
def queue_store(redis_url: str) -> Iterator[StateStore]:
    """Group hot: agent a1 (one line, no wrap-up) and a queue of 2."""
    with StateStore(redis_url, "acme") as state:
        state.put_config(b"{}", [AgentLimits("a1", 1, status=AVAILABLE)], [("hot", ["a1"], 2)])
        yield state


def test_report_of_queued_calls_from_the_librarys_events(
    queue_store: StateStore, redis_url: str
) -> None:
    """The queue events as disp_queue_join/leave/keep, disp_answered and disp_voicemail_put
    write them: x1 keeps a1 busy, w1 waits and is answered, w2 hangs up in the queue, w3
    finds it full; one announcement to w1, one voicemail."""
    store, node, lease = queue_store, "node-1", 10_000
    client = sync_client(redis_url, decode_responses=True)
    start = redis_ms(client)

    def arrive(call: str) -> None:
        store.claim(call, "hot", "+49" + call, ["a1"], 20_000, arrival=True)

    arrive("x1")
    assert store.answered("x1", "hot", "a1") == "ok"
    for call, status in (("w1", "queued"), ("w2", "queued"), ("w3", "full")):
        arrive(call)
        assert store.queue_join(call, "hot", "+49" + call, 0, node, lease).status == status
    store.release("w3", outcome="no_answer")
    store.queue_keep(node, ["w1", "w2"], lease, announced=[("w1", 1, 0)])
    time.sleep(0.05)
    assert store.queue_leave("w2", "abandoned") is not None
    store.release("w2", outcome="abandoned")
    store.release("x1", outcome="answered")
    assert store.claim("w1", "hot", "+49w1", ["a1"], 20_000).claimed == ("a1",)
    time.sleep(0.02)
    assert store.answered("w1", "hot", "a1") == "ok"
    store.release("w1", outcome="answered")
    now = redis_ms(client)
    store.voicemail_put(Voicemail("m1", "hot", "+49w4", now, 4000, "/var/vm/m1.wav", node))
    end = redis_ms(client) + 1

    events = read_events(client, "acme", start, end + FOLLOW_MS)
    report = compute(events, Period(start, end, "hour"), tenant="acme")
    [hot] = report.groups
    t = hot.total
    counts = ("offered", "answered", "abandoned", "unanswered", "queued", "queue_answered")
    assert {k: t[k] for k in counts} == {
        "offered": 4,
        "answered": 2,
        "abandoned": 1,
        "unanswered": 1,
        "queued": 2,
        "queue_answered": 1,
    }
    assert (t["queue_abandoned"], t["queue_waiting"]) == (1, 0)
    assert (t["overflowed"], t["overflowed_full"], t["voicemails"]) == (1, 1, 1)
    waits = [e for e in client.xrange(store.keys.events) if e[1]["type"] == "dequeued"]
    wait_s = {f["call"]: int(f["wait_ms"]) / 1000 for _, f in waits}
    assert wait_s["w1"] >= 0.07 and wait_s["w2"] >= 0.05
    assert t["queue_wait_max_s"] == wait_s["w1"]
    assert t["queue_abandoned_wait_max_s"] == wait_s["w2"]
    # w1 answered from its arrival, before it joined: its time to answer holds its wait
    assert t["tta_p99_s"] is not None and t["tta_p99_s"] >= wait_s["w1"]
    # told 0 s, answered some 70 ms later
    assert t["ewt_announcements"] == 1 and 0.02 <= t["ewt_mae_s"] < 1  # type: ignore[operator]
    assert report.tenant_total is not None and report.tenant_total.total == t
    client.close()
