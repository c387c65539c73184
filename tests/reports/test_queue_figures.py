"""Queue figures of a known sequence of queued calls, computed by hand (see queued_calls.py)."""

from __future__ import annotations

import pytest
from known_calls import END_MS, START_MS, T0, agent
from queued_calls import (
    BACKUP_0900,
    BACKUP_1000,
    BACKUP_TOTAL,
    EVENTS,
    HOTLINE_0900,
    HOTLINE_1000,
    HOTLINE_TOTAL,
    TENANT_TOTAL,
)

from dispatcher.reports.figures import GROUP_FIELDS, Period, Report, compute

PERIOD = Period(START_MS, END_MS, "hour", "UTC")


def report(events: list[dict[str, str]] = EVENTS, **kwargs: object) -> Report:
    return compute(events, PERIOD, tenant="acme", **kwargs)  # type: ignore[arg-type]


def of_call(*calls: str) -> list[dict[str, str]]:
    """The events of these calls only."""
    return [e for e in EVENTS if e.get("call") in calls]


def test_queue_figures_per_group_and_hour() -> None:
    r = report()
    assert [g.id for g in r.groups] == ["backup", "hotline"]
    backup, hotline = r.groups
    assert hotline.total == HOTLINE_TOTAL
    assert hotline.buckets == [HOTLINE_0900, HOTLINE_1000]
    assert backup.total == BACKUP_TOTAL
    assert backup.buckets == [BACKUP_0900, BACKUP_1000]
    for figures in (hotline.total, *hotline.buckets):
        assert list(figures) == list(GROUP_FIELDS)


def test_tenant_total_is_all_groups_together() -> None:
    total = report().tenant_total
    assert total is not None and total.id == "acme"
    assert total.total == TENANT_TOTAL
    assert [b["offered"] for b in total.buckets] == [7, 6]
    assert [b["voicemails"] for b in total.buckets] == [1, 1]
    assert total.buckets[0]["queue_wait_p50_s"] == HOTLINE_0900["queue_wait_p50_s"]


def test_a_queued_calls_time_to_answer_counts_from_its_arrival() -> None:
    """q3 arrived at 09:10:00, rang h1 for 15 s, waited 18 s in the queue and was answered
    3 s after its last offer: 33 s to answer, outside a 20 s service level."""
    hotline = report(of_call("q3"), group="hotline").groups[0].total
    assert (hotline["queue_wait_max_s"], hotline["tta_p50_s"]) == (18.0, 33.0)
    assert (hotline["answered_in_sl"], hotline["service_level"]) == (0, 0.0)
    within = report(of_call("q3"), group="hotline", sl_seconds=33).groups[0].total
    assert (within["answered_in_sl"], within["service_level"]) == (1, 1.0)
    # q1 waited 42 s for its first offer: all of it counts
    assert report(of_call("q1")).groups[0].total["tta_p50_s"] == 42.0


def test_the_estimate_is_checked_only_against_callers_answered_from_the_queue() -> None:
    # q2 hung up, q5 timed out, q10 still waits: told a wait, but none has an actual one
    others = report(of_call("q2", "q5", "q10"), group="hotline").groups[0].total
    assert (others["ewt_announcements"], others["ewt_mae_s"]) == (0, None)
    # q1: told 30 s with 32 s to go, then 5 s with 12 s to go
    q1 = report(of_call("q1")).groups[0].total
    assert (q1["ewt_announcements"], q1["ewt_mae_s"]) == (2, 4.5)
    # q3's announcement gave its position only
    assert report(of_call("q3")).groups[0].total["ewt_announcements"] == 0
    # q11: the announcement stamped after the answer had 0 s to go, not -0.2 s
    assert report(of_call("q11")).groups[0].total["ewt_mae_s"] == 3.0


def test_group_filter_keeps_its_queue_and_voicemails() -> None:
    r = report(group="hotline")
    assert [g.id for g in r.groups] == ["hotline"]
    assert r.groups[0].total == HOTLINE_TOTAL
    assert r.tenant_total is not None and r.tenant_total.total == HOTLINE_TOTAL
    assert report(group="backup").groups[0].total == BACKUP_TOTAL


def test_agents_answer_queued_calls_from_their_arrival() -> None:
    r = report()
    agents = {a.id: a.total for a in r.agents}
    assert agents["h1"] == agent(2, 1, {"noanswer": 1}, [42.0], [120.0])
    assert agents["h2"] == agent(2, 2, {}, [33.0, 12.0], [60.0, 88.0])
    assert agents["b1"] == agent(1, 1, {}, [4.0], [96.0])
    one = report(agent="h1")
    assert one.groups == [] and one.tenant_total is None
    assert one.as_dict()["tenant_total"] is None


def test_a_call_that_never_queued_has_no_queue_figures() -> None:
    events = of_call("q6")  # refused at join: overflowed, never queued
    hotline = report(events).groups[0].total
    assert (hotline["queued"], hotline["overflowed"], hotline["overflowed_no_agents"]) == (0, 1, 1)
    assert hotline["queue_wait_max_s"] is None


def ev(ms: int, kind: str, **fields: str) -> dict[str, str]:
    ts = T0 + ms
    return {"type": kind, "ts": str(ts), "id": f"{ts}-9", **fields}


@pytest.mark.parametrize(
    "junk",
    [
        # a queue event of a call that did not arrive in the period, or not at that group
        ev(60_000, "dequeued", call="zz", group="hotline", reason="answered", wait_ms="5"),
        ev(60_000, "queued", call="q4", group="elsewhere", position="1"),
        # left or told without having been queued
        ev(1_201_000, "dequeued", call="q4", group="hotline", reason="timeout", wait_ms="1"),
        ev(1_201_000, "announced", call="q4", group="hotline", position="1", wait_s="9"),
        # an estimate that is no number of seconds, an overflow for no known reason
        ev(6_001_000, "announced", call="q11", group="hotline", position="1", wait_s="soon"),
        ev(6_001_000, "announced", call="q11", group="hotline", position="1", wait_s="-4"),
        ev(6_001_000, "overflowed", call="q11", group="hotline", reason="weather"),
        # a voicemail without a group
        ev(60_000, "voicemail", message="m9", duration_ms="1"),
    ],
)
def test_queue_events_that_fit_no_visit_change_nothing(junk: dict[str, str]) -> None:
    events = sorted([*EVENTS, junk], key=lambda e: int(e["ts"]))
    assert report(events).groups[1].total == HOTLINE_TOTAL


def test_a_wait_without_wait_ms_is_measured_from_the_queued_event() -> None:
    events = [
        {k: v for k, v in e.items() if k != "wait_ms"} if e["type"] == "dequeued" else e
        for e in of_call("q3")
    ]
    assert report(events).groups[0].total["queue_wait_max_s"] == 18.0
