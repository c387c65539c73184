"""Sticky memory: the local day and its midnight, and how claim/answered use them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.state import StateStore, sticky_day


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("now", "zone", "day", "midnight"),
    [
        # Plain days, and the first/last ms of a day.
        ("2024-01-15T12:00:00", "Europe/Berlin", "20240115", "2024-01-15T23:00:00"),
        ("2024-01-15T22:59:59.999", "Europe/Berlin", "20240115", "2024-01-15T23:00:00"),
        ("2024-01-15T23:00:00", "Europe/Berlin", "20240116", "2024-01-16T23:00:00"),
        ("2024-01-15T12:00:00", "Asia/Kolkata", "20240115", "2024-01-15T18:30:00"),
        # Berlin spring forward (23 h day) and fall back (25 h day).
        ("2024-03-31T10:00:00", "Europe/Berlin", "20240331", "2024-03-31T22:00:00"),
        ("2024-10-27T10:00:00", "Europe/Berlin", "20241027", "2024-10-27T23:00:00"),
        # Brazil 2018: DST began at midnight, local 2018-11-04 00:00 never happened.
        ("2018-11-03T15:00:00", "America/Sao_Paulo", "20181103", "2018-11-04T03:00:00"),
        ("2018-11-04T03:00:00", "America/Sao_Paulo", "20181104", "2018-11-05T02:00:00"),
        # Cuba 2023: 01:00 CDT -> 00:00 CST, the day starts at the first midnight.
        ("2023-11-04T16:00:00", "America/Havana", "20231104", "2023-11-05T04:00:00"),
        ("2023-11-05T04:30:00", "America/Havana", "20231105", "2023-11-06T05:00:00"),
        # Samoa skipped 2011-12-30 entirely.
        ("2011-12-29T22:00:00", "Pacific/Apia", "20111229", "2011-12-30T10:00:00"),
        ("2011-12-30T10:00:00", "Pacific/Apia", "20111231", "2011-12-31T10:00:00"),
        # Paraguay 2024: 00:00 -03 -> 23:00 -04 of the day before; the date turns an hour
        # later.
        ("2024-03-23T15:00:00", "America/Asuncion", "20240323", "2024-03-24T04:00:00"),
        ("2024-03-24T03:30:00", "America/Asuncion", "20240323", "2024-03-24T04:00:00"),
    ],
)
def test_sticky_day(now: str, zone: str, day: str, midnight: str) -> None:
    assert sticky_day(utc_ms(now), zone) == (day, utc_ms(midnight))


ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "America/Havana",
    "Pacific/Apia",
    "America/Asuncion",
]


@settings(max_examples=300, deadline=None)
@given(
    now_ms=st.integers(utc_ms("2005-01-01T00:00:00"), utc_ms("2035-01-01T00:00:00")),
    zone=st.sampled_from(ZONES),
)
def test_midnight_is_the_day_boundary(now_ms: int, zone: str) -> None:
    day, midnight_ms = sticky_day(now_ms, zone)
    assert now_ms < midnight_ms <= now_ms + 25 * 3600 * 1000
    assert sticky_day(midnight_ms - 1, zone)[0] == day
    assert sticky_day(midnight_ms, zone)[0] > day


def test_unknown_zone() -> None:
    from zoneinfo import ZoneInfoNotFoundError

    with pytest.raises(ZoneInfoNotFoundError):
        sticky_day(0, "Mars/Olympus_Mons")


@pytest.mark.redis
class TestStickyRouting:
    def test_same_day_caller_gets_the_agent_alone(self, store: StateStore) -> None:
        day, midnight = sticky_day(utc_ms("2030-06-01T12:00:00"), "Europe/Berlin")
        store.claim("c1", "g1", "+491", ["a1", "a2"], 5000, day)
        assert store.answered("c1", "g1", "a2", "+491", day, midnight) == "ok"
        store.release("c1")

        result = store.claim("c2", "g1", "+491", ["a1", "a3"], 5000, day)
        assert result.claimed == ("a2",)
        assert result.sticky_agent == "a2" and result.is_sticky
        assert store.events(1)[0]["reason"] == "sticky"

    def test_sticky_only_on_the_first_claim(self, store: StateStore) -> None:
        day, midnight = sticky_day(utc_ms("2030-06-01T12:00:00"), "UTC")
        store.claim("c1", "g1", "+491", ["a2"], 5000, day)
        store.answered("c1", "g1", "a2", "+491", day, midnight)
        store.release("c1")
        store.claim("c2", "g1", "+491", ["a1"], 5000, day)  # not this caller's first claim...
        store.failed("c2", "a2", "noanswer")
        # ...so a later wave of the same call plans normally.
        second = store.claim("c2", "g1", "+491", ["a3"], 5000, day)
        assert second.claimed == ("a3",) and not second.is_sticky

    def test_next_day_is_another_key(self, store: StateStore, client: redis.Redis) -> None:
        day, midnight = sticky_day(utc_ms("2030-06-01T12:00:00"), "Europe/Berlin")
        tomorrow, _ = sticky_day(midnight, "Europe/Berlin")
        assert tomorrow == "20300602"
        store.claim("c1", "g1", "+491", ["a2"], 5000, day)
        store.answered("c1", "g1", "a2", "+491", day, midnight)
        store.release("c1")
        assert client.pexpiretime(store.keys.sticky("g1", day)) == midnight

        result = store.claim("c2", "g1", "+491", ["a1"], 5000, tomorrow)
        assert result.claimed == ("a1",)
        assert result.sticky_agent == "" and not result.is_sticky

    def test_sticky_agent_not_eligible_falls_back_to_wave(self, store: StateStore) -> None:
        day, midnight = sticky_day(utc_ms("2030-06-01T12:00:00"), "UTC")
        store.claim("c1", "g1", "+491", ["a1"], 5000, day)
        store.answered("c1", "g1", "a1", "+491", day, midnight)  # a1 max 1: now busy
        result = store.claim("c2", "g1", "+491", ["a1", "a2"], 5000, day)
        assert result.sticky_agent == "a1" and not result.is_sticky
        assert result.claimed == ("a2",)

    def test_sticky_agent_of_another_group_is_ignored(self, store: StateStore) -> None:
        day, midnight = sticky_day(utc_ms("2030-06-01T12:00:00"), "UTC")
        store.claim("c1", "g2", "+491", ["a4"], 5000, day)
        store.answered("c1", "g2", "a4", "+491", day, midnight)
        store.release("c1")
        result = store.claim("c2", "g1", "+491", ["a1"], 5000, day)
        assert result.claimed == ("a1",) and result.sticky_agent == ""

    def test_no_caller_or_no_day_no_sticky(self, store: StateStore, client: redis.Redis) -> None:
        day, midnight = sticky_day(utc_ms("2030-06-01T12:00:00"), "UTC")
        store.claim("c1", "g1", "", ["a2"], 5000, day)
        store.answered("c1", "g1", "a2", "", day, midnight)
        store.claim("c2", "g1", "+491", ["a3"], 5000)
        store.answered("c2", "g1", "a3", "+491")
        assert client.keys("*sticky*") == []
