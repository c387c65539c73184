"""Sticky memory: the local day and its midnight, and how claim/answered use them.

The day follows Redis' TIME, not the worker's clock (dispatcher/state/sticky.py): the tests
with Redis derive every time from the real clock, in a zone where it is about noon, and move
Redis' own clock (a movable-clock redis-server) to reach the next day.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from clocks import DAY_MS, HOUR_MS, now_ms, zone_at_noon
from hypothesis import given, settings
from hypothesis import strategies as st
from state_support import AGENTS, GROUPS, TENANT

from dispatcher.run.procs import RedisProcess
from dispatcher.state import StateStore, StickyDays, sticky_day, sticky_days
from dispatcher.state.connect import sync_client


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


@settings(max_examples=300, deadline=None)
@given(
    now_ms=st.integers(utc_ms("2005-01-01T00:00:00"), utc_ms("2035-01-01T00:00:00")),
    zone=st.sampled_from(ZONES),
)
def test_three_days_are_consecutive_and_hold_now(now_ms: int, zone: str) -> None:
    days = sticky_days(now_ms, zone)
    assert days.day_at(now_ms) == days.days[1] == sticky_day(now_ms, zone)[0]
    assert list(days.bounds) == sorted(set(days.bounds))
    for i, day in enumerate(days.days):
        assert sticky_day(days.bounds[i], zone)[0] == day
        assert sticky_day(days.bounds[i + 1] - 1, zone) == (day, days.bounds[i + 1])
    assert days.day_at(days.bounds[0] - 1) is None and days.day_at(days.bounds[3]) is None


def test_days_are_cached_while_the_day_lasts() -> None:
    days = sticky_days(utc_ms("2031-05-04T10:00:00"), "Europe/Berlin")
    assert sticky_days(utc_ms("2031-05-04T21:59:59"), "Europe/Berlin") is days
    assert sticky_days(utc_ms("2031-05-04T22:00:00"), "Europe/Berlin").days[1] == "20310505"


def shifted(days_ms: int, zone: str) -> StickyDays:
    """The days a worker whose clock is `days_ms` off sends."""
    return sticky_days(now_ms() + days_ms, zone)


@pytest.mark.redis
class TestStickyRouting:
    zone = zone_at_noon()

    def today(self) -> StickyDays:
        return sticky_days(now_ms(), self.zone)

    def test_same_day_caller_gets_the_agent_alone(self, store: StateStore) -> None:
        store.claim("c1", "g1", "+491", ["a1", "a2"], 5000, self.today())
        assert store.answered("c1", "g1", "a2", "+491", self.today()) == "ok"
        store.release("c1")

        result = store.claim("c2", "g1", "+491", ["a1", "a3"], 5000, self.today())
        assert result.claimed == ("a2",)
        assert result.sticky_agent == "a2" and result.is_sticky
        assert store.events(1)[0]["reason"] == "sticky"

    def test_sticky_only_on_the_first_claim(self, store: StateStore) -> None:
        store.claim("c1", "g1", "+491", ["a2"], 5000, self.today())
        store.answered("c1", "g1", "a2", "+491", self.today())
        store.release("c1")
        store.claim("c2", "g1", "+491", ["a1"], 5000, self.today())  # not the first claim...
        store.failed("c2", "a2", "noanswer")
        # ...so a later wave of the same call plans normally.
        second = store.claim("c2", "g1", "+491", ["a3"], 5000, self.today())
        assert second.claimed == ("a3",) and not second.is_sticky

    def test_the_day_expires_at_its_local_midnight(
        self, store: StateStore, client: redis.Redis
    ) -> None:
        days = self.today()
        store.claim("c1", "g1", "+491", ["a2"], 5000, days)
        store.answered("c1", "g1", "a2", "+491", days)
        assert client.pexpiretime(store.keys.sticky("g1", days.days[1])) == days.bounds[2]
        assert client.exists(store.keys.sticky("g1", days.days[0])) == 0
        assert client.exists(store.keys.sticky("g1", days.days[2])) == 0

    @pytest.mark.parametrize("skew_ms", [13 * HOUR_MS, -13 * HOUR_MS])
    def test_a_worker_whose_clock_is_off_keeps_redis_day(
        self, store: StateStore, client: redis.Redis, skew_ms: int
    ) -> None:
        # Its clock says tomorrow (or yesterday) in the group's zone; Redis' TIME says today.
        off = shifted(skew_ms, self.zone)
        assert off.days[1] != self.today().days[1]
        # It finds what a correct worker wrote...
        store.claim("c1", "g1", "+491", ["a2"], 5000, self.today())
        store.answered("c1", "g1", "a2", "+491", self.today())
        store.release("c1")
        result = store.claim("c2", "g1", "+491", ["a1"], 5000, off)
        assert result.claimed == ("a2",) and result.is_sticky
        store.release("c2")
        # ...and what it writes is today's memory, ending at today's midnight: it neither
        # shortens nor lengthens the day every other node sees.
        store.claim("c3", "g1", "+492", ["a3"], 5000, off)
        assert store.answered("c3", "g1", "a3", "+492", off) == "ok"
        today = self.today()
        key = store.keys.sticky("g1", today.days[1])
        assert client.hgetall(key) == {b"+491": b"a2", b"+492": b"a3"}
        assert client.pexpiretime(key) == today.bounds[2]
        assert list(client.scan_iter(match="*sticky*")) == [key.encode()]

    def test_a_worker_off_by_more_than_a_day_gets_no_memory(
        self, store: StateStore, client: redis.Redis
    ) -> None:
        store.claim("c1", "g1", "+491", ["a2"], 5000, self.today())
        store.answered("c1", "g1", "a2", "+491", self.today())
        store.release("c1")
        off = shifted(3 * DAY_MS, self.zone)
        result = store.claim("c2", "g1", "+491", ["a1"], 5000, off)
        assert result.claimed == ("a1",) and result.sticky_agent == ""
        assert abs(result.now_ms - now_ms()) < 5000  # what the worker sees its skew by
        store.answered("c2", "g1", "a1", "+491", off)
        assert client.hgetall(store.keys.sticky("g1", self.today().days[1])) == {b"+491": b"a2"}
        assert len(list(client.scan_iter(match="*sticky*"))) == 1

    def test_sticky_agent_not_eligible_falls_back_to_wave(self, store: StateStore) -> None:
        store.claim("c1", "g1", "+491", ["a1"], 5000, self.today())
        store.answered("c1", "g1", "a1", "+491", self.today())  # a1 max 1: now busy
        result = store.claim("c2", "g1", "+491", ["a1", "a2"], 5000, self.today())
        assert result.sticky_agent == "a1" and not result.is_sticky
        assert result.claimed == ("a2",)

    def test_sticky_agent_of_another_group_is_ignored(self, store: StateStore) -> None:
        store.claim("c1", "g2", "+491", ["a4"], 5000, self.today())
        store.answered("c1", "g2", "a4", "+491", self.today())
        store.release("c1")
        result = store.claim("c2", "g1", "+491", ["a1"], 5000, self.today())
        assert result.claimed == ("a1",) and result.sticky_agent == ""

    def test_no_caller_or_no_day_no_sticky(self, store: StateStore, client: redis.Redis) -> None:
        store.claim("c1", "g1", "", ["a2"], 5000, self.today())
        store.answered("c1", "g1", "a2", "", self.today())
        store.claim("c2", "g1", "+491", ["a3"], 5000)
        store.answered("c2", "g1", "a3", "+491")
        assert list(client.scan_iter(match="*sticky*")) == []

    @pytest.mark.parametrize(
        ("bounds", "match"),
        [
            ("1,2,3", "4 comma-separated"),
            ("1,2,3,4,5", "4 comma-separated"),
            ("1,3,2,4", "must increase"),
            ("1,2,x,4", "sticky bound must be an integer"),
            ("-5,2,3,4", "sticky bound must be an integer >= 0"),
        ],
    )
    def test_malformed_bounds_are_refused_before_any_write(
        self, store: StateStore, client: redis.Redis, bounds: str, match: str
    ) -> None:
        days = self.today()
        keys = [*store.keys.base, store.keys.call("c1"), store.keys.ended("c1")]
        keys += [store.keys.sticky("g1", day) for day in days.days]
        n_events = client.xlen(store.keys.events)
        with pytest.raises(redis.ResponseError, match=f"^BADARG .*{match}"):
            client.fcall("disp_answered", len(keys), *keys, "c1", "g1", "a1", "+491", bounds)
        assert client.xlen(store.keys.events) == n_events


@pytest.mark.redis
def test_the_next_day_by_redis_clock_has_no_memory(clock_redis: RedisProcess) -> None:
    zone = zone_at_noon()
    with StateStore(clock_redis.url, TENANT) as store, sync_client(clock_redis.url) as raw:
        store.put_config(b"{}", AGENTS, GROUPS)
        days = sticky_days(now_ms(), zone)  # the worker's clock never moves in this test
        store.claim("c1", "g1", "+491", ["a2"], 5000, days)
        store.answered("c1", "g1", "a2", "+491", days)
        store.release("c1")
        clock_redis.clock.shift(3600)  # later the same day (about 13:00 local)
        assert store.claim("c2", "g1", "+491", ["a1"], 5000, days).is_sticky
        store.release("c2")
        clock_redis.clock.shift(12 * 3600)  # about 01:00 the next local day
        result = store.claim("c3", "g1", "+491", ["a1"], 5000, days)
        assert result.claimed == ("a1",) and result.sticky_agent == ""
        assert raw.exists(store.keys.sticky("g1", days.days[1])) == 0  # expired by Redis
