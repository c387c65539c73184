"""The local day of a group's sticky memory ("the same caller reaches the same agent today")."""

from __future__ import annotations

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
