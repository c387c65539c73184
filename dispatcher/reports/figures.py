"""Report figures from a tenant's events: pure functions, no I/O (the admin API reuses them).

Input: events as the stream holds them (`StateStore.events`, archive lines): string fields
with `type`, `ts` (Redis time, ms) and `id`, in stream order. A call is followed through
its events; each arrival at a group starts a *visit* of the call to that group, and every
figure belongs to the bucket of the visit's arrival (a call that arrives at 10:59:50 and is
answered at 11:00:10 counts in the 10:00 bucket). Only visits that arrive in the period
count; their later events are read as far as the caller passes them (see `reports.events`).

Per group, of the visits that arrived in a bucket:

- offered: the visits (`arrived` events). A call that overflows from g1 to g2 is offered
  to both.
- answered: answered by one of the group's agents (the first `answered` event of the
  visit, whatever its reason: also 'late' and 'over', where the caller was connected too).
- abandoned: not answered, and the call `ended` with outcome abandoned while at this group
  (the caller hung up before an answer).
- unanswered: not answered and over otherwise: the call arrived at another group
  (overflow), or ended with any other outcome (the no-answer target: reply, forward,
  voicemail; a forward target that answered ends 'answered' without an agent's answer).
- pending: neither answered nor over yet when the events end.
- answered_in_sl: answered within `sl_seconds` of arrival (time to answer <= threshold).
- short_abandoned: abandoned within `abandon_grace_seconds` of arrival.
- service_level = answered_in_sl / (offered - short_abandoned), a fraction in [0, 1];
  None when the denominator is 0. Callers who hang up within the grace never gave the
  group a fair chance, so they count neither for nor against it; every other unanswered
  visit, abandoned or not, counts against it. A grace of 0 gives answered_in_sl / offered.
- tta_p50_s ... tta_p99_s: time to answer (answered ts - arrived ts) percentiles of the
  answered visits, nearest-rank (the smallest value with at least p% of the values at or
  below it: sorted[ceil(p/100 * n) - 1], always a measured value); asa_s: its mean.
- handled: answered visits whose talk has ended; aht_s: their mean talk time, from the
  answer to the agent's hangup (`released` reason hangup; the call's `ended` if there is
  none, e.g. an 'over' answer). Wrap-up time is not included.

Per agent, of the visits that arrived in a bucket: offers (`offered` events less those a
claim withdrew at once, `released` reason replanned: that phone never rang), answered,
missed (`failed` with a miss reason: busy, noanswer, declined, error; cancelled and
unreachable are not the agent's doing) and per reason, and the time-to-answer and handle
time figures of the calls it answered.

Times are in seconds with ms precision. Buckets are hours or days of the period's time
zone, clipped to the period; an hour bucket is 3600 s after the previous one.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

Bucket = Literal["hour", "day"]
BUCKETS: tuple[Bucket, ...] = ("hour", "day")
MISS_REASONS = ("busy", "noanswer", "declined", "error")
PERCENTILES = (50, 90, 95, 99)
DEFAULT_SL_SECONDS = 20
DEFAULT_ABANDON_GRACE_SECONDS = 5
HOUR_MS = 3_600_000

_TIME_FIELDS = (*(f"tta_p{p}_s" for p in PERCENTILES), "asa_s", "handled", "aht_s")
GROUP_FIELDS = (
    "offered",
    "answered",
    "abandoned",
    "unanswered",
    "pending",
    "answered_in_sl",
    "short_abandoned",
    "service_level",
    *_TIME_FIELDS,
)
AGENT_FIELDS = (
    "offers",
    "answered",
    "missed",
    *(f"missed_{reason}" for reason in MISS_REASONS),
    *_TIME_FIELDS,
)

Figures = dict[str, int | float | None]


@dataclass(frozen=True, slots=True)
class Period:
    """[start_ms, end_ms) cut into `bucket`s of the time zone `tz`."""

    start_ms: int
    end_ms: int
    bucket: Bucket = "day"
    tz: str = "UTC"

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError(f"empty period: end {self.end_ms} <= start {self.start_ms}")
        if self.bucket not in BUCKETS:
            raise ValueError(f"invalid bucket {self.bucket!r}: one of {BUCKETS}")
        ZoneInfo(self.tz)  # ZoneInfoNotFoundError (a KeyError) for an unknown zone

    def bucket_starts(self) -> list[int]:
        """Start (ms) of every bucket, the first one clipped to start_ms. O(buckets)."""
        zone = ZoneInfo(self.tz)
        local = datetime.fromtimestamp(self.start_ms / 1000, zone)
        starts = [self.start_ms]
        if self.bucket == "hour":
            # fold is kept, so the repeated hour of a DST change is a bucket of its own
            t = int(local.replace(minute=0, second=0, microsecond=0).timestamp() * 1000)
            while (t := t + HOUR_MS) < self.end_ms:
                starts.append(t)
            return starts
        day = local.date()
        while True:
            day += timedelta(days=1)
            t = int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1000)
            if t >= self.end_ms:
                return starts
            starts.append(t)

    def iso(self, ms: int) -> str:
        """`ms` as ISO 8601 in the period's zone, to the second."""
        return datetime.fromtimestamp(ms / 1000, ZoneInfo(self.tz)).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Row:
    """The figures of one group or agent: over the whole period and per bucket."""

    id: str
    total: Figures
    buckets: list[Figures]


@dataclass(frozen=True, slots=True)
class Report:
    """A report: `groups` and `agents` rows, each with a Figures dict per bucket."""

    tenant: str
    period: Period
    sl_seconds: int
    abandon_grace_seconds: int
    bucket_starts: list[int]
    groups: list[Row]
    agents: list[Row]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ISO times of the period's zone, figures by name."""
        ends = [*self.bucket_starts[1:], self.period.end_ms]

        def row(kind: str, r: Row) -> dict[str, Any]:
            buckets = [
                {"start": self.period.iso(s), "end": self.period.iso(e), **figures}
                for s, e, figures in zip(self.bucket_starts, ends, r.buckets, strict=True)
            ]
            return {kind: r.id, "total": r.total, "buckets": buckets}

        return {
            "tenant": self.tenant,
            "from": self.period.iso(self.period.start_ms),
            "to": self.period.iso(self.period.end_ms),
            "timezone": self.period.tz,
            "bucket": self.period.bucket,
            "sl_seconds": self.sl_seconds,
            "abandon_grace_seconds": self.abandon_grace_seconds,
            "groups": [row("group", r) for r in self.groups],
            "agents": [row("agent", r) for r in self.agents],
        }


@dataclass(slots=True)
class _Visit:
    group: str
    arrived: int
    bucket: int
    answered: int | None = None
    agent: str = ""
    talk_end: int | None = None  # the answering agent's hangup
    ended: int | None = None
    outcome: str = ""
    left: bool = False  # the call arrived at another group afterwards
    offered: list[str] = field(default_factory=list)
    missed: list[tuple[str, str]] = field(default_factory=list)  # (agent, reason)


@dataclass(slots=True)
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    tta_ms: list[int] = field(default_factory=list)
    talk_ms: list[int] = field(default_factory=list)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def merge(self, other: _Tally) -> None:
        for name, n in other.counts.items():
            self.add(name, n)
        self.tta_ms += other.tta_ms
        self.talk_ms += other.talk_ms


def percentile(values: list[int], p: float) -> int | None:
    """Nearest-rank percentile of `values` (None when empty). O(n log n)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def compute(
    events: Iterable[Mapping[str, str]],
    period: Period,
    *,
    tenant: str = "",
    sl_seconds: int = DEFAULT_SL_SECONDS,
    abandon_grace_seconds: int = DEFAULT_ABANDON_GRACE_SECONDS,
    group: str | None = None,
    agent: str | None = None,
) -> Report:
    """The report of `period` from `events` (stream order), per group and per agent.

    `group`: only that group's visits (its row is there even without any). `agent`: only
    that agent's row, and no group rows. One pass over the events; memory for the calls in
    progress and, for exact percentiles, one time to answer and one talk time per answered
    call; O(answered log answered) to sort them.
    """
    if sl_seconds < 0 or abandon_grace_seconds < 0:
        raise ValueError("sl_seconds and abandon_grace_seconds must be >= 0")
    starts = period.bucket_starts()
    visits = _follow(events, period, starts, group)
    groups: dict[str, list[_Tally]] = {}
    agents: dict[str, list[_Tally]] = {}
    if group is not None and agent is None:
        groups[group] = [_Tally() for _ in starts]
    if agent is not None:
        agents[agent] = [_Tally() for _ in starts]

    def tally(table: dict[str, list[_Tally]], key: str, bucket: int) -> _Tally:
        if key not in table:
            table[key] = [_Tally() for _ in starts]
        return table[key][bucket]

    sl_ms, grace_ms = sl_seconds * 1000, abandon_grace_seconds * 1000
    for v in visits:
        if agent is None:
            _tally_group(tally(groups, v.group, v.bucket), v, sl_ms, grace_ms)
        for name in v.offered:
            if agent is None or name == agent:
                tally(agents, name, v.bucket).add("offers")
        for name, reason in v.missed:
            if agent is None or name == agent:
                t = tally(agents, name, v.bucket)
                t.add("missed")
                t.add(f"missed_{reason}")
        if v.answered is not None and (agent is None or v.agent == agent):
            t = tally(agents, v.agent, v.bucket)
            t.add("answered")
            _tally_times(t, v)

    return Report(
        tenant=tenant,
        period=period,
        sl_seconds=sl_seconds,
        abandon_grace_seconds=abandon_grace_seconds,
        bucket_starts=starts,
        groups=[_row(k, groups[k], _group_figures) for k in sorted(groups)],
        agents=[_row(k, agents[k], _agent_figures) for k in sorted(agents)],
    )


@dataclass(slots=True)
class _Call:
    visits: list[_Visit] = field(default_factory=list)  # those in the period
    current: _Visit | None = None  # the latest visit, None when it is not counted
    offers: dict[str, _Visit] = field(default_factory=dict)  # agent -> visit of the offer


def _follow(
    events: Iterable[Mapping[str, str]], period: Period, starts: list[int], only: str | None
) -> Iterator[_Visit]:
    """Every visit arrived in the period (of group `only`), followed to its end.

    A call's visits come out when it ends, the unfinished ones after the last event: memory
    is O(calls in progress), not O(calls).
    """
    calls: dict[str, _Call] = {}
    for e in events:
        kind, call_id, name = e.get("type"), e.get("call"), e.get("agent", "")
        try:
            ts = int(e["ts"])
        except (KeyError, ValueError):
            continue
        if not call_id:
            continue
        if kind == "arrived":
            gid = e.get("group", "")
            call = calls.get(call_id)
            if call is not None and call.current is not None:
                call.current.left = True
            if period.start_ms <= ts < period.end_ms and (only is None or gid == only):
                if call is None:
                    call = calls[call_id] = _Call()
                call.current = _Visit(gid, ts, bisect_right(starts, ts) - 1)
                call.visits.append(call.current)
            elif call is not None:
                call.current = None
            continue
        call = calls.get(call_id)
        if call is None:
            continue
        if kind == "failed":
            # by the offer: the call may have moved on to another group already
            offer, reason = call.offers.get(name), e.get("reason", "")
            if offer is not None and reason in MISS_REASONS:
                offer.missed.append((name, reason))
            continue
        v = call.current
        if kind == "ended":
            if v is not None:
                v.ended, v.outcome = ts, e.get("outcome", "")
            yield from call.visits
            del calls[call_id]
        elif v is None:
            continue
        elif kind == "offered" and e.get("group") == v.group:
            v.offered.append(name)
            call.offers[name] = v
        elif kind == "released" and e.get("reason") == "replanned" and name in v.offered:
            # A claim corrected in the same decision (a stale plan, an unreachable phone):
            # the agent never rang, so it was not offered the call.
            v.offered.remove(name)
            call.offers.pop(name, None)
        elif kind == "answered" and v.answered is None and e.get("group") == v.group:
            v.answered, v.agent = ts, name
        elif (
            kind == "released"
            and e.get("reason") == "hangup"
            and v.talk_end is None
            and v.answered is not None
            and name == v.agent
        ):
            v.talk_end = ts
    for call in calls.values():
        yield from call.visits


def _tally_group(t: _Tally, v: _Visit, sl_ms: int, grace_ms: int) -> None:
    t.add("offered")
    if v.answered is not None:
        t.add("answered")
        t.add("answered_in_sl", int(v.answered - v.arrived <= sl_ms))
        _tally_times(t, v)
    elif v.left or (v.ended is not None and v.outcome != "abandoned"):
        t.add("unanswered")
    elif v.ended is not None:
        t.add("abandoned")
        t.add("short_abandoned", int(v.ended - v.arrived <= grace_ms))
    else:
        t.add("pending")


def _tally_times(t: _Tally, v: _Visit) -> None:
    assert v.answered is not None
    t.tta_ms.append(v.answered - v.arrived)
    end = v.talk_end if v.talk_end is not None else v.ended
    if end is not None:
        t.talk_ms.append(end - v.answered)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def _time_figures(t: _Tally) -> Figures:
    figures: Figures = {f"tta_p{p}_s": _seconds(percentile(t.tta_ms, p)) for p in PERCENTILES}
    figures["asa_s"] = _seconds(sum(t.tta_ms) / len(t.tta_ms)) if t.tta_ms else None
    figures["handled"] = len(t.talk_ms)
    figures["aht_s"] = _seconds(sum(t.talk_ms) / len(t.talk_ms)) if t.talk_ms else None
    return figures


def _group_figures(t: _Tally) -> Figures:
    figures: Figures = {name: t.counts.get(name, 0) for name in GROUP_FIELDS[:7]}
    base = t.counts.get("offered", 0) - t.counts.get("short_abandoned", 0)
    figures["service_level"] = (
        round(t.counts.get("answered_in_sl", 0) / base, 4) if base > 0 else None
    )
    return {**figures, **_time_figures(t)}


def _agent_figures(t: _Tally) -> Figures:
    figures: Figures = {name: t.counts.get(name, 0) for name in AGENT_FIELDS[:7]}
    return {**figures, **_time_figures(t)}


def _row(key: str, tallies: list[_Tally], figures_of: Callable[[_Tally], Figures]) -> Row:
    total = _Tally()
    for t in tallies:
        total.merge(t)
    return Row(key, figures_of(total), [figures_of(t) for t in tallies])
