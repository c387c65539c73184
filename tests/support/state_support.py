"""Shared by the state tests: the test tenant's config and `check_invariants`."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import redis

from dispatcher.state import AVAILABLE, AgentLimits, TenantKeys
from dispatcher.state.keys import FIELD_SEPARATOR

TENANT = "acme"

# a1..a3 in g1, a2..a4 in g2: a2 and a3 are shared, so their load counts across groups.
AGENTS = (
    AgentLimits("a1", max_calls=1, status=AVAILABLE),
    AgentLimits("a2", max_calls=2, wrapup_s=0, status=AVAILABLE),
    AgentLimits("a3", max_calls=1, auto_pause_after=2, status=AVAILABLE),
    AgentLimits("a4", max_calls=3, wrapup_s=30, status=AVAILABLE),
)
GROUPS = (("g1", ("a1", "a2", "a3")), ("g2", ("a2", "a3", "a4")))

# A broken invariant: its kind (negative, resv, live, max) and what is wrong.
Problem = tuple[str, str]


def invariant_problems(client: redis.Redis, tenant: str) -> tuple[dict[str, int], list[Problem]]:
    """The state invariants on one atomic read (MULTI/EXEC): the totals, and every broken
    one as (kind, message) - kind "negative" (a counter below 0), "resv" / "live" (a counter
    that is not its entries in the reservation zset / live-call hash) or "max" (live + resv
    above max_calls, when configured: an agent removed from the config only drains). `full`
    in the totals counts the agents at their max, to show a run reached the limit it checks.
    bench/chaos.py samples it during a run; tests assert it through `check_invariants`."""
    keys = TenantKeys(tenant)
    with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.agent["live"])
        pipe.hgetall(keys.agent["resv"])
        pipe.hgetall(keys.agent["max"])
        pipe.zrange(keys.resv, 0, -1)
        pipe.hkeys(keys.live)
        live_raw, resv_raw, max_raw, reservations, live_calls = pipe.execute()
    sep = FIELD_SEPARATOR.encode()
    live = {k.decode(): int(v) for k, v in live_raw.items()}
    resv = {k.decode(): int(v) for k, v in resv_raw.items()}
    limits = {k.decode(): int(v) for k, v in max_raw.items()}
    reserved = Counter(m.rsplit(sep, 1)[1].decode() for m in reservations)
    talking = Counter(f.rsplit(sep, 1)[1].decode() for f in live_calls)
    problems: list[Problem] = []
    full = 0
    for agent in sorted(set(live) | set(resv) | set(reserved) | set(talking)):
        n_live, n_resv = live.get(agent, 0), resv.get(agent, 0)
        if n_live < 0 or n_resv < 0:
            problems.append(("negative", f"{agent}: negative counter {n_live=} {n_resv=}"))
        if n_resv != reserved[agent]:
            problems.append(("resv", f"{agent}: resv {n_resv} != {reserved[agent]} in zset"))
        if n_live != talking[agent]:
            problems.append(("live", f"{agent}: live {n_live} != {talking[agent]} live calls"))
        if agent in limits:
            if n_live + n_resv > limits[agent]:
                problems.append(
                    ("max", f"{agent}: live {n_live} + resv {n_resv} > max {limits[agent]}")
                )
            full += n_live + n_resv == limits[agent]
    totals = {
        "live": sum(live.values()),
        "resv": sum(resv.values()),
        "reservations": len(reservations),
        "live_calls": len(live_calls),
        "full": full,
    }
    return totals, problems


def check_invariants(client: redis.Redis, tenant: str) -> dict[str, int]:
    """Assert the state invariants of `invariant_problems` (per agent: counters >= 0, resv
    and live equal to their entries, live + resv <= max_calls); return the totals."""
    totals, problems = invariant_problems(client, tenant)
    assert not problems, problems[0][1]
    return totals


@contextlib.contextmanager
def imported_tenant(redis_url: str, tenant_yaml: str) -> Iterator[redis.Redis]:
    """The tenant of `tenant_yaml` imported into the Redis at `redis_url`; a plain client."""
    from dispatcher.admin.config_sync import import_tenant
    from dispatcher.config.tenant_file import parse_tenant
    from dispatcher.state import StateStore

    tenant = parse_tenant(tenant_yaml, "yaml")
    with StateStore(redis_url, tenant.id) as store:
        import_tenant(store, tenant)
    with redis.Redis.from_url(redis_url) as plain:
        yield plain
