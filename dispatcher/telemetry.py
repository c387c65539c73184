"""Metrics every process of the stack records itself, and their exposition.

Two kinds of numbers end up on the admin API's `/metrics`:

- Counted where they happen: `dispatcher_redis_errors_total` (here; `component` router or
  api; `kind` unavailable — Redis did not answer in time — or error — an unexpected error
  reply) and the Kamailio workers' `dispatcher_decision_seconds`
  (`dispatcher.sip.metrics.MeteredDecider`).
- Read from Redis when scraped (`dispatcher.api.routes_metrics`): agents by state, live calls,
  queue gauges, config versions, and calls by outcome counted from the event streams. Those are
  the same for every node, so any API instance can serve them.

Kamailio's workers are separate processes, so the first kind uses prometheus_client's
multiprocess mode: with PROMETHEUS_MULTIPROC_DIR set (`make run` / `make up` set it to
.run/metrics and empty it at start), every process writes its values to files there and the
API's scrape sums them (`exposition`). The variable must be set before prometheus_client is
imported (it picks its value store at import), which the stack does by putting it in the
environment of Kamailio and the API. Without it each process keeps its own values (tests, a
Router outside the stack) and the API shows its own.

Only counters and histograms are recorded in workers: they aggregate by summing, so the files
of a worker that exited stay correct and no cleanup per pid is needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from dispatcher.state.errors import StateError, StateUnavailable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REDIS_ERRORS = Counter(
    "dispatcher_redis_errors",
    "Redis calls that failed: unavailable (no answer in time) or error (unexpected reply)",
    ["component", "kind"],
)

# The library's answers that are outcomes, not failures: a stale version, an unknown agent
# or group. Everything else a StateError carries is an unexpected error reply.
_DOMAIN_CODES = frozenset({"CONFLICT", "NOAGENT", "NOGROUP", "NOQUEUE"})


def count_redis_error(component: str, exc: BaseException) -> None:
    """Count `exc` in dispatcher_redis_errors_total if it is a Redis failure."""
    if isinstance(exc, StateUnavailable):
        REDIS_ERRORS.labels(component, "unavailable").inc()
    elif isinstance(exc, StateError) and exc.code not in _DOMAIN_CODES:
        REDIS_ERRORS.labels(component, "error").inc()


@contextmanager
def redis_errors_counted(component: str) -> Iterator[None]:
    """Count the Redis failures raised inside the block (and re-raise them)."""
    try:
        yield
    except StateError as exc:
        count_redis_error(component, exc)
        raise


def exposition() -> tuple[bytes, str]:
    """This process's metrics — in multiprocess mode every process's, summed — as the
    Prometheus text format, with its content type. Cost: O(files x metrics) in
    multiprocess mode (reads every process's file)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
