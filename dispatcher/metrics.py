"""Metrics counted inside the dispatcher's processes, with prometheus_client.

Two kinds of numbers end up on the admin API's `/metrics`:

- Counted where they happen, here: `dispatcher_decision_seconds` (histogram: how long a routing
  decision takes in the Kamailio worker, config lookup, plan and claims included; `step` is
  `start` for a call's first decision at a group, `next` for the wave after a failed one) and
  `dispatcher_redis_errors_total` (`component` router or api; `kind` unavailable — Redis did
  not answer in time — or error — an unexpected error reply).
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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from dispatcher.decision import Decider
from dispatcher.state.errors import StateError, StateUnavailable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DECISION_SECONDS = Histogram(
    "dispatcher_decision_seconds",
    "Time of one routing decision in a Kamailio worker: config lookup, plan and claims",
    ["tenant", "step"],
    # One FCALL on loopback is ~0.2-1 ms; the top buckets catch Redis timeouts (500 ms).
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REDIS_ERRORS = Counter(
    "dispatcher_redis_errors",
    "Redis calls that failed: unavailable (no answer in time) or error (unexpected reply)",
    ["component", "kind"],
)

# The library's answers that are outcomes, not failures: a stale version, an unknown agent
# or group. Everything else a StateError carries is an unexpected error reply.
_DOMAIN_CODES = frozenset({"CONFLICT", "NOAGENT", "NOGROUP"})


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


class MeteredDecider(Decider):
    """A `Decider` that records each decision's time and its Redis failures.

    `start` and `start_group` call `next` internally; only the outermost call of a decision
    is timed. Cost: two clock reads and one histogram update per decision (~2 µs).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timing = False

    def _timed(self, step: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._timing:
            return call(*args, **kwargs)
        self._timing = True
        started = time.perf_counter()
        try:
            with redis_errors_counted("router"):
                return call(*args, **kwargs)
        finally:
            self._timing = False
            DECISION_SECONDS.labels(self.store.tenant, step).observe(time.perf_counter() - started)

    def start(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("start", super().start, *args, **kwargs)

    def start_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("start", super().start_group, *args, **kwargs)

    def next(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("next", super().next, *args, **kwargs)

    def answered(self, *args: Any, **kwargs: Any) -> Any:
        with redis_errors_counted("router"):
            return super().answered(*args, **kwargs)

    def failed(self, *args: Any, **kwargs: Any) -> Any:
        with redis_errors_counted("router"):
            return super().failed(*args, **kwargs)

    def release(self, *args: Any, **kwargs: Any) -> Any:
        with redis_errors_counted("router"):
            return super().release(*args, **kwargs)

    def answered_later(self, *args: Any, **kwargs: Any) -> Any:
        with redis_errors_counted("router"):
            return super().answered_later(*args, **kwargs)

    def release_later(self, *args: Any, **kwargs: Any) -> Any:
        with redis_errors_counted("router"):
            return super().release_later(*args, **kwargs)


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
