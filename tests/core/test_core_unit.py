"""Unit tests of the selection core, run against the twin (`py`) and the compiled core (`c`).

The expected answers are worked out from docs/contracts.md, "Selection core", not from
either implementation.
"""

from __future__ import annotations

from collections import Counter
from types import ModuleType
from typing import Any

import pytest

NOW = 1_700_000_000_000
MASK64 = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15

AVAILABLE, PAUSED, LOGGED_OUT = 0, 1, 2
RING_ALL, RANDOM, SEQUENTIAL, PRIORITY = 0, 1, 2, 3
LEAST_BUSY, ROUND_ROBIN, WEIGHTED_RANDOM, LONGEST_IDLE = 4, 5, 6, 7


def row(
    status: int = AVAILABLE,
    busy: int = 0,
    max_calls: int = 1,
    wrapup_until: int = 0,
    idle_since: int = 0,
) -> list[int]:
    return [status, busy, max_calls, wrapup_until, idle_since]


def members(*agent_ids: str, tier: int = 0, weight: int = 1) -> list[tuple[str, int, int, int]]:
    """Members whose positions follow canonical order."""
    return [(agent_id, tier, i, weight) for i, agent_id in enumerate(agent_ids)]


def live(core: ModuleType, *rows: list[int], rr_cursor: int = -1) -> Any:
    return core.LiveTable([value for r in rows for value in r], rr_cursor)


def idle(core: ModuleType, count: int, rr_cursor: int = -1) -> Any:
    return live(core, *[row() for _ in range(count)], rr_cursor=rr_cursor)


def agents(wave: Any) -> tuple[str, ...] | None:
    return None if wave is None else wave.agents


def waves(core: ModuleType, group: Any, table: Any, **kwargs: Any) -> list[tuple[str, ...]]:
    return [w.agents for w in core.plan(group, table, NOW, kwargs.pop("seed", 1), **kwargs)]


def splitmix64(state: int) -> tuple[int, int]:
    """The contract's generator: (new state, output)."""
    state = (state + GOLDEN) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def test_splitmix64_reference_vectors() -> None:
    # Published outputs for seed 1234567 (Vigna's splitmix64.c), so the tests' own
    # generator is not just checked against itself.
    state, out = 1234567, []
    for _ in range(5):
        state, value = splitmix64(state)
        out.append(value)
    assert out == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
        4593380528125082431,
        16408922859458223821,
    ]


# -- Wave ----------------------------------------------------------------------------------


def test_wave_value_semantics(core: ModuleType) -> None:
    wave = core.Wave(["a", "b"], 20, False)
    assert wave.agents == ("a", "b")
    assert type(wave.agents) is tuple
    assert wave.timeout == 20
    assert wave.sticky is False
    assert wave == core.Wave(("a", "b"), 20, False)
    assert (wave != core.Wave(("a", "b"), 20, False)) is False
    assert wave != core.Wave(("a", "b"), 21, False)
    assert wave != core.Wave(("a", "b"), 20, True)
    assert wave != core.Wave(("b", "a"), 20, False)
    assert wave != (("a", "b"), 20, False)
    assert hash(wave) == hash(core.Wave(("a", "b"), 20, False))
    assert len({wave, core.Wave(("a", "b"), 20, False), core.Wave(("a",), 20, True)}) == 2
    assert repr(core.Wave(("a",), 30, 1)) == "Wave(agents=('a',), timeout=30, sticky=True)"


def test_wave_is_read_only(core: ModuleType) -> None:
    wave = core.Wave(("a",), 20, False)
    for name, value in (("agents", ("b",)), ("timeout", 1), ("sticky", True)):
        with pytest.raises(AttributeError):
            setattr(wave, name, value)


# -- GroupTable ----------------------------------------------------------------------------


def test_group_table_accessors(core: ModuleType) -> None:
    group = core.GroupTable(LEAST_BUSY, 25, [("b", 1, 5, 2), ("a", 0, 3, 1)])
    assert group.agent_ids == ("b", "a")
    assert len(group) == 2
    assert group.strategy == LEAST_BUSY
    assert group.ring_timeout == 25
    assert group.index("b") == 0
    assert group.index("a") == 1
    with pytest.raises(KeyError):
        group.index("c")
    group._check()
    empty = core.GroupTable(RING_ALL, 1, [])
    assert len(empty) == 0
    assert empty.agent_ids == ()
    empty._check()


@pytest.mark.parametrize(
    ("strategy", "timeout", "member", "error", "message"),
    [
        (8, 20, ("a", 0, 0, 1), ValueError, "unknown strategy 8"),
        (-1, 20, ("a", 0, 0, 1), ValueError, "unknown strategy -1"),
        (0, 0, ("a", 0, 0, 1), ValueError, "ring_timeout must be >= 1, got 0"),
        (0, 20, ("a", -1, 0, 1), ValueError, "member 'a': tier must be >= 0, got -1"),
        (0, 20, ("a", 0, 0, 0), ValueError, "member 'a': weight must be >= 1, got 0"),
        (0, 20, ("b", 0, 0, 1), ValueError, "member 'b': duplicate agent id"),
        (0, 20, (7, 0, 0, 1), TypeError, "member 7: agent id must be a str"),
        (0, 20, ("a", 2**31, 0, 1), OverflowError, "member 'a': tier out of range"),
        (0, 20, ("a", 0, -(2**31) - 1, 1), OverflowError, "member 'a': position out of"),
        (0, 20, ("a", 0, 0, 1.0), TypeError, ""),
        (0, 20, ("a", 0, 0), ValueError, "member ('a', 0, 0): not (agent_id, tier, position"),
        (0, 20, 5, TypeError, "'int' object is not iterable"),
        (2**40, 20, ("a", 0, 0, 1), OverflowError, "strategy out of range"),
        ("ring_all", 20, ("a", 0, 0, 1), TypeError, ""),
    ],
)
def test_group_table_validation(
    core: ModuleType,
    strategy: Any,
    timeout: int,
    member: Any,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error) as caught:
        core.GroupTable(strategy, timeout, [("b", 0, 0, 1), member])
    assert str(caught.value).startswith(message)


def test_group_table_accepts_int_like_values(core: ModuleType) -> None:
    group = core.GroupTable(True, True, [("a", False, True, True)])
    assert (group.strategy, group.ring_timeout) == (RANDOM, 1)


# -- LiveTable -----------------------------------------------------------------------------


def test_live_table(core: ModuleType) -> None:
    table = live(core, row(), row(PAUSED), rr_cursor=1)
    assert len(table) == 2
    table.set_reachable(0, False)
    table.set_reachable(1, 0)
    table._check()
    assert len(core.LiveTable([])) == 0


@pytest.mark.parametrize(
    ("rows", "rr_cursor", "error", "message"),
    [
        ([0, 0, 1, 0], -1, ValueError, "len(rows) is 4, not a multiple of LIVE_FIELDS (5)"),
        ([0, 0, 1, 0, 0], 1, ValueError, "rr_cursor must be -1 or a member index below 1"),
        ([0, 0, 1, 0, 0], -2, ValueError, "rr_cursor must be -1 or a member index below 1"),
        ([], 0, ValueError, "rr_cursor must be -1 or a member index below 0, got 0"),
        ([0, 0, 1, 0, 2**63], -1, OverflowError, "rows[4] out of range: 9223372036854775808"),
        ([0, 0, 1, -(2**63), 0], -1, None, ""),
        ([0, 0, 1.5, 0, 0], -1, TypeError, ""),
        ([0, 0, 1, 0, 0], 0.0, TypeError, ""),
    ],
)
def test_live_table_validation(
    core: ModuleType, rows: list[Any], rr_cursor: Any, error: type[Exception] | None, message: str
) -> None:
    if error is None:
        assert len(core.LiveTable(rows, rr_cursor)) == 1
        return
    with pytest.raises(error) as caught:
        core.LiveTable(rows, rr_cursor)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("index", [-1, 2, 2**70])
def test_set_reachable_out_of_range(core: ModuleType, index: int) -> None:
    table = idle(core, 2)
    with pytest.raises((IndexError, OverflowError)):
        table.set_reachable(index, False)


# -- next_wave arguments -------------------------------------------------------------------


def test_next_wave_argument_errors(core: ModuleType) -> None:
    group = core.GroupTable(RING_ALL, 20, members("a", "b"))
    with pytest.raises(ValueError, match="live table has 1 members, group has 2"):
        core.next_wave(group, idle(core, 1), NOW, 1)
    with pytest.raises(ValueError, match="live table has 3 members, group has 2"):
        core.plan(group, idle(core, 3), NOW, 1)
    with pytest.raises(TypeError):
        core.next_wave(None, idle(core, 2), NOW, 1)
    with pytest.raises(TypeError):
        core.next_wave(group, [0] * 10, NOW, 1)
    with pytest.raises(TypeError):
        core.next_wave(group, idle(core, 2), float(NOW), 1)
    with pytest.raises(OverflowError, match="now_ms out of range"):
        core.next_wave(group, idle(core, 2), 2**63, 1)
    with pytest.raises(TypeError):
        core.next_wave(group, idle(core, 2), NOW, 1.5)
    with pytest.raises(TypeError):
        core.next_wave(group, idle(core, 2), NOW, 1, tried=[["a"]])
    with pytest.raises(TypeError):
        core.next_wave(group, idle(core, 2), NOW, 1, sticky=["a"])


def test_keyword_arguments(core: ModuleType) -> None:
    group = core.GroupTable(SEQUENTIAL, 20, members("a", "b"))
    wave = core.next_wave(group=group, live=idle(core, 2), now_ms=NOW, seed=0, tried=["a"])
    assert agents(wave) == ("b",)


def test_empty_group(core: ModuleType) -> None:
    for strategy in range(8):
        group = core.GroupTable(strategy, 20, [])
        assert core.next_wave(group, idle(core, 0), NOW, 1, sticky="a") is None
        assert core.plan(group, idle(core, 0), NOW, 1) == []


# -- eligibility ---------------------------------------------------------------------------

SKIP_REASONS = {
    "paused": (row(PAUSED), True),
    "logged_out": (row(LOGGED_OUT), True),
    "unknown_status": (row(9), True),
    "wrap_up": (row(wrapup_until=NOW + 1), True),
    "wrap_up_ended_now": (row(wrapup_until=NOW), False),
    "at_max_calls": (row(busy=2, max_calls=2), True),
    "over_max_calls": (row(busy=3, max_calls=2), True),
    "below_max_calls": (row(busy=1, max_calls=2), False),
    "no_capacity": (row(busy=0, max_calls=0), True),
}


@pytest.mark.parametrize("strategy", range(8))
@pytest.mark.parametrize("reason", sorted(SKIP_REASONS))
def test_skip_reasons(core: ModuleType, reason: str, strategy: int) -> None:
    first, skipped = SKIP_REASONS[reason]
    group = core.GroupTable(strategy, 20, members("a", "b"))
    table = live(core, first, row(idle_since=-1))
    offered = [a for wave in waves(core, group, table) for a in wave]
    assert ("a" not in offered) is skipped
    assert "b" in offered


@pytest.mark.parametrize("strategy", range(8))
def test_unreachable_is_skipped(core: ModuleType, strategy: int) -> None:
    group = core.GroupTable(strategy, 20, members("a", "b", "c"))
    table = idle(core, 3)
    table.set_reachable(1, False)
    assert sorted(a for wave in waves(core, group, table) for a in wave) == ["a", "c"]
    table.set_reachable(1, True)
    assert sorted(a for wave in waves(core, group, table) for a in wave) == ["a", "b", "c"]


@pytest.mark.parametrize("strategy", range(8))
def test_tried_is_skipped(core: ModuleType, strategy: int) -> None:
    group = core.GroupTable(strategy, 20, members("a", "b", "c"))
    tried: Any
    for tried in (["b"], {"b", "zz"}, ("b", "b"), iter(["b"]), {"b": 1}, [1, None, "b"]):
        offered = [a for w in waves(core, group, idle(core, 3), tried=tried) for a in w]
        assert sorted(offered) == ["a", "c"]
    assert core.next_wave(group, idle(core, 3), NOW, 1, tried="abc") is None


def test_nobody_eligible(core: ModuleType) -> None:
    for strategy in range(8):
        group = core.GroupTable(strategy, 20, members("a", "b"))
        table = live(core, row(PAUSED), row(busy=1))
        assert core.next_wave(group, table, NOW, 1) is None
        assert core.plan(group, table, NOW, 1) == []


# -- strategies ----------------------------------------------------------------------------


def test_ring_all_offers_everyone_in_canonical_order(core: ModuleType) -> None:
    group = core.GroupTable(RING_ALL, 30, [("a", 0, 9, 1), ("b", 2, 1, 1), ("c", 1, 5, 1)])
    assert core.next_wave(group, idle(core, 3), NOW, 1) == core.Wave(("a", "b", "c"), 30, False)
    assert waves(core, group, live(core, row(), row(PAUSED), row())) == [("a", "c")]


def test_sequential_follows_position_then_canonical_index(core: ModuleType) -> None:
    group = core.GroupTable(
        SEQUENTIAL, 20, [("a", 0, 5, 1), ("b", 0, 1, 1), ("c", 0, 5, 1), ("d", 0, -3, 1)]
    )
    assert waves(core, group, idle(core, 4)) == [("d",), ("b",), ("a",), ("c",)]
    table = live(core, row(), row(busy=1), row(), row(PAUSED))
    assert waves(core, group, table) == [("a",), ("c",)]


def test_priority_tiers_in_order(core: ModuleType) -> None:
    group = core.GroupTable(
        PRIORITY,
        20,
        [("a", 1, 0, 1), ("b", 0, 2, 1), ("c", 2, 0, 1), ("d", 0, 1, 1), ("e", 1, -1, 1)],
    )
    assert waves(core, group, idle(core, 5)) == [("d", "b"), ("e", "a"), ("c",)]
    # Tier 0 has nobody eligible: the next tier with someone goes first.
    table = live(core, row(), row(PAUSED), row(), row(busy=1), row())
    assert waves(core, group, table) == [("e", "a"), ("c",)]
    assert waves(core, group, idle(core, 5), tried=["d", "a"]) == [("b",), ("e",), ("c",)]


def test_least_busy_ties_to_longest_idle_then_position(core: ModuleType) -> None:
    group = core.GroupTable(
        LEAST_BUSY, 20, [("a", 0, 4, 1), ("b", 0, 3, 1), ("c", 0, 2, 1), ("d", 0, 1, 1)]
    )
    table = live(
        core,
        row(busy=1, max_calls=3, idle_since=100),
        row(busy=0, max_calls=3, idle_since=500),
        row(busy=0, max_calls=3, idle_since=200),
        row(busy=0, max_calls=3, idle_since=200),
    )
    # c and d tie on (busy 0, idle 200); d has the lower position.
    assert waves(core, group, table) == [("d",), ("c",), ("b",), ("a",)]
    assert agents(core.next_wave(group, table, NOW, 1, tried=["d", "c", "b"])) == ("a",)


def test_longest_idle_ties_to_position(core: ModuleType) -> None:
    group = core.GroupTable(
        LONGEST_IDLE, 20, [("a", 0, 2, 1), ("b", 0, 1, 1), ("c", 0, 0, 1), ("d", 0, 0, 1)]
    )
    table = live(
        core,
        row(idle_since=50),
        row(idle_since=10, busy=1, max_calls=2),
        row(idle_since=50),
        row(idle_since=-5),
    )
    assert waves(core, group, table) == [("d",), ("b",), ("c",), ("a",)]


def test_round_robin_starts_after_the_cursor_and_wraps(core: ModuleType) -> None:
    # Position order: c, a, d, b.
    group = core.GroupTable(
        ROUND_ROBIN, 20, [("a", 0, 1, 1), ("b", 0, 3, 1), ("c", 0, 0, 1), ("d", 0, 2, 1)]
    )
    expected_first = {-1: "c", 2: "a", 0: "d", 3: "b", 1: "c"}
    for cursor, first in expected_first.items():
        assert agents(core.next_wave(group, idle(core, 4, cursor), NOW, 1)) == (first,)
    assert waves(core, group, idle(core, 4, rr_cursor=3)) == [("b",), ("c",), ("a",), ("d",)]
    # Only the member offered last is eligible: the cycle comes back to it.
    table = live(core, row(PAUSED), row(), row(PAUSED), row(PAUSED), rr_cursor=1)
    assert waves(core, group, table) == [("b",)]
    # The next eligible after the cursor, skipping ineligible ones on the way round.
    table = live(core, row(), row(PAUSED), row(busy=1), row(), rr_cursor=3)
    assert waves(core, group, table) == [("a",), ("d",)]


def reference_permutation(count: int, seed: int) -> list[int]:
    state, order = seed & MASK64, list(range(count))
    for i in range(count - 1, 0, -1):
        state, value = splitmix64(state)
        j = value % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def test_random_is_the_first_eligible_of_the_seeded_permutation(core: ModuleType) -> None:
    ids = [f"a{i}" for i in range(7)]
    group = core.GroupTable(RANDOM, 20, members(*ids))
    for seed in (0, 1, 42, 2**64 - 1, 2**63 + 5):
        order = [ids[i] for i in reference_permutation(7, seed)]
        assert waves(core, group, idle(core, 7), seed=seed) == [(a,) for a in order]
        table = live(core, *[row(PAUSED) if a == order[0] else row() for a in ids])
        assert agents(core.next_wave(group, table, NOW, seed)) == (order[1],)


def test_seed_is_taken_mod_2_64(core: ModuleType) -> None:
    ids = [f"a{i}" for i in range(9)]
    for strategy in (RANDOM, WEIGHTED_RANDOM):
        group = core.GroupTable(strategy, 20, members(*ids, weight=3))
        for seed in (0, 5, -5, 2**63, 2**64 - 1):
            expected = waves(core, group, idle(core, 9), seed=seed)
            for other in (seed + 2**64, seed - 2**64, seed + 5 * 2**64):
                assert waves(core, group, idle(core, 9), seed=other) == expected


def reference_weighted(weights: dict[str, int], seed: int, tried_count: int) -> str:
    total = sum(weights.values())
    _, value = splitmix64((seed + tried_count * GOLDEN) & MASK64)
    r = value % total
    for agent_id, weight in weights.items():
        if r < weight:
            return agent_id
        r -= weight
    raise AssertionError


def test_weighted_random_reference(core: ModuleType) -> None:
    group = core.GroupTable(
        WEIGHTED_RANDOM, 20, [("a", 0, 3, 5), ("b", 0, 2, 1), ("c", 0, 1, 3), ("d", 0, 0, 2)]
    )
    for seed in range(50):
        expected = reference_weighted({"a": 5, "b": 1, "c": 3, "d": 2}, seed, 0)
        assert agents(core.next_wave(group, idle(core, 4), NOW, seed)) == (expected,)
        # Paused members drop out of the total; non-members do not count as tried.
        table = live(core, row(), row(PAUSED), row(), row())
        expected = reference_weighted({"a": 5, "c": 3, "d": 2}, seed, 0)
        assert agents(core.next_wave(group, table, NOW, seed, tried=["x"])) == (expected,)
        # Tried members drop out and move the stream on by one step each.
        expected = reference_weighted({"a": 5, "d": 2}, seed, 2)
        assert agents(core.next_wave(group, idle(core, 4), NOW, seed, ["b", "c"])) == (expected,)


def test_weighted_random_follows_weights(core: ModuleType) -> None:
    group = core.GroupTable(WEIGHTED_RANDOM, 20, [("a", 0, 0, 1), ("b", 0, 1, 3)])
    counts = Counter(
        agents(core.next_wave(group, idle(core, 2), NOW, seed)) for seed in range(4000)
    )
    assert 0.70 < counts[("b",)] / 4000 < 0.80


def test_weighted_random_large_weights(core: ModuleType) -> None:
    top = 2**31 - 1
    group = core.GroupTable(WEIGHTED_RANDOM, 20, members(*"abcdefgh", weight=top))
    picked = {agents(core.next_wave(group, idle(core, 8), NOW, seed)) for seed in range(200)}
    assert picked == {(a,) for a in "abcdefgh"}


# -- sticky --------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", range(8))
def test_sticky_eligible_goes_first_alone(core: ModuleType, strategy: int) -> None:
    group = core.GroupTable(strategy, 15, members("a", "b", "c"))
    table = idle(core, 3)
    assert core.next_wave(group, table, NOW, 1, sticky="b") == core.Wave(("b",), 15, True)
    plan = core.plan(group, table, NOW, 1, sticky="b")
    assert plan[0] == core.Wave(("b",), 15, True)
    # After the sticky wave the strategy runs over the others, never offering b again.
    rest = core.plan(group, table, NOW, 1, tried=["b"])
    assert plan[1:] == rest
    assert all(not wave.sticky for wave in rest)


@pytest.mark.parametrize("strategy", range(8))
def test_sticky_ineligible_falls_back_to_strategy(core: ModuleType, strategy: int) -> None:
    group = core.GroupTable(strategy, 15, members("a", "b", "c"))
    table = live(core, row(), row(PAUSED), row())
    for sticky in ("b", "zz", None):
        assert core.plan(group, table, NOW, 1, sticky=sticky) == core.plan(group, table, NOW, 1)
    assert core.plan(group, idle(core, 3), NOW, 1, ["b"], "b") == core.plan(
        group, idle(core, 3), NOW, 1, ["b"]
    )
    unreachable = idle(core, 3)
    unreachable.set_reachable(1, False)
    first = core.next_wave(group, unreachable, NOW, 1, sticky="b")
    assert first is not None
    assert not first.sticky
    assert "b" not in first.agents


# -- plan ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", range(8))
def test_plan_exhausts_every_eligible_agent_once(core: ModuleType, strategy: int) -> None:
    ids = [f"a{i}" for i in range(12)]
    group = core.GroupTable(
        strategy, 20, [(a, i % 3, (i * 5) % 12, 1 + i % 4) for i, a in enumerate(ids)]
    )
    rows = [
        row(PAUSED) if i % 5 == 0 else row(busy=i % 2, max_calls=2, idle_since=i) for i in range(12)
    ]
    plan = core.plan(group, live(core, *rows), NOW, 99, tried=["a1"], sticky="a7")
    offered = [a for wave in plan for a in wave.agents]
    assert len(offered) == len(set(offered))
    assert sorted(offered) == sorted(a for i, a in enumerate(ids) if i % 5 and a != "a1")
    assert plan[0] == core.Wave(("a7",), 20, True)
    # Replaying the plan one wave at a time gives the same waves.
    tried: list[str] = ["a1"]
    for wave in plan:
        assert core.next_wave(group, live(core, *rows), NOW, 99, tried, "a7") == wave
        tried.extend(wave.agents)
    assert core.next_wave(group, live(core, *rows), NOW, 99, tried, "a7") is None


def test_plan_of_large_group(core: ModuleType) -> None:
    # Past the compiled core's on-stack scratch size: the heap path must agree.
    ids = [f"agent{i}" for i in range(600)]
    for strategy in range(8):
        group = core.GroupTable(
            strategy, 20, [(a, i % 4, -i, 1 + i % 7) for i, a in enumerate(ids)]
        )
        rows = [row(PAUSED) if i % 3 == 0 else row(idle_since=i % 11) for i in range(600)]
        plan = core.plan(group, live(core, *rows), NOW, 7)
        offered = [a for wave in plan for a in wave.agents]
        assert sorted(offered) == sorted(a for i, a in enumerate(ids) if i % 3)
