"""bench/chaos.py end to end in its quick mode: two Kamailio nodes on a Sentinel-watched Redis,
calls through both while the master is stopped (and failed over) and one node is killed and
started again; then nothing may be left over.

Not a timed test: it checks the report's shape, that calls went through, and what must hold
whatever the machine's speed - no drift once reconciled, no agent above its max, no
acknowledged config write lost but by a failover (asynchronous replication: those are
counted apart) - never how fast anything recovered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sip, pytest.mark.redis, pytest.mark.ha]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "chaos.py"


def test_quick_mode_breaks_things_and_leaves_nothing_behind(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert json.loads((tmp_path / "chaos-quick.json").read_text()) == report
    assert [f["fault"] for f in report["faults"]] == ["redis_sigstop", "kamailio_kill"]
    for fault in report["faults"]:
        assert {"failed_calls", "recovery_s", "calls", "writes", "failed_writes"} <= set(fault)
        assert fault["calls"] > fault["failed_calls"] >= 0
    assert report["drift"] == 0, report["checks"]["settle"]
    assert report["max_calls_exceeded"] == 0, report["checks"]["invariants"]
    assert report["config_lost"] is False, report["checks"]["config"]
    assert report["checks"]["invariants"]["samples"] > 0
    assert report["checks"]["invariants"]["inconsistent"] == 0
    assert report["checks"]["config"]["acknowledged"] > 0
    assert report["checks"]["config"]["lost_in_failover"] >= 0  # reported, whatever it is
    assert report["checks"]["python_errors"] == 0, report["checks"]["python_error_examples"]


def test_a_down_after_too_short_for_sentinel_is_refused_by_name() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--down-after", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "--down-after 0: at least 100 ms" in done.stderr
