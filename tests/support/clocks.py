"""Times for tests derived from the real clock, never fixed dates (shared/STYLE.md, "Time,
clocks and real phones"): a test that a real server's clock also sees must hold on any day."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def now_ms() -> int:
    """This process's wall clock in ms (the one Redis' TIME shows, within a round trip)."""
    return time.time_ns() // 1_000_000


def zone_at_noon(at_ms: int | None = None) -> str:
    """A fixed-offset zone (Etc/GMT±N) whose local time at `at_ms` (default now) lies within
    30 minutes of 12:00: hours away from either midnight, so "later today" (+1 h) and
    "tomorrow" (+13 h) are plain to reach and no test runs across a day's end by chance."""
    at_ms = now_ms() if at_ms is None else at_ms
    utc_hours = (at_ms % DAY_MS) / HOUR_MS
    offset = round(12 - utc_hours)  # local = UTC + offset, offset in -12..12
    if offset == 0:
        return "Etc/GMT"
    # The Etc zones' signs are POSIX-style: Etc/GMT-2 is two hours ahead of UTC.
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def next_local(weekday: int, hour: int, minute: int, zone: str, after_ms: int | None = None) -> int:
    """Unix ms of the next `weekday` (0 Monday) at hour:minute local time in `zone`, at least
    a day after `after_ms` (default now): "next Wednesday 10:00", wherever the clock stands."""
    tz = ZoneInfo(zone)
    start = datetime.fromtimestamp((now_ms() if after_ms is None else after_ms) / 1000, tz)
    day = start.date() + timedelta(days=1)
    while day.weekday() != weekday:
        day += timedelta(days=1)
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    return int(local.timestamp() * 1000)
