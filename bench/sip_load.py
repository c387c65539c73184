"""SIP load benchmark: the dispatcher stack against Kamailio's native call-load dispatcher,
and against itself with 10,000 tenants and authentication.

One run on one machine, the same SIPp scenario against three Kamailio instances that run
side by side, in --rounds (3) rounds; each round ramps every stack, alternating step by step
(native, ours, tenants, native, ...; the stack that goes first turns every step and round):

- native: kamailio/native-dispatcher.cfg - the dispatcher module, `ds_select_dst("1", "10")`
  (call load distribution: fewest active calls), dialog tracking, `ds_load_update` /
  `ds_load_unset` keeping the load right; the agents are listed in a dispatcher.list that
  this benchmark writes into the instance's run dir (`maxload` = the agents' max_calls);
- dispatcher: kamailio/kamailio.cfg + the KEMI script + Redis, one tenant, a least_busy
  group (sticky off) of the same agents, each registered with REGISTER as its AOR (the real
  path, not static URIs; usrloc holds them in memory and writes them back to Redis
  through db_redis, db_mode 2 - one node, so no DMQ bus: a lookup costs no round trip, the
  router makes 3 FCALLs per call). Kamailio reaches the router's Redis on its unix
  socket, as a Redis on the SIP node's host would be set up (REDIS_URL=unix://...): per
  round trip about 12 us less client CPU than loopback TCP; --redis-tcp measures TCP.
  No digest auth on either side: SIPp on 127.0.0.1 is in DISPATCHER_TRUSTED (set
  explicitly), as the native config authenticates nobody.
- tenants (--tenants 10000; --no-tenants leaves it out): the dispatcher's stack as a carrier
  runs it, with a redis-server of its own holding --tenants tenants (bench/many_tenants.py:
  each 20 agents and 5 least_busy groups of all of them, sticky off - a call's claim is the
  one-tenant stack's -, its own SIP domain and 5 DIDs whose inbound rules ring the groups;
  loaded through import_tenant in 2 processes, timed). Authentication on: only the trunk
  127.0.0.2 is in DISPATCHER_TRUSTED. The --tenants-active (100) tenants that take calls,
  spread evenly, get a SIP password per agent (HA1s through the state API, as `dispatcher
  credential set`), and their phones - agent aNN of every tenant at the same SIPp UAS as the
  one-tenant stack's aNN - REGISTER at the tenant's domain with digest
  (bench/scenarios/register_auth.xml: 401, then the answer; MD5 is offered first, as SIPp 3.6
  answers the first challenge and knows no SHA-256 - REGISTERs are not measured), 2000 of
  them, each checked. Callers on the trunk's address (SIPp -i 127.0.0.2) dial the active
  tenants' DIDs in turn (-inf, one DID per line, [field0] in the Request-URI). Its own
  Redis, not the one-tenant stack's: sharing one would make that stack's keeper walk the
  10,000 tenants too and hide part of the difference; this way each stack's Kamailio and
  Redis CPU is its own. Per round, tenants_cpu_ratio = its Kamailio CPU per call / the
  one-tenant stack's, both at the highest rate those two passed (target <= 1.1, the median
  of the rounds); worker_rss_mb is the VmRSS of its largest SIP worker after its passing
  runs (`worker_memory` adds the shared-memory part, the private part and PSS, and the
  same for the one-tenant stack).

All have the same number of SIP workers (--children) and memory (-m 1024 -M 32: the
default 64 MB of shared memory runs out at a few hundred calls per second), memory manager
(--mem-manager) and pinning. The agents
are 20 SIPp UAS processes (tests/sip/scenarios/uas_answer.xml: 180 and 200 at once),
max_calls 100 each (the model's ceiling); the load is SIPp UACs (tests/sip/scenarios/
uac_call.xml, with a 100/180 that arrives after the 200 absorbed: the proxy's workers may
relay them out of order) calling the group number at a fixed rate (-r) for --step-seconds,
each call held --hold-ms (250 ms; 1 s before the ramp went to 6000 cps: the work per call
is the same, and 2000 calls at once still hold 6000 cps) before the caller's BYE. One UAC
places up to --uac-cps (1000) calls per second; above, several run in parallel splitting
the rate and the calls (one SIPp process tops out near its own core), and each run records
each UAC's share of a core (`uac_core_share_each`: near 1.0, SIPp was the limit).

In each round, each stack's ramp goes on while it stays under 0.1% failed calls (a call
fails when it does not end with the caller's BYE answered: an error reply, a timeout, or
never finished) and SIPp placed the calls at >= 90% of the offered rate, so it ends at the
stack's first failed step - or the top step (6000 cps) or the round's share of --budget,
when the round's max_cps is only a lower bound (`ramp_ended_by`). A failed run leaves calls
behind (the UAC drops a call without BYE), so the stack and the phones are restarted with
clean state after it. Before every run the benchmark waits (up to 8 s) for other jobs on the
machine to use under 0.3 cores, and a failed run while they used more runs once more (the
first is kept, marked superseded).

Measured per run: Kamailio CPU ms per successful call - utime + stime from /proc/<pid>/stat
of every process of the instance (its process group: the main process and all it forked),
read before the UAC starts and after the calls have ended and Kamailio is idle again -, the
failure rate, the setup time (INVITE to 200), each core's busy share and the cores other
jobs used meanwhile (both from /proc/stat, which under-counts short bursts of work: a rough
noise gauge, never used for the figures), and for the dispatcher the Redis server's CPU per
call (reported next to Kamailio's, not added to it) and its FCALLs per call.

Per round: max_cps of each stack is its highest passing step; cpu_ms_per_call of native
and dispatcher is taken at the same offered rate, the highest step both passed in that
round; the round's cpu_ratio and cps_ratio are dispatcher / native (the tenants stack's
ratio likewise against dispatcher, at the highest step those two passed). The headline
ratios are the medians of the rounds' ratios (each round's figures are in `rounds`), each
stack's cpu_ms_per_call and max_cps the medians of its rounds; `targets` records whether
cpu_ratio <= 1.2, cps_ratio >= 1.0, system_cpu_ratio <= 1.5 and tenants_cpu_ratio <= 1.1.

Pinning (on a machine with >= 2 usable cores, unless --no-pin): Kamailio - every instance,
every process - on the first core; the SIPp UAC and UAS processes, redis-server and this
script on the other cores (--redis-on-kamailio-core moves Redis to Kamailio's). Done with
sched_setaffinity (what `taskset -c` does): this process pins itself to the load cores, so
what it starts inherits them, and switches to the Kamailio core only while starting each
Kamailio. So the Kamailio CPU ceiling is one core for every stack.

    .venv/bin/python bench/sip_load.py [--json] [--quick] [--results DIR] [--steps 500,1000,...]
        [--rounds 3] [--uac-cps 1000] [--step-seconds 10] [--budget 2400]
        [--tenants 10000] [--tenants-active 100] [--no-tenants] [--perf CPS | --instructions N]
        [--floor] [--native-redis-trips]

Writes sip_load.json and sip_load.png (CPU per call and failure rate against offered CPS)
to bench/results/ (--quick: sip_load-quick.*); prints a table, or the JSON with --json.
Bounded: every run has a SIPp timeout, each ramp stops at the stack's first failed step or
the top step, and all rounds together at --budget seconds (2400; each round gets an equal
share of what is left), so the default run takes at most about 42 minutes (loading the
tenants: about 10 s, their registrations 10 s).

Two modes look inside instead of running the rounds. `--perf CPS`: one CPS step per stack
under `perf record`, its CPU per call split by shared object (sip_load-perf.json).
`--instructions N`: the instructions per call of each stack's SIP workers (native and
dispatcher; user space, per shared object) counted by valgrind's callgrind in two runs N calls
apart, and `instruction_ratio` (sip_load-instructions.json). CPU time per call moves 10-20 %
between runs on a shared machine; instruction counts repeat to about 1.5 %, so they show
what a change to the routes or the router does. Not counted: the kernel (the system calls
of both stacks, and Redis' round trips) and the timer processes, whose work follows the
wall clock under callgrind's ~50 times slower run. Kamailio's Python runs with
PYTHONHASHSEED=0 here, so that its dicts lay out alike in every run. About 3 minutes for N = 100.

`--floor`, with any mode: the dispatcher stack's callers dial the agents themselves (their
registered users, each in turn) instead of the group. The call then takes our KEMI script's
path to a registered user - REQINIT, the tenant, the location lookup, the dialog events - and
no router decision and no FCALL: what any router in app_python3 costs at least, against the
same native stack (results sip_load-floor*.json, "floor": true).

`--native-redis-trips`, with any mode: the native stack's script makes three Redis round trips
per call (ndb_redis: a PING to a redis-server of its own over a unix socket, waited for) where
ours makes its three FCALLs - at the INVITE, its 2xx and the BYE. Native's CPU per call then
prices the round trips of a shared-state dispatcher apart from any code around them (results
sip_load*-trips.json, "native_redis_trips": true; the native steps report its Redis too).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCENARIOS = ROOT / "tests" / "sip" / "scenarios"
NATIVE_CFG = ROOT / "kamailio" / "native-dispatcher.cfg"
REGISTER_AUTH_XML = ROOT / "bench" / "scenarios" / "register_auth.xml"

# Run as a script from a checkout, where the package is not installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import many_tenants  # noqa: E402  (bench/, beside this script)

from dispatcher.run.procs import ProcessError, RedisProcess  # noqa: E402
from dispatcher.run.sipprocs import (  # noqa: E402
    DEFAULT_MEM_MANAGER,
    MEM_MANAGERS,
    KamailioProcess,
    SippProcess,
    registrations_url_for,
    run_sipp,
    sipp_uas,
)

TENANT = "sip-load"
EXTENSION = "800"
MAX_FAILED = 0.001  # a step passes with under 0.1% failed calls
MIN_PLACED = 0.9  # ... and SIPp placed the calls at >= 90% of the offered rate
# Other jobs on the machine using this many cores make a run "noisy": the benchmark waits
# for a quieter moment before each run, and runs a failed noisy step once more.
NOISY = 0.3
STACKS = ("native", "dispatcher", "tenants")  # the third only with Settings.tenants
# The tenants stack's callers: the carrier's trunk, trusted by address (DISPATCHER_TRUSTED);
# its phones register from 127.0.0.1, which it does not trust: digest.
TRUNK_IP = "127.0.0.2"
REGISTER_CPS = 200  # the tenants stack's phones register at this rate (2 requests each)
USRLOC_USERS = "usrloc:location_users"  # the AORs a node's usrloc holds
PAD_DROPPED_S = 25.0  # usrloc drops an expired row within two timer runs (UL_FLUSH_S 10 s)
WARMUP_PER_TENANT = 20  # warm-up calls per active tenant: each worker loads each tenant
WARMUP_CPS = 100  # the warm-up's rate at most: well below what any stack passes
CLK_TCK = os.sysconf("SC_CLK_TCK")
# SIPp's exit code for a socket it could not bind (a port taken meanwhile, by this machine's
# other jobs too): nothing was measured, the run is repeated (UacNotStarted).
SIPP_NO_SOCKET = 254
UAC_ATTEMPTS = 3
# --instructions: Kamailio under callgrind runs ~50 times slower; calls at this rate, runs of
# INSTRUCTION_BASE_CALLS and INSTRUCTION_BASE_CALLS + N calls
INSTRUCTION_CPS = 5
INSTRUCTION_BASE_CALLS = 20
WRAPPED_START_S = 180.0

# The ramp: it stops at each stack's first failed step, so its top (6000 cps) is a bound on
# the time, not a rate both are expected to pass. 20 agents x max_calls 100 (the model's
# ceiling) take 2000 calls at once: 6000 cps x ~0.3 s per call (hold_ms 250) fits, so agent
# capacity never fails a step. More phones instead of shorter calls would not do: 80 idle SIPp
# UAS processes take about half of the load core by themselves.
DEFAULT_STEPS = (200, 400, 600, 800, 1000, 1250, 1500, 1750, 2000, 2500, 3000, 4000, 5000, 6000)
# What a carrier would ask of the dispatcher against the native module (medians of the rounds).
TARGET_CPU_RATIO = 1.2  # at most this much Kamailio CPU per call
TARGET_CPS_RATIO = 1.0  # at least the native's highest passing rate
TARGET_SYSTEM_CPU_RATIO = 1.5  # (Kamailio + Redis CPU per call) / the native's Kamailio
# the tenants stack (10,000 tenants, auth on) against the one-tenant stack, Kamailio CPU per call
TARGET_TENANTS_CPU_RATIO = 1.1


@dataclass(frozen=True)
class Settings:
    """What one benchmark run does; `quick()` is the smoke test's tiny run."""

    steps: tuple[int, ...] = DEFAULT_STEPS
    rounds: int = 3  # whole ramps of every stack, alternated; the figures are their medians
    step_seconds: float = 10.0
    hold_ms: int = 250
    agents: int = 20
    max_calls: int = 100
    uac_cps: float = 1000.0  # most calls per second one SIPp UAC places; above, several split
    children: int = 4
    shm_mb: int = 1024  # Kamailio -m, every stack
    pkg_mb: int = 32  # Kamailio -M, every stack
    settle_s: float = 1.5
    warmup_calls: int = 200
    budget_s: float = 2400.0  # all rounds; each round gets an equal share of what is left
    pin: bool = True
    noise_wait: bool = True  # wait for other jobs to calm down before each run
    redis_on_kamailio_core: bool = False  # Redis shares the Kamailio core, not SIPp's
    redis_unix: bool = True  # Kamailio reaches Redis on its unix socket, not loopback TCP
    mem_manager: str = DEFAULT_MEM_MANAGER  # Kamailio's memory manager (-x), every stack
    tenants: int = 10_000  # the tenants stack's tenants; 0: no tenants stack
    tenants_active: int = 100  # of them, those that take calls (their phones register)
    load_processes: int = 2  # processes loading the tenants
    keep: bool = False  # keep the work folder (logs, SIPp traces) for inspection
    # the dispatcher stack's callers dial the agents themselves (registered users, each in
    # turn), not the group: our KEMI script's cost without the router, the floor under it
    floor: bool = False
    # the native stack makes three Redis round trips per call (kamailio/native-dispatcher.cfg
    # REDIS_TRIPS_SERVER): what a shared-state dispatcher's round trips cost by themselves
    native_redis_trips: bool = False

    @property
    def stacks(self) -> tuple[str, ...]:
        return STACKS if self.tenants else STACKS[:2]

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            steps=(10,),
            rounds=3,
            step_seconds=2.0,
            hold_ms=500,
            agents=4,
            uac_cps=5.0,  # two UACs at 10 cps: the parallel path runs in the smoke test too
            children=2,
            shm_mb=128,
            settle_s=0.5,
            warmup_calls=10,
            budget_s=50.0,
            noise_wait=False,
            tenants=20,
            tenants_active=4,
        )


# -- CPU accounting from /proc --------------------------------------------------------------


def command_stats(client: Any) -> dict[str, tuple[int, float]]:
    """Per command, (calls, server-side µs) a Redis client's server ran so far (INFO
    commandstats): the commands the library's functions run are counted too."""
    return {
        key.removeprefix("cmdstat_"): (int(v.get("calls", 0)), float(v.get("usec", 0)))
        for key, v in client.info("commandstats").items()
    }


def commands_per_call(
    before: dict[str, tuple[int, float]],
    after: dict[str, tuple[int, float]],
    calls: int,
    leave_out: Sequence[str] = ("info",),
) -> dict[str, float]:
    """Each command's calls per call between two command_stats, by name; "info" (these
    reads themselves) and any other of `leave_out` not counted."""
    return {
        cmd: round((n - before.get(cmd, (0, 0.0))[0]) / calls, 2)
        for cmd, (n, _) in sorted(after.items())
        if cmd not in leave_out and n > before.get(cmd, (0, 0.0))[0]
    }


def _stat_fields(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_cpu_ms(pid: int) -> float:
    """utime + stime of one process (all its threads), in ms; 0 if it is gone."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) * 1000 / CLK_TCK


def group_pids(leader: int) -> list[int]:
    """The leader and every process of its process group or forked by it (Kamailio's
    workers, timers, RPC processes): pgrp == leader or ppid == leader."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is not None and leader in (int(entry), int(fields[1]), int(fields[2])):
            pids.append(int(entry))
    return pids


def group_cpu_ms(leader: int) -> float:
    """utime + stime of all of `group_pids(leader)`, in ms."""
    return sum(process_cpu_ms(pid) for pid in group_pids(leader))


def core_times() -> dict[str, tuple[int, int]]:
    """Per core (cpu0, cpu1, ...): (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(v) for v in values[:8]]
                idle = ticks[3] + ticks[4]  # idle + iowait
                out[name] = (sum(ticks) - idle, sum(ticks))
    return out


def core_busy(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict:
    """Busy share (0..1) of each core between two `core_times()`."""
    busy = {}
    for core, (b1, t1) in after.items():
        b0, t0 = before.get(core, (0, 0))
        busy[core] = round((b1 - b0) / (t1 - t0), 3) if t1 > t0 else 0.0
    return busy


# -- pinning --------------------------------------------------------------------------------


@dataclass
class Pinning:
    """Kamailio on `kamailio` cores, everything else (SIPp, Redis, this script) on `load`."""

    kamailio: set[int]
    load: set[int]
    original: set[int]

    @classmethod
    def plan(cls, enabled: bool) -> Pinning | None:
        cpus = sorted(os.sched_getaffinity(0))
        if not enabled or len(cpus) < 2:
            return None
        return cls({cpus[0]}, set(cpus[1:]), set(cpus))

    def describe(self, redis_on_kamailio_core: bool = False) -> str:
        if redis_on_kamailio_core:
            return (
                f"kamailio (every instance, all processes) and redis-server on cpu "
                f"{_cpus(self.kamailio)}; sipp UAC + UAS and the benchmark on cpu "
                f"{_cpus(self.load)} (sched_setaffinity, as taskset -c)"
            )
        return (
            f"kamailio (every instance, all processes) on cpu {_cpus(self.kamailio)}; "
            f"sipp UAC + UAS, redis-server and the benchmark on cpu {_cpus(self.load)} "
            "(sched_setaffinity, as taskset -c)"
        )

    @contextlib.contextmanager
    def for_kamailio(self) -> Iterator[None]:
        """While starting Kamailio: what it forks inherits the Kamailio core."""
        os.sched_setaffinity(0, self.kamailio)
        try:
            yield
        finally:
            os.sched_setaffinity(0, self.load)


def _cpus(cpus: set[int]) -> str:
    return ",".join(map(str, sorted(cpus)))


def affinity_of(pids: Sequence[int]) -> list[str]:
    """Distinct Cpus_allowed_list values of the processes: how they are really pinned."""
    seen = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Cpus_allowed_list:"):
                    seen.add(line.split(":", 1)[1].strip())
    return sorted(seen)


# -- the stacks -----------------------------------------------------------------------------


def tenant_doc(agents: int, max_calls: int) -> dict[str, Any]:
    """The agents a01.. (registered AORs) and one least_busy group of all, sticky off (the
    tenants stack's groups are the same: bench/many_tenants.py)."""
    return {
        "id": TENANT,
        "name": "SIP load",
        "agents": many_tenants.agents_doc(agents, max_calls),
        "groups": [many_tenants.least_busy_group("load", EXTENSION, "Least busy", agents)],
    }


def uac_scenario(workdir: Path) -> Path:
    """tests/sip/scenarios/uac_call.xml, but a 100 or 180 that arrives after the 200 is
    absorbed instead of failing the call: the proxy's workers relay the agent's 180 and 200
    in parallel, so over UDP the 200 sometimes overtakes the 180 (a phone ignores that)."""
    text = (SCENARIOS / "uac_call.xml").read_text()
    for code in ("100", "180"):
        old = f'<recv response="{code}" optional="true"/>'
        if old not in text:
            raise RuntimeError(f"{SCENARIOS / 'uac_call.xml'}: no {old!r} to relax")
        text = text.replace(
            old, f'<recv response="{code}" optional="global" advance_state="false"/>'
        )
    path = workdir / "uac_call_load.xml"
    path.write_text(text)
    return path


def did_uac_scenario(uac_xml: Path) -> Path:
    """`uac_scenario`'s caller dialling a number from its injection file (-inf, [field0])
    instead of -s: the trunk's calls to the tenants' DIDs; every other line the same."""
    text = uac_xml.read_text()
    for old in ("INVITE sip:[service]@", "To: <sip:[service]@"):
        if old not in text:
            raise RuntimeError(f"{uac_xml}: no {old!r} to dial a DID with")
        text = text.replace(old, old.replace("[service]", "[field0]"))
    path = uac_xml.with_name("uac_did_load.xml")
    path.write_text(text)
    return path


def agents_file(path: Path, agents: int) -> None:
    """--floor: SIPp's injection file of the agents' users (a01, a02, ...), dialled in turn."""
    path.write_text("\n".join(["SEQUENTIAL", *many_tenants.agent_ids(agents)]) + "\n")


def dispatcher_list(phones: Sequence[SippProcess], max_calls: int) -> str:
    """Set 1: every agent's phone, a unique duid (algorithm 10 needs it), maxload."""
    lines = ["# set destination flags priority attrs (written by bench/sip_load.py)"]
    for agent, phone in zip(many_tenants.agent_ids(len(phones)), phones, strict=True):
        uri = f"sip:{phone.local_ip}:{phone.local_port}"
        lines.append(f"1 {uri} 0 0 duid={agent};maxload={max_calls}")
    return "\n".join(lines) + "\n"


def start_phone(workdir: Path, index: int, **options: Any) -> SippProcess:
    """Agent `index`'s phone (a SIPp UAS) with media ports of its own (-mp): SIPp probes
    from 6000 in steps of 2 and gives up after 100 tries, which the phones and other jobs'
    SIPp on a shared machine can exhaust. Tried five times: a port still held by the phone
    it replaces, or taken meanwhile, makes SIPp exit 254 - after the first try on media
    ports picked at random (another benchmark on the machine may hold 20000 + 8 * index)."""
    for attempt in range(5):
        base = 20000 + 8 * index if attempt == 0 else random.randrange(30000, 60000, 8)
        try:
            return sipp_uas(
                workdir, SCENARIOS / "uas_answer.xml", extra_args=["-mp", str(base)], **options
            )
        except ProcessError:
            if attempt == 4:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


class BenchKamailio(KamailioProcess):
    """KamailioProcess with larger memory pools, the same for every stack: the default 64 MB
    of shared memory runs out at a few hundred calls per second (every call holds an INVITE
    and a BYE transaction until tm's wait timer, a dialog, and for the native dispatcher the
    failover XAVPs), and a stack out of memory fails calls for that reason, not its speed."""

    def __init__(
        self, *args: Any, shm_mb: int, pkg_mb: int, wrapper: Sequence[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.shm_mb = shm_mb
        self.pkg_mb = pkg_mb
        self.wrapper = tuple(wrapper)  # a command Kamailio runs under (--instructions)

    def command(self) -> list[str]:
        return [
            *self.wrapper, *super().command(), "-m", str(self.shm_mb), "-M", str(self.pkg_mb)
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> None:
        # under callgrind its start (Python imports in every process) takes about 40 s
        super().start(timeout=max(timeout, WRAPPED_START_S) if self.wrapper else timeout)


@dataclass
class Stack:
    """One Kamailio instance under load, its Redis (None: the native one) and how its
    callers call it: the scenario, the number dialled (`service`, -s; None when the
    injection file in `uac_args` gives it) and the address they call from."""

    name: str
    kamailio: KamailioProcess
    redis: RedisProcess | None = None
    uac_xml: Path = Path()
    service: str | None = EXTENSION
    local_ip: str = "127.0.0.1"
    uac_args: tuple[str, ...] = ()

    @property
    def leader(self) -> int:
        assert self.kamailio.proc is not None
        return self.kamailio.proc.pid

    def cpu_ms(self) -> float:
        return group_cpu_ms(self.leader)

    def redis_cpu_ms(self) -> float:
        if self.redis is None or self.redis.proc is None:
            return 0.0
        return process_cpu_ms(self.redis.proc.pid)

    def redis_commands(self) -> dict[str, tuple[int, float]]:
        """Per command, (calls, server-side µs) the dispatcher's Redis ran so far - the
        router's FCALLs and usrloc's db_redis commands (its registrations database is on the
        same server) -; {} native."""
        if self.redis is None:
            return {}
        import redis

        with redis.Redis.from_url(self.redis.url) as client:
            return command_stats(client)

    def sip_workers(self) -> list[int]:
        """The pids of the SIP worker processes (Kamailio's "udp receiver" children of the
        SIP socket, RPC core.psx): where the router and its tenants' configs live."""
        sock = f"sock={self.kamailio.address}"
        return [
            int(process["PID"])
            for process in self.kamailio.rpc("core.psx") or []
            if str(process.get("DSC", "")).startswith("udp receiver") and sock in process["DSC"]
        ]

    def worker_memory(self) -> list[dict[str, Any]]:
        """Each SIP worker's memory now (`process_memory`)."""
        return [dict(pid=pid, **process_memory(pid)) for pid in self.sip_workers()]


def process_memory(pid: int) -> dict[str, float]:
    """A process's resident memory in MB, from /proc/<pid>/status and smaps_rollup:
    vmrss (all its resident pages, shared ones included), rss_shmem (of them, shared memory:
    Kamailio's -m pool as far as the process touched it), rss_anon, private (Private_Clean +
    Private_Dirty: pages no other process maps - its pkg memory and Python heap) and pss
    (shared pages divided among the processes that map them)."""
    fields: dict[str, float] = {}
    for name in (f"/proc/{pid}/status", f"/proc/{pid}/smaps_rollup"):
        with contextlib.suppress(OSError), open(name) as text:
            for line in text:
                key, _, value = line.partition(":")
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB":
                    fields[key] = int(parts[0]) / 1024
    return {
        "vmrss_mb": round(fields.get("VmRSS", 0.0), 1),
        "rss_shmem_mb": round(fields.get("RssShmem", 0.0), 1),
        "rss_anon_mb": round(fields.get("RssAnon", 0.0), 1),
        "private_mb": round(fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0), 1),
        "pss_mb": round(fields.get("Pss", 0.0), 1),
    }


@dataclass
class Topology:
    """Redis, the agents' phones and the Kamailio instances, all started; `stop()` ends
    them. With Settings.tenants, a second redis-server holds the tenants stack's tenants:
    each stack's Kamailio and Redis CPU is its own, and the one-tenant stack's keeper does
    not walk the 10,000 tenants (which would add their cost to the reference)."""

    workdir: Path
    settings: Settings
    pinning: Pinning | None
    phones: list[SippProcess] = field(default_factory=list)
    stacks: dict[str, Stack] = field(default_factory=dict)
    redis: RedisProcess | None = None
    tenants_redis: RedisProcess | None = None
    trips_redis: RedisProcess | None = None  # --native-redis-trips: the native stack's
    uac_xml: Path = Path()
    active: list[int] = field(default_factory=list)  # the tenants stack's tenants with calls
    tenants_load_s: float | None = None
    registrations: list[dict[str, Any]] = field(default_factory=list)  # each registration run
    warmup_failed: dict[str, int] = field(default_factory=dict)  # failed warm-up calls by stack
    callgrind_dir: Path | None = None  # --instructions: Kamailio runs under callgrind, out here

    def start(self) -> None:
        s = self.settings
        self.uac_xml = uac_scenario(self.workdir)
        if self.pinning is not None:
            os.sched_setaffinity(0, self.pinning.load)
        self.redis = RedisProcess(self.workdir / "redis", unix_socket=s.redis_unix)
        with self._pinned(s.redis_on_kamailio_core):
            self.redis.start()
        self._import_tenant()
        if s.tenants:
            self.tenants_redis = RedisProcess(self.workdir / "redis-t", unix_socket=s.redis_unix)
            with self._pinned(s.redis_on_kamailio_core):
                self.tenants_redis.start()
            self._load_tenants()
        phone_dir = self.workdir / "phones"
        for index in range(s.agents):
            self.phones.append(start_phone(phone_dir, index))

        memory: dict[str, Any] = {
            "children": s.children,
            "shm_mb": s.shm_mb,
            "pkg_mb": s.pkg_mb,
            "mem_manager": s.mem_manager,
        }
        trips: dict[str, Any] = {}
        if s.native_redis_trips:
            self.trips_redis = RedisProcess(self.workdir / "redis-n", unix_socket=True)
            with self._pinned(s.redis_on_kamailio_core):
                self.trips_redis.start()
            server = f"name=trips;unix={self.trips_redis.socket_path}"
            trips["extra_defines"] = {"REDIS_TRIPS_SERVER": f'"{server}"'}
        native = BenchKamailio(
            self.workdir / "nat",
            cfg=NATIVE_CFG,
            wrapper=self._wrapper("native"),
            **trips,
            **memory,
        )
        native.run_dir.mkdir(parents=True, exist_ok=True)
        (native.run_dir / "dispatcher.list").write_text(dispatcher_list(self.phones, s.max_calls))
        ours = BenchKamailio(
            self.workdir / "dsp",
            redis_url=self._router_url(self.redis),
            # usrloc's db_redis reaches Redis over TCP only, also when the router uses the socket
            registrations_url=registrations_url_for(self.redis.url),
            tenant=TENANT,
            # SIPp on 127.0.0.1 is a trusted source (the default, set here so an exported
            # DISPATCHER_TRUSTED cannot change it): no digest auth, as on the native side
            env={"DISPATCHER_TRUSTED": "127.0.0.1"},
            wrapper=self._wrapper("dispatcher"),
            **memory,
        )
        self.stacks = {
            "native": Stack("native", native, self.trips_redis, uac_xml=self.uac_xml),
            "dispatcher": Stack("dispatcher", ours, self.redis, uac_xml=self.uac_xml),
        }
        if s.floor:
            users = self.workdir / "agents.csv"
            agents_file(users, s.agents)
            self.stacks["dispatcher"] = self._dialling("dispatcher", ours, self.redis, users)
        if self.tenants_redis is not None:
            many = BenchKamailio(
                self.workdir / "tnt",
                redis_url=self._router_url(self.tenants_redis),
                registrations_url=registrations_url_for(self.tenants_redis.url),
                tenant=many_tenants.tenant_id(self.active[0]),
                env={
                    # only the trunk is trusted: the phones (127.0.0.1) authenticate
                    "DISPATCHER_TRUSTED": TRUNK_IP,
                    # SIPp 3.6 answers the first challenge and knows MD5 only (RFC 8760
                    # order for such clients, README); REGISTERs are not measured
                    "DISPATCHER_AUTH_ALGORITHMS": "MD5,SHA-256",
                },
                **memory,
            )
            dids = self.workdir / "dids.csv"
            many_tenants.dids_file(dids, self.active)
            self.stacks["tenants"] = self._dialling(
                "tenants", many, self.tenants_redis, dids, local_ip=TRUNK_IP
            )
        for name in s.stacks:
            with self._pinned(True):
                self.stacks[name].kamailio.start()
        self._register()
        if self.tenants_redis is not None:
            self._register_tenants()

    def _dialling(
        self,
        name: str,
        kamailio: KamailioProcess,
        redis: RedisProcess | None,
        numbers: Path,
        **options: Any,
    ) -> Stack:
        """Stack `name` whose callers dial the numbers of the injection file `numbers` in
        turn (SIPp -inf) instead of the group's extension."""
        return Stack(
            name,
            kamailio,
            redis,
            uac_xml=did_uac_scenario(self.uac_xml),
            service=None,
            uac_args=("-inf", str(numbers)),
            **options,
        )

    def _wrapper(self, name: str) -> list[str]:
        """What stack `name`'s Kamailio runs under: callgrind with --instructions (one
        file per process, `<name>.<pid>`), else nothing."""
        if self.callgrind_dir is None:
            return []
        return callgrind_command(self.callgrind_dir / f"{name}.%p")

    def _router_url(self, server: RedisProcess) -> str:
        return server.unix_url if self.settings.redis_unix else server.url

    def reset(self, name: str) -> None:
        """Restart one stack and the phones with clean state: calls a failed run left
        behind (the UAC gives up on a call without BYE) would hold agent capacity - the
        native load table or the dispatcher's live calls - and the phones would still be
        retransmitting their 200s, skewing the next runs. The tenants stack's tenants with
        calls are deleted and imported again (its idle tenants have no state to clean)."""
        kamailio = self.stacks[name].kamailio
        kamailio.stop()
        self._restart_phones()
        if name == "dispatcher":
            assert self.redis is not None
            import redis

            with redis.Redis.from_url(self.redis.url) as client:
                client.flushall()
            self._import_tenant()
        elif name == "tenants":
            self._renew_active_tenants()
        with self._pinned(True):
            kamailio.start()
        if name == "dispatcher":
            self._register()
        elif name == "tenants":
            self._register_tenants()
        # the start's own work first (the keeper's release of what the node held before, its
        # first walk of the tenants, usrloc writing the registrations back): the phones share
        # a core with Redis, and a phone slower than 500 ms makes Kamailio retransmit the
        # INVITE, which aborts the SIPp phone's call (a warm-up call left behind)
        drain(self.stacks[name], max_wait_s=15.0)
        warm_up(self, [name])

    def _restart_phones(self) -> None:
        """New phones on the same ports: registrations and dispatcher.list stay valid."""
        ports = [phone.local_port for phone in self.phones]
        for phone in self.phones:
            if phone.proc is not None and phone.proc.returncode is None:
                phone.stop(timeout=1.0)
        self.phones = [
            start_phone(self.workdir / "phones", index, local_port=port)
            for index, port in enumerate(ports)
        ]

    def _pinned(self, on_kamailio_core: bool) -> contextlib.AbstractContextManager[None]:
        if self.pinning is not None and on_kamailio_core:
            return self.pinning.for_kamailio()
        return contextlib.nullcontext()

    def _import_tenant(self) -> None:
        from dispatcher.admin.config_sync import import_tenant
        from dispatcher.config.model import Tenant
        from dispatcher.state import StateStore

        assert self.redis is not None
        doc = tenant_doc(self.settings.agents, self.settings.max_calls)
        with StateStore(self.redis.url, TENANT) as store:
            import_tenant(store, Tenant.model_validate(doc))

    def _load_tenants(self) -> None:
        """The tenants stack's tenants into its Redis (several processes, on every core:
        nothing is measured yet), then its active tenants' SIP passwords."""
        s = self.settings
        assert self.tenants_redis is not None
        self.active = many_tenants.active_indexes(s.tenants, s.tenants_active)
        everywhere = self.pinning.original if self.pinning is not None else None
        if everywhere is not None:
            os.sched_setaffinity(0, everywhere)
        try:
            self.tenants_load_s = round(
                many_tenants.load_tenants(
                    self.tenants_redis.url, s.tenants, s.agents, s.max_calls, s.load_processes
                ),
                1,
            )
        finally:
            if self.pinning is not None:
                os.sched_setaffinity(0, self.pinning.load)
        many_tenants.set_credentials(self.tenants_redis.url, self.active, s.agents)

    def _renew_active_tenants(self) -> None:
        """Delete the active tenants (config, state, credentials, names) and put them back:
        what a failed run left in Redis goes, the idle tenants stay."""
        from dispatcher.admin.config_sync import import_tenant
        from dispatcher.config.model import Tenant
        from dispatcher.state import StateStore

        s = self.settings
        assert self.tenants_redis is not None
        url = self.tenants_redis.url
        with StateStore(url, many_tenants.tenant_id(self.active[0])) as store:
            for index in self.active:
                tenant = store.for_tenant(many_tenants.tenant_id(index))
                tenant.delete_tenant(force=True)
                doc = many_tenants.tenant_doc(index, s.agents, s.max_calls)
                import_tenant(tenant, Tenant.model_validate(doc))
        many_tenants.set_credentials(url, self.active, s.agents)

    def _register(self) -> None:
        """Each phone REGISTERs as its agent's AOR at the dispatcher's Kamailio."""
        ours = self.stacks["dispatcher"].kamailio
        for agent, phone in zip(many_tenants.agent_ids(len(self.phones)), self.phones, strict=True):
            result = run_sipp(
                self.workdir / "register",
                SCENARIOS / "register.xml",
                ours.address,
                calls=1,
                service=agent,
                keys={"contact_port": phone.local_port, "expires": 3600},
                timeout=10,
            )
            if not result.ok:
                raise RuntimeError(f"REGISTER {agent} failed: {result.errors or result.output}")

    def _register_tenants(self) -> None:
        """Every agent of the tenants stack's active tenants REGISTERs at its tenant's domain
        with digest (401, then the answer; bench/scenarios/register_auth.xml), its contact at
        the phone of the same number: tenants x agents registrations, each checked."""
        stack = self.stacks["tenants"]
        phones = self.workdir / "tenant-phones.csv"
        ports = [phone.local_port for phone in self.phones]
        count = many_tenants.registrations_file(phones, self.active, ports)
        started = time.monotonic()
        result = run_sipp(
            self.workdir / "register",
            REGISTER_AUTH_XML,
            stack.kamailio.address,
            calls=count,
            rate=REGISTER_CPS,
            limit=REGISTER_CPS,
            keys={"expires": 3600},
            extra_args=["-inf", str(phones)],
            timeout=count / REGISTER_CPS + 30,
        )
        seconds = time.monotonic() - started
        if not result.ok or result.stats.successful != count:
            raise RuntimeError(
                f"tenants' REGISTERs: {result.stats.successful} of {count} succeeded: "
                f"{result.errors[-2000:] or result.output}"
            )
        registered = stack.kamailio.statistic(USRLOC_USERS)
        # a started node may hold the padding row it loaded (dispatcher.state.locations)
        # until usrloc's next timer run drops it: UL_FLUSH_S, 10 s
        deadline = time.monotonic() + PAD_DROPPED_S
        while registered != count and time.monotonic() < deadline:
            time.sleep(0.5)
            registered = stack.kamailio.statistic(USRLOC_USERS)
        if registered != count:
            raise RuntimeError(f"tenants' REGISTERs: usrloc holds {registered} of {count}")
        self.registrations.append(
            {"registered": registered, "seconds": round(seconds, 1), "digest": "MD5"}
        )

    def stop(self) -> None:
        for stack in self.stacks.values():
            stack.kamailio.stop()
        for phone in self.phones:
            if phone.proc is not None and phone.proc.returncode is None:
                phone.stop(timeout=2.0)
        for server in (self.redis, self.tenants_redis, self.trips_redis):
            if server is not None:
                server.stop()
        if self.pinning is not None:
            os.sched_setaffinity(0, self.pinning.original)

    def leftovers(self, name: str) -> dict[str, int]:
        """Calls still held after the runs: active dialogs, and the native load table or the
        dispatcher's live calls and reservations in Redis - all 0 when every call ended."""
        kamailio = self.stacks[name].kamailio
        out = {f"{name}_active_dialogs": kamailio.statistic("dialog:active_dialogs")}
        if name == "native":
            # algorithm 10's own call table: the load each destination still carries
            sets = kamailio.rpc("dispatcher.list")["RECORDS"]
            out["native_ds_load"] = sum(
                target["DEST"]["RUNTIME"]["DLGLOAD"]
                for record in sets
                for target in record["SET"]["TARGETS"]
            )
            return out
        import redis

        server = self.stacks[name].redis
        assert server is not None
        tenants = [TENANT]
        if name == "tenants":
            tenants = [many_tenants.tenant_id(i) for i in self.active]
        with redis.Redis.from_url(server.url) as client:
            out[f"{name}_redis_live"] = sum(int(client.hlen(f"{{t:{t}}}:live")) for t in tenants)
            out[f"{name}_redis_resv"] = sum(int(client.zcard(f"{{t:{t}}}:resv")) for t in tenants)
        return out


# -- one step -------------------------------------------------------------------------------


def _sipp_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as stat_file:
            return list(csv.DictReader(stat_file, delimiter=";"))
    except FileNotFoundError:
        return []


def _seconds(text: str) -> float:
    """SIPp's "HH:MM:SS:micro" (also "HH:MM:SS" ElapsedTime) as seconds."""
    parts = text.strip().split(":")
    h, m, s = (int(p) for p in parts[:3])
    micro = int(parts[3]) if len(parts) > 3 else 0
    return h * 3600 + m * 60 + s + micro / 1e6


def placement_seconds(rows: list[dict[str, str]], calls: int) -> float | None:
    """When SIPp had created all `calls` calls (1 s resolution: its -fd 1 rows)."""
    for row in rows:
        if int(row.get("TotalCallCreated", 0) or 0) >= calls:
            return _seconds(row["ElapsedTime(C)"])
    return None


def ours_cpu_ms(topology: Topology) -> float:
    """CPU ms so far of everything this benchmark runs: every Kamailio instance, Redis, the
    phones, the UAC runs that ended (reaped children) and this process."""
    total = sum(stack.cpu_ms() for stack in topology.stacks.values())
    for server in (topology.redis, topology.tenants_redis):
        if server is not None and server.proc is not None:
            total += process_cpu_ms(server.proc.pid)
    total += sum(process_cpu_ms(p.proc.pid) for p in topology.phones if p.proc is not None)
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += (usage.ru_utime + usage.ru_stime) * 1000
    return total


def other_load(topology: Topology, seconds: float) -> float:
    """Cores the machine spent on anything but this benchmark over the next `seconds`."""
    cores0, ours0, t0 = core_times(), ours_cpu_ms(topology), time.monotonic()
    time.sleep(seconds)
    cores1, ours1, window = core_times(), ours_cpu_ms(topology), time.monotonic() - t0
    busy_ms = sum(b1 - cores0[c][0] for c, (b1, _) in cores1.items()) * 1000 / CLK_TCK
    return max(0.0, busy_ms - (ours1 - ours0)) / 1000 / window


def wait_for_quiet(topology: Topology, max_wait_s: float = 8.0) -> float:
    """Wait (at most `max_wait_s`) until other jobs on the machine use under NOISY cores;
    returns the last figure seen."""
    deadline = time.monotonic() + max_wait_s
    while True:
        load = other_load(topology, 1.0)
        if load < NOISY or time.monotonic() >= deadline:
            return load


def drain(stack: Stack, max_wait_s: float = 10.0) -> None:
    """Wait (at most `max_wait_s`) until Kamailio is idle: after an overloaded step it still
    works off retransmissions, which belong to that step's cost, not the next one's."""
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        cpu0 = stack.cpu_ms()
        time.sleep(0.5)
        if stack.cpu_ms() - cpu0 < 0.05 * 500:  # under 5% of a core
            return


class UacNotStarted(RuntimeError):
    """A SIPp UAC of a run could not bind its sockets: the run measured nothing."""


def uac_split(rate: float, calls: int, uac_cps: float) -> list[tuple[float, int]]:
    """(rate, calls) of each SIPp UAC of a step: one up to `uac_cps`, then as many as
    needed, splitting both evenly (one SIPp process tops out near a core of its own)."""
    count = max(1, -int(-rate // uac_cps))
    return [(rate / count, calls // count + (1 if i < calls % count else 0)) for i in range(count)]


def run_step(
    topology: Topology, name: str, settings: Settings, rate: float, phase: str
) -> dict[str, Any]:
    """`rate` calls per second to the group for step_seconds, split over one or more SIPp
    UACs started together; the run's figures."""
    stack = topology.stacks[name]
    calls = max(1, round(rate * settings.step_seconds))
    hold_s = settings.hold_ms / 1000
    ideal_s = calls / rate + hold_s
    cpu0, redis0, cores0 = stack.cpu_ms(), stack.redis_cpu_ms(), core_times()
    ours0, commands0 = ours_cpu_ms(topology), stack.redis_commands()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    parts = uac_split(rate, calls, settings.uac_cps)
    started = time.monotonic()
    uacs = [
        SippProcess(
            topology.workdir / "uac",
            stack.uac_xml,
            stack.kamailio.address,
            calls=part_calls,
            rate=part_rate,
            # far above the concurrency the rate needs, so SIPp never throttles silently
            limit=int(part_rate * (hold_s + 5)) + 50,
            duration_ms=settings.hold_ms,
            service=stack.service,
            keys={"caller": "bob"},
            local_ip=stack.local_ip,
            timeout=ideal_s + 10,
            extra_args=stack.uac_args,
        )
        for part_rate, part_calls in parts
    ]
    for uac in uacs:
        uac.start()
    results = [uac.wait() for uac in uacs]
    wall_s = time.monotonic() - started
    if any(r.returncode == SIPP_NO_SOCKET for r in results):
        time.sleep(settings.settle_s)  # what the other UACs started ends before a new try
        drain(stack)
        output = next(r.output for r in results if r.returncode == SIPP_NO_SOCKET)
        raise UacNotStarted(f"a SIPp UAC could not bind its sockets: {output[-300:]!r}")
    # the UACs are the only children reaped meanwhile: their CPU, for "was SIPp the limit"
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    uac_cpu_ms = (
        children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime
    ) * 1000
    time.sleep(settings.settle_s)  # BYE transactions, dialog ends, releases
    drain(stack)
    cpu1, redis1, cores1 = stack.cpu_ms(), stack.redis_cpu_ms(), core_times()
    window_s = time.monotonic() - started
    commands1 = stack.redis_commands()
    # CPU the machine spent on anything else meanwhile (other users' jobs), in cores
    busy_ms = sum(b1 - cores0[c][0] for c, (b1, _) in cores1.items()) * 1000 / CLK_TCK
    other_cores = max(0.0, busy_ms - (ours_cpu_ms(topology) - ours0)) / 1000 / window_s

    successful = sum(r.stats.successful for r in results)
    failed_calls = calls - successful  # error replies, timeouts and calls never finished
    placed_cps: float | None = 0.0
    setup_weighted = setup_calls = 0.0
    for uac, (part_rate, part_calls) in zip(uacs, parts, strict=True):
        rows = _sipp_rows(uac.stat_path)
        placed_s = placement_seconds(rows, part_calls)
        # 1 s resolution: a step placed in time shows up to ~1 s late, so allow for that
        if placed_s is None or placed_cps is None:
            placed_cps = None
        else:
            placed_cps += part_calls / max(placed_s - 1.0, part_calls / part_rate)
        if rows and rows[-1].get("ResponseTime1(C)"):
            setup_weighted += _seconds(rows[-1]["ResponseTime1(C)"]) * 1000 * part_calls
            setup_calls += part_calls
    setup_ms = round(setup_weighted / setup_calls, 2) if setup_calls else None
    fail_rate = failed_calls / calls
    step = {
        "stack": stack.name,
        "phase": phase,
        "offered_cps": rate,
        "calls": calls,
        "successful": successful,
        "failed": failed_calls,
        "fail_rate": round(fail_rate, 5),
        "retransmissions": sum(r.stats.retransmissions for r in results),
        "placed_cps": round(placed_cps, 1) if placed_cps else None,
        "setup_ms_avg": setup_ms,
        "kamailio_cpu_ms": round(cpu1 - cpu0, 1),
        "cpu_ms_per_call": round((cpu1 - cpu0) / successful, 4) if successful else None,
        "kamailio_core_share": round((cpu1 - cpu0) / 1000 / window_s, 3),
        "uacs": len(uacs),
        # each UAC's share of a core while it ran: near 1.0, SIPp is the limit, not Kamailio
        "uac_core_share_each": round(uac_cpu_ms / 1000 / wall_s / len(uacs), 3),
        "core_busy": core_busy(cores0, cores1),
        "other_load_cores": round(other_cores, 2),
        "wall_s": round(wall_s, 2),
        "sipp_returncodes": sorted({r.returncode for r in results}),
    }
    if stack.redis is not None:
        step["redis_cpu_ms_per_call"] = (
            round((redis1 - redis0) / successful, 4) if successful else None
        )
        zero = (0, 0.0)
        fcalls = commands1.get("fcall", zero)[0] - commands0.get("fcall", zero)[0]
        fcall_us = commands1.get("fcall", zero)[1] - commands0.get("fcall", zero)[1]
        # round trips of the workers per offered call, and Redis' own time per FCALL
        step["fcalls_per_call"] = round(fcalls / calls, 2)
        step["fcall_server_us"] = round(fcall_us / fcalls, 1) if fcalls else None
        # every command per offered call: FCALLs and what usrloc's db_redis sends (its
        # write-backs; lookups are in memory); "info" is this benchmark reading these counters
        step["redis_commands_per_call"] = commands_per_call(commands0, commands1, calls)
    step["passed"] = fail_rate < MAX_FAILED and (
        placed_cps is not None and placed_cps >= MIN_PLACED * rate
    )
    if stack.redis is not None:
        # after the calls, before a failed run's restart: what the workers hold in steady use
        step["worker_memory"] = stack.worker_memory()
    return step


# -- the run --------------------------------------------------------------------------------


def warm_up(topology: Topology, names: Sequence[str] | None = None) -> None:
    """A few calls per stack, unmeasured: every worker imports, loads the config, connects;
    the tenants stack's workers each load every active tenant (WARMUP_PER_TENANT calls per
    tenant: a worker misses one with a chance of (1 - 1/children)^20, 0.3 % with 4)."""
    s = topology.settings
    for name in s.stacks if names is None else names:
        stack = topology.stacks[name]
        calls = s.warmup_calls
        if name == "tenants":
            calls = max(calls, WARMUP_PER_TENANT * len(topology.active))
        rate = max(5, min(WARMUP_CPS, calls // 2))
        result = run_sipp(
            topology.workdir / "warmup",
            stack.uac_xml,
            stack.kamailio.address,
            calls=calls,
            rate=rate,
            duration_ms=100,
            service=stack.service,
            keys={"caller": "bob"},
            local_ip=stack.local_ip,
            timeout=calls / rate + 15,
            extra_args=stack.uac_args,
        )
        # a warm-up call that failed may leave a call behind (a dialog, a live call): kept
        # for the checks, as the leftovers would otherwise be unexplained
        topology.warmup_failed[name] = (
            topology.warmup_failed.get(name, 0) + calls - result.stats.successful
        )
    time.sleep(s.settle_s)


def perf_by_object(data: Path) -> dict[str, float]:
    """Each shared object's share (%) of a `perf record` file's samples, largest first."""
    command = ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso"]
    report = subprocess.run(
        [*command, "--stdio", "-g", "none"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dso_shares(report)


def dso_shares(report: str) -> dict[str, float]:
    """`perf report --sort dso --stdio -g none`'s lines ("  46.97%  libpython3.11.so.1.0")
    as {object: percent}; comments and blank lines skipped."""
    shares: dict[str, float] = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%") and not line.startswith("#"):
            shares[parts[1]] = float(parts[0].rstrip("%"))
    return shares


def where_cpu_goes(settings: Settings, cps: float, log: Any = None) -> dict[str, Any]:
    """One `cps` step per stack under `perf record -g` (every process of its Kamailio):
    its CPU per call split by shared object - libpython is the KEMI routes and the router,
    kamailio the core, [kernel.kallsyms] the system calls."""
    workdir = Path(tempfile.mkdtemp(prefix="sipload-perf-"))
    topology = Topology(workdir, settings, Pinning.plan(settings.pin))
    out: dict[str, Any] = {"cps": cps, "perf": "perf record -F 999 -g -p <the stack's pids>"}
    try:
        topology.start()
        for stack in topology.stacks.values():
            drain(stack, max_wait_s=15.0)
        warm_up(topology)
        for name in settings.stacks:
            data = workdir / f"perf-{name}.data"
            pids = ",".join(str(pid) for pid in group_pids(topology.stacks[name].leader))
            perf = subprocess.Popen(
                ["perf", "record", "-F", "999", "-g", "-o", str(data), "-p", pids],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # perf attached to every process before the first call
            step = run_step(topology, name, settings, cps, "perf")
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
            shares = perf_by_object(data)
            per_call = step["cpu_ms_per_call"]
            out[name] = {
                "failed": step["failed"],
                "cpu_ms_per_call": per_call,
                "share_percent": shares,
                "ms_per_call": {k: round(per_call * v / 100, 4) for k, v in shares.items()},
            }
            if log is not None:
                print(f"{name}: {per_call} ms/call, {shares}", file=log, flush=True)
    finally:
        topology.stop()
        if not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def require_valgrind() -> None:
    """SystemExit naming the package when valgrind is not installed (--instructions)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian package valgrind; make bench)")


def callgrind_command(out: Path, collect: Sequence[str] = ()) -> list[str]:
    """valgrind's callgrind writing to `out` (%p: the pid), as a command prefix; with
    `collect`, counting only inside those functions (and what they call)."""
    toggles = [f"--toggle-collect={name}" for name in collect]
    start = ["--collect-atstart=no"] if collect else []
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *start, *toggles]


def callgrind_by_object(path: Path) -> dict[str, int]:
    """One callgrind file's instructions per shared object (`callgrind_by_object_text`)."""
    return callgrind_by_object_text(path.read_text(errors="replace"))


def callgrind_by_object_text(text: str) -> dict[str, int]:
    """A callgrind out file's self cost summed per shared object (its file name): each cost
    line counts for the object the last `ob=` named, but for the line after a `calls=`,
    which is the callee's inclusive cost (counted where the callee is). Read here rather
    than through callgrind_annotate, which keys stripped objects' functions by their
    offsets ("???:0x1613d0") and so can give one object's cost to another."""
    names: dict[str, str] = {}
    totals: dict[str, int] = {}
    current = "?"
    call_cost = False
    for line in text.splitlines():
        if not line:
            continue
        if line[0].isdigit() or line[0] in "+-*":
            if call_cost:
                call_cost = False
                continue
            parts = line.split()
            if len(parts) >= 2:
                totals[current] = totals.get(current, 0) + int(parts[1])
        elif line.startswith(("ob=", "cob=")):
            # an object is named once, where it first appears (as a callee too): (id) name
            key, _, value = line.partition("=")
            ref, _, name = value.partition(" ")
            if name:
                names[ref] = Path(name).name
            if key == "ob":
                current = ref
        elif line.startswith("calls="):
            call_cost = True
    return {names.get(ref, ref): n for ref, n in totals.items()}


def callgrind_run(settings: Settings, calls: int, workdir: Path) -> dict[str, dict[str, int]]:
    """Start the stacks with Kamailio under callgrind, warm them up, place `calls` calls on
    each at INSTRUCTION_CPS and stop them: per stack, its SIP workers' instructions per
    shared object since start."""
    out = workdir / "callgrind"
    out.mkdir(parents=True)
    paced = Settings(
        **{
            **asdict(settings),
            "step_seconds": calls / INSTRUCTION_CPS,
            "warmup_calls": INSTRUCTION_BASE_CALLS,  # at 10 cps (warm_up's slowest)
            "noise_wait": False,  # instructions do not follow the machine's load
        }
    )
    (workdir / "run").mkdir()
    topology = Topology(workdir / "run", paced, None, callgrind_dir=out)
    workers: dict[str, list[int]] = {}
    try:
        topology.start()
        warm_up(topology)
        for name in paced.stacks:
            stack = topology.stacks[name]
            workers[name] = stack.sip_workers()
            step = run_step(topology, name, paced, INSTRUCTION_CPS, "callgrind")
            if step["failed"]:
                raise RuntimeError(f"{name}: {step['failed']} of {calls} calls failed")
            drain(stack, max_wait_s=30.0)
        for stack in topology.stacks.values():
            stack.kamailio.stop(timeout=120.0)  # each process writes its file as it exits
    finally:
        topology.stop()
    counts: dict[str, dict[str, int]] = {}
    for name, pids in workers.items():
        summed: dict[str, int] = {}
        for pid in pids:
            for obj, n in callgrind_by_object(out / f"{name}.{pid}").items():
                summed[obj] = summed.get(obj, 0) + n
        counts[name] = summed
    return counts


def instructions_per_call(settings: Settings, calls: int, log: Any = None) -> dict[str, Any]:
    """Instructions per call of each stack's SIP workers, per shared object: two callgrind
    runs `calls` calls apart (start-up and warm-up cancel out). User space only, and
    without the timer processes, whose work follows the wall clock (a callgrind run is ~50
    times slower); the calls themselves run in the SIP workers (requests, replies, dialog
    events). Deterministic where CPU time is not: the ratio of the stacks' totals is
    `instruction_ratio`, the repeatable counterpart of cpu_ratio's user-space part."""
    require_valgrind()
    settings = Settings(**{**asdict(settings), "tenants": 0, "pin": False})
    # one hash seed for every Kamailio's Python: its dicts and sets then lay out the same
    # in every run (a random seed moves the count by 2-4 %)
    os.environ["PYTHONHASHSEED"] = "0"
    workdir = Path(tempfile.mkdtemp(prefix="sipload-cg-"))
    try:
        runs = []
        for measured in (INSTRUCTION_BASE_CALLS, INSTRUCTION_BASE_CALLS + calls):
            runs.append(callgrind_run(settings, measured, workdir / str(measured)))
            if log is not None:
                print(f"callgrind run of {measured} calls done", file=log, flush=True)
    finally:
        if not settings.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    short, long = runs
    out: dict[str, Any] = {
        "calls": calls,
        "method": f"callgrind, SIP workers, user space; runs of {INSTRUCTION_BASE_CALLS} and "
        f"{INSTRUCTION_BASE_CALLS + calls} calls at {INSTRUCTION_CPS} cps",
    }
    for name in settings.stacks:
        objects = {
            obj: round((long[name].get(obj, 0) - short[name].get(obj, 0)) / calls)
            for obj in long[name]
        }
        out[name] = {
            "instructions_per_call": sum(objects.values()),
            "by_object": dict(sorted(objects.items(), key=lambda item: -item[1])[:12]),
        }
    out["instruction_ratio"] = round(
        out["dispatcher"]["instructions_per_call"] / out["native"]["instructions_per_call"], 3
    )
    return out


def measure(settings: Settings, log: Any = None) -> dict[str, Any]:
    """Start everything, run the rounds (each a ramp of every stack, alternating step by
    step), return the report."""

    def say(text: str) -> None:
        if log is not None:
            print(text, file=log, flush=True)

    deadline = time.monotonic() + settings.budget_s
    pinning = Pinning.plan(settings.pin)
    workdir = Path(tempfile.mkdtemp(prefix="sipload-"))
    topology = Topology(workdir, settings, pinning)
    steps: list[dict[str, Any]] = []
    ended_by: dict[int, dict[str, str]] = {}
    restarts = 0
    try:
        topology.start()
        where = pinning.describe(settings.redis_on_kamailio_core) if pinning else "no pinning"
        say(f"started in {workdir}; {where}")
        for stack in topology.stacks.values():
            drain(stack, max_wait_s=15.0)  # as in Topology.reset
        warm_up(topology)

        def run_once(name: str, rate: float, number: int) -> dict[str, Any]:
            for attempt in range(1, UAC_ATTEMPTS + 1):
                before = wait_for_quiet(topology) if settings.noise_wait else 0.0
                try:
                    step = run_step(topology, name, settings, rate, "ramp")
                    break
                except UacNotStarted as exc:
                    if attempt == UAC_ATTEMPTS:
                        raise
                    say(f"round {number} {name} {rate:g} cps: {exc}; once more")
            step["round"] = number
            step["other_load_before"] = round(before, 2)
            steps.append(step)
            if step["failed"]:
                nonlocal restarts
                restarts += 1
                topology.reset(name)
            say(
                f"round {number} {name:<10} {rate:>6g} cps: fail {step['fail_rate']:.4%} "
                f"cpu {step['cpu_ms_per_call']} ms/call, placed {step['placed_cps']} cps "
                f"by {step['uacs']} uac ({step['uac_core_share_each']:.0%} core each), "
                f"setup {step['setup_ms_avg']} ms, cores {step['core_busy']}, "
                f"other load {step['other_load_cores']} cores"
            )
            return step

        def run(name: str, rate: float, number: int) -> dict[str, Any]:
            """One run; a failed one while other jobs were busy runs once more."""
            step = run_once(name, rate, number)
            if not step["passed"] and step["other_load_cores"] >= NOISY:
                step["superseded"] = True
                step = run_once(name, rate, number)
                step["retry_of_noisy_run"] = True
            return step

        for number in range(1, settings.rounds + 1):
            # an equal share of the time left for each round left
            now = time.monotonic()
            round_deadline = now + (deadline - now) / (settings.rounds - number + 1)
            names = settings.stacks
            ramping = set(names)
            ended = {name: "top step" for name in names}
            for index, rate in enumerate(settings.steps):
                # native, ours(, tenants), native, ...: who goes first turns every step and
                # round (with two stacks: swaps)
                turn = (index + number + 1) % len(names)
                order = names[turn:] + names[:turn]
                for name in order:
                    if name not in ramping:
                        continue
                    if time.monotonic() >= round_deadline:
                        ended[name] = "time"
                        ramping.discard(name)
                    elif not run(name, rate, number)["passed"]:
                        ended[name] = "failed"
                        ramping.discard(name)
                if not ramping:
                    break
            ended_by[number] = ended
            say(f"round {number} ended: {ended}")
        leftovers = {k: v for name in settings.stacks for k, v in topology.leftovers(name).items()}
        leftovers["restarts_after_failed_runs"] = restarts
        for name, failed in topology.warmup_failed.items():
            leftovers[f"{name}_warmup_failed_calls"] = failed
        python_errors = {
            f"{name}_python_errors": len(topology.stacks[name].kamailio.python_errors())
            for name in settings.stacks
            if name != "native"
        }
        tenants_setup = {
            "load_s": topology.tenants_load_s,
            "active": len(topology.active),
            "registrations": topology.registrations,
        }
        kamailio_affinity = sorted(
            {a for st in topology.stacks.values() for a in affinity_of(group_pids(st.leader))}
        )
    finally:
        topology.stop()
    if not settings.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return build_report(settings, steps, ended_by, pinning, leftovers, python_errors,
                        kamailio_affinity, tenants_setup)  # fmt: skip


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def _ratio(ours: float | None, native: float | None) -> float | None:
    return round(ours / native, 3) if ours and native else None


def round_figures(
    steps: list[dict[str, Any]], number: int, ended_by: dict[str, str]
) -> dict[str, Any]:
    """One round: each stack's highest passing rate; the CPU per call of native and
    dispatcher at the highest rate both passed (else the lowest both ran) and the ratios
    dispatcher / native; with a tenants stack, its CPU per call and the dispatcher's at the
    highest rate those two passed (likewise), and tenants_cpu_ratio = tenants / dispatcher."""
    runs = [s for s in steps if s["round"] == number and not s.get("superseded")]
    names = [name for name in STACKS if name in ended_by]
    passed = {
        name: {s["offered_cps"] for s in runs if s["stack"] == name and s["passed"]}
        for name in names
    }
    ran = {name: {s["offered_cps"] for s in runs if s["stack"] == name} for name in names}

    def reference(a: str, b: str) -> float | None:
        common = passed[a] & passed[b]
        return max(common) if common else min(ran[a] & ran[b], default=None)

    def at(rate: float | None, name: str, key: str) -> Any:
        for s in runs:
            if s["stack"] == name and s["offered_cps"] == rate:
                return s.get(key)
        return None

    cpu_reference = reference("native", "dispatcher")
    out: dict[str, Any] = {"round": number, "cpu_reference_cps": cpu_reference}
    for name in names:
        failed = [s["offered_cps"] for s in runs if s["stack"] == name and not s["passed"]]
        out[name] = {
            "max_cps": max(passed[name], default=None),
            "failed_at_cps": min(failed, default=None),
            # "failed": the ramp found the limit; "top step" / "time": a lower bound
            "ramp_ended_by": ended_by.get(name),
        }
    for name in ("native", "dispatcher"):
        out[name]["cpu_ms_per_call"] = at(cpu_reference, name, "cpu_ms_per_call")
    for key in ("redis_cpu_ms_per_call", "redis_commands_per_call"):
        out["dispatcher"][key] = at(cpu_reference, "dispatcher", key)
        native = at(cpu_reference, "native", key)
        if native is not None:  # --native-redis-trips
            out["native"][key] = native
    nat, dsp = out["native"], out["dispatcher"]
    out["cpu_ratio"] = _ratio(dsp["cpu_ms_per_call"], nat["cpu_ms_per_call"])
    out["cps_ratio"] = _ratio(dsp["max_cps"], nat["max_cps"])
    # what a carrier pays per call: the dispatcher's Kamailio and its Redis, at the same rate
    system = (
        dsp["cpu_ms_per_call"] + dsp["redis_cpu_ms_per_call"]
        if dsp["cpu_ms_per_call"] and dsp["redis_cpu_ms_per_call"]
        else None
    )
    out["system_cpu_ratio"] = _ratio(system, nat["cpu_ms_per_call"])
    if "tenants" in names:
        rate = reference("dispatcher", "tenants")
        tnt = out["tenants"]
        tnt["reference_cps"] = rate
        for key in ("cpu_ms_per_call", "redis_cpu_ms_per_call", "redis_commands_per_call"):
            tnt[key] = at(rate, "tenants", key)
        # the one-tenant stack at the same rate (not always cpu_reference_cps)
        tnt["dispatcher_cpu_ms_per_call"] = at(rate, "dispatcher", "cpu_ms_per_call")
        tnt["dispatcher_redis_cpu_ms_per_call"] = at(rate, "dispatcher", "redis_cpu_ms_per_call")
        out["tenants_cpu_ratio"] = _ratio(tnt["cpu_ms_per_call"], tnt["dispatcher_cpu_ms_per_call"])
        out["tenants_cps_ratio"] = _ratio(tnt["max_cps"], dsp["max_cps"])
    return out


def worker_memory(steps: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The largest SIP worker of stack `name` over its passing runs (after each, before any
    restart): its memory (`process_memory`) and the run it was read after."""
    best: tuple[dict[str, Any], dict[str, Any]] | None = None
    for s in steps:
        if s["stack"] != name or not s["passed"]:
            continue
        for worker in s.get("worker_memory") or []:
            if best is None or worker["vmrss_mb"] > best[0]["vmrss_mb"]:
                best = worker, s
    if best is None:
        return None
    worker, step = best
    figures = {k: v for k, v in worker.items() if k != "pid"}
    return {**figures, "after_run": {"round": step["round"], "offered_cps": step["offered_cps"]}}


def _met(value: float | None, limit: float, at_most: bool = True) -> bool | None:
    if value is None:
        return None
    return value <= limit if at_most else value >= limit


def build_report(
    settings: Settings,
    steps: list[dict[str, Any]],
    ended_by: dict[int, dict[str, str]],
    pinning: Pinning | None,
    leftovers: dict[str, int],
    python_errors: dict[str, int],
    kamailio_affinity: list[str],
    tenants_setup: dict[str, Any],
) -> dict[str, Any]:
    rounds = [round_figures(steps, number, ended) for number, ended in ended_by.items()]
    report: dict[str, Any] = {}
    for name in ("native", "dispatcher"):
        cpu = [r[name]["cpu_ms_per_call"] for r in rounds]
        cps = [r[name]["max_cps"] for r in rounds]
        report[name] = {
            "cpu_ms_per_call": _median(cpu),
            "max_cps": _median(cps),
            "cpu_ms_per_call_rounds": cpu,
            "max_cps_rounds": cps,
            # some round's ramp ended without a failure: its max is a lower bound
            "max_cps_is_lower_bound": any(r[name]["ramp_ended_by"] != "failed" for r in rounds),
        }
    report["dispatcher"]["redis_cpu_ms_per_call"] = _median(
        [r["dispatcher"]["redis_cpu_ms_per_call"] for r in rounds]
    )
    report["redis_cpu_ms_per_call"] = report["dispatcher"]["redis_cpu_ms_per_call"]
    report["cpu_ratio"] = _median([r["cpu_ratio"] for r in rounds])
    report["cps_ratio"] = _median([r["cps_ratio"] for r in rounds])
    report["system_cpu_ratio"] = _median([r["system_cpu_ratio"] for r in rounds])
    report["cpu_reference_cps"] = [r["cpu_reference_cps"] for r in rounds]
    many = bool(settings.tenants)
    report["auth"] = many  # digest on the tenants stack's REGISTERs; its calls from a trunk
    report["tenants"] = settings.tenants
    report["tenants_cpu_ratio"] = None
    report["worker_rss_mb"] = None
    if many:
        cpu = [r["tenants"]["cpu_ms_per_call"] for r in rounds]
        cps = [r["tenants"]["max_cps"] for r in rounds]
        report["tenants_stack"] = {
            "tenants": settings.tenants,
            "tenants_with_calls": tenants_setup["active"],
            "load_s": tenants_setup["load_s"],
            "registrations": tenants_setup["registrations"],
            "cpu_ms_per_call": _median(cpu),
            "max_cps": _median(cps),
            "cpu_ms_per_call_rounds": cpu,
            "max_cps_rounds": cps,
            "max_cps_is_lower_bound": any(
                r["tenants"]["ramp_ended_by"] != "failed" for r in rounds
            ),
            "reference_cps": [r["tenants"]["reference_cps"] for r in rounds],
            "redis_cpu_ms_per_call": _median(
                [r["tenants"]["redis_cpu_ms_per_call"] for r in rounds]
            ),
        }
        report["tenants_cpu_ratio"] = _median([r["tenants_cpu_ratio"] for r in rounds])
        memory = {name: worker_memory(steps, name) for name in ("tenants", "dispatcher")}
        report["worker_memory"] = {
            **memory,
            "note": "the largest SIP worker of each stack after its passing runs, in MB: "
            "vmrss_mb counts every resident page, also the pages of Kamailio's shared "
            "memory (-m) the worker touched (rss_shmem_mb); private_mb (Private_Clean + "
            "Private_Dirty) is the worker's own - its pkg memory and Python heap, where "
            "the tenant configs it keeps (LRU) live; pss_mb shares the shared pages out",
        }
        if memory["tenants"] is not None:
            report["worker_rss_mb"] = memory["tenants"]["vmrss_mb"]
    report["targets"] = {
        "cpu_ratio_max": TARGET_CPU_RATIO,
        "cps_ratio_min": TARGET_CPS_RATIO,
        "cpu_ratio_met": _met(report["cpu_ratio"], TARGET_CPU_RATIO),
        "cps_ratio_met": _met(report["cps_ratio"], TARGET_CPS_RATIO, at_most=False),
        "system_cpu_ratio_max": TARGET_SYSTEM_CPU_RATIO,
        "system_cpu_ratio_met": _met(report["system_cpu_ratio"], TARGET_SYSTEM_CPU_RATIO),
    }
    if many:
        report["targets"]["tenants_cpu_ratio_max"] = TARGET_TENANTS_CPU_RATIO
        report["targets"]["tenants_cpu_ratio_met"] = _met(
            report["tenants_cpu_ratio"], TARGET_TENANTS_CPU_RATIO
        )
    report["floor"] = settings.floor
    report["native_redis_trips"] = settings.native_redis_trips
    report["rounds"] = rounds
    report["setup"] = {
        "rounds": settings.rounds,
        "medians": "cpu_ratio, cps_ratio, system_cpu_ratio and tenants_cpu_ratio: the median "
        "of the rounds' ratios; each stack's cpu_ms_per_call and max_cps: the median of its "
        "rounds",
        "agents": settings.agents,
        "agent_max_calls": settings.max_calls,
        "kamailio_children": settings.children,
        "kamailio_memory_mb": {"shm": settings.shm_mb, "pkg": settings.pkg_mb},
        "kamailio_mem_manager": settings.mem_manager,
        "hold_ms": settings.hold_ms,
        "step_seconds": settings.step_seconds,
        "steps_cps": list(settings.steps),
        "uac_cps": settings.uac_cps,
        "budget_s": settings.budget_s,
        "pass_rule": f"failed < {MAX_FAILED:.1%} and placed >= {MIN_PLACED:.0%} of offered",
        "ramp_rule": "each round ramps each stack until its first failed step, the top step "
        "or the round's share of the budget",
        "noise_rule": f"wait up to 8 s for other jobs < {NOISY} cores before a run; "
        "a failed run with other jobs >= that runs once more (the first is superseded)",
        "agent_targets": "registered AORs (REGISTER; usrloc in memory, DMQ, written back to "
        "Redis), "
        + (
            "dialled directly, each in turn (--floor: no group, no router)"
            if settings.floor
            else "least_busy group, sticky off"
        ),
        "auth": "native and dispatcher: none (SIPp on 127.0.0.1 is in DISPATCHER_TRUSTED); "
        f"tenants: only the trunk {TRUNK_IP} is trusted, its phones REGISTER with digest "
        "(MD5 offered first: SIPp 3.6 answers the first challenge and knows no SHA-256)",
        "redis_transport": "unix socket" if settings.redis_unix else "loopback TCP",
        "native": "ds_select_dst(1, 10), dialog, ds_load_update/ds_load_unset, maxload"
        + (
            "; 3 Redis round trips per call (PING over a unix socket, ndb_redis: INVITE, "
            "its 2xx, BYE)"
            if settings.native_redis_trips
            else ""
        ),
        "pinning": pinning.describe(settings.redis_on_kamailio_core) if pinning else "none",
        "kamailio_cpus_allowed": kamailio_affinity,
        "cpus": os.cpu_count(),
        "source": _git_revision(),
    }
    if many:
        report["setup"]["tenants"] = (
            f"{settings.tenants} tenants of {settings.agents} agents and 5 least_busy groups "
            f"of all of them in a Redis of their own; calls to the DIDs (inbound rule -> "
            f"group) of {tenants_setup['active']} of them, spread evenly, from the trunk "
            f"{TRUNK_IP}; the agents of those registered with digest"
        )
    report["checks"] = {**leftovers, **python_errors}
    report["steps"] = steps
    return report


def _git_revision() -> str:
    """The checkout measured: commit, and "-dirty" with uncommitted changes."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


# -- output ---------------------------------------------------------------------------------


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"{'round':>5} {'stack':<11} {'offered':>7} {'placed':>7} {'uacs':>4} {'calls':>6} "
        f"{'failed':>7} {'cpu ms/call':>11} {'redis ms':>9} {'setup ms':>9} {'kam core':>8} "
        f"{'uac core':>8} {'cores':>11} {'other':>6}"
    ]
    for s in report["steps"]:
        cores = "/".join(f"{v:.0%}" for v in s["core_busy"].values())
        redis_ms = s.get("redis_cpu_ms_per_call")
        lines.append(
            f"{s['round']:>4}{'*' if s.get('superseded') else ' '} {s['stack']:<11} "
            f"{s['offered_cps']:>7g} {s['placed_cps'] or 0:>7g} {s['uacs']:>4} "
            f"{s['calls']:>6} {s['fail_rate']:>7.2%} {s['cpu_ms_per_call'] or 0:>11.3f} "
            f"{'' if redis_ms is None else f'{redis_ms:.3f}':>9} "
            f"{s['setup_ms_avg'] or 0:>9.1f} {s['kamailio_core_share']:>8.0%} "
            f"{s['uac_core_share_each']:>8.0%} {cores:>11} {s['other_load_cores']:>6.2f}"
        )
    lines += [
        "",
        f"{'round':>5} {'at cps':>6} {'native ms':>9} {'ours ms':>8} {'cpu_ratio':>9} "
        f"{'native max':>10} {'ours max':>8} {'cps_ratio':>9}",
    ]
    for r in report["rounds"]:
        nat, dsp = r["native"], r["dispatcher"]
        lines.append(
            f"{r['round']:>5} {r['cpu_reference_cps'] or 0:>6g} "
            f"{nat['cpu_ms_per_call'] or 0:>9.3f} {dsp['cpu_ms_per_call'] or 0:>8.3f} "
            f"{r['cpu_ratio'] or 0:>9.3f} {_max_cell(nat, 10)} {_max_cell(dsp, 8)} "
            f"{r['cps_ratio'] or 0:>9.3f}"
        )
    nat, dsp, targets = report["native"], report["dispatcher"], report["targets"]
    lines += [
        "(max: f = the ramp failed at the next step, t = top step or time: a lower bound)",
        "",
        f"medians     {'cpu ms/call':>11} {'max cps':>8}",
        f"{'native':<11} {nat['cpu_ms_per_call'] or 0:>11.3f} {nat['max_cps'] or 0:>8g}",
        f"{'dispatcher':<11} {dsp['cpu_ms_per_call'] or 0:>11.3f} {dsp['max_cps'] or 0:>8g}"
        f"   + redis {dsp['redis_cpu_ms_per_call'] or 0:.3f} ms/call",
        f"cpu_ratio {report['cpu_ratio']} (target <= {targets['cpu_ratio_max']}: "
        f"{'met' if targets['cpu_ratio_met'] else 'not met'}), "
        f"cps_ratio {report['cps_ratio']} (target >= {targets['cps_ratio_min']}: "
        f"{'met' if targets['cps_ratio_met'] else 'not met'}), "
        f"system_cpu_ratio {report['system_cpu_ratio']} (Kamailio + Redis; target <= "
        f"{targets['system_cpu_ratio_max']}: "
        f"{'met' if targets['system_cpu_ratio_met'] else 'not met'}); medians of "
        f"{len(report['rounds'])} rounds; Kamailio's memory manager: "
        f"{report['setup']['kamailio_mem_manager']}",
        "* a failed run while other jobs used >= "
        f"{NOISY} cores ('other'), run once more; not counted",
    ]
    if "tenants_stack" in report:
        lines += ["", *_tenants_table(report)]
    lines += [
        f"pinning: {report['setup']['pinning']}",
        f"checks: {report['checks']}",
    ]
    return "\n".join(lines)


def _max_cell(figures: dict[str, Any], width: int) -> str:
    """A round's max_cps of a stack and how its ramp ended (f, t), `width` wide."""
    return f"{figures['max_cps'] or 0:>{width - 3}g} {figures['ramp_ended_by'][0]:>2}"


def _tenants_table(report: dict[str, Any]) -> list[str]:
    """The tenants stack against the one-tenant stack, per round and as medians."""
    tnt, targets = report["tenants_stack"], report["targets"]
    lines = [
        f"{report['tenants']} tenants, auth on ({report['setup']['tenants']}): loaded in "
        f"{tnt['load_s']} s; registrations {tnt['registrations']}",
        f"{'round':>5} {'at cps':>6} {'1 tenant ms':>11} {'tenants ms':>10} {'ratio':>7} "
        f"{'+ redis ms':>10} {'1 tenant max':>12} {'tenants max':>11}",
    ]
    for r in report["rounds"]:
        many, one = r["tenants"], r["dispatcher"]
        lines.append(
            f"{r['round']:>5} {many['reference_cps'] or 0:>6g} "
            f"{many['dispatcher_cpu_ms_per_call'] or 0:>11.3f} "
            f"{many['cpu_ms_per_call'] or 0:>10.3f} {r['tenants_cpu_ratio'] or 0:>7.3f} "
            f"{many['redis_cpu_ms_per_call'] or 0:>10.3f} "
            f"{_max_cell(one, 12)} {_max_cell(many, 11)}"
        )
    memory = report["worker_memory"]
    lines.append(
        f"tenants_cpu_ratio {report['tenants_cpu_ratio']} (target <= "
        f"{targets['tenants_cpu_ratio_max']}: "
        f"{'met' if targets['tenants_cpu_ratio_met'] else 'not met'}); tenants stack "
        f"{tnt['cpu_ms_per_call']} ms/call + redis {tnt['redis_cpu_ms_per_call']}, max "
        f"{tnt['max_cps']} cps (medians)"
    )
    for name in ("tenants", "dispatcher"):
        worker = memory.get(name)
        if worker is not None:
            lines.append(
                f"largest SIP worker, {name}: VmRSS {worker['vmrss_mb']} MB (shared memory "
                f"{worker['rss_shmem_mb']} of it), private {worker['private_mb']} MB, PSS "
                f"{worker['pss_mb']} MB"
            )
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """CPU per call and failure rate against offered CPS, every stack, every round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cpu_ax, fail_ax) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    markers = "os^Dv"
    colors = {"native": "tab:blue", "dispatcher": "tab:orange", "tenants": "tab:green"}
    for name, color in colors.items():
        for r in report["rounds"]:
            number = r["round"]
            runs = sorted(
                (
                    s
                    for s in report["steps"]
                    if s["stack"] == name and s["round"] == number and not s.get("superseded")
                ),
                key=lambda s: s["offered_cps"],
            )
            if not runs:
                continue
            x = [s["offered_cps"] for s in runs]
            label = f"{name} (round {number})"
            marker = markers[(number - 1) % len(markers)]
            cpu_ax.plot(x, [s["cpu_ms_per_call"] for s in runs], marker=marker,
                        color=color, label=label, alpha=0.8)  # fmt: skip
            fail_ax.plot(x, [100 * s["fail_rate"] for s in runs], marker=marker,
                         color=color, label=label, alpha=0.8)  # fmt: skip
            failed = [s for s in runs if not s["passed"]]
            if failed:  # a red cross on every failed run
                x_failed = [s["offered_cps"] for s in failed]
                cpu_ax.scatter(x_failed, [s["cpu_ms_per_call"] for s in failed], marker="x",
                               color="red", zorder=3, s=60)  # fmt: skip
                fail_ax.scatter(x_failed, [100 * s["fail_rate"] for s in failed], marker="x",
                                color="red", zorder=3, s=60)  # fmt: skip
    fail_ax.axhline(100 * MAX_FAILED, color="grey", linestyle="--", label="0.1% limit")
    fail_ax.set_yscale("symlog", linthresh=0.1)
    fail_ax.set_ylim(bottom=0)
    cpu_ax.set_ylabel("Kamailio CPU ms per call")
    fail_ax.set_ylabel("failed calls %")
    fail_ax.set_xlabel("offered calls per second")
    many = (
        f", tenants_cpu_ratio {report['tenants_cpu_ratio']} ({report['tenants']} tenants)"
        if report.get("tenants")
        else ""
    )
    cpu_ax.set_title(
        f"SIP load, medians of {len(report['rounds'])} rounds: cpu_ratio {report['cpu_ratio']}, "
        f"cps_ratio {report['cps_ratio']}{many}\n(max {report['dispatcher']['max_cps']} vs "
        f"{report['native']['max_cps']} cps)",
        fontsize="medium",
    )
    cpu_ax.set_ylim(bottom=0)
    for ax in (cpu_ax, fail_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def variant_suffix(settings: Settings) -> str:
    """What a run's result files add to their names when a stack is not the usual one, so
    that such a run never overwrites the usual figures."""
    return "-floor" * settings.floor + "-trips" * settings.native_redis_trips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quick", action="store_true", help="2 tiny steps (smoke test)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--steps", help="comma-separated offered CPS steps")
    parser.add_argument("--step-seconds", type=float, help="seconds of calls per step")
    parser.add_argument("--hold-ms", type=int, help="ms each call is held before the BYE")
    parser.add_argument("--agents", type=int, help="agents (SIPp UAS processes)")
    parser.add_argument("--children", type=int, help="Kamailio SIP workers, every stack")
    parser.add_argument("--rounds", type=int, help="alternated rounds (ramps of every stack)")
    parser.add_argument("--uac-cps", type=float, help="most cps per SIPp UAC; above, several")
    parser.add_argument("--budget", type=float, help="seconds for all rounds")
    parser.add_argument("--tenants", type=int, help="the tenants stack's tenants (10000)")
    parser.add_argument("--tenants-active", type=int, help="of them, those that take calls (100)")
    parser.add_argument("--no-tenants", action="store_true", help="no tenants stack")
    parser.add_argument("--no-pin", action="store_true", help="no CPU pinning")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="the dispatcher stack's callers dial the agents (registered users), not the "
        "group: our KEMI script without the router (results named sip_load-floor*)",
    )
    parser.add_argument(
        "--native-redis-trips",
        action="store_true",
        help="the native stack makes three Redis round trips per call (PING, ndb_redis), "
        "where ours makes its FCALLs: what the round trips cost by themselves",
    )
    parser.add_argument(
        "--redis-tcp",
        action="store_true",
        help="the dispatcher's Kamailio reaches Redis over loopback TCP, not its unix socket",
    )
    parser.add_argument(
        "--mem-manager",
        choices=MEM_MANAGERS,
        help=f"Kamailio's memory manager, every stack (default {DEFAULT_MEM_MANAGER})",
    )
    parser.add_argument(
        "--redis-on-kamailio-core",
        action="store_true",
        help="pin redis-server with Kamailio instead of with SIPp",
    )
    parser.add_argument(
        "--perf",
        type=float,
        metavar="CPS",
        help="instead of the rounds: one CPS step per stack under perf record, its CPU per "
        "call split by shared object (results/sip_load-perf.json)",
    )
    parser.add_argument(
        "--instructions",
        type=int,
        metavar="N",
        help="instead of the rounds: each stack's instructions per call (callgrind, runs N "
        "calls apart; needs valgrind) and their ratio (results/sip_load-instructions.json)",
    )
    args = parser.parse_args(argv)
    if args.instructions is not None and args.perf is not None:
        parser.error("--perf and --instructions are two runs: give one")
    if args.instructions is not None and args.instructions < 1:
        parser.error(f"--instructions {args.instructions}: at least 1 call")
    if args.perf is not None and not args.perf > 0:
        parser.error(f"--perf {args.perf:g}: the step's CPS must be above 0")
    settings = Settings.quick() if args.quick else Settings()
    overrides: dict[str, Any] = {
        "pin": not args.no_pin,
        "keep": args.keep,
        "floor": args.floor,
        "native_redis_trips": args.native_redis_trips,
        "redis_on_kamailio_core": args.redis_on_kamailio_core,
        "redis_unix": not args.redis_tcp,
    }
    if args.steps:
        overrides["steps"] = tuple(int(v) for v in args.steps.split(","))
    for key, value in (
        ("step_seconds", args.step_seconds),
        ("hold_ms", args.hold_ms),
        ("agents", args.agents),
        ("children", args.children),
        ("budget_s", args.budget),
        ("rounds", args.rounds),
        ("uac_cps", args.uac_cps),
        ("mem_manager", args.mem_manager),
        ("tenants", args.tenants),
        ("tenants_active", args.tenants_active),
    ):
        if value is not None:
            overrides[key] = value
    if args.no_tenants:
        overrides["tenants"] = 0
    settings = Settings(**{**asdict(settings), **overrides})

    if args.perf is not None or args.instructions is not None:
        if args.instructions is not None:
            found, stem = (
                instructions_per_call(settings, args.instructions, sys.stderr),
                "instructions",
            )
        else:
            found, stem = where_cpu_goes(settings, args.perf, log=sys.stderr), "perf"
        found["floor"] = settings.floor
        found["native_redis_trips"] = settings.native_redis_trips
        stem += variant_suffix(settings)
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / f"sip_load-{stem}.json").write_text(json.dumps(found, indent=2) + "\n")
        print(json.dumps(found, indent=2))
        return 0
    report = measure(settings, log=sys.stderr)
    stem = ("sip_load-quick" if args.quick else "sip_load") + variant_suffix(settings)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.results / f"{stem}.png")
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
