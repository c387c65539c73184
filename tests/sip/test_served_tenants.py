"""What keeps the keeper's periodic work from growing with the number of tenants, without
Kamailio: the tenants a node notes for its reconciler (dispatcher.sip.reconcile.ServedTenants)
and the backstop's walk over the tenant list in slices (dispatcher.sip.keeper._Sweep).
test_reconcile.py runs both in a real Kamailio beside hundreds of idle tenants."""

from __future__ import annotations

from typing import Any

from dispatcher.sip.keeper import SWEEP_SLICE_MAX, SWEEP_SLICE_MIN, _Sweep
from dispatcher.sip.names import SERVED_TABLE
from dispatcher.sip.reconcile import MAX_NOTED, NOTE_EVERY_S, ServedTenants


class Clock:
    """The monotonic seconds ServedTenants reads; tests move `now`."""

    now = 100.0

    def __call__(self) -> float:
        return self.now


class Ksr:
    """$def and the htable write ServedTenants uses."""

    def __init__(self) -> None:
        self.defines = {"DLG_TIMEOUT": "43200", "LIVE_MARGIN_S": "300"}
        self.writes: list[tuple[str, str, str, int]] = []
        self.pv = self
        self.htable = self

    def get(self, name: str) -> Any:
        return self.defines.get(name.removeprefix("$def(").removesuffix(")"))

    def sht_setxs(self, table: str, key: str, value: str, expire_s: int) -> int:
        self.writes.append((table, key, value, expire_s))
        return 1


def test_a_tenant_is_noted_once_a_period_with_an_expiry_past_its_longest_call() -> None:
    ksr, clock = Ksr(), Clock()
    served = ServedTenants(ksr, clock)
    for _ in range(1000):
        served.note("acme")
    served.note("beta")
    keep = 43200 + 300 + NOTE_EVERY_S  # DLG_TIMEOUT + LIVE_MARGIN_S + the note's period
    assert ksr.writes == [
        (SERVED_TABLE, "acme", "acme", keep),
        (SERVED_TABLE, "beta", "beta", keep),
    ]
    clock.now += NOTE_EVERY_S - 1
    served.note("acme")
    assert len(ksr.writes) == 2
    clock.now += 1
    served.note("acme")
    assert ksr.writes[-1] == (SERVED_TABLE, "acme", "acme", keep)


def test_what_a_process_remembers_of_its_notes_is_bounded() -> None:
    ksr, clock = Ksr(), Clock()
    served = ServedTenants(ksr, clock)
    for i in range(3 * MAX_NOTED):
        served.note(f"t{i}")
        if i % 100 == 0:
            clock.now += 1
    assert len(served._due) <= MAX_NOTED
    assert len(ksr.writes) == 3 * MAX_NOTED  # every tenant noted all the same


def test_the_backstop_walks_the_tenants_over_half_its_period_in_bounded_slices() -> None:
    tenants = [f"t{i}" for i in range(10_000)]
    sweep = _Sweep(tenants, started=0.0, every_s=60.0, max_age_ms=1)
    seen: list[str] = []
    slices = 0
    now = 0.0
    while sweep.done < len(tenants):
        slice_ = sweep.due(now)
        last = sweep.done + len(slice_) == len(tenants)
        assert not slice_ or last or SWEEP_SLICE_MIN <= len(slice_) <= SWEEP_SLICE_MAX
        slices += bool(slice_)
        seen += slice_
        sweep.done += len(slice_)
        now += 0.05  # a keeper tick when idle (it listens for doorbells up to 50 ms)
    assert seen == tenants
    assert 29.0 <= now <= 31.0  # on time: within the first half of LIVE_SWEEP_S, not at once
    assert slices <= len(tenants) // SWEEP_SLICE_MIN  # a round trip per slice, not per tick


def test_a_short_list_is_walked_in_one_slice_by_the_half_period() -> None:
    sweep = _Sweep(["a", "b", "c"], started=0.0, every_s=60.0, max_age_ms=1)
    assert sweep.due(0.0) == [] and sweep.due(15.0) == []
    assert sweep.due(29.0) == ["a", "b", "c"]  # the walk's end is due: all that is left


def test_a_walk_that_fell_behind_catches_up_a_slice_at_a_time() -> None:
    sweep = _Sweep([f"t{i}" for i in range(1000)], started=0.0, every_s=60.0, max_age_ms=1)
    assert sweep.due(0.0) == []
    assert len(sweep.due(120.0)) == SWEEP_SLICE_MAX  # Redis was away for two minutes
    assert _Sweep([], 0.0, 60.0, 1).due(0.0) == []
