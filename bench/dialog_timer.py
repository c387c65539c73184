"""Dialog timer benchmark: how late does a short dialog timeout fire under load?

One stack on 127.0.0.1 per configuration: redis-server, one Kamailio with the dispatcher
(kamailio.cfg + KEMI, 4 SIP workers, DLG_TIMEOUT=2, DLG_KA_INTERVAL=0 as SIPp answers no
in-dialog OPTIONS), 20 agents (max_calls 100, least busy) whose phone is one SIPp UAS
(tests/sip/scenarios/uas_answer.xml), and a SIPp caller (bench/scenarios/uac_no_bye.xml)
placing --rate calls a second for --seconds s that never hangs up: every call ends by the
dialog timeout, whose BYEs (send_bye) release it in Redis (tm:local-request).

Per call: lateness = the `released` event's ts - the `answered` event's ts - 2000 ms (both
Redis' TIME; the dialog timer ticks in whole seconds, so 0..1000 ms is on time), and as the
caller sees it: its 200 to the dialog module's BYE - 2000 ms (SIPp's response time 1,
-trace_rtt), which does not wait for Redis. Reported per configuration: p50, p99, max of
both, calls never released within --grace s, and the CPU seconds of the process that runs
the dialog timer (Kamailio's `slow timer`, or the module's own `Dialog Main Timer`) - from
`core.psx` and /proc.

--stall-redis S stops the redis-server (SIGSTOP) for S seconds, --stall-at s into the
calls, then lets it go on (SIGCONT): what a Redis that stalls (a fork for a snapshot on a
big dataset, a slow disk under appendfsync always, a failover) does to the dialog timer.

Configurations: --timer-procs 0 (the timer in the core's shared slow timer process, as
Kamailio ships) and 1 (a process of its own, kamailio.cfg's default). Writes
bench/results/dialog_timer.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "sip"))

from dispatcher.admin.config_sync import import_tenant  # noqa: E402
from dispatcher.config.tenant_file import parse_tenant  # noqa: E402
from dispatcher.run.procs import RedisProcess  # noqa: E402
from dispatcher.run.sipprocs import KamailioProcess, SippProcess, run_sipp, sipp_uas  # noqa: E402
from dispatcher.state import StateStore, TenantKeys  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SCENARIOS = ROOT / "tests" / "sip" / "scenarios"
TENANT = "dlgtimer"
AGENTS = [f"t{i}" for i in range(1, 21)]  # 20 x max_calls 100: 2000 calls at once
TENANT_YAML = (
    "id: dlgtimer\nname: Dialog timer\nagents:\n"
    + "".join(
        f"  - {{id: {a}, name: {a}, targets: {{aor: {a}}}, state: available, max_calls: 100}}\n"
        for a in AGENTS
    )
    + "groups:\n  - {id: g, extension: '700', name: G, strategy: least_busy, sticky: false,"
    + " ring_timeout: 5, members: ["
    + ", ".join(f"{{agent: {a}}}" for a in AGENTS)
    + "]}\n"
)
TIMEOUT_S = 2


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timer_pids(kamailio: KamailioProcess) -> dict[str, int]:
    """Kamailio's timer processes by description (core.psx)."""
    out = {}
    for proc in kamailio.rpc("core.psx") or []:
        name = str(proc.get("DSC", ""))
        if "timer" in name.lower():
            out[name] = int(proc["PID"])
    return out


def _caller_late_ms(work: Path) -> list[int]:
    """Per call, the caller's 200 -> BYE time minus the timeout, from SIPp's -trace_rtt
    files (date_ms;response_time;rtd_no): sorted ms."""
    late = []
    for path in work.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            fields = line.split(";")
            if len(fields) >= 3 and fields[2].strip() == "1":
                late.append(round(float(fields[1])) - TIMEOUT_S * 1000)
    return sorted(late)


def _stall(server: RedisProcess, at_s: float, for_s: float) -> threading.Thread:
    """SIGSTOP the redis-server `at_s` from now for `for_s`, in a thread."""

    def run() -> None:
        time.sleep(at_s)
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(for_s)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_config(
    work: Path,
    timer_procs: int,
    rate: int,
    seconds: int,
    grace: float,
    stall: tuple[float, float] | None = None,
) -> dict:
    with RedisProcess(work / f"redis-{timer_procs}") as server:
        with StateStore(server.url, TENANT) as store:
            import_tenant(store, parse_tenant(TENANT_YAML, "yaml"))
        kamailio = KamailioProcess(
            work / f"k{timer_procs}",
            redis_url=server.url,
            tenant=TENANT,
            children=4,
            extra_defines={
                "DLG_TIMEOUT": TIMEOUT_S,
                "DLG_KA_INTERVAL": 0,
                "DLG_TIMER_PROCS": timer_procs,
            },
        )
        kamailio.start()
        phone = sipp_uas(work, SCENARIOS / "uas_answer.xml")
        try:
            for agent in AGENTS:  # every agent's phone is the one SIPp UAS
                registered = run_sipp(
                    work,
                    SCENARIOS / "register.xml",
                    kamailio.address,
                    calls=1,
                    service=agent,
                    keys={"contact_port": phone.local_port, "expires": 3600},
                )
                assert registered.ok, registered.output
            timers = _timer_pids(kamailio)
            before = {name: _cpu_s(pid) for name, pid in timers.items()}
            calls = rate * seconds
            uac = SippProcess(
                work,
                ROOT / "bench" / "scenarios" / "uac_no_bye.xml",
                kamailio.address,
                calls=calls,
                rate=rate,
                limit=rate * (TIMEOUT_S + 30),
                service="700",
                timeout=seconds + TIMEOUT_S + grace + 30,
                extra_args=["-trace_rtt", "-rtt_freq", "1"],
            )
            uac.start()
            stalling = _stall(server, *stall) if stall else None
            result = uac.wait()
            if stalling is not None:
                stalling.join()
            client = redis.Redis.from_url(server.url)
            deadline = time.monotonic() + grace
            while client.hlen(TenantKeys(TENANT).live) and time.monotonic() < deadline:
                time.sleep(0.5)
            cpu = {name: round(_cpu_s(pid) - before[name], 2) for name, pid in timers.items()}
            answered: dict[str, int] = {}
            released: dict[str, int] = {}
            for _, fields in client.xrange(TenantKeys(TENANT).events):
                kind = fields[b"type"]
                if kind == b"answered":
                    answered[fields[b"call"].decode()] = int(fields[b"ts"])
                elif kind == b"released" and fields.get(b"reason") == b"hangup":
                    released[fields[b"call"].decode()] = int(fields[b"ts"])
            late = sorted(
                released[c] - a - TIMEOUT_S * 1000 for c, a in answered.items() if c in released
            )
            client.close()
        finally:
            phone.stop()
            kamailio.stop()

    def pct(p: float, values: list[int]) -> int | None:
        return values[min(len(values) - 1, int(p * len(values)))] if values else None

    caller = _caller_late_ms(work)
    return {
        "timer_procs": timer_procs,
        "rate_cps": rate,
        "seconds": seconds,
        "calls_answered": len(answered),
        "never_released": len(set(answered) - set(released)),
        "sipp_failed": result.stats.failed,
        "redis_stall_s": stall,
        "late_ms_p50": pct(0.5, late),
        "late_ms_p99": pct(0.99, late),
        "late_ms_max": late[-1] if late else None,
        "late_ms_mean": round(statistics.fmean(late)) if late else None,
        "caller_late_ms_p50": pct(0.5, caller),
        "caller_late_ms_p99": pct(0.99, caller),
        "caller_late_ms_max": caller[-1] if caller else None,
        "timer_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--grace", type=float, default=40.0)
    parser.add_argument("--timer-procs", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--stall-redis", type=float, default=0.0, help="SIGSTOP Redis for s")
    parser.add_argument("--stall-at", type=float, default=3.0, help="s into the calls")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    stall = (args.stall_at, args.stall_redis) if args.stall_redis > 0 else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlgt") as tmp:
        for rate in args.rate:
            for procs in args.timer_procs:
                work = Path(tmp) / f"{rate}-{procs}"
                work.mkdir()
                rows.append(run_config(work, procs, rate, args.seconds, args.grace, stall))
                print(json.dumps(rows[-1]), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    report = {"host_cpus": os.cpu_count(), "hostname": socket.gethostname(), "runs": rows}
    (args.results / "dialog_timer.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{'procs':>5} {'cps':>5} {'calls':>6} {'lost':>5} {'p50':>6} {'p99':>6} {'max':>6}"
        f" {'caller p50':>10} {'p99':>6} {'max':>6}"
    )
    for r in rows:
        print(
            f"{r['timer_procs']:>5} {r['rate_cps']:>5} {r['calls_answered']:>6} "
            f"{r['never_released']:>5} {r['late_ms_p50']!s:>6} {r['late_ms_p99']!s:>6} "
            f"{r['late_ms_max']!s:>6} {r['caller_late_ms_p50']!s:>10} "
            f"{r['caller_late_ms_p99']!s:>6} {r['caller_late_ms_max']!s:>6}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
