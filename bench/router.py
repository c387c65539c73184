"""The router's own cost per group call, in one process: Python CPU and Redis round trips.

`bench/sip_load.py` measures whole Kamailio processes, where the router's share hides among
SIP parsing, tm and the kernel, and moves with the machine's load by more than most changes
to the router do. This benchmark runs `dispatcher.sip.routing.Router` alone, the way the KEMI
script drives it for one answered call to a least_busy group of 20 agents (the SIP load
tenant), against its own redis-server reached over a unix socket:

    route_invite (plan, claim, relay)  ->  on_reply 180  ->  on_reply 200 (answered)
    ->  dialog:start  ->  dialog:end of the call 50 calls earlier (release)

Kamailio's side is a stand-in KSR object (`StandInKSR`): pseudo-variables in a dict, every
contact lookup finding one phone, tm calls returning success. Its own cost is a few dict
operations per call; everything else measured is the router's Python code, redis-py and the
kernel's socket calls. Not a test and not a SIP benchmark: a profiler's bench for the router.

    .venv/bin/python bench/router.py [--json] [--calls N] [--profile] [--instructions N]

Reports per call: thread CPU (user and system, getrusage RUSAGE_THREAD), wall time, FCALLs
and the commands the library's functions run in them, by command (INFO commandstats:
`redis_commands_per_call`, counts that do not move between runs); the redis-server's CPU
per call (utime + stime from /proc: what a carrier's Redis pays per call, I/O included)
and, from a second run with SLOWLOG recording
every command, each library function's own execution time per FCALL (`function_us`: the
hot three are disp_claim, disp_answered, disp_release); with --profile the top functions by
own time (cProfile). Writes bench/results/router.json.

CPU time moves 10-20 % between runs on a shared machine, more than most changes to the
router do. `--instructions N` adds instructions per call, counted by valgrind's callgrind in
two runs that differ by N measured calls (start-up and warm-up cancel out): the router's
process (`instructions_per_call`, user space) and its redis-server's handling of commands
(`redis_instructions_per_call`: reading and running them, writing the replies; its event
loop's waits and timers, which follow the wall clock, are not counted). Both repeat to
about 0.5 % whatever else the machine is doing. Needs valgrind (`make bench` installs it);
about a minute for N = 1000.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dispatcher.admin.config_sync import import_tenant  # noqa: E402
from dispatcher.config.model import Tenant  # noqa: E402
from dispatcher.run.procs import RedisProcess  # noqa: E402
from dispatcher.state import StateStore  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from sip_load import (  # noqa: E402
    EXTENSION,
    TENANT,
    callgrind_command,
    command_stats,
    commands_per_call,
    process_cpu_ms,
    require_valgrind,
    tenant_doc,
)

HELD_CALLS = 50  # calls talking at once: each call releases the one 50 calls before it
WARMUP_CALLS = 300
# --instructions: measured calls of the shorter callgrind run (the longer one has N more)
BASE_CALLS = 200


class _Module:
    """One KSR sub-module (KSR.pv, KSR.tm, ...): the functions given as attributes."""

    def __init__(self, **functions: Any) -> None:
        self.__dict__.update(functions)


class StandInKSR:
    """The part of app_python3's KSR module the router uses, without Kamailio."""

    def __init__(self) -> None:
        pv: dict[str, Any] = {}
        self.pvs = pv
        shared: dict[str, Any] = {}

        def put(name: str, value: Any) -> int:
            pv[name] = value
            return 1

        def fetch_contacts(table: str, aor: str, profile: str) -> int:
            user = aor.split("@", 1)[0].removeprefix("sip:")
            pv[f"$ulc({profile}=>count)"] = 1
            pv[f"$(ulc({profile}=>addr)[0])"] = f"sip:{user}@127.0.0.1:5099"
            pv[f"$(ulc({profile}=>received)[0])"] = ""
            return 1

        def ok(*_: Any) -> int:
            return 1

        defines = {"$def(DLG_TIMEOUT)": 43200, "$def(LIVE_MARGIN_S)": 300}

        def get(name: str) -> Any:
            return pv.get(name, defines.get(name))

        self.pv = _Module(get=get, sets=put, seti=put, unset=lambda n: pv.pop(n, 1))
        self.registrar = _Module(
            reg_fetch_contacts=fetch_contacts, reg_free_contacts=ok, registered=lambda _: -1
        )
        self.tm = _Module(
            t_relay=ok,
            t_set_fr=ok,
            t_on_reply=ok,
            t_on_failure=ok,
            t_newtran=ok,
            t_reply=ok,
            t_is_canceled=lambda: -1,
        )
        self.htable = _Module(
            sht_seti=lambda t, k, v: shared.__setitem__(k, v),
            sht_rm=lambda t, k: shared.pop(k, None),
            sht_get=lambda t, k: shared.get(k),
            sht_setxs=lambda t, k, v, expire_s: shared.__setitem__(k, v),
            sht_inc=lambda t, k: shared.__setitem__(k, shared.get(k, 0) + 1) or shared[k],
        )
        self.dialog = _Module(dlg_set_property=ok)
        self.corex = _Module(append_branch_uri=ok)
        self.hdr = _Module(append_to_reply=ok)
        self.setflag = ok
        self.errors: list[str] = []

    def info(self, message: str) -> None:
        pass

    def err(self, message: str) -> None:
        self.errors.append(message)


def function_times(store: StateStore, run: Any) -> dict[str, float]:
    """Mean execution µs per library function while `run()` runs, from SLOWLOG with every
    command logged (its own overhead stays out of the CPU figures: a separate run)."""
    client = store._redis
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 1_000_000)
    client.slowlog_reset()
    run()
    store.flush()
    entries = client.slowlog_get(-1)
    client.config_set("slowlog-log-slower-than", 10_000)
    client.slowlog_reset()
    totals: dict[str, list[float]] = {}
    for entry in entries:
        command = bytes(entry["command"]).split()
        if len(command) > 1 and command[0].upper() == b"FCALL":
            totals.setdefault(command[1].decode(), []).append(entry["duration"])
    return {name: round(sum(v) / len(v), 1) for name, v in sorted(totals.items())}


def measure(
    calls: int, profile: bool, slowlog: bool = True, redis_wrapper: Sequence[str] = ()
) -> dict[str, Any]:
    """Run WARMUP_CALLS, then `calls` measured calls; the figures per call. `slowlog`
    False leaves out the second run that times each library function; `redis_wrapper` is
    what the redis-server runs under (--instructions: callgrind), stopped at the end."""
    workdir = Path(tempfile.mkdtemp(prefix="rtr", dir="/tmp"))  # short: a socket path
    server = RedisProcess(workdir, unix_socket=True, wrapper=redis_wrapper)
    try:
        server.start(timeout=120.0 if redis_wrapper else 10.0)
        with StateStore(server.url, TENANT) as admin:
            import_tenant(admin, Tenant.model_validate(tenant_doc(20, 100)))
        os.environ.update(REDIS_URL=server.unix_url, DISPATCHER_TENANT=TENANT)
        from dispatcher.sip.routing import Router

        ksr = StandInKSR()
        router = Router.open(ksr)
        assert router is not None
        talking: list[str] = []

        def one_call(i: int) -> None:
            pv = ksr.pvs
            pv.clear()
            pv.update({"$ci": f"call-{i}@bench", "$rU": EXTENSION, "$fU": "bob"})
            pv["$rd"] = "127.0.0.1"
            if not router.route_invite():
                raise RuntimeError(f"call {i} was not routed: {ksr.errors[-3:]}")
            for status in ("180", "200"):
                pv["$rs"] = status
                router.on_reply()
            router.dialog_event("dialog:start")
            talking.append(pv["$dlg_var(dsp_call)"])
            if len(talking) > HELD_CALLS:
                pv["$dlg_var(dsp_call)"] = talking.pop(0)
                router.dialog_event("dialog:end")

        for i in range(WARMUP_CALLS):
            one_call(i)
        store = router.decider.store
        store.flush()
        commands0 = command_stats(store._redis)
        redis0 = process_cpu_ms(server.proc.pid)
        before = resource.getrusage(resource.RUSAGE_THREAD)
        started = time.perf_counter()
        for i in range(WARMUP_CALLS, WARMUP_CALLS + calls):
            one_call(i)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_THREAD)
        store.flush()
        redis_cpu_ms = process_cpu_ms(server.proc.pid) - redis0
        commands = command_stats(store._redis)
        report: dict[str, Any] = {
            "calls": calls,
            "user_us_per_call": round((after.ru_utime - before.ru_utime) / calls * 1e6, 1),
            "sys_us_per_call": round((after.ru_stime - before.ru_stime) / calls * 1e6, 1),
            "wall_us_per_call": round(wall / calls * 1e6, 1),
            "fcalls_per_call": commands_per_call(commands0, commands, calls).get("fcall", 0.0),
            # what the functions ran, most first
            "redis_commands_per_call": dict(
                sorted(
                    commands_per_call(commands0, commands, calls, ("info", "fcall")).items(),
                    key=lambda item: (-item[1], item[0]),
                )
            ),
            "router_errors": len(ksr.errors),
            "redis_cpu_us_per_call": round(redis_cpu_ms * 1000 / calls, 1),
        }
        report["cpu_us_per_call"] = round(report["user_us_per_call"] + report["sys_us_per_call"], 1)
        first = WARMUP_CALLS + calls
        if slowlog:
            report["function_us"] = function_times(
                store, lambda: [one_call(i) for i in range(first, first + min(calls, 2000))]
            )
        first += calls
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(first, first + calls):
                one_call(i)
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            report["profile"] = text.getvalue()
        router.decider.store.close()
        if redis_wrapper:
            # callgrind writes its counts as the server exits; give it the time
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(timeout=120)
        return report
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# Redis' own work per command under callgrind: reading and running commands, writing the
# replies (its event loop's waiting and its timers, which follow the wall clock, left out).
REDIS_COLLECT = ("readQueryFromClient", "handleClientsWithPendingWritesUsingThreads")


def _total(out: Path) -> int:
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"callgrind wrote no totals line to {out}")


def callgrind_instructions(calls: int, workdir: Path) -> tuple[int, int]:
    """Instructions (callgrind totals) of this script's process and of its redis-server's
    command handling (REDIS_COLLECT) for start-up, WARMUP_CALLS and `calls` measured
    calls, without the SLOWLOG run."""
    router_out, redis_out = workdir / f"router-{calls}.out", workdir / f"redis-{calls}.out"
    command = [
        *callgrind_command(router_out), sys.executable, str(Path(__file__).resolve()),
        "--bare", "--calls", str(calls), "--redis-callgrind", str(redis_out),
    ]  # fmt: skip
    # one hash seed: its dicts and sets lay out the same in every run
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"callgrind run of {calls} calls failed: {done.stderr[-2000:]}")
    return _total(router_out), _total(redis_out)


def instructions_per_call(calls: int) -> dict[str, Any]:
    """Instructions per call, router and Redis, from two callgrind runs `calls` measured
    calls apart."""
    require_valgrind()
    workdir = Path(tempfile.mkdtemp(prefix="rtr-cg"))
    try:
        short = callgrind_instructions(BASE_CALLS, workdir)
        long = callgrind_instructions(BASE_CALLS + calls, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "instruction_calls": calls,
        "instructions_per_call": round((long[0] - short[0]) / calls),
        "redis_instructions_per_call": round((long[1] - short[1]) / calls),
        "instructions": "callgrind, user space, runs of "
        f"{BASE_CALLS} and {BASE_CALLS + calls} measured calls; Redis: {', '.join(REDIS_COLLECT)}",
    }


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--calls", type=positive_int, default=5000, help="measured calls")
    parser.add_argument("--profile", action="store_true", help="cProfile a second run")
    parser.add_argument(
        "--instructions",
        type=positive_int,
        metavar="N",
        help="add instructions per call, from callgrind runs N calls apart (needs valgrind)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="the measured calls only, no report (one callgrind run of --instructions)",
    )
    parser.add_argument(
        "--redis-callgrind",
        type=Path,
        metavar="FILE",
        help="with --bare: run the redis-server under callgrind, its counts to FILE",
    )
    args = parser.parse_args(argv)
    if args.bare:
        wrapper = (
            callgrind_command(args.redis_callgrind, REDIS_COLLECT) if args.redis_callgrind else ()
        )
        measure(args.calls, profile=False, slowlog=False, redis_wrapper=wrapper)
        return 0
    report = measure(args.calls, args.profile)
    if args.instructions:
        report.update(instructions_per_call(args.instructions))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "router.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report))
        return 0
    for key, value in report.items():
        if key != "profile":
            print(f"{key:>18}: {value}")
    if "profile" in report:
        print(report["profile"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
