"""bench/ewt.py end to end in its quick mode: it runs, reports every estimator, and the
estimator beats Asterisk's position x hold time and the delay-history estimators.

Accuracy, not time: the simulation is seeded, so the figures are the same on every machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "ewt.py"
ESTIMATORS = ("ours", "baseline", "les", "hol", "ql")


def test_quick_mode_reports_and_ours_beats_the_baseline(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads((tmp_path / "ewt.json").read_text()) == report

    assert {f"{n}_mae_s" for n in ESTIMATORS} | {"ratio", "scenarios"} <= set(report)
    assert report["quick"] is True
    assert report["ratio"] == round(report["ours_mae_s"] / report["baseline_mae_s"], 3)
    # At least 30% below the baseline, and no worse than the best of LES, HOL and QL.
    assert report["ratio"] <= 0.7
    assert report["ours_mae_s"] <= min(report[f"{n}_mae_s"] for n in ("les", "hol", "ql"))

    assert len(report["scenarios"]) >= 4
    for scenario in report["scenarios"]:
        assert scenario["waited"] > 0 and scenario["abandoned"] > 0, scenario["name"]
        assert all(scenario[f"{n}_mae_s"] is not None for n in ESTIMATORS), scenario["name"]
        assert scenario["ours_mae_s"] < scenario["baseline_mae_s"], scenario["name"]
    assert report["potential_waits"]["callers"] > sum(
        s["served_after_waiting"] for s in report["scenarios"]
    )
