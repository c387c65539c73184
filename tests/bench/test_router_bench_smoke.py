"""bench/router.py end to end, small: it runs, reports, and a group call costs 3 FCALLs.

Not a timed test: the CPU figures are only checked to be there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_scripts import run_script

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "router.py"


def test_router_bench_reports_three_fcalls_per_call(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--calls", "200", "--json", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads((tmp_path / "router.json").read_text()) == report
    # claim, answered, release: one round trip each, the claim never corrected
    assert report["fcalls_per_call"] == 3.0
    assert report["router_errors"] == 0
    assert report["calls"] == 200
    # the commands the three functions ran, most first: each call appends events (XADD)
    commands = report["redis_commands_per_call"]
    assert list(commands.values()) == sorted(commands.values(), reverse=True)
    assert "fcall" not in commands and commands["xadd"] >= 3 and commands["time"] == 3.0
    assert report["cpu_us_per_call"] > 0 and report["wall_us_per_call"] > 0


@pytest.mark.parametrize("flag", ["--instructions", "--calls"])
def test_router_bench_refuses_a_count_below_one_by_name(flag: str) -> None:
    done = run_script(SCRIPT, flag, "0")

    assert done.returncode == 2
    assert f"argument {flag}" in done.stderr and "must be at least 1, got 0" in done.stderr
