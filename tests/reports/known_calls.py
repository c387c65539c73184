"""A hand-written sequence of calls with precise times, and the figures it must give.

Group `sales` (a1, a2, a3) overflows to `support` (a4). The period is 09:00-11:00 UTC a week
before the day the tests run (derived from the real clock: the events go into a real Redis
and into archive files, whose trimming compares them with Redis' TIME), in hour buckets,
service level threshold 20 s, abandon grace 5 s.

09:00  c1  ring a1+a2, a1 answers after 8.2 s, talks 119.8 s
09:10  c2  a1 no answer (15 s), a2 answers at 30 s, talks 60 s
09:20  c3  a1 busy, a2 rings, caller hangs up after 3 s (short abandon)
09:30  c4  a3 declines, a1 rings, caller hangs up after 40 s (abandon)
09:40  c5  a1 no answer + a2 error, overflow to support at 15 s: a4 answers 5 s later,
           talks 80 s
10:00  c6  a2 answers after 4 s, talks 300 s
10:10  c7  nobody free: the no-answer target at once
10:20  c8  a1 answers 'late' after 12 s, still talking when the events end
10:30  c9  a3 ringing when the events end
08:59:59 c10 and 11:00:00 c11 arrive outside the period: not counted, and neither are
           their offers and answers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from event_log import EventLog

_DAY = datetime.now(UTC).date() - timedelta(days=7)
T0 = int(datetime.combine(_DAY, time(9), tzinfo=UTC).timestamp() * 1000)
START_MS = T0
END_MS = T0 + 2 * 3_600_000


def utc_iso(ms: int) -> str:
    """How reports write a time in UTC: 2026-11-02T09:00:00+00:00."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def day_of(ms: int) -> date:
    """The UTC date at `ms`."""
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _build() -> list[dict[str, str]]:
    log = EventLog(T0, "sales")
    at, arrived, offered, answered = log.at, log.arrived, log.offered, log.answered
    failed, released, ended = log.failed, log.released, log.ended

    s = 1000
    at(-3600 * s, "config_changed", version="1")
    arrived(-1 * s, "c10")
    offered(-1 * s, "c10", "a3")
    arrived(0, "c1")
    offered(0, "c1", "a1")
    offered(0, "c1", "a2")
    answered(5 * s, "c10", "a3")
    answered(8200, "c1", "a1")
    released(8200, "c1", "a2", "other_answered")
    released(128 * s, "c1", "a1", "hangup")
    ended(128 * s, "c1", "answered")
    released(130 * s, "c10", "a3", "hangup")
    ended(130 * s, "c10", "answered")

    arrived(600 * s, "c2")
    offered(600 * s, "c2", "a1")
    failed(615 * s, "c2", "a1", "noanswer")
    offered(615 * s, "c2", "a2")
    answered(630 * s, "c2", "a2")
    released(690 * s, "c2", "a2", "hangup")
    ended(690 * s, "c2", "answered")

    arrived(1200 * s, "c3")
    offered(1200 * s, "c3", "a1")
    failed(1201 * s, "c3", "a1", "busy")
    offered(1201 * s, "c3", "a2")
    failed(1203 * s, "c3", "a2", "cancelled")
    ended(1203 * s, "c3", "abandoned")

    arrived(1800 * s, "c4")
    offered(1800 * s, "c4", "a3")
    failed(1805 * s, "c4", "a3", "declined")
    offered(1805 * s, "c4", "a1")
    at(1810 * s, "state_changed", agent="a3", status="1", reason="auto: 1 missed offers")
    failed(1840 * s, "c4", "a1", "cancelled")
    ended(1840 * s, "c4", "abandoned")

    arrived(2400 * s, "c5")
    offered(2400 * s, "c5", "a1")
    offered(2400 * s, "c5", "a2")
    failed(2415 * s, "c5", "a1", "noanswer")
    failed(2415 * s, "c5", "a2", "error")
    arrived(2415 * s, "c5", "support")
    offered(2415 * s, "c5", "a4", "support")
    answered(2420 * s, "c5", "a4", "support")
    released(2500 * s, "c5", "a4", "hangup", "support")
    ended(2500 * s, "c5", "answered")

    arrived(3600 * s, "c6")
    offered(3600 * s, "c6", "a2")
    answered(3604 * s, "c6", "a2")
    released(3904 * s, "c6", "a2", "hangup")
    ended(3904 * s, "c6", "answered")

    arrived(4200 * s, "c7")
    ended(4200 * s, "c7", "no_answer")

    arrived(4800 * s, "c8")
    offered(4800 * s, "c8", "a1")
    at(4810 * s, "expired", call="c8", agent="a1")
    answered(4812 * s, "c8", "a1", reason="late")

    arrived(5400 * s, "c9")
    offered(5400 * s, "c9", "a3")

    arrived(7200 * s, "c11")
    offered(7200 * s, "c11", "a2")
    answered(7201 * s, "c11", "a2")
    return log.events


EVENTS = _build()

# The queue figures of a group whose callers never queued (all of these calls).
QUEUE_NONE = {
    "queued": 0,
    "queue_answered": 0,
    "queue_abandoned": 0,
    "queue_waiting": 0,
    "overflowed": 0,
    "overflowed_full": 0,
    "overflowed_no_agents": 0,
    "overflowed_timeout": 0,
    "overflowed_lost": 0,
    "overflowed_error": 0,
    "voicemails": 0,
    "queue_wait_p50_s": None,
    "queue_wait_p90_s": None,
    "queue_wait_p95_s": None,
    "queue_wait_max_s": None,
    "queue_abandoned_wait_p50_s": None,
    "queue_abandoned_wait_p90_s": None,
    "queue_abandoned_wait_p95_s": None,
    "queue_abandoned_wait_max_s": None,
    "ewt_announcements": 0,
    "ewt_mae_s": None,
}

# Group sales: 9 offered (c1-c9); answered c1 c2 c6 c8; abandoned c3 (3 s: short) c4;
# unanswered c5 (overflowed) c7 (no-answer target); pending c9. Answered within 20 s:
# c1 (8.2) c6 (4) c8 (12), not c2 (30). SL = 3 / (9 - 1 short abandon).
# Times to answer 4, 8.2, 12, 30 s; nearest rank p50 = 2nd = 8.2, p90/95/99 = 4th = 30.
# Talk: c1 119.8, c2 60, c6 300 (c8 still talking): AHT 479.8 / 3.
SALES_TOTAL = {
    "offered": 9,
    "answered": 4,
    "abandoned": 2,
    "unanswered": 2,
    "pending": 1,
    "answered_in_sl": 3,
    "short_abandoned": 1,
    "service_level": 0.375,
    "tta_p50_s": 8.2,
    "tta_p90_s": 30.0,
    "tta_p95_s": 30.0,
    "tta_p99_s": 30.0,
    "asa_s": 13.55,
    "handled": 3,
    "aht_s": 159.933,
    **QUEUE_NONE,
}
SALES_0900 = {
    "offered": 5,
    "answered": 2,
    "abandoned": 2,
    "unanswered": 1,
    "pending": 0,
    "answered_in_sl": 1,
    "short_abandoned": 1,
    "service_level": 0.25,
    "tta_p50_s": 8.2,
    "tta_p90_s": 30.0,
    "tta_p95_s": 30.0,
    "tta_p99_s": 30.0,
    "asa_s": 19.1,
    "handled": 2,
    "aht_s": 89.9,
    **QUEUE_NONE,
}
SALES_1000 = {
    "offered": 4,
    "answered": 2,
    "abandoned": 0,
    "unanswered": 1,
    "pending": 1,
    "answered_in_sl": 2,
    "short_abandoned": 0,
    "service_level": 0.5,
    "tta_p50_s": 4.0,
    "tta_p90_s": 12.0,
    "tta_p95_s": 12.0,
    "tta_p99_s": 12.0,
    "asa_s": 8.0,
    "handled": 1,
    "aht_s": 300.0,
    **QUEUE_NONE,
}
SUPPORT_TOTAL = {
    "offered": 1,
    "answered": 1,
    "abandoned": 0,
    "unanswered": 0,
    "pending": 0,
    "answered_in_sl": 1,
    "short_abandoned": 0,
    "service_level": 1.0,
    "tta_p50_s": 5.0,
    "tta_p90_s": 5.0,
    "tta_p95_s": 5.0,
    "tta_p99_s": 5.0,
    "asa_s": 5.0,
    "handled": 1,
    "aht_s": 80.0,
    **QUEUE_NONE,
}


def times(tta: list[float], talk: list[float]) -> dict[str, float | int | None]:
    """The time figures from the answer and talk times (s), as the reports define them."""
    ordered = sorted(tta)

    def rank(p: int) -> float | None:
        return ordered[max(1, -(-p * len(ordered) // 100)) - 1] if ordered else None

    return {
        **{f"tta_p{p}_s": rank(p) for p in (50, 90, 95, 99)},
        "asa_s": round(sum(tta) / len(tta), 3) if tta else None,
        "handled": len(talk),
        "aht_s": round(sum(talk) / len(talk), 3) if talk else None,
    }


def agent(offers: int, answered: int, missed: dict[str, int], tta: list[float], talk: list[float]):
    """An agent's expected figures from its offers, answers, misses, answer and talk times."""
    return {
        "offers": offers,
        "answered": answered,
        "missed": sum(missed.values()),
        **{f"missed_{r}": missed.get(r, 0) for r in ("busy", "noanswer", "declined", "error")},
        **times(tta, talk),
    }


# a1: offered c1 c2 c3 c4 c5 c8; answered c1 (8.2 s, talk 119.8) and c8 (12 s, talking);
# missed c2 noanswer, c3 busy, c5 noanswer (c4: the caller cancelled, not a miss).
AGENTS_TOTAL = {
    "a1": agent(6, 2, {"noanswer": 2, "busy": 1}, [8.2, 12.0], [119.8]),
    "a2": agent(5, 2, {"error": 1}, [30.0, 4.0], [60.0, 300.0]),
    "a3": agent(2, 0, {"declined": 1}, [], []),
    "a4": agent(1, 1, {}, [5.0], [80.0]),
}
A1_BUCKETS = [
    agent(5, 1, {"noanswer": 2, "busy": 1}, [8.2], [119.8]),
    agent(1, 1, {}, [12.0], []),
]
