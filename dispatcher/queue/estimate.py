"""Expected wait of a queued caller, from the group's live agents and its recent handle times.

Pure: no I/O, no clock. The caller of this module reads the live state (Redis) and the group's
capped list of recent handle times, builds a `WaitModel` once per group and tick, and asks it
for every waiting caller's position.

Method. Every agent slot (an agent with `max_calls` c is c slots) becomes free for the queue
at some time; the k-th waiting caller is served at about the k-th such moment. For a busy slot
the first moment is the call's residual time, the empirical handle-time distribution
conditioned on the call's elapsed time e, H - e | H > e (a long call on a heavy-tailed
distribution is likely to go on; under memoryless handle times e does not matter), plus the
agent's wrap-up. Each residual is cut into `QUANTILES` equally likely buckets between its
conditional quantiles in the sorted window, uniform within each, so the expected number of
first completions by t, summed over all busy slots, is a piecewise-linear curve: the order
statistics of the residuals, merged. After its first completion a slot is a renewal process
at rate 1/(mean H + wrap-up). Together they give C(t), the expected number of times a slot
frees by t, piecewise quadratic with jumps (idle slots, empty buckets). Completions of many
independent slots are close to a Poisson process with cumulative intensity C (the
superposition of renewal processes), so the n-th completion is T_n = C^-1(G_n) with G_n a
unit-rate Gamma(n) variable: its mean is about C^-1(n), exact for exponential handle times,
and its median is C^-1(median G_n), which is also exact for a single slot with a known
residual. We announce the median (`typical_s`): it minimises the mean absolute error of what
callers hear; the mean is `expected_s`.

Callers ahead who hang up do not use a completion. With an abandonment rate a (per waiting
caller per second, `abandonment_rate`), caller i ahead is still there at its turn T_i with
probability E[exp(-a T_i)], so caller k needs 1 + the sum of those over i < k completions: a
mean-field version of the queue-length estimator with abandonment, whose exact M/M/s+M form
is sum over j < k of 1 / (s mu + j a) (Whitt, "Predicting queueing delays", Management
Science 45(6), 1999); it stays within a few per cent of that. Ibrahim and Whitt ("Real-Time
Delay Estimation Based on Delay History", MSOM 11(3), 2009) compare the queue-length estimator
with the delay-history ones (the last caller to enter service, the head of the line);
bench/ewt.py measures this estimator against them and against Asterisk's position x average
hold time.

What it does not know: agents who will log out or pause before the caller's turn, callers of
higher priority who arrive later, and agents the group shares with other groups (their
completions may serve another queue). Pass only eligible agents (logged in, not paused).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from sortedcontainers import SortedList

# A typical call-centre average handle time: what a group without any history assumes.
DEFAULT_HANDLE_TIME_S = 180.0
# Until the window holds this many calls the handle time is taken as exponential with a mean
# shrunk towards the default (PRIOR_CALLS pseudo-calls of DEFAULT_HANDLE_TIME_S), and the
# residual of a call that outlasted all but this many recent calls as an exponential tail.
# With 8 the conditional distribution of so few values wobbles by 5% on a memoryless window;
# bench/ewt.py's error is the same to 0.05 s with 8, 16 or 32.
MIN_TAIL = 16
PRIOR_CALLS = 5
# Equally likely buckets per busy call's residual. bench/ewt.py's error is the same to 0.1 s
# with 4, 8 or 16; 8 leaves room for small groups and builds 100 busy calls in about 1 ms.
QUANTILES = 8
# The window the production caller keeps per group (the last N handle times in Redis).
WINDOW = 200
# Beyond the longest queue a group may have (Queue.max_length), a position is a bug upstream.
MAX_POSITION = 1000


class HandleTimes:
    """The sorted window of a group's most recent handle times (answer to hangup, seconds).

    `add` is O(log W) for a window of W (a SortedList beside the arrival order, which evicts
    the oldest); the first query after a change copies the window once, O(W).
    """

    def __init__(self, recent: Iterable[float] = (), maxlen: int = WINDOW) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self._order: deque[float] = deque()
        self._sorted = SortedList()
        self._snapshot: tuple[list[float], list[float]] | None = None
        for seconds in recent:
            self.add(seconds)

    def add(self, seconds: float) -> None:
        """Record one call's handle time, evicting the oldest beyond `maxlen`. O(log W)."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"a handle time is a finite number of seconds >= 0, not {seconds}")
        if len(self._order) == self.maxlen:
            self._sorted.remove(self._order.popleft())
        self._order.append(seconds)
        self._sorted.add(seconds)
        self._snapshot = None

    def __len__(self) -> int:
        return len(self._order)

    def _values(self) -> tuple[list[float], list[float]]:
        """(sorted values, suffix sums: suffix[i] = sum(values[i:])), once per change. O(W)."""
        if self._snapshot is None:
            values = list(self._sorted)
            suffix = [0.0] * (len(values) + 1)
            for i in range(len(values) - 1, -1, -1):
                suffix[i] = suffix[i + 1] + values[i]
            self._snapshot = (values, suffix)
        return self._snapshot

    @property
    def mean(self) -> float:
        """Mean handle time; shrunk towards DEFAULT_HANDLE_TIME_S while under MIN_TAIL calls."""
        values, suffix = self._values()
        total = suffix[0]
        if len(values) >= MIN_TAIL:
            return total / len(values)
        return (total + PRIOR_CALLS * DEFAULT_HANDLE_TIME_S) / (len(values) + PRIOR_CALLS)

    def residual_bounds(self, elapsed: float, count: int = QUANTILES) -> list[float]:
        """The remaining time of a call that has lasted `elapsed` seconds, H - elapsed given
        H > elapsed, as `count` equally likely buckets: returns count + 1 increasing bounds,
        the residual is uniform between consecutive ones. O(log W + count).

        Inner bounds are the conditional quantiles at levels q/count, interpolated between
        the window's values above `elapsed`; the last bucket ends where its mean is the mean
        of the values it stands for (a heavy tail keeps its weight). With fewer than MIN_TAIL
        values above `elapsed`, an exponential tail whose mean is the top MIN_TAIL values'
        mean excess over the next one (peaks over a threshold: nothing in the window says
        more about a call longer than nearly all recent ones); without enough history,
        exponential with `mean`.
        """
        values, suffix = self._values()
        first = bisect_right(values, elapsed)
        tail = len(values) - first
        if tail >= MIN_TAIL:
            bounds = []
            for q in range(count):
                pos = min(max(q * tail / count - 0.5, 0.0), tail - 1.0)
                low = int(pos)
                value = values[first + low]
                if low + 1 < tail:
                    value += (pos - low) * (values[first + low + 1] - value)
                bounds.append(value - elapsed)
            top = first + (tail * (count - 1)) // count
            top_mean = suffix[top] / (len(values) - top) - elapsed
            bounds.append(max(2.0 * top_mean - bounds[-1], bounds[-1]))
            return bounds
        if len(values) >= MIN_TAIL:
            threshold = values[-MIN_TAIL - 1] if len(values) > MIN_TAIL else 0.0
            scale = max(suffix[len(values) - MIN_TAIL] / MIN_TAIL - threshold, 1.0)
        else:
            scale = self.mean
        bounds = [-scale * math.log1p(-q / count) for q in range(count)]
        # The exponential's mean above its last quantile is that quantile plus the scale.
        bounds.append(bounds[-1] + 2.0 * scale)
        return bounds

    def _check(self) -> None:
        """Assert the invariants (for tests)."""
        assert len(self._order) == len(self._sorted) <= self.maxlen
        assert list(self._sorted) == sorted(self._order)
        assert all(math.isfinite(v) and v >= 0 for v in self._order)
        if self._snapshot is not None:
            assert self._snapshot[0] == list(self._sorted)


@dataclass(frozen=True, slots=True)
class AgentLoad:
    """One eligible agent (logged in, not paused) as the live state shows it.

    `calls_elapsed`: seconds since answer of each live call. `wrapup_s`: the agent's wrap-up
    after each call. `wrapup_left_s`: wrap-up still to go before its free slots take a call
    (0 when it is not in wrap-up). An idle agent is `AgentLoad()`.
    """

    capacity: int = 1
    calls_elapsed: tuple[float, ...] = ()
    wrapup_s: float = 0.0
    wrapup_left_s: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("an agent's capacity (max_calls) is at least 1")


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """The estimate for one queue position.

    `typical_s`: the median wait, what to announce. `expected_s`: the mean wait.
    `servers`: the agent slots it counted.
    """

    position: int
    typical_s: float
    expected_s: float
    servers: int


def _gamma_median(n: float) -> float:
    """Median of a Gamma(n, 1) variable for n >= 1 (Berg and Pedersen's asymptotic series;
    0.6937 at n = 1 against ln 2 = 0.6931)."""
    return n - 1.0 / 3.0 + 8.0 / (405.0 * n) + 184.0 / (25515.0 * n * n)


# A change of the completion curve C at a time: (time, jump of C, change of C', change of C'').
Break = tuple[float, float, float, float]


class _Inverse:
    """C^-1 for increasing arguments, C being the expected number of slot completions by t:
    piecewise quadratic between sorted breakpoints, with jumps. Amortised O(1) per call over
    one sweep of increasing arguments."""

    def __init__(self, breaks: list[Break]) -> None:
        self._breaks = breaks
        self._next = 0
        # On [left, next break): C(t) = value + rise * d + bend / 2 * d**2, d = t - left.
        self._left = self._value = self._rise = self._bend = 0.0

    def time_for(self, target: float) -> float:
        breaks = self._breaks
        while True:
            if self._value >= target:
                return self._left
            if self._next < len(breaks):
                at, jump, rise, bend = breaks[self._next]
                span = at - self._left
                value_at = self._value + span * (self._rise + 0.5 * self._bend * span)
                if value_at >= target:
                    return self._left + self._solve(target - self._value)
                self._value = value_at + jump
                self._rise += self._bend * span + rise
                self._bend += bend
                self._left = at
                self._next += 1
            else:
                return self._left + self._solve(target - self._value)

    def _solve(self, gap: float) -> float:
        """d > 0 with rise * d + bend / 2 * d**2 = gap (the stable root, also for bend ~ 0)."""
        root = math.sqrt(max(self._rise * self._rise + 2.0 * self._bend * gap, 0.0))
        return 2.0 * gap / (self._rise + root)


class WaitModel:
    """One group's agents as they are now, and the wait for any queue position.

    Building costs O(B log W + B*Q log(B*Q)) for B busy calls (Q = QUANTILES): one bisection
    of the window per call, one sort of all residual buckets. `estimate(k)` then costs O(k)
    for the highest position asked so far and O(1) for any lower one, so one model serves
    every caller of the group's queue.
    """

    def __init__(
        self,
        agents: Iterable[AgentLoad],
        history: HandleTimes,
        abandon_rate: float = 0.0,
    ) -> None:
        if not math.isfinite(abandon_rate) or abandon_rate < 0:
            raise ValueError(f"abandon_rate is a rate per second >= 0, not {abandon_rate}")
        self.abandon_rate = abandon_rate
        mean = history.mean
        breaks: list[Break] = []
        servers = 0
        share = 1.0 / QUANTILES
        for agent in agents:
            servers += agent.capacity
            # After its first completion a slot frees once per handle time plus wrap-up: the
            # renewal part of C grows at `rate` per slot, weighted by the chance it is free.
            rate = 1.0 / max(mean + agent.wrapup_s, 1.0)
            busy = agent.calls_elapsed[: agent.capacity]
            free = agent.capacity - len(busy)
            if free:
                breaks.append((max(agent.wrapup_left_s, 0.0), float(free), free * rate, 0.0))
            for elapsed in busy:
                # The residual is uniform within each bucket: there C rises at the bucket's
                # density and bends upwards as the renewals start, up to `rate` per slot
                # once the residual is surely over. One breakpoint per bound, where one
                # bucket's density gives way to the next one's.
                bounds = history.residual_bounds(max(elapsed, 0.0), QUANTILES)
                density = 0.0
                for q, bound in enumerate(bounds):
                    width = bounds[q + 1] - bound if q < QUANTILES else 0.0
                    at = bound + agent.wrapup_s
                    if q < QUANTILES and width < 1e-9:
                        # An empty bucket (equal values in the window): a jump.
                        breaks.append((at, share, share * rate - density, -density * rate))
                        density = 0.0
                        continue
                    following = share / width if q < QUANTILES else 0.0
                    change = following - density
                    breaks.append((at, 0.0, change, change * rate))
                    density = following
        breaks.sort()
        self.servers = servers
        self._mean = _Inverse(breaks)
        self._median = _Inverse(breaks)
        self._estimates: list[WaitEstimate] = []
        self._ahead = 0.0  # expected callers ahead of the next position who will be served

    def estimate(self, position: int) -> WaitEstimate | None:
        """The wait of the caller at `position` (1-based, priority order applied), or None
        when nobody is logged in or the position is beyond MAX_POSITION. O(position) the first
        time a position this high is asked, else O(1)."""
        if position < 1:
            raise ValueError(f"a queue position starts at 1, not {position}")
        if self.servers == 0 or position > MAX_POSITION:
            return None
        while len(self._estimates) < position:
            needed = self._ahead + 1.0
            expected = self._mean.time_for(needed)
            typical = self._median.time_for(_gamma_median(needed))
            self._estimates.append(
                WaitEstimate(len(self._estimates) + 1, typical, expected, self.servers)
            )
            # The caller at this position is still there at its turn unless it hangs up
            # first. Its wait is a sum of about `needed` completion gaps, so take it as
            # Gamma(needed) with mean `expected`: E[exp(-a W)] = (1 + a W / n)^-n, which is
            # exact for one exponential gap and tends to exp(-a W) for many.
            self._ahead += (1.0 + self.abandon_rate * expected / needed) ** -needed
        return self._estimates[position - 1]


def estimate_wait(
    position: int,
    agents: Iterable[AgentLoad],
    history: HandleTimes,
    abandon_rate: float = 0.0,
) -> WaitEstimate | None:
    """The wait of one caller; see `WaitModel` (build it once for many callers of a group).
    O(B log W + B*Q log(B*Q) + position)."""
    return WaitModel(agents, history, abandon_rate).estimate(position)


def abandonment_rate(abandoned: int, waited_s: float) -> float:
    """Hang-ups per waiting caller per second over a recent window: the callers who hung up
    while waiting, over the total seconds every caller of the window waited (served or not).
    The maximum-likelihood rate of exponential patience; 0 without any waiting."""
    if abandoned < 0 or waited_s < 0:
        raise ValueError("counts and seconds are >= 0")
    return abandoned / waited_s if waited_s > 0 else 0.0


class Phrase(StrEnum):
    """How the wait is announced; the prompts layer says it in the queue's language."""

    LESS_THAN_A_MINUTE = "less_than_a_minute"
    ABOUT = "about"  # "about `minutes` minutes"
    MORE_THAN = "more_than"  # "more than `minutes` minutes"


@dataclass(frozen=True, slots=True)
class Announcement:
    phrase: Phrase
    minutes: int


# Above this an estimate is too uncertain (and too discouraging) to give as a number.
MAX_ANNOUNCED_MINUTES = 60


def announcement(seconds: float | None) -> Announcement | None:
    """What to announce for an estimated wait (seconds, e.g. `WaitEstimate.typical_s`): under
    a minute "less than a minute"; then the nearest whole minute (halves up) up to ten; then
    the nearest five minutes; from MAX_ANNOUNCED_MINUTES on "more than 60 minutes". None (no
    estimate) announces nothing. Never decreases as the estimate grows."""
    if seconds is None:
        return None
    if seconds < 60:
        return Announcement(Phrase.LESS_THAN_A_MINUTE, 1)
    if seconds >= MAX_ANNOUNCED_MINUTES * 60:
        return Announcement(Phrase.MORE_THAN, MAX_ANNOUNCED_MINUTES)
    minutes = math.floor(seconds / 60 + 0.5)
    if minutes > 10:
        minutes = 5 * math.floor(minutes / 5 + 0.5)
    return Announcement(Phrase.ABOUT, minutes)
