"""Report figures of a known sequence of calls, computed by hand (see known_calls.py)."""

from __future__ import annotations

from datetime import datetime

import pytest
from known_calls import (
    A1_BUCKETS,
    AGENTS_TOTAL,
    END_MS,
    EVENTS,
    SALES_0900,
    SALES_1000,
    SALES_TOTAL,
    START_MS,
    SUPPORT_TOTAL,
    utc_iso,
)

from dispatcher.reports.figures import Period, Report, compute, percentile

PERIOD = Period(START_MS, END_MS, "hour", "UTC")


def report(**kwargs: object) -> Report:
    return compute(EVENTS, PERIOD, tenant="acme", **kwargs)  # type: ignore[arg-type]


def test_group_figures_over_the_period_and_per_hour() -> None:
    r = report()
    assert [g.id for g in r.groups] == ["sales", "support"]
    sales, support = r.groups
    assert sales.total == SALES_TOTAL
    assert sales.buckets == [SALES_0900, SALES_1000]
    assert support.total == SUPPORT_TOTAL
    assert support.buckets[0] == SUPPORT_TOTAL
    assert support.buckets[1]["offered"] == 0
    assert support.buckets[1]["service_level"] is None
    assert support.buckets[1]["tta_p50_s"] is None


def test_agent_figures() -> None:
    r = report()
    assert {a.id: a.total for a in r.agents} == AGENTS_TOTAL
    a1 = next(a for a in r.agents if a.id == "a1")
    assert a1.buckets == A1_BUCKETS


def test_every_visit_is_in_exactly_one_state() -> None:
    for row in report().groups:
        for f in [row.total, *row.buckets]:
            parts = ("answered", "abandoned", "unanswered", "pending")
            assert f["offered"] == sum(f[k] for k in parts)  # type: ignore[misc]


def test_group_filter_keeps_its_agents_figures_only() -> None:
    r = report(group="support")
    assert [g.id for g in r.groups] == ["support"]
    assert r.groups[0].total == SUPPORT_TOTAL
    assert {a.id: a.total for a in r.agents} == {"a4": AGENTS_TOTAL["a4"]}
    # a group without calls still has its row
    empty = report(group="nobody")
    assert [(g.id, g.total["offered"]) for g in empty.groups] == [("nobody", 0)]


def test_agent_filter_gives_that_agent_only() -> None:
    r = report(agent="a1")
    assert r.groups == []
    assert [a.id for a in r.agents] == ["a1"]
    assert r.agents[0].total == AGENTS_TOTAL["a1"]
    assert report(agent="zz").agents[0].total["offers"] == 0


def test_service_level_threshold_and_grace() -> None:
    sales = report(sl_seconds=30, abandon_grace_seconds=0).groups[0].total
    # c2 (30 s) now within; no abandon excluded: 4 / 9
    assert (sales["answered_in_sl"], sales["short_abandoned"]) == (4, 0)
    assert sales["service_level"] == round(4 / 9, 4)
    sales = report(sl_seconds=0, abandon_grace_seconds=60).groups[0].total
    assert sales["service_level"] == 0.0  # nobody answers in 0 s; 9 - 2 abandons
    assert sales["short_abandoned"] == 2


def test_day_bucket_and_order_of_unrelated_events() -> None:
    day = Period(START_MS, END_MS, "day", "UTC")
    r = compute(EVENTS, day)
    assert r.bucket_starts == [START_MS]
    assert r.groups[0].buckets == [SALES_TOTAL]


def test_events_after_the_period_still_finish_its_calls() -> None:
    """c8's hangup after 11:00 gives its talk time; c11 (arrived at 11:00) stays out."""
    tail = [
        {"type": "released", "ts": str(END_MS + 60_000), "call": "c8", "agent": "a1",
         "group": "sales", "reason": "hangup", "id": f"{END_MS + 60_000}-0"},
    ]  # fmt: skip
    sales = compute([*EVENTS, *tail], PERIOD).groups[0].total
    assert sales["handled"] == 4
    talk_c8 = (END_MS + 60_000 - (START_MS + 4812_000)) / 1000
    assert sales["aht_s"] == round((479.8 + talk_c8) / 4, 3)


def test_an_offer_withdrawn_by_a_corrective_claim_is_no_offer() -> None:
    t = START_MS + 60_000
    call = [
        {"type": "arrived", "call": "w1", "group": "support", "caller": "+49"},
        {"type": "offered", "call": "w1", "group": "support", "agent": "a1"},
        {"type": "released", "call": "w1", "group": "support", "agent": "a1",
         "reason": "replanned"},
        {"type": "offered", "call": "w1", "group": "support", "agent": "a2"},
        {"type": "ended", "call": "w1", "outcome": "abandoned"},
    ]  # fmt: skip
    events = [e | {"ts": str(t + i), "id": f"{t + i}-0"} for i, e in enumerate(call)]
    agents = {a.id: a.total for a in compute(events, PERIOD).agents}
    assert "a1" not in agents
    assert agents["a2"]["offers"] == 1


def test_events_without_ts_or_call_are_ignored() -> None:
    junk = [{"type": "arrived", "call": "x", "group": "sales"}, {"type": "arrived", "ts": "1"}]
    assert compute([*junk, *EVENTS], PERIOD).groups[0].total == SALES_TOTAL


def test_as_dict_is_json_ready() -> None:
    d = report().as_dict()
    assert d["from"] == utc_iso(START_MS) and d["to"] == utc_iso(END_MS)
    assert (d["bucket"], d["timezone"], d["sl_seconds"]) == ("hour", "UTC", 20)
    first = d["groups"][0]
    assert first["group"] == "sales" and first["total"] == SALES_TOTAL
    assert first["buckets"][1]["start"] == utc_iso(START_MS + 3_600_000)
    assert first["buckets"][1]["end"] == utc_iso(END_MS)
    assert d["agents"][0]["agent"] == "a1"


@pytest.mark.parametrize(
    ("p", "expected"), [(5, 15), (30, 20), (40, 20), (50, 35), (99, 50), (100, 50)]
)
def test_nearest_rank_percentile(p: int, expected: int) -> None:
    assert percentile([50, 15, 40, 35, 20], p) == expected


def test_percentile_of_nothing() -> None:
    assert percentile([], 50) is None


def ms(*args: int, tz: str = "Europe/Berlin") -> int:
    from zoneinfo import ZoneInfo

    return int(datetime(*args, tzinfo=ZoneInfo(tz)).timestamp() * 1000)  # type: ignore[misc]


def test_day_buckets_follow_the_time_zone_across_dst() -> None:
    # Berlin leaves summer time on 2026-10-25: that day has 25 hours
    p = Period(ms(2026, 10, 24), ms(2026, 10, 27), "day", "Europe/Berlin")
    starts = p.bucket_starts()
    assert starts == [ms(2026, 10, 24), ms(2026, 10, 25), ms(2026, 10, 26)]
    assert starts[2] - starts[1] == 25 * 3_600_000
    hours = Period(ms(2026, 10, 25), ms(2026, 10, 26), "hour", "Europe/Berlin").bucket_starts()
    assert len(hours) == 25
    assert p.iso(starts[2]) == "2026-10-26T00:00:00+01:00"


def test_buckets_are_clipped_to_the_period() -> None:
    p = Period(START_MS + 1_800_000, END_MS, "hour")
    assert p.bucket_starts() == [START_MS + 1_800_000, START_MS + 3_600_000]


@pytest.mark.parametrize(
    ("start", "end", "bucket", "tz", "message"),
    [
        (10, 10, "day", "UTC", "empty period"),
        (0, 10, "week", "UTC", "invalid bucket"),
        (0, 10, "day", "Mars/Base", "Mars/Base"),
    ],
)
def test_bad_periods(start: int, end: int, bucket: str, tz: str, message: str) -> None:
    with pytest.raises((ValueError, KeyError), match=message):
        Period(start, end, bucket, tz)  # type: ignore[arg-type]
