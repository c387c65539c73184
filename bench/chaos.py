"""Chaos benchmark: calls through two Kamailio nodes on a Sentinel-watched Redis while
things break, one fault after another; what each fault cost, and what is left after.

The stack, all on 127.0.0.1:
- Redis: a master, one replica and three Sentinels (dispatcher.run.procs.RedisSentinelSet:
  down-after 1 s as the tests use, or `--down-after`; failover timeout 3 s); every client
  finds the master through the Sentinels (REDIS_SENTINELS, REDIS_SENTINEL_MASTER).
- Two Kamailio nodes (kamailio.cfg + the KEMI script, --children SIP workers each) on one
  DMQ bus (each seeded with the other's address): registrations are shared over DMQ, in the
  nodes' memory only (db_redis follows no Sentinel). Each is started with
  DLG_KA_INTERVAL=0 (SIPp answers no in-dialog OPTIONS), DLG_TIMEOUT=--dlg-timeout
  (60 s: a dialog whose BYE never comes ends within the run) and DLG_RECONCILE_S=
  --reconcile (5 s instead of 10: a lost release heals within 10 s, so the drift check
  waits less; the backstop keeps its 300 s margin, so it never acts within a run's check).
- The agents: 4 "tight" agents with max_calls 2..5, always at their limit under load
  (where an agent over its max would show first), and enough agents with max_calls 100
  for twice the calls the run holds at once. Their phones are --phones SIPp UAS processes
  (tests/sip/scenarios/uas_answer.xml; an agent's AOR points at one of them), each
  registered ONCE, at the first node: the second reaches them through DMQ.
- Two groups over all agents: 800 (least busy), called through the first node, and 801
  (round robin), through the second; an agent is busy across both.
- Callers: per phase one SIPp UAC per node (bench/scenarios/uac_chaos.xml), each placing
  half of --rate calls a second, each call held --hold-ms; every call logs when it started
  and whether it ended with its BYE answered (-trace_logs), and no wait lasts over
  -recv_timeout 10 s. A phase's UACs start when the previous phase's have placed their
  calls, so the load never pauses.
- The admin API (uvicorn, the same Sentinels) and a writer thread that PUTs an agent with
  a new name (max_calls and phone unchanged) --writes times a second through it, all run
  long, recording each write acknowledged (200 and the new config version) or failed.
- A sampler thread reads the invariants every 200 ms on one atomic read
  (tests/support/state_support.invariant_problems: per agent live + resv <= max_calls, and
  the counters equal to their entries in {t:T}:live and {t:T}:resv).

The faults (--faults, in this order), each in a phase of its own: --before seconds of
calls, the fault, --after seconds of calls:
- redis_master_kill: kill -9 of the master; the Sentinels promote the replica; once they
  have, the dead server starts again (empty) and they make it the new replica.
- redis_sigstop: SIGSTOP of the master for --stall seconds (3), then SIGCONT. With
  down-after 1 s the Sentinels fail it over meanwhile (reported as `failed_over`), and the
  old master comes back to find itself demoted to a replica.
- kamailio_kill: kill -9 of every process of the first node (the phones registered there),
  started again --restart-after seconds later (2) with the second node as its DMQ seed;
  its calls die with it (their callers' BYEs go unanswered), and its callers' new calls
  fail until it is back. `restart_s` is kill to answering again, `registrations_s` kill to
  holding every phone again (learnt from the peer).
- api_kill: kill -9 of the API process while the writer writes, started again
  --restart-after seconds later; calls are not expected to notice.

Per fault: `failed_calls`, the phase's calls (both nodes) that did not end with their BYE
answered - an error reply (503 while Redis fails over, 480 when no agent was free), a
timeout, or never placed; `recovery_s`, seconds from the fault to the start of the first
successful call after the last call that failed (0 when no call started after the fault
failed; null when calls never succeeded again within the phase); `failed_started_before`,
the failed calls that started before the fault (those it caught up or ringing, and any
failure of the baseline: `failures_by_second` counts the failed calls by start, in whole
seconds from the fault); `failed_writes` and `write_recovery_s` for the API writes (the
same rule), and the fault's own timings.

After the faults, once every caller is done: the nodes' dialogs are waited for (both at
0, at most the dialog timeout), then the state is read every second until it is settled or
2 x DLG_RECONCILE_S + the heartbeats' 5 s + 10 s have passed - the reconciliation and the
heartbeats heal what the faults left (a release Redis never got, the dead node's calls).
Reservations that outlived their deadline are swept first, as the next claim would
(`reservations_swept`). `drift` = for every agent, |live counter - its calls that really
exist| + its reservation counter, plus the entries of {t:T}:live and {t:T}:resv without
a call behind them: after the run no call exists, so every one of them counts.
`max_calls_exceeded` = (sample, agent) pairs with live + resv > max_calls over the run.
`config_lost` = an acknowledged write is not in the final config: the versions of the
acknowledged writes must rise strictly (a version seen again means the write before it
was lost, e.g. by a failover), every agent must carry the name of its last acknowledged
write (or of a later one whose reply was lost), and the tenant, its agents and groups
must all be there. A write the master acknowledged while the Sentinels failed it over
(from a redis_* fault until the set was whole again) may be lost with asynchronous
replication: such losses are counted apart (`checks.config.lost_in_failover`), not in
`config_lost`.

--soak-calls N then puts N calls through the same stack without faults, at --soak-rate
(split over both nodes) and --soak-hold-ms, and checks the drift the same way:
"soak": {"calls", "drift", "seconds", "failed_calls", ...}. --faults none runs the soak
alone.

CPU: every phase records each core's busy share and the cores used by processes that are
not this benchmark's (/proc/stat minus the CPU of this process tree from /proc/<pid>/stat):
the machine's noise. Nothing is pinned.

    .venv/bin/python bench/chaos.py [--json] [--quick] [--rate 200] [--hold-ms 3000]
        [--before 15] [--after 35] [--faults redis_master_kill,redis_sigstop,...]
        [--soak-calls N] [--soak-rate 300] [--results DIR] [--keep]

Writes bench/results/chaos.json (--quick: chaos-quick.json) and prints a table, or the
JSON with --json. Bounded: every SIPp run has a timeout and a recv timeout, every wait a
deadline; the default run takes about 4 minutes, --quick about 40 s.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PHONE_XML = ROOT / "tests" / "sip" / "scenarios" / "uas_answer.xml"
REGISTER_XML = ROOT / "tests" / "sip" / "scenarios" / "register.xml"
CALLER_XML = ROOT / "bench" / "scenarios" / "uac_chaos.xml"

# Run as a script from a checkout, where the package is not installed.
for path in (ROOT, ROOT / "bench", ROOT / "tests" / "support"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import httpx  # noqa: E402
import redis  # noqa: E402
from sip_load import BenchKamailio, _git_revision, core_busy, core_times  # noqa: E402
from state_support import invariant_problems  # noqa: E402

from dispatcher.admin.config_sync import import_tenant  # noqa: E402
from dispatcher.config.tenant_file import parse_tenant  # noqa: E402
from dispatcher.run.procs import ApiProcess, ProcessError, RedisSentinelSet  # noqa: E402
from dispatcher.run.sipprocs import (  # noqa: E402
    KamailioProcess,
    SippProcess,
    free_sip_port,
    run_sipp,
)
from dispatcher.state import StateStore, TenantKeys  # noqa: E402
from dispatcher.state.connect import close_client, sync_client  # noqa: E402
from dispatcher.state.keys import FIELD_SEPARATOR  # noqa: E402

TENANT = "chaos"
FAULTS = ("redis_master_kill", "redis_sigstop", "kamailio_kill", "api_kill")
GROUPS = (("lb", "800", "least_busy"), ("rr", "801", "round_robin"))  # node i calls GROUPS[i]
TIGHT_MAX = (2, 3, 4, 5)  # the tight agents' max_calls
BIG_MAX = 100
# Sentinel's failover timeout (the tests'); down-after is a setting (the tests' 1000 ms).
FAILOVER_TIMEOUT_MS = 3000
NODE_DEAD_S = 5  # dispatcher.sip.keeper.NODE_DEAD_MS: a node silent this long is dead
REGISTER_EXPIRES_S = 3600  # kamailio.cfg's registrar max_expires
REREGISTER_S = 1800  # a long soak refreshes the phones' registrations, as phones do
SAMPLE_S = 0.2
# A call whose 200 took longer than this was held up by a fault (normal: tens of ms).
SLOW_SETUP_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
_media_ports = itertools.count()


@dataclass(frozen=True)
class Settings:
    """What one run does; `quick()` is the smoke test's tiny run."""

    rate: float = 200.0  # calls per second, half through each node
    hold_ms: int = 3000
    before_s: float = 15.0  # calls before each fault
    after_s: float = 35.0  # calls after it
    faults: tuple[str, ...] = FAULTS
    stall_s: float = 3.0  # redis_sigstop
    down_after_ms: int = 1000  # a master silent this long is down to the Sentinels
    restart_after_s: float = 2.0  # kamailio_kill, api_kill
    phones: int = 6
    ring_timeout_s: int = 10  # the groups': a reservation nobody answered lapses after it
    children: int = 4  # SIP workers per node
    shm_mb: int = 512
    pkg_mb: int = 32
    reconcile_s: int = 5  # DLG_RECONCILE_S
    dlg_timeout_s: int = 60  # DLG_TIMEOUT
    recv_timeout_s: float = 10.0  # the callers' -recv_timeout
    writes_per_s: float = 5.0
    warmup_s: float = 5.0
    soak_calls: int = 0
    soak_rate: float = 300.0
    soak_hold_ms: int = 1000
    keep: bool = False  # keep the work folder (logs, SIPp traces)

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            rate=10.0,
            hold_ms=1000,
            before_s=2.0,
            after_s=7.0,
            faults=("redis_sigstop", "kamailio_kill"),
            restart_after_s=1.0,
            phones=2,
            ring_timeout_s=3,
            children=2,
            shm_mb=128,
            reconcile_s=2,
            dlg_timeout_s=20,
            recv_timeout_s=5.0,
            writes_per_s=2.0,
            warmup_s=1.0,
        )

    @property
    def phase_s(self) -> float:
        return self.before_s + self.after_s

    def big_agents(self) -> int:
        """Agents of max_calls 100 for twice the calls held at once (chaos or soak)."""
        held = max(
            self.rate * (self.hold_ms / 1000 + 0.5),
            self.soak_rate * (self.soak_hold_ms / 1000 + 0.5) if self.soak_calls else 0,
        )
        return max(2, math.ceil(2 * held / BIG_MAX))


# -- the tenant -----------------------------------------------------------------------------


def agent_doc(agent: str, max_calls: int, name: str | None = None) -> dict[str, Any]:
    return {
        "id": agent,
        "name": name or agent.upper(),
        "targets": {"aor": agent},
        "state": "available",
        "max_calls": max_calls,
    }


def agent_limits(settings: Settings) -> dict[str, int]:
    """Agent id -> max_calls: the tight agents t1.. and the big ones b01.."""
    tight = {f"t{i}": m for i, m in enumerate(TIGHT_MAX, 1)}
    big = {f"b{i:02d}": BIG_MAX for i in range(1, settings.big_agents() + 1)}
    return tight | big


def tenant_doc(settings: Settings) -> dict[str, Any]:
    limits = agent_limits(settings)
    return {
        "id": TENANT,
        "name": "Chaos",
        # a soak of a million calls appends ~5 events each: keep the stream's memory bounded
        "events_maxlen": 200_000,
        "agents": [agent_doc(a, m) for a, m in limits.items()],
        "groups": [
            {
                "id": gid,
                "extension": extension,
                "name": gid.upper(),
                "strategy": strategy,
                "sticky": False,
                "ring_timeout": settings.ring_timeout_s,
                "members": [{"agent": a} for a in limits],
                "no_answer": {"kind": "reply", "code": 480},
            }
            for gid, extension, strategy in GROUPS
        ],
    }


# -- CPU from /proc -------------------------------------------------------------------------


def tree_cpu_ms() -> float:
    """utime + stime of this process, its reaped children and every live descendant."""
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) * 1000 / CLK_TCK
    me, total = os.getpid(), 0.0
    for pid in cpu:
        ancestor = parent.get(pid)
        while ancestor not in (None, 0, 1, me):
            ancestor = parent.get(ancestor)
        if ancestor == me:
            total += cpu[pid]
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # this one, reaped ones
        usage = resource.getrusage(who)
        total += (usage.ru_utime + usage.ru_stime) * 1000
    return total


@dataclass
class CpuWindow:
    """Each core's busy share and the cores other processes used, over a window."""

    cores: dict[str, tuple[int, int]] = field(default_factory=core_times)
    ours_ms: float = field(default_factory=tree_cpu_ms)
    started: float = field(default_factory=time.monotonic)

    def figures(self) -> dict[str, Any]:
        cores, ours_ms, window = core_times(), tree_cpu_ms(), time.monotonic() - self.started
        busy_ms = sum(b1 - self.cores[c][0] for c, (b1, _) in cores.items()) * 1000 / CLK_TCK
        other = max(0.0, busy_ms - (ours_ms - self.ours_ms)) / 1000 / window
        return {
            "core_busy": core_busy(self.cores, cores),
            "ours_cores": round((ours_ms - self.ours_ms) / 1000 / window, 2),
            "other_cores": round(other, 2),
        }


# -- the admin writes and the invariant samples (threads) -----------------------------------


class Loop:
    """A daemon thread running `_run` until `stop`; `_stop` is its stop event."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop and join (harmless if never started or stopped already)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)


@dataclass(frozen=True, slots=True)
class Write:
    """One PUT of an agent: when it was sent, its number, agent and name; the config
    version of its 200 (None: it failed - 503, refused, timed out)."""

    at: float
    number: int
    agent: str
    name: str
    version: int | None


class Writer(Loop):
    """A steady stream of admin writes through the API, in a thread: every 1/rate s the next
    agent (in turn) is PUT with a new name, its max_calls and phone unchanged."""

    def __init__(self, url: str, token: str, limits: dict[str, int], rate: float) -> None:
        super().__init__("writer")
        self.url, self.token, self.limits, self.every_s = url, token, limits, 1 / rate
        self.writes: list[Write] = []

    def _run(self) -> None:
        agents = list(self.limits)
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=2.0) as http:
            for number in itertools.count(1):
                if self._stop.wait(self.every_s):
                    return
                agent = agents[number % len(agents)]
                name = f"{agent.upper()} w{number}"
                at, version = time.time(), None
                with contextlib.suppress(httpx.HTTPError):
                    reply = http.put(
                        f"/v1/tenants/{TENANT}/agents/{agent}",
                        json=agent_doc(agent, self.limits[agent], name),
                    )
                    if reply.status_code == 200:
                        version = int(reply.json()["version"])
                self.writes.append(Write(at, number, agent, name, version))

    def between(self, start: float, end: float) -> list[Write]:
        return [w for w in self.writes if start <= w.at < end]


def config_check(
    address: str,
    writes: Sequence[Write],
    doc: dict[str, Any],
    failovers: Sequence[tuple[float, float]] = (),
) -> dict[str, Any]:
    """Whether every acknowledged write is in the stored config (see the module doc).

    A write acknowledged by a master while the Sentinels failed it over (`failovers`: from
    the fault until the set was whole again) may be lost with it - replication is
    asynchronous, README "What a failover can lose" - and is counted apart, in
    `lost_in_failover`; any other lost write is a problem (`config_lost`)."""

    def in_failover(write: Write) -> bool:
        return any(start <= write.at <= end for start, end in failovers)

    problems: list[str] = []
    lost_in_failover: list[str] = []
    acked = [w for w in writes if w.version is not None]
    for before, after in itertools.pairwise(acked):
        assert before.version is not None and after.version is not None
        if after.version <= before.version:
            lost = (
                f"write {after.number} got version {after.version} after write "
                f"{before.number} got {before.version}: an acknowledged write was lost"
            )
            (lost_in_failover if in_failover(before) else problems).append(lost)
    with StateStore(address, TENANT) as store:
        version, stored = store.config()
        tenants = store.registered_tenants()
    if TENANT not in tenants or stored is None:
        return {"config_lost": True, "problems": ["the tenant is gone"]}
    config = parse_tenant(stored, "json")
    names = {a.id: a.name for a in config.agents}
    if sorted(names) != sorted(a["id"] for a in doc["agents"]):
        problems.append(f"agents {sorted(names)} != {[a['id'] for a in doc['agents']]}")
    if sorted(g.id for g in config.groups) != sorted(g["id"] for g in doc["groups"]):
        problems.append(f"groups {[g.id for g in config.groups]} changed")
    for agent in names:
        mine = [w for w in writes if w.agent == agent]
        acked_mine = [w for w in mine if w.version is not None]
        if not acked_mine:
            continue
        last = acked_mine[-1]
        allowed = {w.name for w in mine if w.number >= last.number}
        if names[agent] not in allowed:
            lost = f"{agent} is named {names[agent]!r}, not one of {sorted(allowed)}"
            (lost_in_failover if in_failover(last) else problems).append(lost)
    if acked and acked[-1].version is not None and version < acked[-1].version:
        lost = f"config version {version} < the last acknowledged {acked[-1].version}"
        (lost_in_failover if in_failover(acked[-1]) else problems).append(lost)
    return {
        "config_lost": bool(problems),
        "problems": problems[:10],
        "lost_in_failover": len(lost_in_failover),
        "lost_in_failover_examples": lost_in_failover[:5],
        "version": version,
        "writes": len(writes),
        "acknowledged": len(acked),
    }


class Sampler(Loop):
    """The invariants of `invariant_problems` every SAMPLE_S in a thread: how often an agent
    was above its max_calls, or a counter differed from its entries."""

    def __init__(self, address: str) -> None:
        super().__init__("sampler")
        self.address = address
        self.samples = self.unavailable = self.exceeded = self.inconsistent = 0
        self.most_full = 0  # most agents at their max in one sample
        self.examples: list[str] = []

    def _run(self) -> None:
        client = sync_client(self.address, socket_timeout=0.5, connect_timeout=0.5)
        try:
            while not self._stop.wait(SAMPLE_S):
                try:
                    totals, problems = invariant_problems(client, TENANT)
                except redis.RedisError:
                    self.unavailable += 1  # a failover or a stall: no sample
                    continue
                self.samples += 1
                self.most_full = max(self.most_full, totals["full"])
                for kind, message in problems:
                    if kind == "max":
                        self.exceeded += 1
                    else:
                        self.inconsistent += 1
                    if len(self.examples) < 10:
                        self.examples.append(message)
        finally:
            close_client(client)

    def figures(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "unavailable": self.unavailable,
            "max_calls_exceeded": self.exceeded,
            "inconsistent": self.inconsistent,
            "most_agents_at_max": self.most_full,
            "examples": self.examples,
        }


# -- the stack ------------------------------------------------------------------------------


def sipp_media_args() -> list[str]:
    """-mp: media ports of each SIPp process of ours, apart from other jobs' SIPp (which
    probe from 6000 and give up after 100 tries; bench/sip_load.py's phones use 20000..)."""
    return ["-mp", str(24000 + 8 * (next(_media_ports) % 2000))]


def active_dialogs(node: KamailioProcess) -> int:
    """The node's dialogs not yet ended (statistic dialog:active_dialogs); 0 when it is down."""
    try:
        return node.statistic("dialog:active_dialogs")
    except (OSError, ProcessError):
        return 0


class Stack:
    """The Sentinel set, the agents' phones, two Kamailio nodes on one DMQ bus and the API,
    all started by `start`; `stop` ends them."""

    def __init__(self, workdir: Path, settings: Settings) -> None:
        self.workdir = workdir
        self.settings = settings
        self.limits = agent_limits(settings)
        self.doc = tenant_doc(settings)
        self.token = secrets.token_urlsafe(24)
        self.sentinels = RedisSentinelSet(
            workdir / "redis",
            down_after_ms=settings.down_after_ms,
            failover_timeout_ms=FAILOVER_TIMEOUT_MS,
        )
        self.phones: list[SippProcess] = []
        self.nodes: list[KamailioProcess] = []
        env = {
            "REDIS_URL": "",  # the Sentinels name the master
            "REDIS_SENTINELS": self.sentinels.sentinels,
            "REDIS_SENTINEL_MASTER": self.sentinels.service,
        }
        self.api = ApiProcess(workdir / "api", env={**env, "DISPATCHER_ADMIN_TOKEN": self.token})
        self.node_env = {**env, "DISPATCHER_TRUSTED": "127.0.0.1"}

    @property
    def address(self) -> str:
        return self.sentinels.address

    def start(self) -> None:
        s = self.settings
        self.sentinels.start()
        with StateStore(self.address, TENANT) as store:
            import_tenant(store, parse_tenant(json.dumps(self.doc), "json"))
        for _ in range(s.phones):
            self.phones.append(self._phone())
        # A node runs the DMQ bus only when given a peer to learn it from: the first is
        # seeded with the address the second will have.
        second_port = free_sip_port()
        first = self._node(0, seed=f"127.0.0.1:{second_port}")
        first.start()
        second = self._node(1, seed=first.dmq_address, dmq_port=second_port)
        second.start()
        second.wait_for_dmq_peers(first)
        self.nodes = [first, second]
        self.register()
        self.wait_for_registrations(second)
        self.api.start()

    def _phone(self) -> SippProcess:
        """A phone (SIPp UAS that answers at once); tried five times, as a media port
        taken meanwhile makes SIPp exit."""
        for attempt in range(5):
            try:
                phone = SippProcess(
                    self.workdir / "phones", PHONE_XML, timeout=None, extra_args=sipp_media_args()
                )
                phone.start()
                return phone
            except ProcessError:
                if attempt == 4:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def _node(self, index: int, seed: str, dmq_port: int | None = None) -> KamailioProcess:
        s = self.settings
        return BenchKamailio(
            self.workdir / f"k{index}",
            tenant=TENANT,
            env=self.node_env,
            children=s.children,
            shm_mb=s.shm_mb,
            pkg_mb=s.pkg_mb,
            dmq_seed=seed,
            dmq_port=dmq_port,
            extra_defines={
                "DLG_KA_INTERVAL": 0,
                "DLG_TIMEOUT": s.dlg_timeout_s,
                "DLG_RECONCILE_S": s.reconcile_s,
            },
        )

    def register(self) -> None:
        """Every agent's phone REGISTERs once, at the first node (agent i at phone i mod
        phones)."""
        for i, agent in enumerate(self.limits):
            phone = self.phones[i % len(self.phones)]
            result = run_sipp(
                self.workdir / "register",
                REGISTER_XML,
                self.nodes[0].address,
                calls=1,
                service=agent,
                keys={"contact_port": phone.local_port, "expires": REGISTER_EXPIRES_S},
                timeout=10,
                extra_args=sipp_media_args(),
            )
            if not result.ok:
                raise ProcessError(f"REGISTER {agent} failed: {result.errors or result.output}")

    def wait_for_registrations(self, node: KamailioProcess, timeout: float = 20.0) -> None:
        """Until `node` holds a phone of every agent (learnt over DMQ)."""
        deadline = time.monotonic() + timeout
        missing = list(self.limits)
        while missing:
            missing = [a for a in missing if not node.rpc_lookup(a)]
            if missing and time.monotonic() > deadline:
                raise ProcessError(f"{node.address} has no phone of {missing} after {timeout} s")
            if missing:
                time.sleep(0.1)

    def python_errors(self) -> list[str]:
        return [e for node in self.nodes for e in node.python_errors()]

    def stop(self) -> None:
        self.api.stop()
        for node in self.nodes:
            node.stop()
        for phone in self.phones:
            if phone.proc is not None and phone.proc.returncode is None:
                phone.stop(timeout=2.0)
        self.sentinels.stop()


# -- the faults -----------------------------------------------------------------------------


def _since(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


def kill_redis_master(stack: Stack, settings: Settings) -> dict[str, Any]:
    """kill -9 of the master; once the Sentinels promoted the replica, the dead one starts
    again (empty) and becomes the new replica."""
    old = stack.sentinels.current_master()
    t0 = time.monotonic()
    old.kill()
    stack.sentinels.wait_for_failover(old.port)
    failover_s = _since(t0)
    old.start()
    stack.sentinels.wait_until_healthy(60)
    return {"failover_s": failover_s, "replica_back_s": _since(t0)}


def stall_redis_master(stack: Stack, settings: Settings) -> dict[str, Any]:
    """SIGSTOP of the master for stall_s, then SIGCONT; whether the Sentinels failed it over
    meanwhile, and when the set was whole again."""
    master = stack.sentinels.current_master()
    assert master.proc is not None
    stopped_at = fcalls_run(master.port)
    t0 = time.monotonic()
    os.kill(master.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(settings.stall_s)
    finally:
        os.kill(master.proc.pid, signal.SIGCONT)
    # (what was sent to it while stopped runs first, before this look's INFO is read)
    resumed_at = fcalls_run(master.port)
    now_master = stack.sentinels.wait_until_healthy(60)
    failed_over = now_master.port != master.port
    detail: dict[str, Any] = {
        "stalled_s": settings.stall_s,
        "failed_over": failed_over,
        "healthy_s": _since(t0),
    }
    if failed_over:
        # FCALLs the old master ran after the Sentinels had given up on it, all lost with
        # its demotion (a replica's stream carries the effects, not FCALLs): sent while it
        # was stopped (their clients had timed out), and sent on connections still open to
        # it after it went on, until it was demoted - a split brain
        detail["fcalls_sent_while_stopped"] = resumed_at - stopped_at
        detail["fcalls_after_resume"] = fcalls_run(master.port) - resumed_at
    return detail


def fcalls_run(port: int) -> int:
    """FCALLs the Redis server on `port` has run (INFO commandstats)."""
    with redis.Redis(port=port, socket_timeout=2) as client:
        return int(client.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0))


def kill_kamailio(stack: Stack, settings: Settings) -> dict[str, Any]:
    """kill -9 of every process of the first node (the phones registered there); started
    again restart_after_s later with the second node as its DMQ seed."""
    node, peer = stack.nodes
    t0 = time.monotonic()
    node.kill()
    time.sleep(settings.restart_after_s)
    node.dmq_seed = peer.dmq_address  # it learns the bus, and the phones, from its peer
    node.start()
    restart_s = _since(t0)
    node.wait_for_dmq_peers(peer)
    stack.wait_for_registrations(node)
    return {"restart_s": restart_s, "registrations_s": _since(t0)}


def kill_api(stack: Stack, settings: Settings) -> dict[str, Any]:
    """kill -9 of the API process while the writer writes; started again restart_after_s
    later."""
    t0 = time.monotonic()
    stack.api.kill()
    time.sleep(settings.restart_after_s)
    stack.api.start()
    return {"restart_s": _since(t0)}


FAULT_ACTIONS: dict[str, Callable[[Stack, Settings], dict[str, Any]]] = {
    "redis_master_kill": kill_redis_master,
    "redis_sigstop": stall_redis_master,
    "kamailio_kill": kill_kamailio,
    "api_kill": kill_api,
}


# -- callers and phases ---------------------------------------------------------------------


@dataclass
class Caller:
    """One SIPp UAC through one node; with a per-call log unless a soak."""

    node: int
    sipp: SippProcess
    calls: int
    log: Path | None


def start_callers(
    stack: Stack, rate: float, seconds: float, hold_ms: int, tag: str, logged: bool = True
) -> list[Caller]:
    """A UAC per node placing rate/2 calls a second for `seconds`, to the node's group."""
    s = stack.settings
    per_node = rate / len(stack.nodes)
    calls = max(1, round(per_node * seconds))
    callers = []
    for index, node in enumerate(stack.nodes):
        log = stack.workdir / "calls" / f"{tag}-n{index}.log" if logged else None
        extra = [*sipp_media_args(), "-recv_timeout", str(round(s.recv_timeout_s * 1000))]
        if log is not None:
            extra += ["-trace_logs", "-log_file", str(log)]
        sipp = SippProcess(
            stack.workdir / "calls",
            CALLER_XML,
            node.address,
            calls=calls,
            rate=per_node,
            # far above what the rate holds, also with calls waiting out the recv timeout
            limit=int(per_node * (hold_ms / 1000 + s.recv_timeout_s)) + 50,
            duration_ms=hold_ms,
            service=GROUPS[index][1],
            keys={"caller": f"c{index}"},
            timeout=calls / per_node + hold_ms / 1000 + 3 * s.recv_timeout_s + 30,
            extra_args=extra,
        )
        sipp.start()
        callers.append(Caller(index, sipp, calls, log))
    return callers


@dataclass(frozen=True, slots=True, order=True)
class Attempt:
    """One call from a UAC's log: when it started, its setup time (INVITE to 200; None
    without a 200) and whether it ended with its BYE answered."""

    at: float
    setup_s: float | None
    ok: bool

    @property
    def good(self) -> bool:
        """Ended well, and set up within SLOW_SETUP_S (not held up by a fault)."""
        return self.ok and self.setup_s is not None and self.setup_s <= SLOW_SETUP_S


def call_log(path: Path) -> list[Attempt]:
    """Every call a UAC's log names, by start time."""
    starts: dict[str, float] = {}
    answers: dict[str, float] = {}
    ended: set[str] = set()
    with contextlib.suppress(FileNotFoundError), path.open() as lines:
        for line in lines:
            parts = line.split()
            if len(parts) >= 4 and parts[0] in "SA":
                (starts if parts[0] == "S" else answers)[parts[1]] = (
                    float(parts[2]) + float(parts[3]) / 1e6
                )
            elif len(parts) >= 2 and parts[0] == "E":
                ended.add(parts[1])
    return sorted(
        Attempt(at, answers[n] - at if n in answers else None, n in ended)
        for n, at in starts.items()
    )


def recovery_s(attempts: Sequence[tuple[float, bool]], fault_at: float) -> float | None:
    """Seconds from the fault to the start of the first good attempt after the last bad one
    (among those started after the fault): 0 when none was bad, None when none was good
    after the last bad one. An attempt is (start time, good)."""
    after = [(at, good) for at, good in attempts if at >= fault_at]
    bad = [at for at, good in after if not good]
    if not bad:
        return 0.0
    last = max(bad)
    first_good = min((at for at, good in after if good and at > last), default=None)
    return None if first_good is None else round(first_good - fault_at, 2)


def failures_by_second(attempts: Sequence[Attempt], fault_at: float) -> dict[int, int]:
    """Failed calls per whole second of their start from the fault (negative: before it)."""
    seconds = Counter(math.floor(a.at - fault_at) for a in attempts if not a.ok)
    return dict(sorted(seconds.items()))


@dataclass
class Phase:
    fault: str
    started: float  # time.time()
    fault_at: float
    ended: float  # when its calls were placed: the next phase starts
    callers: list[Caller]
    detail: dict[str, Any]
    cpu: dict[str, Any]


# Faults that may make the Sentinels fail the master over, and how long the set took to be
# whole again (the window in which a write the master acknowledged may be lost).
FAILOVER_FAULTS = ("redis_master_kill", "redis_sigstop")


def failover_healed_s(detail: dict[str, Any]) -> float:
    """Seconds from a failover fault until the Sentinel set was whole again."""
    return float(detail.get("healthy_s") or detail.get("replica_back_s") or 0.0)


def sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


def run_phase(stack: Stack, fault: str, say: Callable[[str], None]) -> Phase:
    """before_s of calls, the fault, after_s of calls; returns when the phase's calls are
    placed (they run on while the next phase starts)."""
    s = stack.settings
    cpu = CpuWindow()
    started = time.time()
    callers = start_callers(stack, s.rate, s.phase_s, s.hold_ms, fault)
    sleep_until(started + s.before_s)
    fault_at = time.time()
    say(f"{fault}: now")
    detail = FAULT_ACTIONS[fault](stack, s)
    say(f"{fault}: {detail}")
    sleep_until(started + s.phase_s)
    return Phase(fault, started, fault_at, time.time(), callers, detail, cpu.figures())


def phase_figures(phase: Phase, writer: Writer | None) -> dict[str, Any]:
    """Wait for the phase's callers to end; the fault's figures."""
    attempts: list[Attempt] = []
    calls = successful = 0
    by_node = {}
    for caller in phase.callers:
        result = caller.sipp.wait()
        calls += caller.calls
        successful += result.stats.successful
        by_node[f"node{caller.node}"] = caller.calls - result.stats.successful
        if caller.log is not None:
            attempts += call_log(caller.log)
    attempts.sort()
    setups = sorted(a.setup_s for a in attempts if a.ok and a.setup_s is not None)
    out: dict[str, Any] = {
        "fault": phase.fault,
        "failed_calls": calls - successful,
        "recovery_s": recovery_s([(a.at, a.good) for a in attempts], phase.fault_at),
        "calls": calls,
        "failed_by_node": by_node,
        "failed_started_before": sum(1 for a in attempts if a.at < phase.fault_at and not a.ok),
        # completed, but their 200 came late: held up by the fault (SIP retransmissions
        # carried them over it)
        "delayed_calls": sum(1 for a in attempts if a.ok and not a.good),
        "setup_ms_p50_p99_max": [
            round(1000 * setups[min(len(setups) - 1, int(q * len(setups)))], 1)
            for q in (0.5, 0.99, 1.0)
        ]
        if setups
        else None,
        "failures_by_second": failures_by_second(attempts, phase.fault_at),
    }
    if writer is not None:
        writes = writer.between(phase.started, phase.ended)
        tries = [(w.at, w.version is not None) for w in writes]
        out["writes"] = len(writes)
        out["failed_writes"] = sum(1 for _, ok in tries if not ok)
        out["write_recovery_s"] = recovery_s(tries, phase.fault_at)
    out["detail"] = phase.detail
    out["cpu"] = phase.cpu
    return out


# -- what is left: drift --------------------------------------------------------------------


def state_left(address: str) -> dict[str, Any]:
    """The tenant's live and reservation counters and entries, read at one instant; `drift`
    as the module doc defines it (no call exists any more)."""
    keys = TenantKeys(TENANT)
    client = sync_client(address, socket_timeout=2.0, connect_timeout=2.0)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.agent["live"])
            pipe.hgetall(keys.agent["resv"])
            pipe.hkeys(keys.live)
            pipe.zrange(keys.resv, 0, -1)
            pipe.hlen(keys.lnode)
            pipe.hgetall(keys.counts)
            live_raw, resv_raw, live_calls, reservations, lnode, counts = pipe.execute()
    finally:
        close_client(client)
    sep = FIELD_SEPARATOR.encode()
    counters = Counter[str]()
    entries = Counter[str]()
    for agent, value in live_raw.items():
        counters[f"live {agent.decode()}"] += int(value)
    for agent, value in resv_raw.items():
        counters[f"resv {agent.decode()}"] += int(value)
    for member in live_calls:
        entries[f"live {member.rsplit(sep, 1)[1].decode()}"] += 1
    for member in reservations:
        entries[f"resv {member.rsplit(sep, 1)[1].decode()}"] += 1
    # a counter counts its calls; an entry its counter does not cover counts as well
    drift = sum(counters.values()) + sum(max(0, n - counters[key]) for key, n in entries.items())
    return {
        "drift": drift,
        "nonzero": {k: v for k, v in sorted(counters.items()) if v}
        | {f"{k} entries": v for k, v in sorted(entries.items()) if v},
        "lnode_entries": int(lnode),
        "outcomes": {
            k.decode().split("|", 1)[1]: int(v)
            for k, v in sorted(counts.items())
            if k.startswith(b"calls|")
        },
    }


def settle(stack: Stack, say: Callable[[str], None]) -> dict[str, Any]:
    """After the callers: wait for the nodes' dialogs to end (at most the dialog timeout),
    then read the state every second until no drift is left or the reconciliation and the
    heartbeats have had 2 looks + the dead time + 10 s; overdue reservations are swept first
    (what the next claim would do). The figures."""
    s = stack.settings
    t0 = time.monotonic()
    dialogs_deadline = t0 + s.dlg_timeout_s + 15
    dialogs = sum(map(active_dialogs, stack.nodes))
    while dialogs and time.monotonic() < dialogs_deadline:
        time.sleep(1.0)
        dialogs = sum(map(active_dialogs, stack.nodes))
    time.sleep(max(0.0, t0 + s.ring_timeout_s - time.monotonic()))  # every reservation overdue
    bound = 2 * s.reconcile_s + NODE_DEAD_S + 10
    started, swept = time.monotonic(), 0
    while True:
        with StateStore(stack.address, TENANT) as store:
            swept += store.sweep(100_000)
        left = state_left(stack.address)
        if left["drift"] == 0 or time.monotonic() - started > bound:
            break
        time.sleep(1.0)
    say(f"settled: drift {left['drift']} after {_since(started)} s, {dialogs} dialogs left")
    return {
        **left,
        "settled_s": _since(started),
        "settle_bound_s": bound,
        "active_dialogs": dialogs,
        "reservations_swept": swept,
    }


# -- the soak -------------------------------------------------------------------------------


def stat_row(caller: Caller) -> dict[str, str]:
    """The last row of a UAC's -trace_stat file ({} before the first)."""
    import csv

    with contextlib.suppress(FileNotFoundError), caller.sipp.stat_path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
        return rows[-1] if rows else {}
    return {}


def soak(stack: Stack, say: Callable[[str], None]) -> dict[str, Any]:
    """soak_calls calls at soak_rate through both nodes, no faults; then the drift."""
    s = stack.settings
    sampler = Sampler(stack.address)
    sampler.start()
    cpu = CpuWindow()
    t0 = time.monotonic()
    callers = start_callers(
        stack, s.soak_rate, s.soak_calls / s.soak_rate, s.soak_hold_ms, "soak", logged=False
    )
    next_register = t0 + REREGISTER_S
    while any(c.sipp.proc is not None and c.sipp.proc.poll() is None for c in callers):
        time.sleep(5.0)
        if time.monotonic() >= next_register:
            stack.register()
            next_register += REREGISTER_S
        if int(time.monotonic() - t0) % 60 < 5:
            rows = [stat_row(c) for c in callers]
            placed = sum(int(r.get("TotalCallCreated", 0) or 0) for r in rows)
            ok = sum(int(r.get("SuccessfulCall(C)", 0) or 0) for r in rows)
            say(f"soak: {placed} calls placed, {ok} successful, {_since(t0):.0f} s")
    results = [c.sipp.wait() for c in callers]
    seconds = _since(t0)
    figures = cpu.figures()
    left = settle(stack, say)
    sampler.stop()
    calls = sum(c.calls for c in callers)
    successful = sum(r.stats.successful for r in results)
    return {
        "calls": calls,
        "drift": left["drift"],
        "seconds": seconds,
        "failed_calls": calls - successful,
        "rate": s.soak_rate,
        "achieved_cps": round(calls / max(seconds, 1e-9), 1),
        "hold_ms": s.soak_hold_ms,
        "max_calls_exceeded": sampler.exceeded,
        "invariants": sampler.figures(),
        "settle": left,
        "cpu": figures,
    }


# -- the run --------------------------------------------------------------------------------


def measure(settings: Settings, log: Any = None) -> dict[str, Any]:
    """Start the stack, run the faults (and the soak), return the report."""

    def say(text: str) -> None:
        if log is not None:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=log, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    stack = Stack(workdir, settings)
    sampler = Sampler(stack.address)
    writer: Writer | None = None
    report: dict[str, Any] = {}
    run_t0 = time.monotonic()
    try:
        stack.start()
        say(f"started in {workdir}: {len(stack.limits)} agents, {settings.phones} phones")
        warmup = start_callers(stack, settings.rate, settings.warmup_s, settings.hold_ms, "warmup")
        for caller in warmup:
            caller.sipp.wait()
        faults: list[dict[str, Any]] = []
        left: dict[str, Any] = {}
        config: dict[str, Any] = {}
        if settings.faults:
            sampler.start()
            writer = Writer(stack.api.url, stack.token, stack.limits, settings.writes_per_s)
            writer.start()
            cpu = CpuWindow()
            phases = [run_phase(stack, fault, say) for fault in settings.faults]
            faults = [phase_figures(phase, writer) for phase in phases]
            failovers = [
                (phase.fault_at, phase.fault_at + failover_healed_s(phase.detail))
                for phase in phases
                if phase.fault in FAILOVER_FAULTS and phase.detail.get("failed_over", True)
            ]
            cpu_figures = cpu.figures()
            writer.stop()
            left = settle(stack, say)
            sampler.stop()
            config = config_check(stack.address, writer.writes, stack.doc, failovers)
        report = {
            "faults": faults,
            "drift": left.get("drift", 0),
            "max_calls_exceeded": sampler.exceeded,
            "config_lost": config.get("config_lost", False),
        }
        if settings.soak_calls:
            report["soak"] = soak(stack, say)
        errors = stack.python_errors()
        report["checks"] = {
            "settle": left,
            "invariants": sampler.figures(),
            "config": config,
            "python_errors": len(errors),
            "python_error_examples": [e[:500] for e in errors[:3]],
            "cpu": cpu_figures if settings.faults else None,
        }
        report["setup"] = setup_of(settings, stack, _since(run_t0))
    finally:
        if writer is not None:
            writer.stop()
        sampler.stop()
        stack.stop()
        if not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def setup_of(settings: Settings, stack: Stack, seconds: float) -> dict[str, Any]:
    return {
        **asdict(settings),
        "agents": stack.limits,
        "groups": {extension: strategy for _, extension, strategy in GROUPS},
        "redis": f"master + replica + 3 Sentinels (down-after {settings.down_after_ms} ms, "
        f"failover timeout {FAILOVER_TIMEOUT_MS} ms)",
        "nodes": "2 Kamailio on one DMQ bus (registrations over DMQ, in memory); the phones "
        "registered once, at the first",
        "run_s": seconds,
        "cpus": os.cpu_count(),
        "source": _git_revision(),
    }


# -- output ---------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"{'fault':<18} {'calls':>7} {'failed':>7} {'before':>6} {'recovery_s':>10} "
        f"{'writes':>6} {'w.failed':>8} {'w.recov_s':>9}  detail"
    ]
    for f in report["faults"]:
        recovery = "never" if f["recovery_s"] is None else f"{f['recovery_s']:.2f}"
        w_recovery = f.get("write_recovery_s")
        lines.append(
            f"{f['fault']:<18} {f['calls']:>7} {f['failed_calls']:>7} "
            f"{f['failed_started_before']:>6} {recovery:>10} {f.get('writes', 0):>6} "
            f"{f.get('failed_writes', 0):>8} "
            f"{'never' if w_recovery is None else f'{w_recovery:.2f}':>9}  {f['detail']}"
        )
    checks = report["checks"]
    settle_figures = checks["settle"] or {}
    invariants = checks["invariants"]
    config = checks["config"] or {}
    lines += [
        "",
        f"drift {report['drift']} (settled in {settle_figures.get('settled_s')} s; "
        f"{settle_figures.get('reservations_swept')} overdue reservations swept; outcomes "
        f"{settle_figures.get('outcomes')})",
        f"max_calls_exceeded {report['max_calls_exceeded']} ({invariants['samples']} samples, "
        f"{invariants['unavailable']} while Redis was away, at most "
        f"{invariants['most_agents_at_max']} agents at their max; inconsistent "
        f"{invariants['inconsistent']})",
        f"config_lost {str(report['config_lost']).lower()} ({config.get('writes')} writes, "
        f"{config.get('acknowledged')} acknowledged, version {config.get('version')}; "
        f"{config.get('lost_in_failover', 0)} lost in a failover) "
        f"{config.get('problems') or ''}",
        f"python errors in Kamailio: {checks['python_errors']}",
    ]
    if "soak" in report:
        soaked = report["soak"]
        lines.append(
            f"soak: {soaked['calls']} calls at {soaked['rate']:g} cps (held "
            f"{soaked['hold_ms']} ms) in {soaked['seconds']:.0f} s ({soaked['achieved_cps']} "
            f"cps), failed {soaked['failed_calls']}, drift {soaked['drift']}, "
            f"max_calls_exceeded {soaked['max_calls_exceeded']}"
        )
    setup = report["setup"]
    lines.append(
        f"rate {setup['rate']:g} cps, hold {setup['hold_ms']} ms, phases "
        f"{setup['before_s']:g}+{setup['after_s']:g} s, run {setup['run_s']:.0f} s, "
        f"source {setup['source']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quick", action="store_true", help="a tiny run (the smoke test)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--faults", help=f"comma-separated, in order (default {','.join(FAULTS)})"
                        "; 'none' for a soak alone")  # fmt: skip
    parser.add_argument("--rate", type=float, help="calls per second, both nodes together")
    parser.add_argument("--hold-ms", type=int, help="ms each call is held before its BYE")
    parser.add_argument("--before", type=float, dest="before_s", help="s of calls before a fault")
    parser.add_argument("--after", type=float, dest="after_s", help="s of calls after a fault")
    parser.add_argument("--stall", type=float, dest="stall_s", help="s of the Redis SIGSTOP")
    parser.add_argument("--down-after", type=int, dest="down_after_ms",
                        help="Sentinels' down-after-milliseconds (default 1000)")  # fmt: skip
    parser.add_argument("--restart-after", type=float, dest="restart_after_s",
                        help="s before a killed Kamailio or API starts again")  # fmt: skip
    parser.add_argument("--children", type=int, help="SIP workers per Kamailio node")
    parser.add_argument("--reconcile", type=int, dest="reconcile_s", help="DLG_RECONCILE_S")
    parser.add_argument("--dlg-timeout", type=int, dest="dlg_timeout_s", help="DLG_TIMEOUT")
    parser.add_argument("--writes", type=float, dest="writes_per_s", help="API writes a second")
    parser.add_argument("--soak-calls", type=int, help="then this many calls without faults")
    parser.add_argument("--soak-rate", type=float, help="calls per second of the soak")
    parser.add_argument("--soak-hold-ms", type=int, help="ms each soak call is held")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    overrides: dict[str, Any] = {"keep": args.keep}
    if args.faults is not None:
        chosen = tuple(f for f in args.faults.split(",") if f and f != "none")
        unknown = set(chosen) - set(FAULTS)
        if unknown:
            parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        overrides["faults"] = chosen
    for key in ("rate", "hold_ms", "before_s", "after_s", "stall_s", "down_after_ms",
                "restart_after_s",
                "children", "reconcile_s", "dlg_timeout_s", "writes_per_s", "soak_calls",
                "soak_rate", "soak_hold_ms"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    settings = replace(settings, **overrides)
    if settings.down_after_ms < 100:
        parser.error(f"--down-after {settings.down_after_ms}: at least 100 ms")
    if not settings.faults and not settings.soak_calls:
        parser.error("nothing to run: no faults and no --soak-calls")

    report = measure(settings, log=sys.stderr)
    stem = "chaos-quick" if args.quick else "chaos"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
