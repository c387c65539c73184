"""Selection-core benchmark: the compiled core against its twin, measured in the same run.

For every strategy at 10, 100 and 1000 agents, the ns per `next_wave` call as the router
makes it: Python objects in (tables built beforehand, ints, an empty tried tuple) and a Wave
out, for the first wave of a call over a realistic live state (mixed busy counts, some
agents paused, logged out or in wrap-up). Best of several repeats, each a timeit loop.

    .venv/bin/python bench/core.py [--json] [--repeat N] [--min-time SECONDS]

Writes bench/results/core.json ({"results": [...]}) and prints a table, or the JSON with
--json. Other benchmarks add their figures as further top-level keys of the same report.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "core.json"
SIZES = (10, 100, 1000)
NOW_MS = 1_700_000_000_000

# Run as a script from a checkout, where the package is not installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_cores() -> tuple[ModuleType, ModuleType]:
    """(compiled, twin); exits when the compiled core is not built."""
    from dispatcher import _core_py

    try:
        from dispatcher import _core
    except ImportError as exc:
        raise SystemExit(f"compiled core not importable ({exc}); run setup.py build_ext") from exc
    return _core, _core_py


def group_members(count: int, rng: random.Random) -> list[tuple[str, int, int, int]]:
    """(agent_id, tier, position, weight): three tiers, shuffled positions."""
    positions = list(range(count))
    rng.shuffle(positions)
    return [(f"agent-{i:04d}", i % 3, positions[i], rng.randint(1, 5)) for i in range(count)]


def live_rows(count: int, rng: random.Random) -> list[int]:
    """A busy afternoon: most agents available, some on calls, paused or in wrap-up."""
    rows: list[int] = []
    for _ in range(count):
        status = rng.choices((0, 1, 2), weights=(80, 12, 8))[0]
        max_calls = rng.choice((1, 1, 1, 2))
        busy = rng.randint(0, max_calls)
        in_wrapup = rng.random() < 0.1
        wrapup_until = NOW_MS + 5_000 if in_wrapup else NOW_MS - rng.randint(0, 600_000)
        idle_since = NOW_MS - rng.randint(0, 3_600_000)
        rows += [status, busy, max_calls, wrapup_until, idle_since]
    return rows


def ns_per_call(call: Any, args: tuple[Any, ...], repeat: int, min_time: float) -> float:
    """Best of `repeat` timeit loops, each at least `min_time` seconds long."""
    # Bound as locals of timeit's loop, so the figure holds the call and nothing else.
    timer = timeit.Timer(
        "call(group, live, now_ms, seed)",
        setup="call = _call; group, live, now_ms, seed = _args",
        globals={"_call": call, "_args": args},
    )
    number = 1
    while (elapsed := timer.timeit(number)) < min_time:
        number = max(number * 2, int(number * min_time * 1.2 / max(elapsed, 1e-9)))
    return min(timer.repeat(repeat, number)) / number * 1e9


def measure_core(repeat: int = 5, min_time: float = 0.05) -> list[dict[str, Any]]:
    """ns per first-wave `next_wave` call, compiled and twin, for every strategy and size."""
    compiled, twin = load_cores()
    results = []
    for name, strategy in compiled.STRATEGIES.items():
        for count in SIZES:
            rng = random.Random(f"{name}-{count}")
            members = group_members(count, rng)
            rows = live_rows(count, rng)
            rr_cursor = rng.randrange(count)
            seed = rng.getrandbits(64)
            timings = {}
            waves = []
            for label, core in (("compiled", compiled), ("twin", twin)):
                group = core.GroupTable(strategy, 20, members)
                live = core.LiveTable(rows, rr_cursor)
                args = (group, live, NOW_MS, seed)
                wave = core.next_wave(*args)
                waves.append(None if wave is None else (wave.agents, wave.sticky))
                timings[label] = ns_per_call(core.next_wave, args, repeat, min_time)
            if waves[0] != waves[1]:
                raise AssertionError(f"{name}/{count}: compiled {waves[0]} != twin {waves[1]}")
            results.append(
                {
                    "strategy": name,
                    "agents": count,
                    "compiled_ns": round(timings["compiled"], 1),
                    "twin_ns": round(timings["twin"], 1),
                    "speedup": round(timings["twin"] / timings["compiled"], 1),
                }
            )
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'strategy':<16} {'agents':>6} {'compiled ns':>12} {'twin ns':>12} {'speedup':>8}"]
    for r in results:
        lines.append(
            f"{r['strategy']:<16} {r['agents']:>6} {r['compiled_ns']:>12,.1f} "
            f"{r['twin_ns']:>12,.1f} {r['speedup']:>7.1f}x"
        )
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    """The core table, then the Redis figures when measured."""
    lines = [format_table(report["results"])]
    for key, value in report.items():
        if key != "results":
            lines.append(f"{key:<45} {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--repeat", type=int, default=5, help="timeit repeats (best is kept)")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per repeat")
    parser.add_argument("--no-redis", action="store_true", help="core figures only")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"results": measure_core(args.repeat, args.min_time)}
    if not args.no_redis:
        from redis_decisions import measure_redis

        report.update(measure_redis())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
