"""Property tests: the compiled core gives the twin's answers and errors, and both keep the
contract's invariants, for random groups, live states, strategies, seeds, tried sets and
sticky agents."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = 1_700_000_000_000
RING_ALL, PRIORITY = 0, 3
ONE_AGENT_STRATEGIES = (1, 2, 4, 5, 6, 7)

agent_ids = st.text(string.ascii_lowercase + string.digits + "_.-", min_size=1, max_size=4)


@dataclass
class Case:
    """Plain data for one routing decision, to build into either core's tables."""

    strategy: int
    ring_timeout: int
    members: list[tuple[str, int, int, int]]
    rows: list[int]
    unreachable: list[int]
    rr_cursor: int
    seed: int
    tried: list[Any]
    sticky: str | None

    def tables(self, core: ModuleType) -> tuple[Any, Any]:
        group = core.GroupTable(self.strategy, self.ring_timeout, self.members)
        live = core.LiveTable(self.rows, self.rr_cursor)
        for index in self.unreachable:
            live.set_reachable(index, False)
        return group, live

    def eligible(self) -> set[str]:
        """The contract's eligibility, written out independently of both cores."""
        tried = set(self.tried)
        out = set()
        for i, (agent_id, _, _, _) in enumerate(self.members):
            status, busy, max_calls, wrapup_until, _ = self.rows[5 * i : 5 * i + 5]
            if (
                agent_id not in tried
                and i not in self.unreachable
                and status == 0
                and wrapup_until <= NOW
                and busy < max_calls
            ):
                out.add(agent_id)
        return out


@st.composite
def cases(draw: st.DrawFn, max_members: int = 40) -> Case:
    ids = draw(st.lists(agent_ids, max_size=max_members, unique=True))
    n = len(ids)
    weight = st.one_of(st.integers(1, 5), st.just(2**31 - 1))
    members = [
        (agent_id, draw(st.integers(0, 3)), draw(st.integers(-3, 3)), draw(weight))
        for agent_id in ids
    ]
    rows: list[int] = []
    for _ in range(n):
        rows += [
            draw(st.sampled_from([0, 0, 0, 1, 2, 7])),  # mostly available
            draw(st.integers(0, 3)),
            draw(st.integers(0, 3)),
            NOW + draw(st.sampled_from([-1000, -1, 0, 1, 1000])),
            NOW - draw(st.integers(0, 4)) * 1000,  # few values: many idle ties
        ]
    unreachable = draw(st.lists(st.integers(0, n - 1), max_size=3)) if n else []
    tried = draw(st.lists(st.sampled_from(ids), max_size=n)) if n else []
    tried += draw(st.lists(st.one_of(agent_ids, st.integers()), max_size=2))  # non-members
    sticky = draw(st.one_of(st.none(), agent_ids, st.sampled_from(ids) if ids else st.none()))
    return Case(
        strategy=draw(st.integers(0, 7)),
        ring_timeout=draw(st.integers(1, 120)),
        members=members,
        rows=rows,
        unreachable=unreachable,
        rr_cursor=draw(st.integers(-1, n - 1)),
        seed=draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(-(2**70), 2**70))),
        tried=tried,
        sticky=sticky,
    )


def as_data(waves: Any) -> Any:
    """Waves as plain tuples, so the two cores' Wave types can be compared."""
    if waves is None:
        return None
    if isinstance(waves, list):
        return [as_data(w) for w in waves]
    return (waves.agents, waves.timeout, waves.sticky)


@settings(max_examples=400, deadline=None)
@given(case=cases())
def test_compiled_equals_twin(case: Case, py_core: ModuleType, c_core: ModuleType) -> None:
    py_group, py_live = case.tables(py_core)
    c_group, c_live = case.tables(c_core)
    args = (NOW, case.seed, case.tried, case.sticky)
    assert as_data(c_core.next_wave(c_group, c_live, *args)) == as_data(
        py_core.next_wave(py_group, py_live, *args)
    )
    assert as_data(c_core.plan(c_group, c_live, *args)) == as_data(
        py_core.plan(py_group, py_live, *args)
    )
    assert c_group.agent_ids == py_group.agent_ids


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_invariants(case: Case, core: ModuleType) -> None:
    group, live = case.tables(core)
    group._check()
    live._check()
    eligible = case.eligible()
    plan = core.plan(group, live, NOW, case.seed, case.tried, case.sticky)
    first = core.next_wave(group, live, NOW, case.seed, case.tried, case.sticky)
    assert first == (plan[0] if plan else None)
    offered = [agent for wave in plan for agent in wave.agents]
    # Every agent offered was eligible, none twice, and the plan runs until nobody is left.
    assert len(offered) == len(set(offered))
    assert set(offered) == eligible
    for i, wave in enumerate(plan):
        assert wave.timeout == case.ring_timeout
        assert wave.agents
        assert wave.sticky == (i == 0 and case.sticky in eligible)
        if wave.sticky:
            assert wave.agents == (case.sticky,)
        elif case.strategy in ONE_AGENT_STRATEGIES:
            assert len(wave.agents) == 1
    waves = [w for w in plan if not w.sticky]
    if case.strategy == RING_ALL and waves:
        assert len(waves) == 1
        assert set(waves[0].agents) == eligible - {case.sticky}
        order = [m[0] for m in case.members]
        assert list(waves[0].agents) == sorted(waves[0].agents, key=order.index)
    if case.strategy == PRIORITY:
        # One wave per tier with someone eligible, lowest tier first, each in position order.
        tier = {m[0]: m[1] for m in case.members}
        rank = {m[0]: (m[2], i) for i, m in enumerate(case.members)}
        remaining = eligible - {a for w in plan if w.sticky for a in w.agents}
        assert [tier[w.agents[0]] for w in waves] == sorted({tier[a] for a in remaining})
        for wave in waves:
            same_tier = {a for a in remaining if tier[a] == tier[wave.agents[0]]}
            assert list(wave.agents) == sorted(same_tier, key=rank.__getitem__)


invalid_values = st.one_of(
    st.integers(-3, 9),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, True, 1.0, "1", None]),
)


def sometimes_invalid(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, invalid_values)


@st.composite
def raw_calls(draw: st.DrawFn) -> tuple[Any, ...]:
    """Arguments for GroupTable, LiveTable and plan, each valid about half the time."""
    valid_member = st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(0, 2),
        st.integers(-2, 2),
        st.integers(1, 3),
    )
    odd_member = st.one_of(
        st.tuples(st.sampled_from(["a", 3, None]), *[invalid_values] * 3),
        st.tuples(st.just("a"), st.just(0)),
        st.just(7),
    )
    members = draw(
        st.one_of(
            st.lists(valid_member, max_size=4, unique_by=lambda m: m[0]),
            st.lists(st.one_of(valid_member, odd_member), max_size=4),
        )
    )
    row_value = st.one_of(st.integers(0, 3), st.integers(NOW - 10, NOW + 10))
    length = draw(st.one_of(st.just(5 * len(members)), st.integers(0, 11)))
    rows = draw(
        st.one_of(
            st.lists(row_value, min_size=length, max_size=length),
            st.lists(
                st.one_of(row_value, st.integers(-(2**64), 2**64), invalid_values),
                min_size=length,
                max_size=length,
            ),
        )
    )
    return (
        draw(sometimes_invalid(st.integers(0, 7))),
        draw(sometimes_invalid(st.integers(1, 60))),
        members,
        rows,
        draw(sometimes_invalid(st.integers(-1, len(rows) // 5 - 1))),
        draw(sometimes_invalid(st.integers(NOW - 10, NOW + 10))),
        draw(sometimes_invalid(st.integers(-(2**65), 2**65))),
    )


@settings(max_examples=400, deadline=None)
@given(call=raw_calls())
def test_compiled_raises_the_twins_errors(
    call: tuple[Any, ...], py_core: ModuleType, c_core: ModuleType
) -> None:
    strategy, ring_timeout, members, rows, rr_cursor, now_ms, seed = call

    def outcome(core: ModuleType) -> Any:
        try:
            group = core.GroupTable(strategy, ring_timeout, members)
            live = core.LiveTable(rows, rr_cursor)
            return as_data(core.plan(group, live, now_ms, seed))
        except (TypeError, ValueError, OverflowError) as exc:
            return type(exc), str(exc)

    assert outcome(c_core) == outcome(py_core)


@pytest.mark.parametrize("seed", range(5))
def test_seeded_stress(seed: int, py_core: ModuleType, c_core: ModuleType) -> None:
    """Random mixes of table changes and decisions, compared step by step, with _check()."""
    rng = random.Random(seed)
    for _ in range(20):
        n = rng.randint(0, 300)
        ids = [f"agent-{i}" for i in rng.sample(range(10_000), n)]
        members = [(a, rng.randint(0, 3), rng.randint(-50, 50), rng.randint(1, 9)) for a in ids]
        strategy = rng.randint(0, 7)
        rows = []
        for _ in range(n):
            rows += [rng.choice([0, 0, 0, 1, 2]), rng.randint(0, 2), rng.randint(0, 3)]
            rows += [NOW + rng.randint(-2000, 500), NOW - rng.randint(0, 10**6)]
        rr_cursor = rng.randint(-1, n - 1)
        ring_timeout = rng.randint(1, 60)
        tables = {}
        for name, core in (("py", py_core), ("c", c_core)):
            tables[name] = (
                core,
                core.GroupTable(strategy, ring_timeout, members),
                core.LiveTable(rows, rr_cursor),
            )
        tried: list[str] = []
        for _ in range(30):
            op = rng.random()
            if op < 0.2 and n:
                index, reachable = rng.randrange(n), rng.random() < 0.5
                for _, _, live in tables.values():
                    live.set_reachable(index, reachable)
            elif op < 0.3 and n:
                tried.append(rng.choice(ids))
            sticky = rng.choice(ids) if n and rng.random() < 0.3 else None
            wave_seed = rng.getrandbits(64)
            results = []
            for core, group, live in tables.values():
                group._check()
                live._check()
                results.append(
                    (
                        as_data(core.next_wave(group, live, NOW, wave_seed, tried, sticky)),
                        as_data(core.plan(group, live, NOW, wave_seed, tried, sticky)),
                    )
                )
            assert results[0] == results[1]
