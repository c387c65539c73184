"""The local day of a group's sticky memory ("the same caller reaches the same agent today").

Which clock the sticky day follows: Redis' TIME, the one clock every node shares. A worker
cannot know Redis' time before its claim, so it sends the hashes of three consecutive local
days around its own clock (`StickyDays`: yesterday, today, tomorrow in the group's zone) and
their bounds; the library (`sticky_of_now` in library.lua) takes the day that holds its TIME,
reads and writes only that day's hash and expires it at that day's end. A worker whose clock
is off by less than a day therefore reads and writes the same day as every other node, and
never shortens or lengthens it; one off by more finds no day, so it gets no sticky memory (and
its router logs the skew, see `dispatcher.decision.Decider.clock_skew_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


def sticky_day(now_ms: int, tz_name: str) -> tuple[str, int]:
    """Return (yyyymmdd of the local day at `now_ms`, ms of that day's end) in zone `tz_name`.

    The end is the next local midnight, where the day's sticky hash expires (PEXPIREAT), so a
    DST day lasts 23 or 25 hours. Midnight is read with fold=0: where a transition skips it
    (Cuba, Brazil until 2019, Samoa's lost 2011-12-30) the skipped wall time maps onto the
    transition itself, which is where the new day starts. Where clocks fall back from
    midnight into the old day (Paraguay until 2024), the date turns only at the repeated
    midnight, and that is the one fold=0 names.
    Raises `zoneinfo.ZoneInfoNotFoundError` for an unknown zone. Cost: no I/O (ZoneInfo
    caches zones), a few datetime conversions.
    """
    zone = ZoneInfo(tz_name)
    day = datetime.fromtimestamp(now_ms // 1000, zone).date()
    midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return day.strftime("%Y%m%d"), int(midnight.timestamp()) * 1000


def day_start(now_ms: int, tz_name: str) -> int:
    """Ms of the start of the local day at `now_ms` (the midnight before it, as `sticky_day`
    reads midnights)."""
    zone = ZoneInfo(tz_name)
    day = datetime.fromtimestamp(now_ms // 1000, zone).date()
    return int(datetime.combine(day, time(0), tzinfo=zone).timestamp()) * 1000


@dataclass(frozen=True, slots=True)
class StickyDays:
    """Three consecutive local days of one zone: `days` (yyyymmdd) and `bounds`, the start of
    the first and the end of each, so day i holds [bounds[i], bounds[i + 1])."""

    days: tuple[str, str, str]
    bounds: tuple[int, int, int, int]

    def holds(self, now_ms: int) -> bool:
        """Whether `now_ms` falls in the middle day (the one the worker thinks is today)."""
        return self.bounds[1] <= now_ms < self.bounds[2]

    def day_at(self, now_ms: int) -> str | None:
        """The day holding `now_ms`, None outside all three: what the library picks."""
        for i, day in enumerate(self.days):
            if self.bounds[i] <= now_ms < self.bounds[i + 1]:
                return day
        return None


_cached: dict[str, StickyDays] = {}


def sticky_days(now_ms: int, tz_name: str) -> StickyDays:
    """Yesterday, today and tomorrow at `now_ms` in zone `tz_name`, for a claim or an answer.

    Cost: O(1) while the day does not change (one cached entry per zone), else three
    `sticky_day` computations. Raises `zoneinfo.ZoneInfoNotFoundError` for an unknown zone.
    """
    cached = _cached.get(tz_name)
    if cached is not None and cached.holds(now_ms):
        return cached
    today, today_end = sticky_day(now_ms, tz_name)
    start = day_start(now_ms, tz_name)
    yesterday, _ = sticky_day(start - 1, tz_name)
    tomorrow, tomorrow_end = sticky_day(today_end, tz_name)
    days = StickyDays(
        (yesterday, today, tomorrow),
        (day_start(start - 1, tz_name), start, today_end, tomorrow_end),
    )
    _cached[tz_name] = days
    return days
