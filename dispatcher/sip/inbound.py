"""Inbound rules: which group or target a call to a dialled number (DID) goes to.

A tenant's `inbound` rules are checked before group extensions. Pure functions, no I/O: the
router passes the Request-URI user, the caller and its decision clock.

Rule semantics (`match_inbound`):

- Rules are tried in file order; the first rule that matches wins, later ones are not looked
  at. So list the specific rules (a VIP caller prefix) before the general ones (business hours)
  and a catch-all (no prefixes, no schedule) last; the config refuses rules after a catch-all.
- `did` matches the dialled number exactly, as it arrives in the Request-URI user
  ("+493012345600" does not match "00493012345600" or "03012345600").
- `caller_prefixes`, when given, match if the caller (From user) starts with any of them, as
  text: list "+4930" and "004930" if callers arrive in both forms. An empty caller matches no
  prefix. Without `caller_prefixes` every caller matches.
- `schedule`, when given, matches if any of its windows contains the current local time in
  the tenant's time zone, to the minute (zoneinfo, so DST changes are followed: 08:00 is 08:00
  local on both sides of the change). A window matches on each of its `days` from `start`
  (inclusive) to `end` (exclusive); `end` "24:00" is the end of the day. An overnight window
  (`end` before `start`) opens at `start` on each of its days and closes at `end` the next
  morning: `fri 18:00-08:00` matches Friday 20:00 and Saturday 07:59, not Friday 07:00. Local
  times that do not exist on a DST change day (02:30 in spring in Europe/Berlin) never occur;
  times that occur twice (02:30 in autumn) match both times. Without `schedule` every time
  matches.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from dispatcher.config.model import WEEKDAYS, InboundRule, Tenant, TimeWindow


def _minutes(hh_mm: str) -> int:
    """Minutes since midnight: "08:30" -> 510, "24:00" -> 1440."""
    return int(hh_mm[:2]) * 60 + int(hh_mm[3:5])


def window_contains(window: TimeWindow, weekday: int, minute: int) -> bool:
    """Whether `window` contains local time `minute` (0..1439) of weekday `weekday` (0 = mon).
    O(days)."""
    start, end = _minutes(window.start), _minutes(window.end)
    day = WEEKDAYS[weekday]
    if start < end:
        return day in window.days and start <= minute < end
    # Overnight: the evening part belongs to the day it starts on, the morning part to the
    # day before.
    if minute >= start:
        return day in window.days
    return minute < end and WEEKDAYS[(weekday - 1) % 7] in window.days


def local_time(now_ms: int, timezone: str) -> tuple[int, int]:
    """(weekday 0 = mon, minute of the day) of the instant `now_ms` (Unix ms) in `timezone`."""
    local = datetime.fromtimestamp(now_ms // 1000, ZoneInfo(timezone))
    return local.weekday(), local.hour * 60 + local.minute


def match_inbound(tenant: Tenant, did: str, caller: str, now_ms: int) -> InboundRule | None:
    """The first inbound rule of `tenant` for dialled number `did` that matches `caller` (the
    From user) at `now_ms` (Unix ms), or None (the number is then routed as before: a group
    extension or a user). See the module docstring for the semantics.

    Pure; O(rules for `did` + their prefixes and windows), the local time computed at most once.
    """
    rules = tenant.inbound_rules(did)
    if not rules:
        return None
    local: tuple[int, int] | None = None
    for rule in rules:
        if rule.caller_prefixes is not None and not caller.startswith(rule.caller_prefixes):
            continue
        if rule.schedule is not None:
            if local is None:
                local = local_time(now_ms, tenant.timezone)
            if not any(window_contains(window, *local) for window in rule.schedule):
                continue
        return rule
    return None


__all__ = ("local_time", "match_inbound", "window_contains")
