"""bench/sip_load.py end to end in its quick mode: both stacks start, take calls, report.

Not a timed test: it checks the report's shape and that calls went through both stacks,
never how fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sip, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "sip_load.py"


def test_quick_mode_runs_both_stacks_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert json.loads((tmp_path / "sip_load-quick.json").read_text()) == report
    assert (tmp_path / "sip_load-quick.png").read_bytes().startswith(b"\x89PNG")
    for stack in ("native", "dispatcher"):
        assert set(report[stack]) >= {"cpu_ms_per_call", "max_cps"}
        runs = [s for s in report["steps"] if s["stack"] == stack]
        assert {s["phase"] for s in runs} >= {"ramp"}
        assert sum(s["successful"] for s in runs) > 0, runs
        assert report[stack]["cpu_ms_per_call"] is not None
    assert {
        "cpu_ratio", "cps_ratio", "system_cpu_ratio", "redis_cpu_ms_per_call",
        "cpu_reference_cps", "setup", "checks",
    } <= set(report)  # fmt: skip
    # three alternated rounds, each with its own figures; the headline ratios are medians
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    for r in report["rounds"]:
        assert {"cpu_ratio", "cps_ratio", "system_cpu_ratio", "native", "dispatcher"} <= set(r)
    assert {s["round"] for s in report["steps"]} == {1, 2, 3}
    assert set(report["targets"]) == {
        "cpu_ratio_max", "cps_ratio_min", "cpu_ratio_met", "cps_ratio_met",
        "system_cpu_ratio_max", "system_cpu_ratio_met",
    }  # fmt: skip
    # quick mode splits its 10 cps over two SIPp UACs: the parallel path runs here too
    assert {s["uacs"] for s in report["steps"]} == {2}
    assert report["dispatcher"]["redis_cpu_ms_per_call"] is not None
    assert report["checks"]["dispatcher_python_errors"] == 0
