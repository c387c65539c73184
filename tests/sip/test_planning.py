"""The bridge from the model to the selection core (docs/contracts.md, "Selection core")."""

from __future__ import annotations

from pathlib import Path

import pytest

# Skipped until dispatcher/core.py exists; importing the selector directly, because a missing
# submodule surfaces from `dispatcher.sip.planning` as a plain ImportError, not ModuleNotFoundError.
core = pytest.importorskip("dispatcher.core")

from dispatcher.config.model import STRATEGY_NAMES, Group, Member  # noqa: E402
from dispatcher.config.tenant_file import load_tenant  # noqa: E402
from dispatcher.sip.planning import group_table  # noqa: E402


def test_model_and_core_know_the_same_strategies() -> None:
    assert set(STRATEGY_NAMES) == set(core.STRATEGIES)


def test_demo_groups(demo_file: Path) -> None:
    for group in load_tenant(demo_file).groups:
        table = group_table(group)
        assert table.strategy == core.STRATEGIES[group.strategy]
        assert table.ring_timeout == group.ring_timeout
        assert table.agent_ids == tuple(m.agent for m in group.canonical_members())
        assert len(table) == len(group.members)


def test_members_in_canonical_order() -> None:
    group = Group(
        id="g",
        extension="10",
        name="G",
        strategy="priority",
        ring_timeout=15,
        members=(
            Member(agent="c", tier=2),
            Member(agent="b", position=1),
            Member(agent="a", position=1),
            Member(agent="d"),
        ),
    )
    table = group_table(group)
    assert table.agent_ids == ("d", "a", "b", "c")
    assert [table.index(agent) for agent in "dabc"] == [0, 1, 2, 3]


def test_an_empty_group_gives_an_empty_table() -> None:
    table = group_table(Group(id="g", extension="10", name="G", strategy="ring_all"))
    assert len(table) == 0
    assert table.agent_ids == ()


@pytest.mark.parametrize(
    ("strategy", "first_wave"),
    [("ring_all", ("d", "a", "b", "c")), ("priority", ("d", "a", "b")), ("sequential", ("d",))],
)
def test_tables_plan_in_canonical_order(strategy: str, first_wave: tuple[str, ...]) -> None:
    group = Group(
        id="g",
        extension="10",
        name="G",
        strategy=strategy,  # type: ignore[arg-type]
        members=(
            Member(agent="c", tier=2),
            Member(agent="b", position=1),
            Member(agent="a", position=1),
            Member(agent="d"),
        ),
    )
    table = group_table(group)
    # status, busy, max_calls, wrapup_until_ms, idle_since_ms: everyone available and idle
    live = core.LiveTable([core.AVAILABLE, 0, 1, 0, 0] * len(table))
    wave = core.next_wave(table, live, now_ms=1_000, seed=7)
    assert wave is not None
    assert wave.agents == first_wave
    assert wave.timeout == group.ring_timeout
