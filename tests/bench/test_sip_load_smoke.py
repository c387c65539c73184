"""bench/sip_load.py end to end in its quick mode: the three stacks start (native, ours with
one tenant, ours with 20 tenants and digest registrations), take calls, report.

Not a timed test: it checks the report's shape and that calls went through both stacks,
never how fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import run_script

pytestmark = [pytest.mark.sip, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "sip_load.py"


def test_quick_mode_runs_every_stack_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert json.loads((tmp_path / "sip_load-quick.json").read_text()) == report
    assert (tmp_path / "sip_load-quick.png").read_bytes().startswith(b"\x89PNG")
    for stack, summary in (
        ("native", "native"), ("dispatcher", "dispatcher"), ("tenants", "tenants_stack"),
    ):  # fmt: skip
        assert set(report[summary]) >= {"cpu_ms_per_call", "max_cps"}
        runs = [s for s in report["steps"] if s["stack"] == stack]
        assert {s["phase"] for s in runs} >= {"ramp"}
        assert sum(s["successful"] for s in runs) > 0, runs
        assert report[summary]["cpu_ms_per_call"] is not None
    assert {
        "cpu_ratio", "cps_ratio", "system_cpu_ratio", "redis_cpu_ms_per_call",
        "cpu_reference_cps", "setup", "checks",
        "auth", "tenants", "tenants_cpu_ratio", "worker_rss_mb", "worker_memory",
    } <= set(report)  # fmt: skip
    # the tenants stack: its tenants loaded, its phones registered with digest, its figures
    assert report["auth"] is True and report["tenants"] == 20
    assert report["tenants_cpu_ratio"] is not None and report["worker_rss_mb"] > 0
    tenants = report["tenants_stack"]
    assert tenants["load_s"] is not None
    assert tenants["registrations"][0]["registered"] == 4 * 4  # 4 tenants x 4 agents
    worker = report["worker_memory"]["tenants"]
    assert 0 < worker["private_mb"] < worker["vmrss_mb"] == report["worker_rss_mb"]
    # three alternated rounds, each with its own figures; the headline ratios are medians
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    for r in report["rounds"]:
        assert {
            "cpu_ratio", "cps_ratio", "system_cpu_ratio", "tenants_cpu_ratio",
            "native", "dispatcher", "tenants",
        } <= set(r)  # fmt: skip
        assert r["tenants"]["cpu_ms_per_call"] is not None
    assert {s["round"] for s in report["steps"]} == {1, 2, 3}
    # each round, each stack goes first once: the order turns
    firsts = [next(s["stack"] for s in report["steps"] if s["round"] == n) for n in (1, 2, 3)]
    assert sorted(firsts) == ["dispatcher", "native", "tenants"]
    assert set(report["targets"]) == {
        "cpu_ratio_max", "cps_ratio_min", "cpu_ratio_met", "cps_ratio_met",
        "system_cpu_ratio_max", "system_cpu_ratio_met",
        "tenants_cpu_ratio_max", "tenants_cpu_ratio_met",
    }  # fmt: skip
    # quick mode splits its 10 cps over two SIPp UACs: the parallel path runs here too
    assert {s["uacs"] for s in report["steps"]} == {2}
    assert report["dispatcher"]["redis_cpu_ms_per_call"] is not None
    assert report["checks"]["dispatcher_python_errors"] == 0
    assert report["checks"]["tenants_python_errors"] == 0
    assert report["checks"]["tenants_redis_live"] == report["checks"]["tenants_redis_resv"] == 0


def test_floor_and_native_redis_trips(tmp_path: Path) -> None:
    """The two runs that price a router's parts: ours without it (--floor) and the native
    stack with three Redis round trips per call (--native-redis-trips), here in one run."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--floor", "--native-redis-trips",
         "--no-tenants", "--rounds", "1", "--json", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["floor"] is True and report["native_redis_trips"] is True
    # its own file: the usual figures are not overwritten
    assert json.loads((tmp_path / "sip_load-quick-floor-trips.json").read_text()) == report
    ours = [s for s in report["steps"] if s["stack"] == "dispatcher"]
    assert ours and all(s["passed"] for s in ours), ours
    # calls to registered users: no claim, answer or release (a group call makes 3 FCALLs);
    # what remains is the keeper's, by the clock (sweeps, reconciling), not per call
    assert all(s["fcalls_per_call"] < 1 for s in ours), ours
    assert "dialled directly" in report["setup"]["agent_targets"]
    native = [s for s in report["steps"] if s["stack"] == "native"]
    assert native and all(s["passed"] for s in native), native
    for step in native:  # INVITE, 2xx, BYE: one PING each
        assert step["redis_commands_per_call"]["ping"] == pytest.approx(3, abs=0.2), step
    assert report["rounds"][0]["native"]["redis_cpu_ms_per_call"] is not None
    assert "3 Redis round trips" in report["setup"]["native"]
    assert report["checks"]["dispatcher_python_errors"] == 0


def test_agents_file_lists_every_agent_in_turn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = _script(monkeypatch)

    module.agents_file(tmp_path / "agents.csv", 3)

    assert (tmp_path / "agents.csv").read_text() == "SEQUENTIAL\na01\na02\na03\n"


def _script(monkeypatch: pytest.MonkeyPatch) -> Any:
    """bench/sip_load.py imported as when run as a script."""
    import importlib.util

    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("sip_load", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "sip_load", module)  # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_perf_reports_shares_by_shared_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """--perf's reading of `perf report --sort dso --stdio -g none` (perf itself is not
    run here)."""
    module = _script(monkeypatch)
    report = (
        "# Samples: 20K of event 'cpu-clock:ppp'\n#\n"
        "    46.97%  libpython3.11.so.1.0\n"
        "    23.65%  [kernel.kallsyms]\n\n"
        "     0.63%  hiredis.cpython-311-x86_64-linux-gnu.so\n"
    )

    assert module.dso_shares(report) == {
        "libpython3.11.so.1.0": 46.97,
        "[kernel.kallsyms]": 23.65,
        "hiredis.cpython-311-x86_64-linux-gnu.so": 0.63,
    }


# A callgrind out file as callgrind 3.19 writes one (trimmed): objects and functions named
# once, then by id; a callee's object may first appear in a `cob=` line; the cost line after
# `calls=` is the callee's inclusive cost.
CALLGRIND_OUT = """# callgrind format
version: 1
positions: line
events: Ir
summary: 1000

ob=(1) /usr/lib/x86_64-linux-gnu/kamailio/modules/pv.so
fl=(1) ???
fn=(1) pv_get_from_attr
0 100
cob=(2) /usr/sbin/kamailio
cfi=(2) ???
cfn=(2) parse_from_header
calls=3 0
0 250
+2 5
* 5

ob=(2)
fl=(2)
fn=(2)
0 250
cob=(3) /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0
cfn=(3) 0x0000000000104f20
calls=1 0
-1 600

ob=(3)
fn=(3)
0 600
cob=(1)
cfn=(1)
calls=1 0
0 40
totals: 960
"""


def test_instructions_are_summed_per_object_from_the_callgrind_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _script(monkeypatch)

    by_object = module.callgrind_by_object_text(CALLGRIND_OUT)

    # self costs only: a call line's inclusive cost is counted at its callee
    assert by_object == {"pv.so": 110, "kamailio": 250, "libpython3.11.so.1.0": 600}
    assert sum(by_object.values()) == 960


def test_commands_per_call_counts_what_ran_between_the_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _script(monkeypatch)
    before = {"fcall": (300, 900.0), "hget": (100, 50.0), "info": (2, 8.0), "get": (7, 1.0)}
    after = {"fcall": (600, 1800.0), "hget": (600, 300.0), "info": (3, 12.0), "get": (7, 1.0),
             "xadd": (500, 400.0)}  # fmt: skip

    # by name; "info" (the reads themselves) and commands that did not run left out
    assert module.commands_per_call(before, after, 100) == {"fcall": 3.0, "hget": 5.0, "xadd": 5.0}
    assert module.commands_per_call(before, after, 100, ("info", "fcall")) == {
        "hget": 5.0,
        "xadd": 5.0,
    }


@pytest.mark.parametrize("flag", ["--perf", "--instructions"])
def test_a_profiling_mode_refuses_zero(flag: str) -> None:
    done = run_script(SCRIPT, flag, "0")

    assert done.returncode == 2
    assert flag in done.stderr


def test_perf_and_instructions_are_refused_together() -> None:
    done = run_script(SCRIPT, "--perf", "1000", "--instructions", "100")

    assert done.returncode == 2
    assert "--perf and --instructions are two runs: give one" in done.stderr


def test_instructions_without_valgrind_name_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _script(monkeypatch)
    monkeypatch.setattr(module.shutil, "which", lambda name: None)

    with pytest.raises(SystemExit, match="needs valgrind \\(Debian package valgrind"):
        module.instructions_per_call(module.Settings.quick(), 100)


@pytest.mark.parametrize("cps", ["0", "-5", "nan"])
def test_perf_refuses_a_step_of_no_calls(cps: str) -> None:
    done = run_script(SCRIPT, "--perf", cps)

    assert done.returncode == 2
    assert "--perf" in done.stderr and "above 0" in done.stderr
