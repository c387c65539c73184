"""The many-tenants side of bench/sip_load.py: what the third stack's Redis holds, how it is
loaded, and the files SIPp reads to register the phones and to dial the tenants' numbers.

Tenant i (1-based) is `t00001`..: 20 agents a01.. (AOR = the id, max_calls as the one-tenant
stack's), 5 least_busy groups g1..g5 of all its agents (sticky off, as the one-tenant stack's
one group: the same claim per call), the SIP domain `t00001.sipload.test` and one DID per group,
`+49301<i:05d><g>`, whose inbound rule rings that group: a trunk delivers the call by DID, the
carrier's way in. The tenants that take traffic (`active`, spread evenly over all of them)
get a SIP password per agent, set as HA1s through the state API (`StateStore.credential_put`
with `credential_record`, as `dispatcher credential set` does).

Loading goes through `import_tenant` (validation by the config model, names, config), in
several processes; 10,000 tenants take about 20 s on the 2-core development machine.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.model import Tenant
from dispatcher.state import StateStore
from dispatcher.state.credentials import credential_record

GROUPS = 5
DOMAIN = "sipload.test"
EXTENSION_BASE = 800  # groups g1..g5 are 801..805: not dialled (the trunk dials DIDs)


def tenant_id(index: int) -> str:
    return f"t{index:05d}"


def tenant_domain(index: int) -> str:
    return f"{tenant_id(index)}.{DOMAIN}"


def tenant_did(index: int, group: int) -> str:
    return f"+49301{index:05d}{group}"


def agent_ids(agents: int) -> list[str]:
    return [f"a{i:02d}" for i in range(1, agents + 1)]


def password(tenant: str, agent: str) -> str:
    """The SIP password of `agent` of `tenant` (a bench: derived, not secret)."""
    return hashlib.sha256(f"sipload/{tenant}/{agent}".encode()).hexdigest()[:16]


def agents_doc(agents: int, max_calls: int) -> list[dict[str, Any]]:
    """Agents a01.. registered as their ids, available, `max_calls` each."""
    return [
        {"id": a, "name": a.upper(), "targets": {"aor": a}, "state": "available",
         "max_calls": max_calls}
        for a in agent_ids(agents)
    ]  # fmt: skip


def least_busy_group(gid: str, extension: str, name: str, agents: int) -> dict[str, Any]:
    """A least_busy group of every agent, sticky off: the same in both stacks, so a call's
    claim is the same work in both."""
    return {
        "id": gid,
        "extension": extension,
        "name": name,
        "strategy": "least_busy",
        "sticky": False,
        "ring_timeout": 20,
        "members": [{"agent": a} for a in agent_ids(agents)],
        "no_answer": {"kind": "reply", "code": 480},
    }


def tenant_doc(index: int, agents: int, max_calls: int) -> dict[str, Any]:
    """Tenant `index`: its agents, GROUPS least_busy groups of all of them, its domain, and
    one DID per group with an inbound rule to it."""
    return {
        "id": tenant_id(index),
        "name": f"Tenant {index}",
        "domains": [tenant_domain(index)],
        "agents": agents_doc(agents, max_calls),
        "groups": [
            least_busy_group(f"g{g}", str(EXTENSION_BASE + g), f"Group {g}", agents)
            for g in range(1, GROUPS + 1)
        ],
        "inbound": [
            {"did": tenant_did(index, g), "target": {"kind": "group", "group": f"g{g}"}}
            for g in range(1, GROUPS + 1)
        ],
    }


def active_indexes(count: int, active: int) -> list[int]:
    """The `active` tenants that take traffic, spread evenly over 1..count."""
    active = min(active, count)
    step = count // active
    return [1 + k * step for k in range(active)]


def _load_slice(args: tuple[str, Sequence[int], int, int]) -> int:
    url, indexes, agents, max_calls = args
    with StateStore(url, tenant_id(indexes[0])) as store:
        for index in indexes:
            tenant = Tenant.model_validate(tenant_doc(index, agents, max_calls))
            import_tenant(store.for_tenant(tenant.id), tenant)
    return len(indexes)


def load_tenants(url: str, count: int, agents: int, max_calls: int, processes: int = 2) -> float:
    """Import tenants 1..count into the Redis at `url` in `processes` processes (forked);
    the seconds it took."""
    started = time.monotonic()
    indexes = list(range(1, count + 1))
    slices = [(url, indexes[p::processes], agents, max_calls) for p in range(processes)]
    slices = [s for s in slices if s[1]]
    if len(slices) == 1:
        _load_slice(slices[0])
    else:
        with multiprocessing.get_context("fork").Pool(len(slices)) as pool:
            if sum(pool.map(_load_slice, slices)) != count:
                raise RuntimeError("not every tenant was loaded")
    return time.monotonic() - started


def set_credentials(url: str, indexes: Sequence[int], agents: int) -> None:
    """Every agent of the tenants at `indexes` gets its SIP password (HA1s only)."""
    with StateStore(url, tenant_id(indexes[0])) as store:
        for index in indexes:
            tenant = store.for_tenant(tenant_id(index))
            for agent in agent_ids(agents):
                record = credential_record(agent, tenant.tenant, password(tenant.tenant, agent))
                tenant.credential_put(agent, record)


def registrations_file(path: Path, indexes: Sequence[int], phone_ports: Sequence[int]) -> int:
    """SIPp's injection file for bench/scenarios/register_auth.xml: one line per agent of
    each tenant at `indexes`, agent aNN's contact at the NN-th phone; the number of lines."""
    lines = ["SEQUENTIAL"]
    for index in indexes:
        tenant = tenant_id(index)
        for agent, port in zip(agent_ids(len(phone_ports)), phone_ports, strict=True):
            auth = f"[authentication username={agent} password={password(tenant, agent)}]"
            lines.append(f"{agent};{tenant_domain(index)};{auth};{port}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def dids_file(path: Path, indexes: Sequence[int]) -> int:
    """SIPp's injection file of the DIDs the trunk dials, one per line, each tenant in turn
    (tenant 1 group 1, tenant 2 group 1, ...): consecutive calls reach different tenants;
    the number of DIDs."""
    lines = ["SEQUENTIAL"]
    lines += [tenant_did(index, g) for g in range(1, GROUPS + 1) for index in indexes]
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1
