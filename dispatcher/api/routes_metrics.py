"""`/metrics` (Prometheus text format) and `/healthz`.

`/metrics` needs the bootstrap token (it covers every tenant; Prometheus sends it with
`authorization: {credentials: ...}`). A scrape returns:

- the processes' own metrics (`dispatcher.telemetry.exposition`): decision latency histogram of
  the Kamailio workers, Redis errors of workers and API — summed over processes in
  multiprocess mode;
- read from Redis for every registered tenant, one atomic read each (`live_board`):
  `dispatcher_agents{tenant,state}` (state: on_call, ringing, paused, logged_out, wrapup,
  available), `dispatcher_live_calls{tenant,group}`, `dispatcher_queue_length{tenant,group}`
  (callers waiting in the group's queue now) and
  `dispatcher_queue_longest_wait_seconds{tenant,group}` (how long its longest-waiting caller
  has waited so far; 0 with nobody waiting), `dispatcher_config_version{tenant}`,
  `dispatcher_redis_up`;
- counted by the library as each event is appended (`{t:T}:counts`, read by `StreamCounts`):
  `dispatcher_calls_total{tenant,outcome}` (event `ended`: answered, abandoned, no_answer,
  failed, unknown), `dispatcher_offers_total{tenant,outcome}` (an agent's offer: answered,
  or the failure reason busy, noanswer, declined, error, cancelled, unreachable; expired),
  `dispatcher_queue_abandoned_total{tenant,group}` (callers who hung up while queued: event
  `dequeued` reason abandoned), `dispatcher_queue_overflows_total{tenant,group,reason}`
  (callers sent to the group's overflow target: `full` and `no_agents` on joining, event
  `overflowed`; `timeout` and `no_agents` while waiting, event `dequeued`),
  `dispatcher_voicemails_total{tenant,group}` (messages recorded, event `voicemail`),
  `dispatcher_events_total{tenant,type}`. Counted inside the same FUNCTION that appends the
  event, so they are exact and the same whichever API process is scraped, and an API
  restart changes nothing (they count from the tenant's creation; a Redis that lost its
  data starts them again, a counter reset rate() handles).

Cost of a scrape: per tenant 2 round trips: the live read (O(agents + live calls + queued
callers) in Redis) and the counters (HGETALL, O(kinds of events)).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dispatcher.state.errors import StateError
from dispatcher.state.live import ACTIVITIES
from dispatcher.telemetry import exposition

from . import config_io
from .async_store import AsyncRedis, AsyncStateStore
from .auth import SuperAdmin
from .live_board import board_view

log = logging.getLogger("dispatcher.api")

router = APIRouter(tags=["operations"])


class StreamCounts:
    """Every tenant's event counters as Redis keeps them (`{t:T}:counts`, counted by the
    library as each event is appended): each API process behind one Prometheus reports the
    same numbers, from the tenant's creation on, whatever it was started or restarted.
    `load` reads one tenant's (1 round trip, HGETALL)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.offers: Counter[tuple[str, str]] = Counter()
        self.abandoned: Counter[tuple[str, str]] = Counter()
        self.overflows: Counter[tuple[str, str, str]] = Counter()
        self.voicemails: Counter[tuple[str, str]] = Counter()
        self.events: Counter[tuple[str, str]] = Counter()

    async def prime(self, redis: AsyncRedis) -> None:
        """Nothing to prime: the counts live in Redis (kept for the app's start-up hook)."""

    async def load(self, store: AsyncStateStore) -> None:
        """The tenant's counters as Redis has them now."""
        tenant = store.tenant
        for counter in (
            self.calls,
            self.offers,
            self.abandoned,
            self.overflows,
            self.voicemails,
            self.events,
        ):
            for key in [k for k in counter if k[0] == tenant]:
                del counter[key]
        for field, value in (await store.counts()).items():
            kind, _, rest = field.partition("|")
            number = int(value)
            if kind == "events":
                self.events[tenant, rest] = number
            elif kind == "calls":
                self.calls[tenant, rest] = number
            elif kind == "offers":
                self.offers[tenant, rest] = number
            elif kind == "abandoned":
                self.abandoned[tenant, rest] = number
            elif kind == "voicemails":
                self.voicemails[tenant, rest] = number
            elif kind == "overflows":
                group, _, reason = rest.rpartition("|")
                self.overflows[tenant, group, reason] = number


class _Families:
    """A collector that hands out families built beforehand (the reads are async)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def _redis_families(redis: AsyncRedis, counts: StreamCounts) -> list[Metric]:
    up = GaugeMetricFamily("dispatcher_redis_up", "1 when this scrape could read Redis")
    agents = GaugeMetricFamily(
        "dispatcher_agents", "Agents by what they are doing now", labels=["tenant", "state"]
    )
    live_calls = GaugeMetricFamily(
        "dispatcher_live_calls", "Answered calls in progress", labels=["tenant", "group"]
    )
    queue_length = GaugeMetricFamily(
        "dispatcher_queue_length",
        "Callers waiting in the group's queue",
        labels=["tenant", "group"],
    )
    longest_wait = GaugeMetricFamily(
        "dispatcher_queue_longest_wait_seconds",
        "Wait of the longest-waiting caller in the group's queue",
        labels=["tenant", "group"],
    )
    version = GaugeMetricFamily(
        "dispatcher_config_version", "Config version in Redis", labels=["tenant"]
    )
    try:
        for tenant in await redis.registered_tenants():
            store = redis.tenant(tenant)
            board = await store.board()
            await counts.load(store)
            if board.live.doc is None:
                continue
            view = board_view(tenant, board, config_io.parsed(tenant, board.live.doc))
            version.add_metric([tenant], view.version)
            by_state = Counter(agent.activity for agent in view.agents)
            for state in ACTIVITIES:
                agents.add_metric([tenant, state], by_state[state])
            for group in view.groups:
                live_calls.add_metric([tenant, group.id], group.live_calls)
                queue_length.add_metric([tenant, group.id], group.queue_length)
                longest_wait.add_metric([tenant, group.id], group.longest_wait_s)
    except StateError as exc:
        log.warning("metrics: Redis read failed: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    calls = CounterMetricFamily(
        "dispatcher_calls", "Calls by how they ended (event ended)", labels=["tenant", "outcome"]
    )
    offers = CounterMetricFamily(
        "dispatcher_offers", "Offers to agents by outcome", labels=["tenant", "outcome"]
    )
    abandoned = CounterMetricFamily(
        "dispatcher_queue_abandoned",
        "Callers who hung up while waiting in the group's queue",
        labels=["tenant", "group"],
    )
    overflows = CounterMetricFamily(
        "dispatcher_queue_overflows",
        "Callers sent to the overflow target instead of waiting on (full, no_agents, timeout)",
        labels=["tenant", "group", "reason"],
    )
    voicemails = CounterMetricFamily(
        "dispatcher_voicemails", "Voicemail messages recorded", labels=["tenant", "group"]
    )
    events = CounterMetricFamily(
        "dispatcher_events", "Events appended to the tenant's stream", labels=["tenant", "type"]
    )
    counters: list[tuple[CounterMetricFamily, Counter[Any]]] = [
        (calls, counts.calls),
        (offers, counts.offers),
        (abandoned, counts.abandoned),
        (overflows, counts.overflows),
        (voicemails, counts.voicemails),
        (events, counts.events),
    ]
    for family, counter in counters:
        for labels, value in sorted(counter.items()):
            family.add_metric(list(labels), value)
    return [
        up,
        agents,
        live_calls,
        queue_length,
        longest_wait,
        version,
        *(family for family, _ in counters),
    ]


@router.get(
    "/metrics",
    summary="Prometheus metrics (bootstrap token)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request, _: SuperAdmin) -> Response:
    own, content_type = exposition()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        _Families(await _redis_families(request.app.state.redis, request.app.state.stream_counts))
    )
    return Response(own + generate_latest(registry), media_type=content_type)


@router.get("/healthz", summary="Liveness: the API answers and reaches Redis")
async def healthz(request: Request) -> dict[str, str]:
    """200 when Redis answers a PING, 503 (StateUnavailable) when not. No token needed."""
    redis: AsyncRedis = request.app.state.redis
    await redis.ping()
    return {"status": "ok"}
