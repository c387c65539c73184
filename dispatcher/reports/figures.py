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

A queued call's time to answer (and so the service level) runs from its arrival at the
group, through its wait in the queue and every ring round, to the answer: the claims that
serve a caller after its wait are no arrivals (no `arrived` event), so the visit keeps the
time it arrived, never the time of its last offer.

The queue, per group, of the same visits (`queued`, `dequeued`, `overflowed`, `announced`):

- queued: visits that entered the group's queue (`queued`).
- queue_answered, queue_abandoned: of those, left the queue (`dequeued`) because an agent
  took the call (reason answered), or because the caller hung up while waiting (abandoned).
- queue_waiting: still in the queue when the events end.
- overflowed_<reason>: sent on to the queue's overflow target. full and no_agents: refused
  when joining (`overflowed`; never waited, so not queued); no_agents also counts callers
  who left the queue because nobody was logged in any more. timeout: waited the queue's
  max wait. lost: the node holding the caller died, its lease lapsed (where the caller went
  then is not in the events). error: its node could not keep it (no media) and sent it on.
  overflowed is their sum. So queued = queue_answered + queue_abandoned + queue_waiting +
  the queued visits among the overflowed.
- queue_wait_p50_s ... queue_wait_max_s: percentiles (nearest rank, as above) and maximum
  of the wait in the queue (`dequeued` wait_ms: from joining to leaving, ring rounds
  included) of the queued visits that left it, for any reason; still waiting ones have no
  wait yet.
- queue_abandoned_wait_p50_s ... _max_s: the same, of the queue_abandoned ones only.
- ewt_announcements, ewt_mae_s: how well the announced estimated wait told the caller the
  truth. For every `announced` event with a wait_s to a visit answered from the queue, its
  error is |wait_s - actual remaining wait|, where the actual remaining wait is the
  `dequeued` (answered) ts minus the announcement's ts, at least 0 (the announcement's ts
  is the node's next report after it, up to a keeper interval late, so one just before the
  answer may be stamped after it). ewt_announcements counts them, ewt_mae_s is the mean
  error in seconds (None without any). Announcements to callers who abandoned, overflowed
  or still wait have no actual wait to compare with and do not count: so the figure speaks
  for answered callers only, and an estimator too optimistic for those who give up is not
  seen here.
- voicemails: messages left for the group (`voicemail`). A message names no call, so it
  counts in the bucket of its own ts (when it was stored), and only when that lies in the
  period.

The tenant total (`Report.tenant_total`) has the same figures over all the report's groups
together: a sum over visits, so a call that overflows from one group to another counts in
both, as it does in each group's row; its percentiles are over every group's values.

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
# Why a visit went to its queue's overflow target: refused at join (full, no_agents, event
# overflowed) or left the queue (no_agents, timeout, lost, error; event dequeued).
OVERFLOW_REASONS = ("full", "no_agents", "timeout", "lost", "error")
PERCENTILES = (50, 90, 95, 99)
WAIT_PERCENTILES = (50, 90, 95, 100)  # 100: the maximum
DEFAULT_SL_SECONDS = 20
DEFAULT_ABANDON_GRACE_SECONDS = 5
HOUR_MS = 3_600_000


def _percentile_names(name: str, ranks: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"{name}_max_s" if p == 100 else f"{name}_p{p}_s" for p in ranks)


_TIME_FIELDS = (*_percentile_names("tta", PERCENTILES), "asa_s", "handled", "aht_s")
_GROUP_COUNTS = (
    "offered",
    "answered",
    "abandoned",
    "unanswered",
    "pending",
    "answered_in_sl",
    "short_abandoned",
)
_QUEUE_COUNTS = (
    "queued",
    "queue_answered",
    "queue_abandoned",
    "queue_waiting",
    "overflowed",
    *(f"overflowed_{reason}" for reason in OVERFLOW_REASONS),
    "voicemails",
)
_QUEUE_TIMES = (
    *_percentile_names("queue_wait", WAIT_PERCENTILES),
    *_percentile_names("queue_abandoned_wait", WAIT_PERCENTILES),
    "ewt_announcements",
    "ewt_mae_s",
)
GROUP_FIELDS = (
    *_GROUP_COUNTS,
    "service_level",
    *_TIME_FIELDS,
    *_QUEUE_COUNTS,
    *_QUEUE_TIMES,
)
_AGENT_COUNTS = ("offers", "answered", "missed", *(f"missed_{r}" for r in MISS_REASONS))
AGENT_FIELDS = (*_AGENT_COUNTS, *_TIME_FIELDS)

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
    """A report: `groups` and `agents` rows, each with a Figures dict per bucket, and
    `tenant_total`: the group figures of all its groups together (None in a report of one
    agent, which has no group rows)."""

    tenant: str
    period: Period
    sl_seconds: int
    abandon_grace_seconds: int
    bucket_starts: list[int]
    groups: list[Row]
    agents: list[Row]
    tenant_total: Row | None = None

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
            "tenant_total": None if self.tenant_total is None else row("tenant", self.tenant_total),
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
    refused: str = ""  # the queue refused it at join: full | no_agents
    queued: int | None = None
    dequeued: int | None = None
    dequeue_reason: str = ""
    wait_ms: int | None = None
    announced: list[tuple[int, float]] = field(default_factory=list)  # (ts, wait_s)


@dataclass(slots=True)
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    tta_ms: list[int] = field(default_factory=list)
    talk_ms: list[int] = field(default_factory=list)
    queue_wait_ms: list[int] = field(default_factory=list)
    abandoned_wait_ms: list[int] = field(default_factory=list)
    ewt_error_ms: list[float] = field(default_factory=list)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def merge(self, other: _Tally) -> None:
        for name, n in other.counts.items():
            self.add(name, n)
        self.tta_ms += other.tta_ms
        self.talk_ms += other.talk_ms
        self.queue_wait_ms += other.queue_wait_ms
        self.abandoned_wait_ms += other.abandoned_wait_ms
        self.ewt_error_ms += other.ewt_error_ms


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
    that agent's row, and no group rows (nor a tenant total). One pass over the events;
    memory for the calls in progress and, for exact percentiles, one time to answer and one
    talk time per answered call, one wait per queued call and one error per announcement to
    a caller answered from the queue; O(n log n) to sort each of them.
    """
    if sl_seconds < 0 or abandon_grace_seconds < 0:
        raise ValueError("sl_seconds and abandon_grace_seconds must be >= 0")
    starts = period.bucket_starts()
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

    def voicemail(gid: str, bucket: int) -> None:
        if agent is None:
            tally(groups, gid, bucket).add("voicemails")

    visits = _follow(events, period, starts, group, voicemail)
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
        tenant_total=None if agent is not None else _total_row(tenant, groups, len(starts)),
    )


@dataclass(slots=True)
class _Call:
    visits: list[_Visit] = field(default_factory=list)  # those in the period
    current: _Visit | None = None  # the latest visit, None when it is not counted
    offers: dict[str, _Visit] = field(default_factory=dict)  # agent -> visit of the offer


def _follow(
    events: Iterable[Mapping[str, str]],
    period: Period,
    starts: list[int],
    only: str | None,
    voicemail: Callable[[str, int], None],
) -> Iterator[_Visit]:
    """Every visit arrived in the period (of group `only`), followed to its end; and
    `voicemail(group, bucket)` for every message stored in the period (it names no call).

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
        if kind == "voicemail":
            gid = e.get("group", "")
            if gid and period.start_ms <= ts < period.end_ms and (only is None or gid == only):
                voicemail(gid, bisect_right(starts, ts) - 1)
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
        if kind in _QUEUE_EVENTS:
            _queue_event(call, kind, e, ts)
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


_QUEUE_EVENTS = frozenset(("queued", "dequeued", "overflowed", "announced"))


def _queue_event(call: _Call, kind: str, e: Mapping[str, str], ts: int) -> None:
    """A queue event into the visit it belongs to: the call's latest visit to its group.

    By group, not the call's current visit: a caller lost from one queue can already be at
    another group. An announcement made as its entry was removed names no group: it goes
    to the call's latest queued visit.
    """
    gid = e.get("group", "")
    visit = next(
        (v for v in reversed(call.visits) if (v.group == gid if gid else v.queued is not None)),
        None,
    )
    if visit is None:
        return
    if kind == "overflowed":
        reason = e.get("reason", "")
        if reason in ("full", "no_agents"):
            visit.refused = reason
    elif kind == "queued":
        if visit.queued is None:
            visit.queued = ts
    elif visit.queued is None:
        return  # dequeued or announced without its queued event: nothing to measure from
    elif kind == "dequeued":
        if visit.dequeued is None:
            visit.dequeued, visit.dequeue_reason = ts, e.get("reason", "")
            wait = e.get("wait_ms", "")
            visit.wait_ms = int(wait) if wait.isdigit() else ts - visit.queued
    else:
        wait_s = _seconds_field(e.get("wait_s", ""))
        if wait_s is not None:  # else the position alone was announced: no estimate
            visit.announced.append((ts, wait_s))


def _seconds_field(text: str) -> float | None:
    """A field of seconds >= 0 as a float; None when absent or not such a number."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


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
    if v.refused:
        t.add("overflowed")
        t.add(f"overflowed_{v.refused}")
    if v.queued is not None:
        _tally_queue(t, v)


def _tally_queue(t: _Tally, v: _Visit) -> None:
    t.add("queued")
    reason = v.dequeue_reason
    if v.dequeued is None:
        t.add("queue_waiting")
        return
    if v.wait_ms is not None:
        t.queue_wait_ms.append(v.wait_ms)
    if reason == "answered":
        t.add("queue_answered")
        for ts, wait_s in v.announced:
            t.ewt_error_ms.append(abs(wait_s * 1000 - max(0, v.dequeued - ts)))
    elif reason == "abandoned":
        t.add("queue_abandoned")
        if v.wait_ms is not None:
            t.abandoned_wait_ms.append(v.wait_ms)
    elif reason in OVERFLOW_REASONS:
        t.add("overflowed")
        t.add(f"overflowed_{reason}")


def _tally_times(t: _Tally, v: _Visit) -> None:
    assert v.answered is not None
    t.tta_ms.append(v.answered - v.arrived)
    end = v.talk_end if v.talk_end is not None else v.ended
    if end is not None:
        t.talk_ms.append(end - v.answered)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def _mean_seconds(values: list[int] | list[float]) -> float | None:
    return _seconds(sum(values) / len(values)) if values else None


def _percentile_figures(name: str, values: list[int], ranks: tuple[int, ...]) -> Figures:
    """`name`'s percentiles of `values` (ms) in seconds, by their `_percentile_names`."""
    names = _percentile_names(name, ranks)
    return {k: _seconds(percentile(values, p)) for k, p in zip(names, ranks, strict=True)}


def _counts(t: _Tally, names: tuple[str, ...]) -> Figures:
    return {name: t.counts.get(name, 0) for name in names}


def _time_figures(t: _Tally) -> Figures:
    figures = _percentile_figures("tta", t.tta_ms, PERCENTILES)
    figures["asa_s"] = _mean_seconds(t.tta_ms)
    figures["handled"] = len(t.talk_ms)
    figures["aht_s"] = _mean_seconds(t.talk_ms)
    return figures


def _queue_figures(t: _Tally) -> Figures:
    return {
        **_counts(t, _QUEUE_COUNTS),
        **_percentile_figures("queue_wait", t.queue_wait_ms, WAIT_PERCENTILES),
        **_percentile_figures("queue_abandoned_wait", t.abandoned_wait_ms, WAIT_PERCENTILES),
        "ewt_announcements": len(t.ewt_error_ms),
        "ewt_mae_s": _mean_seconds(t.ewt_error_ms),
    }


def _group_figures(t: _Tally) -> Figures:
    figures = _counts(t, _GROUP_COUNTS)
    base = t.counts.get("offered", 0) - t.counts.get("short_abandoned", 0)
    figures["service_level"] = (
        round(t.counts.get("answered_in_sl", 0) / base, 4) if base > 0 else None
    )
    return {**figures, **_time_figures(t), **_queue_figures(t)}


def _agent_figures(t: _Tally) -> Figures:
    return {**_counts(t, _AGENT_COUNTS), **_time_figures(t)}


def _row(key: str, tallies: list[_Tally], figures_of: Callable[[_Tally], Figures]) -> Row:
    total = _Tally()
    for t in tallies:
        total.merge(t)
    return Row(key, figures_of(total), [figures_of(t) for t in tallies])


def _total_row(key: str, groups: dict[str, list[_Tally]], n_buckets: int) -> Row:
    """The group figures of all `groups` together, per bucket and over the period."""
    buckets = [_Tally() for _ in range(n_buckets)]
    for tallies in groups.values():
        for total, t in zip(buckets, tallies, strict=True):
            total.merge(t)
    return _row(key, buckets, _group_figures)
