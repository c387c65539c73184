"""The wait estimator: edge cases, known queueing answers, and properties that must hold for any
group (monotone in position and abandonment, capacity as slots, memoryless handle times), and
the announcement rounding."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.queue.estimate import (
    DEFAULT_HANDLE_TIME_S,
    MAX_ANNOUNCED_MINUTES,
    MAX_POSITION,
    MIN_TAIL,
    PRIOR_CALLS,
    QUANTILES,
    AgentLoad,
    Announcement,
    HandleTimes,
    Phrase,
    WaitModel,
    abandonment_rate,
    announcement,
    estimate_wait,
)

MEAN = 180.0


def exponential_window(mean: float = MEAN, size: int = 200) -> HandleTimes:
    """The window of a memoryless group: exponential quantiles, no sampling noise."""
    return HandleTimes([-mean * math.log1p(-(i + 0.5) / size) for i in range(size)], size)


def busy(*elapsed: float, wrapup_s: float = 0.0) -> list[AgentLoad]:
    """One single-line agent per elapsed call time."""
    return [AgentLoad(calls_elapsed=(e,), wrapup_s=wrapup_s) for e in elapsed]


# -- edge cases ----------------------------------------------------------------------------------


def test_nobody_logged_in_cannot_be_estimated() -> None:
    model = WaitModel([], exponential_window())
    assert model.servers == 0
    assert model.estimate(1) is None
    assert estimate_wait(3, [], HandleTimes()) is None


def test_position_starts_at_one() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        estimate_wait(0, busy(10.0), exponential_window())


def test_position_beyond_any_queue_is_not_estimated() -> None:
    model = WaitModel(busy(10.0, 20.0), exponential_window())
    assert model.estimate(MAX_POSITION) is not None
    assert model.estimate(MAX_POSITION + 1) is None


def test_without_history_handle_times_default_to_an_exponential() -> None:
    history = HandleTimes()
    assert history.mean == DEFAULT_HANDLE_TIME_S
    estimate = estimate_wait(1, busy(120.0), history)
    assert estimate is not None
    # One busy agent, memoryless calls: the wait is one handle time, median ln 2 of it.
    assert estimate.expected_s == pytest.approx(DEFAULT_HANDLE_TIME_S, rel=0.05)
    assert estimate.typical_s == pytest.approx(math.log(2) * DEFAULT_HANDLE_TIME_S, rel=0.05)


def test_a_short_history_is_shrunk_towards_the_default() -> None:
    assert HandleTimes([60.0]).mean == pytest.approx(
        (60.0 + PRIOR_CALLS * DEFAULT_HANDLE_TIME_S) / (1 + PRIOR_CALLS)
    )
    enough = [60.0] * MIN_TAIL
    assert HandleTimes(enough).mean == 60.0


def test_an_idle_agent_takes_the_first_caller_at_once() -> None:
    model = WaitModel([AgentLoad(), *busy(30.0)], exponential_window())
    first, second = model.estimate(1), model.estimate(2)
    assert first is not None and second is not None
    assert first.typical_s == first.expected_s == 0.0
    assert second.expected_s > 0.0


def test_a_free_line_of_a_two_line_agent_is_an_idle_slot() -> None:
    model = WaitModel([AgentLoad(capacity=2, calls_elapsed=(30.0,))], exponential_window())
    assert model.servers == 2
    first, second = model.estimate(1), model.estimate(2)
    assert first is not None and second is not None
    assert first.expected_s == 0.0 < second.expected_s


def test_an_agent_in_wrapup_is_free_when_it_ends() -> None:
    estimate = estimate_wait(1, [AgentLoad(wrapup_s=30.0, wrapup_left_s=20.0)], HandleTimes())
    assert estimate is not None
    assert estimate.typical_s == estimate.expected_s == pytest.approx(20.0)


def test_wrapup_after_a_call_delays_the_agent_by_at_least_the_wrapup() -> None:
    history = exponential_window()
    plain = estimate_wait(1, busy(40.0), history)
    wrapped = estimate_wait(1, busy(40.0, wrapup_s=30.0), history)
    assert plain is not None and wrapped is not None
    assert wrapped.expected_s >= plain.expected_s + 30.0 - 1e-9


def test_known_handle_times_give_the_exact_wait() -> None:
    """Every call lasts 180 s: a call 100 s in frees its agent in 80 s."""
    estimate = estimate_wait(1, busy(100.0), HandleTimes([180.0] * 50))
    assert estimate is not None
    assert estimate.typical_s == pytest.approx(80.0)
    assert estimate.expected_s == pytest.approx(80.0)


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        AgentLoad(capacity=0)
    with pytest.raises(ValueError):
        WaitModel(busy(1.0), HandleTimes(), abandon_rate=-0.1)
    with pytest.raises(ValueError):
        WaitModel(busy(1.0), HandleTimes(), abandon_rate=math.nan)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            HandleTimes().add(bad)
    with pytest.raises(ValueError):
        HandleTimes(maxlen=0)
    with pytest.raises(ValueError):
        abandonment_rate(-1, 10.0)


def test_abandonment_rate_is_hangups_per_second_waited() -> None:
    assert abandonment_rate(3, 600.0) == pytest.approx(0.005)
    assert abandonment_rate(0, 0.0) == 0.0


def test_a_lower_position_is_served_from_the_model_already_built() -> None:
    model = WaitModel(busy(10.0, 50.0, 90.0), exponential_window())
    fifth = model.estimate(5)
    assert model.estimate(3) is model.estimate(3)
    assert model.estimate(5) is fifth


# -- known answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("servers", [1, 3, 10, 40])
def test_memoryless_servers_serve_one_caller_per_mean_over_s(servers: int) -> None:
    """M/M/s: the caller at position k waits for k completions at rate s / mean."""
    rng = random.Random(servers)
    model = WaitModel(busy(*(rng.uniform(0, 600) for _ in range(servers))), exponential_window())
    for position in (1, 2, 5, 20, 60):
        exact = position * MEAN / servers
        estimate = model.estimate(position)
        assert estimate is not None
        assert estimate.expected_s == pytest.approx(exact, rel=0.1, abs=5.0)
        assert estimate.typical_s <= estimate.expected_s


@pytest.mark.parametrize(("servers", "rate"), [(2, 1 / 300), (5, 1 / 120), (20, 1 / 60)])
def test_abandonment_ahead_matches_the_memoryless_queue(servers: int, rate: float) -> None:
    """M/M/s+M: with j callers ahead, the next advance comes at rate s mu + j theta. (Within
    2 s at the first positions: the residual buckets blur the first of many completions.)"""
    model = WaitModel(busy(*([60.0] * servers)), exponential_window(), abandon_rate=rate)
    for position in (1, 5, 20, 60):
        exact = sum(1 / (servers / MEAN + j * rate) for j in range(position))
        estimate = model.estimate(position)
        assert estimate is not None
        assert estimate.expected_s == pytest.approx(exact, rel=0.06, abs=2.0)


def test_a_long_call_on_heavy_tailed_handle_times_goes_on() -> None:
    """Lognormal handle times (cv 2): the longer a call has lasted, the longer it lasts."""
    rng = random.Random(7)
    sigma = math.sqrt(math.log(5.0))
    history = HandleTimes(
        [rng.lognormvariate(math.log(MEAN) - sigma**2 / 2, sigma) for _ in range(200)]
    )
    fresh, long = (estimate_wait(1, busy(e), history) for e in (0.0, 600.0))
    assert fresh is not None and long is not None
    assert long.expected_s > 1.5 * fresh.expected_s


def test_a_long_call_on_light_tailed_handle_times_ends_soon() -> None:
    """Handle times between 100 and 300 s: a call 250 s in has at most 50 s to go."""
    history = HandleTimes([100.0 + i for i in range(201)], 201)
    fresh, long = (estimate_wait(1, busy(e), history) for e in (0.0, 250.0))
    assert fresh is not None and long is not None
    assert long.expected_s < 50.0 < fresh.expected_s


def completions_by(t: float, agents: list[AgentLoad], history: HandleTimes) -> float:
    """C(t), the expected number of slot completions by t, summed slot by slot from the
    residual buckets: uniform within each, then renewals at 1 / (mean + wrap-up)."""
    total = 0.0
    for agent in agents:
        rate = 1.0 / max(history.mean + agent.wrapup_s, 1.0)
        free = agent.capacity - len(agent.calls_elapsed)
        if free and t >= agent.wrapup_left_s:
            total += free * (1.0 + rate * (t - agent.wrapup_left_s))
        for elapsed in agent.calls_elapsed:
            bounds = [b + agent.wrapup_s for b in history.residual_bounds(elapsed, QUANTILES)]
            for low, high in itertools.pairwise(bounds):
                share = 1.0 / QUANTILES
                if high - low < 1e-9:
                    total += share * (1.0 + rate * (t - low)) if t >= low else 0.0
                elif low < t < high:
                    done = (t - low) / (high - low)
                    total += share * (done + rate * done * (t - low) / 2)
                elif t >= high:
                    total += share * (1.0 + rate * ((high - low) / 2 + t - high))
    return total


def test_the_mean_wait_is_where_the_completion_curve_reaches_the_position() -> None:
    rng = random.Random(11)
    history = HandleTimes([rng.lognormvariate(5.0, 0.9) for _ in range(120)] + [150.0] * 10)
    agents = [
        AgentLoad(
            capacity=rng.choice((1, 2)),
            calls_elapsed=tuple(rng.uniform(0, 500) for _ in range(rng.randint(0, 1))),
            wrapup_s=rng.choice((0.0, 15.0)),
            wrapup_left_s=rng.choice((0.0, 0.0, 7.0)),
        )
        for _ in range(6)
    ]
    model = WaitModel(agents, history)
    for position in range(1, 40):
        estimate = model.estimate(position)
        assert estimate is not None
        t = estimate.expected_s
        assert completions_by(t, agents, history) >= position - 1e-9
        assert completions_by(t - 1e-6, agents, history) < position


# -- properties ------------------------------------------------------------------------------------

handle_times = st.lists(
    st.floats(min_value=1.0, max_value=3600.0, allow_nan=False), min_size=0, max_size=60
)
agent_loads = st.builds(
    lambda capacity, elapsed, wrapup, left: AgentLoad(
        capacity, tuple(elapsed[:capacity]), wrapup, left
    ),
    st.integers(1, 3),
    st.lists(st.floats(0.0, 4000.0, allow_nan=False), max_size=3),
    st.sampled_from((0.0, 10.0, 30.0)),
    st.sampled_from((0.0, 0.0, 5.0)),
)
groups = st.lists(agent_loads, min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(groups, handle_times, st.floats(0.0, 0.05))
def test_the_wait_grows_with_the_position(
    agents: list[AgentLoad], recent: list[float], rate: float
) -> None:
    model = WaitModel(agents, HandleTimes(recent), rate)
    previous = None
    for position in range(1, 30):
        estimate = model.estimate(position)
        assert estimate is not None
        assert 0.0 <= estimate.typical_s <= estimate.expected_s + 1e-9
        assert math.isfinite(estimate.expected_s)
        if previous is not None:
            assert estimate.typical_s >= previous.typical_s
            assert estimate.expected_s >= previous.expected_s
        previous = estimate


@settings(max_examples=100, deadline=None)
@given(groups, handle_times, st.floats(0.0, 0.02), st.floats(0.0, 0.02), st.integers(1, 40))
def test_more_hangups_ahead_never_lengthen_the_wait(
    agents: list[AgentLoad], recent: list[float], low: float, high: float, position: int
) -> None:
    low, high = sorted((low, high))
    history = HandleTimes(recent)
    patient = WaitModel(agents, history, low).estimate(position)
    impatient = WaitModel(agents, history, high).estimate(position)
    assert patient is not None and impatient is not None
    assert impatient.expected_s <= patient.expected_s + 1e-9
    assert impatient.typical_s <= patient.typical_s + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0.0, 4000.0, allow_nan=False), min_size=1, max_size=6),
    st.integers(0, 3),
    handle_times,
)
def test_an_agent_of_capacity_c_counts_as_c_agents(
    elapsed: list[float], free: int, recent: list[float]
) -> None:
    history = HandleTimes(recent)
    one = WaitModel([AgentLoad(len(elapsed) + free, tuple(elapsed))], history)
    many = WaitModel(busy(*elapsed) + [AgentLoad() for _ in range(free)], history)
    assert one.servers == many.servers
    for position in range(1, 15):
        a, b = one.estimate(position), many.estimate(position)
        assert a is not None and b is not None
        assert a.expected_s == pytest.approx(b.expected_s)
        assert a.typical_s == pytest.approx(b.typical_s)


@settings(max_examples=100, deadline=None)
@given(
    st.floats(0.0, 3000.0),
    st.floats(0.0, 3000.0),
    st.integers(0, 4),
    st.integers(1, 10),
)
def test_elapsed_busy_time_hardly_matters_when_handle_times_are_memoryless(
    shorter: float, longer: float, others: int, position: int
) -> None:
    """Under exponential handle times the remaining time of a call does not depend on how
    long it has lasted, so neither does the wait. The window is a finite sample, so its
    conditional residuals wobble: more elapsed time never raises the estimate by more than a
    few per cent (the exact answer: not at all)."""
    shorter, longer = sorted((shorter, longer))
    history = exponential_window()
    rest = busy(*([60.0] * others))
    before = WaitModel(busy(shorter) + rest, history).estimate(position)
    after = WaitModel(busy(longer) + rest, history).estimate(position)
    assert before is not None and after is not None
    assert after.expected_s <= 1.08 * before.expected_s
    assert after.typical_s <= 1.08 * before.typical_s
    assert after.expected_s >= before.expected_s / 1.08


@settings(max_examples=200, deadline=None)
@given(handle_times, st.floats(0.0, 5000.0), st.integers(1, 16))
def test_residual_buckets_are_ordered_and_positive(
    recent: list[float], elapsed: float, count: int
) -> None:
    bounds = HandleTimes(recent).residual_bounds(elapsed, count)
    assert len(bounds) == count + 1
    assert bounds[0] >= 0.0
    assert all(a <= b for a, b in itertools.pairwise(bounds))
    assert all(math.isfinite(b) for b in bounds)


def test_the_window_keeps_the_last_calls_sorted() -> None:
    """Seeded stress: random handle times into a small window, invariants after each."""
    rng = random.Random(3)
    history = HandleTimes(maxlen=25)
    recent: list[float] = []
    for step in range(600):
        seconds = rng.choice((rng.expovariate(1 / 200), 0.0, 42.0))
        history.add(seconds)
        recent = [*recent, seconds][-25:]
        if step % 7 == 0:
            history.residual_bounds(rng.uniform(0, 400))  # fills the snapshot
        history._check()
        assert len(history) == len(recent)
        if len(recent) >= MIN_TAIL:
            assert history.mean == pytest.approx(math.fsum(recent) / len(recent))


# -- what is announced -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, None),
        (0.0, Announcement(Phrase.LESS_THAN_A_MINUTE, 1)),
        (59.9, Announcement(Phrase.LESS_THAN_A_MINUTE, 1)),
        (60.0, Announcement(Phrase.ABOUT, 1)),
        (89.9, Announcement(Phrase.ABOUT, 1)),
        (90.0, Announcement(Phrase.ABOUT, 2)),
        (149.0, Announcement(Phrase.ABOUT, 2)),
        (600.0, Announcement(Phrase.ABOUT, 10)),
        (629.0, Announcement(Phrase.ABOUT, 10)),
        (760.0, Announcement(Phrase.ABOUT, 15)),
        (3540.0, Announcement(Phrase.ABOUT, 60)),
        (3600.0, Announcement(Phrase.MORE_THAN, MAX_ANNOUNCED_MINUTES)),
        (86400.0, Announcement(Phrase.MORE_THAN, MAX_ANNOUNCED_MINUTES)),
    ],
)
def test_announced_minutes(seconds: float | None, expected: Announcement | None) -> None:
    assert announcement(seconds) == expected


def _rank(a: Announcement) -> tuple[int, int]:
    order = (Phrase.LESS_THAN_A_MINUTE, Phrase.ABOUT, Phrase.MORE_THAN)
    return order.index(a.phrase), a.minutes


@given(st.floats(0.0, 10_000.0), st.floats(0.0, 10_000.0))
def test_a_longer_wait_is_never_announced_as_shorter(a: float, b: float) -> None:
    low, high = announcement(min(a, b)), announcement(max(a, b))
    assert low is not None and high is not None
    assert _rank(low) <= _rank(high)
