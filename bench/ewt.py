"""Expected-wait benchmark: dispatcher.queue.estimate against the estimators it replaces.

A seeded discrete-event simulation of one call group's queue through a working day: Poisson
arrivals whose rate follows the day (a morning peak, a lunch dip), lognormal or mixed handle
times of a few minutes, agents on shifts who log in, take a break and log out, wrap-up after
calls, agents taking two calls at once, and callers who hang up (Weibull patience). Every
caller that has to wait gets, when it starts waiting, a prediction from each estimator:

    ours       dispatcher.queue.estimate (the median it announces; `ours_mean` its mean)
    baseline   position x average hold time, the hold time being Asterisk app_queue's
               exponential average of answered callers' waits, holdtime = (3 holdtime + w) / 4
    les        Ibrahim & Whitt (MSOM 2009): the wait of the last caller to enter service
    hol        Ibrahim & Whitt: the head of the line's wait so far w, scaled to the new
               caller's place: w (n + 1) / n with n callers ahead (n arrivals in w, so the
               arrival rate, the throughput of a busy queue, is about n / w); with nobody
               ahead it falls back to LES. `hol_unscaled` is w alone.
    ql         queue length: (n + 1) / (s mu), s agent slots logged in, 1/mu the mean of the
               same recent handle times ours sees, plus wrap-up
    asterisk_holdtime  what app_queue's say_position actually announces: the hold time less
               the wait so far (at arrival, the hold time itself)

Every estimator sees the same callers at the same moments. The error is measured against the
actual wait of callers who were served; callers who hung up are censored (their wait is not
observed), so they are left out of the main figures, and the JSON adds `potential_waits`:
the same figures over every waiting caller, an abandoner counted with the wait it would have
had, which the simulation knows (the first agent that became free once every caller ahead of
it had gone). `announcements` repeats the comparison every 30 s of waiting (remaining wait,
for the estimators defined then). The main figures are the median over seeds of the pooled
mean absolute error of all scenarios.

    .venv/bin/python bench/ewt.py [--json] [--quick] [--seeds N] [--results DIR]

Writes DIR/ewt.json (default bench/results/) and prints a table, or the JSON with --json.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sortedcontainers import SortedList

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"

# Run as a script from a checkout, where the package is not installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dispatcher.queue.estimate import (  # noqa: E402
    AgentLoad,
    HandleTimes,
    WaitModel,
    abandonment_rate,
)

# At arrival; announcements carry only those defined for a caller already waiting.
ESTIMATORS = ("ours", "baseline", "les", "hol", "ql", "ours_mean", "asterisk_holdtime")
EXTRA = ("hol_unscaled",)
ANNOUNCED = ("ours", "baseline", "ql", "ours_mean", "asterisk_holdtime")
DEFINITIONS = {
    "ours": "dispatcher.queue.estimate, median (WaitEstimate.typical_s, what is announced)",
    "ours_mean": "dispatcher.queue.estimate, mean (WaitEstimate.expected_s)",
    "baseline": "position x Asterisk holdtime, holdtime = (3 holdtime + answered wait) / 4",
    "les": "wait of the last caller to enter service (Ibrahim & Whitt 2009)",
    "hol": "head of line's wait w x (n + 1) / n, n callers ahead; LES when n = 0 (ibid.)",
    "hol_unscaled": "head of line's wait w; LES when nobody is ahead",
    "ql": "(n + 1) / (s mu): s slots logged in, 1/mu = mean recent handle time + wrap-up",
    "asterisk_holdtime": "app_queue say_position: |holdtime - waited| (holdtime at arrival)",
}
POSITION_BUCKETS = (("1", 1, 1), ("2-3", 2, 3), ("4-9", 4, 9), ("10+", 10, 10**9))
ANNOUNCE_S = 30.0
ABANDON_WINDOW = 200  # waiting callers the abandonment rate is taken over

# Offered load per planned agent slot, by hour from opening (07:00): a morning peak above
# capacity, a lunch dip, a second smaller peak, a quiet evening.
DAY_LOAD = (0.55, 0.85, 1.08, 1.12, 0.95, 0.75, 0.85, 0.95, 0.9, 0.8, 0.65, 0.5)


def lognormal(mean: float, cv: float) -> Callable[[random.Random], float]:
    sigma = math.sqrt(math.log(1 + cv * cv))
    mu = math.log(mean) - sigma * sigma / 2
    return lambda rng: rng.lognormvariate(mu, sigma)


def mixture(
    short_share: float, short: Callable[[random.Random], float], long: Callable[..., float]
) -> Callable[[random.Random], float]:
    return lambda rng: short(rng) if rng.random() < short_share else long(rng)


def weibull(mean: float, shape: float) -> Callable[[random.Random], float]:
    scale = mean / math.gamma(1 + 1 / shape)
    return lambda rng: rng.weibullvariate(scale, shape)


@dataclass(frozen=True)
class Shift:
    """An agent's day: hours from opening, a 30-minute break, its slots and wrap-up."""

    start_h: float
    end_h: float
    break_h: float | None = None
    capacity: int = 1
    wrapup_s: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    shifts: tuple[Shift, ...]
    handle: Callable[[random.Random], float] = field(repr=False)
    handle_desc: str
    mean_handle_s: float
    patience: Callable[[random.Random], float] = field(repr=False)
    patience_desc: str
    open_hours: float = 12.0


def shifts(count: int, start_h: float, end_h: float, **kw: Any) -> list[Shift]:
    """`count` agents on one shift, breaks spread over its middle."""
    mid = (start_h + end_h) / 2
    return [Shift(start_h, end_h, mid - 1.5 + 3.0 * i / max(count, 1), **kw) for i in range(count)]


SCENARIOS = (
    Scenario(
        "small: 2-4 agents",
        tuple(shifts(2, 0, 8) + shifts(1, 2, 10) + shifts(1, 4, 13)),
        lognormal(180, 0.9),
        "lognormal mean 180 s, cv 0.9",
        180.0,
        weibull(300, 0.8),
        "Weibull mean 300 s, shape 0.8",
    ),
    Scenario(
        "medium: 6-14 agents, wrap-up 10 s",
        tuple(
            shifts(6, 0, 8, wrapup_s=10)
            + shifts(5, 2, 10, wrapup_s=10)
            + shifts(4, 5, 13, wrapup_s=10)
        ),
        lognormal(240, 1.0),
        "lognormal mean 240 s, cv 1.0",
        240.0,
        weibull(240, 0.9),
        "Weibull mean 240 s, shape 0.9",
    ),
    Scenario(
        "large: 15-40 agents, wrap-up 20 s",
        tuple(
            shifts(16, 0, 8, wrapup_s=20)
            + shifts(14, 2, 10, wrapup_s=20)
            + shifts(12, 5, 13, wrapup_s=20)
        ),
        mixture(0.2, lognormal(35, 0.5), lognormal(320, 0.8)),
        "20% lognormal mean 35 s, 80% lognormal mean 320 s cv 0.8",
        0.2 * 35 + 0.8 * 320,
        weibull(200, 1.1),
        "Weibull mean 200 s, shape 1.1",
    ),
    Scenario(
        "two-line agents: 3-5 agents x 2 calls",
        tuple(shifts(3, 0, 8, capacity=2) + shifts(2, 4, 13, capacity=2)),
        lognormal(300, 0.8),
        "lognormal mean 300 s, cv 0.8",
        300.0,
        weibull(360, 0.8),
        "Weibull mean 360 s, shape 0.8",
    ),
)


class Agent:
    __slots__ = ("calls", "capacity", "idle_since", "logged_in", "wrap_until", "wrapup_s")

    def __init__(self, shift: Shift) -> None:
        self.capacity = shift.capacity
        self.wrapup_s = shift.wrapup_s
        self.logged_in = False
        self.calls: dict[int, float] = {}  # call id -> answer time
        self.wrap_until = 0.0
        self.idle_since = 0.0

    def can_take(self, now: float) -> bool:
        return self.logged_in and now >= self.wrap_until and len(self.calls) < self.capacity


class Tally:
    """Absolute and signed errors per estimator, pooled over callers."""

    def __init__(self) -> None:
        self.abs: dict[str, float] = {}
        self.signed: dict[str, float] = {}
        self.count = 0

    def add(self, predictions: dict[str, float], actual: float) -> None:
        self.count += 1
        for name, predicted in predictions.items():
            self.abs[name] = self.abs.get(name, 0.0) + abs(predicted - actual)
            self.signed[name] = self.signed.get(name, 0.0) + predicted - actual

    def merge(self, other: Tally) -> None:
        self.count += other.count
        for name in other.abs:
            self.abs[name] = self.abs.get(name, 0.0) + other.abs[name]
            self.signed[name] = self.signed.get(name, 0.0) + other.signed[name]

    def mae(self, name: str) -> float | None:
        return self.abs[name] / self.count if self.count and name in self.abs else None

    def bias(self, name: str) -> float | None:
        return self.signed[name] / self.count if self.count and name in self.signed else None


@dataclass
class Outcome:
    """What one simulated day measured."""

    served: Tally = field(default_factory=Tally)
    potential: Tally = field(default_factory=Tally)
    announced: Tally = field(default_factory=Tally)
    by_position: dict[str, Tally] = field(default_factory=dict)
    arrivals: int = 0
    waited: int = 0
    abandoned: int = 0
    overflowed: int = 0
    wait_sum: float = 0.0
    model_seconds: float = 0.0
    models: int = 0


ARRIVE, END, WRAPPED, ABANDON, ANNOUNCE, LOGIN, LOGOUT = range(7)


class Day:
    """One seeded day of one scenario."""

    def __init__(self, scenario: Scenario, seed: int, hours: float) -> None:
        self.scenario = scenario
        self.rng = random.Random(f"{scenario.name}/{seed}")
        self.hours = min(hours, scenario.open_hours)
        self.agents = [Agent(s) for s in scenario.shifts]
        self.events: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.caller_ids = itertools.count()
        self.call_agent: dict[int, Agent] = {}  # caller id -> the agent it talks to
        self.queue = SortedList()  # waiting callers' ids, which grow with arrival
        self.arrived_at: dict[int, float] = {}
        self.predicted: dict[int, tuple[int, dict[str, float]]] = {}
        self.announcements: dict[int, list[tuple[float, dict[str, float]]]] = {}
        self.ghosts = SortedList()  # callers who hung up, until their potential wait is known
        self.history = HandleTimes()
        self.holdtime = 0.0  # Asterisk app_queue's average hold time
        self.last_entered_wait = 0.0  # LES
        self.exits: deque[tuple[float, bool]] = deque()  # (wait, hung up) of waiting callers
        self.exit_wait = 0.0
        self.exit_abandoned = 0
        self.out = Outcome()
        self.rates = self._arrival_rates()

    def _arrival_rates(self) -> list[float]:
        """Arrivals per second for each minute of the day: the hour's load times the slots
        the shift plan staffs then, over a slot's time per call."""
        rates = []
        for minute in range(int(self.scenario.open_hours * 60)):
            hour = minute / 60
            load = DAY_LOAD[min(int(hour), len(DAY_LOAD) - 1)]
            service = 0.0
            for s in self.scenario.shifts:
                if s.start_h <= hour < s.end_h:
                    service += s.capacity / (self.scenario.mean_handle_s + s.wrapup_s)
            rates.append(load * service)
        return rates

    def push(self, at: float, kind: int, subject: int) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, subject))

    def run(self) -> Outcome:
        close = self.hours * 3600
        for index, s in enumerate(self.scenario.shifts):
            if s.start_h * 3600 < close:
                self.push(s.start_h * 3600, LOGIN, index)
                if s.break_h is not None and s.break_h * 3600 < close:
                    self.push(s.break_h * 3600, LOGOUT, index)
                    self.push(s.break_h * 3600 + 1800, LOGIN, index)
            # The last shift stays until the queue has drained.
            self.push(s.end_h * 3600 if s.end_h * 3600 < close else math.inf, LOGOUT, index)
        peak = max(self.rates)
        at = self.rng.expovariate(peak)
        while at < close:  # thinning: a Poisson process at the peak rate, kept at rate(t)
            if self.rng.random() * peak < self.rates[int(at // 60)]:
                self.push(at, ARRIVE, 0)
            at += self.rng.expovariate(peak)
        while self.events:
            now, _, kind, subject = heapq.heappop(self.events)
            if now == math.inf:
                break
            if kind == ARRIVE:
                self.arrive(now)
            elif kind == END:
                self.end_call(now, subject)
            elif kind == WRAPPED:
                self.dispatch(now)
            elif kind == ABANDON:
                self.abandon(now, subject)
            elif kind == ANNOUNCE:
                self.announce(now, subject)
            elif kind == LOGIN:
                self.agents[subject].logged_in = True
                self.agents[subject].idle_since = now
                self.dispatch(now)
            elif kind == LOGOUT:
                self.agents[subject].logged_in = False
                if not any(a.logged_in for a in self.agents):
                    self.overflow_all()
        return self.out

    # -- the queue ---------------------------------------------------------------------------

    def arrive(self, now: float) -> None:
        caller = next(self.caller_ids)
        self.out.arrivals += 1
        self.arrived_at[caller] = now
        if not any(a.logged_in for a in self.agents):
            self.out.overflowed += 1  # the group's no_agents overflow: never queued
            return
        free = self.free_agent(now)
        if free is not None:
            self.start_call(now, free, caller)
            return
        self.out.waited += 1
        position = len(self.queue) + 1
        predictions = self.predict(now, position, waited=None)
        assert predictions is not None  # somebody is logged in
        self.predicted[caller] = (position, predictions)
        self.announcements[caller] = []
        self.queue.add(caller)
        self.push(now + self.scenario.patience(self.rng), ABANDON, caller)
        self.push(now + ANNOUNCE_S, ANNOUNCE, caller)

    def predict(self, now: float, position: int, waited: float | None) -> dict[str, float] | None:
        """Every estimator's prediction of the remaining wait at `position`, for a caller who
        starts waiting (`waited` None) or has waited `waited` seconds; None when nobody is
        logged in."""
        loads = []
        service_rate = 0.0
        mean = self.history.mean
        for a in self.agents:
            if a.logged_in:
                loads.append(
                    AgentLoad(
                        a.capacity,
                        tuple(now - start for start in a.calls.values()),
                        a.wrapup_s,
                        max(a.wrap_until - now, 0.0),
                    )
                )
                service_rate += a.capacity / (mean + a.wrapup_s)
        if not loads:
            return None
        started = time.perf_counter()
        rate = abandonment_rate(self.exit_abandoned, self.exit_wait)
        estimate = WaitModel(loads, self.history, rate).estimate(position)
        self.out.model_seconds += time.perf_counter() - started
        self.out.models += 1
        assert estimate is not None
        predictions = {
            "ours": estimate.typical_s,
            "ours_mean": estimate.expected_s,
            "baseline": position * self.holdtime,
            "ql": position / service_rate,
            "asterisk_holdtime": abs(self.holdtime - (waited or 0.0)),
        }
        if waited is None:
            ahead = position - 1
            les = self.last_entered_wait
            predictions["les"] = les
            if ahead:
                head_wait = now - self.arrived_at[self.queue[0]]
                predictions["hol"] = head_wait * (ahead + 1) / ahead
                predictions["hol_unscaled"] = head_wait
            else:
                predictions["hol"] = predictions["hol_unscaled"] = les
        return predictions

    def free_agent(self, now: float) -> Agent | None:
        """The longest-idle agent that can take a call now."""
        best = None
        for a in self.agents:
            if a.can_take(now) and (best is None or a.idle_since < best.idle_since):
                best = a
        return best

    def start_call(self, now: float, agent: Agent, caller: int) -> None:
        wait = now - self.arrived_at.pop(caller)
        agent.calls[caller] = now
        agent.idle_since = now  # a two-line agent's second call goes to someone idler first
        self.call_agent[caller] = agent
        self.push(now + self.scenario.handle(self.rng), END, caller)
        self.holdtime = (3 * self.holdtime + wait) / 4
        self.last_entered_wait = wait
        if caller in self.predicted:
            position, predictions = self.predicted.pop(caller)
            self.out.served.add(predictions, wait)
            self.out.potential.add(predictions, wait)
            bucket = next(label for label, lo, hi in POSITION_BUCKETS if lo <= position <= hi)
            self.out.by_position.setdefault(bucket, Tally()).add(predictions, wait)
            for announced_at, remaining in self.announcements.pop(caller):
                self.out.announced.add(remaining, now - announced_at)
            self.record_exit(wait, abandoned=False)
            self.out.wait_sum += wait
        # Callers who hung up before this one, behind everyone ahead of them, would have
        # been served now: their potential wait is known.
        while self.ghosts and self.ghosts[0] < caller:
            self.resolve_ghost(self.ghosts.pop(0), now)

    def end_call(self, now: float, caller: int) -> None:
        agent = self.call_agent.pop(caller)
        self.history.add(now - agent.calls.pop(caller))
        agent.idle_since = now
        if agent.wrapup_s:
            agent.wrap_until = now + agent.wrapup_s
            self.push(agent.wrap_until, WRAPPED, 0)
        else:
            self.dispatch(now)

    def dispatch(self, now: float) -> None:
        while self.queue:
            agent = self.free_agent(now)
            if agent is None:
                return
            self.start_call(now, agent, self.queue.pop(0))
        if self.ghosts and self.free_agent(now) is not None:
            for ghost in list(self.ghosts):
                self.resolve_ghost(ghost, now)
            self.ghosts.clear()

    def abandon(self, now: float, caller: int) -> None:
        if caller not in self.announcements:
            return  # no longer waiting
        self.queue.remove(caller)
        self.out.abandoned += 1
        self.announcements.pop(caller)
        self.ghosts.add(caller)
        self.record_exit(now - self.arrived_at[caller], abandoned=True)

    def resolve_ghost(self, caller: int, now: float) -> None:
        _, predictions = self.predicted.pop(caller)
        self.out.potential.add(predictions, now - self.arrived_at.pop(caller))

    def overflow_all(self) -> None:
        """The last agent logged out: waiting callers go to the no_agents overflow."""
        for caller in list(self.queue):
            self.queue.remove(caller)
            self.predicted.pop(caller)
            self.announcements.pop(caller)
            self.out.overflowed += 1

    def announce(self, now: float, caller: int) -> None:
        if caller not in self.announcements:
            return  # no longer waiting
        waited = now - self.arrived_at[caller]
        predictions = self.predict(now, self.queue.bisect_left(caller) + 1, waited)
        if predictions is not None:
            self.announcements[caller].append((now, predictions))
        self.push(now + ANNOUNCE_S, ANNOUNCE, caller)

    def record_exit(self, wait: float, abandoned: bool) -> None:
        self.exits.append((wait, abandoned))
        self.exit_wait += wait
        self.exit_abandoned += abandoned
        if len(self.exits) > ABANDON_WINDOW:
            old_wait, old_abandoned = self.exits.popleft()
            self.exit_wait -= old_wait
            self.exit_abandoned -= old_abandoned


# -- reports ----------------------------------------------------------------------------------


def figures(tally: Tally, names: tuple[str, ...]) -> dict[str, float | None]:
    return {f"{n}_mae_s": _round(tally.mae(n)) for n in names}


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def pooled(outcomes: list[Outcome], pick: Callable[[Outcome], Tally | None]) -> Tally:
    """One tally over several days (scenarios of one seed, or seeds of one scenario)."""
    total = Tally()
    for outcome in outcomes:
        tally = pick(outcome)
        if tally is not None:
            total.merge(tally)
    return total


def medians(tallies: list[Tally], names: tuple[str, ...], kind: str = "mae") -> dict[str, Any]:
    """{name_mae_s: the median over `tallies` (one per seed)}, or the bias with kind "bias"."""
    suffix = "_mae_s" if kind == "mae" else ""
    return {f"{n}{suffix}": _round(_median([getattr(t, kind)(n) for t in tallies])) for n in names}


def _position_tally(label: str) -> Callable[[Outcome], Tally | None]:
    return lambda outcome: outcome.by_position.get(label)


def measure(seeds: list[int], hours: float) -> dict[str, Any]:
    """Every scenario on every seed. A scenario's figures are medians over its seeds; the
    overall ones medians over seeds of the errors pooled over all scenarios of the seed."""
    started = time.perf_counter()
    names = ESTIMATORS + EXTRA
    days = {
        (si, seed): Day(sc, seed, hours).run() for si, sc in enumerate(SCENARIOS) for seed in seeds
    }

    scenarios = []
    for si, scenario in enumerate(SCENARIOS):
        outs = [days[si, seed] for seed in seeds]
        served_count = sum(o.served.count for o in outs)
        row: dict[str, Any] = {
            "name": scenario.name,
            "handle_times": scenario.handle_desc,
            "patience": scenario.patience_desc,
            # counts are totals over the seeds
            "arrivals": sum(o.arrivals for o in outs),
            "waited": sum(o.waited for o in outs),
            "served_after_waiting": served_count,
            "abandoned": sum(o.abandoned for o in outs),
            "overflowed": sum(o.overflowed for o in outs),
            "mean_wait_s": _round(sum(o.wait_sum for o in outs) / max(served_count, 1), 1),
            **medians([o.served for o in outs], names),
        }
        row["ratio"] = _ratio(row["ours_mae_s"], row["baseline_mae_s"])
        scenarios.append(row)

    by_seed = [[days[si, seed] for si in range(len(SCENARIOS))] for seed in seeds]
    served = [pooled(outs, lambda o: o.served) for outs in by_seed]
    potential = [pooled(outs, lambda o: o.potential) for outs in by_seed]
    announced = [pooled(outs, lambda o: o.announced) for outs in by_seed]

    report: dict[str, Any] = medians(served, names)
    report["ratio"] = _ratio(report["ours_mae_s"], report["baseline_mae_s"])
    best = min(("les", "hol", "ql"), key=lambda n: report[f"{n}_mae_s"])
    report["best_of_les_hol_ql"] = {"name": best, "mae_s": report[f"{best}_mae_s"]}
    report["ours_vs_best"] = _ratio(report["ours_mae_s"], report[f"{best}_mae_s"])
    report["bias_s"] = medians(served, names, kind="bias")
    report["scenarios"] = scenarios
    report["potential_waits"] = {
        "note": "every waiting caller; an abandoner counted with the wait it would have had",
        "callers": sum(t.count for t in potential),
        **medians(potential, names),
    }
    report["announcements"] = {
        "note": f"remaining wait, predicted every {ANNOUNCE_S:.0f} s of waiting (served callers)",
        "predictions": sum(t.count for t in announced),
        **medians(announced, ANNOUNCED),
    }
    report["by_position"] = {}
    for label, _, _ in POSITION_BUCKETS:
        tallies = [pooled(outs, _position_tally(label)) for outs in by_seed]
        report["by_position"][label] = {
            "callers": sum(t.count for t in tallies),
            **medians(tallies, ("ours", "ours_mean", "baseline", "les", "hol", "ql")),
        }
    report["per_seed"] = [
        {"seed": seed, **figures(tally, ("ours", "baseline", "les", "hol", "ql"))}
        for seed, tally in zip(seeds, served, strict=True)
    ]
    models = sum(o.models for o in days.values())
    report["estimator_us_per_caller"] = _round(
        sum(o.model_seconds for o in days.values()) / max(models, 1) * 1e6, 1
    )
    report["estimators"] = DEFINITIONS
    report["seeds"] = seeds
    report["hours_per_day"] = hours
    report["censoring"] = (
        "main figures: callers served after waiting (an abandoner's wait is censored); "
        "potential_waits adds abandoners with the wait they would have had"
    )
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    return report


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def format_report(report: dict[str, Any]) -> str:
    cols = ("ours", "baseline", "les", "hol", "ql", "ours_mean")
    head = f"{'scenario':<40} {'waited':>7} {'aband':>6}" + "".join(f" {c:>9}" for c in cols)
    lines = ["mean absolute error of the predicted wait, seconds (served callers)", head]

    def row(label: str, waited: Any, abandoned: Any, figures: dict[str, Any]) -> str:
        cells = "".join(f" {figures[f'{c}_mae_s']:>9.1f}" for c in cols)
        return f"{label:<40} {waited!s:>7} {abandoned!s:>6}{cells}"

    for s in report["scenarios"]:
        lines.append(row(s["name"], s["waited"], s["abandoned"], s))
    lines.append(row("all scenarios (median over seeds)", "", "", report))
    best = report["best_of_les_hol_ql"]
    lines.append(
        f"ours / baseline {report['ratio']:.3f}; ours / best of LES, HOL, QL ({best['name']}) "
        f"{report['ours_vs_best']:.3f}"
    )
    pot = report["potential_waits"]
    lines.append(
        "with abandoners' potential waits: "
        + ", ".join(f"{c} {pot[f'{c}_mae_s']:.1f}" for c in cols)
    )
    ann = report["announcements"]
    lines.append(
        f"at announcements ({ann['predictions']} predictions): "
        + ", ".join(f"{c} {ann[f'{c}_mae_s']:.1f}" for c in ("ours", "baseline", "ql"))
    )
    for bucket, figs in report["by_position"].items():
        lines.append(
            f"position {bucket:<5} ({figs['callers']} callers): "
            + ", ".join(
                f"{c} {figs[f'{c}_mae_s']:.1f}"
                for c in ("ours", "baseline", "les", "hol", "ql")
                if figs[f"{c}_mae_s"] is not None
            )
        )
    lines.append(
        f"estimator: {report['estimator_us_per_caller']} us per caller (model built each time); "
        f"seeds {report['seeds']}, {report['hours_per_day']} h days, {report['elapsed_s']} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quick", action="store_true", help="one seed, 4-hour days (seconds)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds (days) per scenario")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where ewt.json goes")
    args = parser.parse_args(argv)
    seeds = [1] if args.quick else list(range(1, args.seeds + 1))
    report = measure(seeds, hours=4.0 if args.quick else 12.0)
    report["quick"] = args.quick
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "ewt.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
