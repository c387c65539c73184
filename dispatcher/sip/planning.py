"""Bridge from the configuration model to the selection core's tables."""

from __future__ import annotations

from dispatcher import core
from dispatcher.config.model import Group


def group_table(group: Group) -> core.GroupTable:
    """The selection core's table for `group`: members in canonical order. O(n log n)."""
    members = [(m.agent, m.tier, m.position, m.weight) for m in group.canonical_members()]
    return core.GroupTable(core.STRATEGIES[group.strategy], group.ring_timeout, members)
