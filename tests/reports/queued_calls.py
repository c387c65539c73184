"""A hand-written sequence of queued calls with precise times, and the figures it must give.

Group `hotline` (h1, h2) has a queue; its overflow target is group `backup` (b1). The
period is the one of known_calls.py (09:00-11:00 UTC a week before the day the tests run,
hour buckets, service level 20 s, abandon grace 5 s). A caller's wait (`dequeued` wait_ms)
runs from its `queued` event, as Redis computes it; `answered` follows `dequeued` answered
at the same ts (disp_answered emits both).

09:00:00 q1  queued at once; told 30 s at +10 and 5 s at +30; h1 rings at +40 and answers at
             +42 (wait 42 s; estimate errors |30 - 32| = 2 and |5 - 12| = 7); talks 120 s
09:05:00 q2  queued; told 20 s at +10; hangs up at +25 (abandoned in the queue, wait 25 s)
09:10:00 q3  h1 does not answer (15 s), queued at +15; its position only at +25; h2 rings at
             +30 and answers at +33: wait 18 s, time to answer 33 s from arrival (3 s from
             its last offer); talks 60 s
09:20:00 q4  the queue is full: overflowed (full) to backup, b1 answers 4 s later, talks 96 s
09:40:00 q6  nobody logged in: overflowed (no_agents), the reply
09:45:00     a voicemail for hotline
09:58:00 q5  queued; told 60 s at +30; max wait at 10:00:00 (timeout, wait 120 s): to backup,
             whose visit arrives in the 10:00 bucket, while hotline's stays in 09:00; the reply
10:01:00 q7  queued; its node dies: lost at +15 (no end in the events)
10:10:00 q8  queued; everybody logs out: no_agents at +30, the reply
10:20:00 q9  queued; its node cannot keep it (no media): error at +1, the reply
10:30:00 q10 queued; told 15 s at +10; still waiting when the events end
10:40:00 q11 queued; told 10 s at +5; h2 rings at +10 and answers at +12 (wait 12 s, error 3);
             told 3 s in the keep after the answer, stamped +12.2 (remaining 0: error 3);
             talks 88 s
10:50:00     a voicemail for backup
Outside the period, not counted: q0 (arrived 08:59:30, queued, answered 09:00:10), the
voicemails at 08:59:50 and 11:01:40.
"""

from __future__ import annotations

from event_log import EventLog
from known_calls import QUEUE_NONE, T0, times

S = 1000


def _build() -> list[dict[str, str]]:
    log = EventLog(T0, "hotline")
    log.arrived(-30 * S, "q0")
    log.queued(-30 * S, "q0")
    log.voicemail(-10 * S, "m0")
    log.arrived(0, "q1")
    log.queued(0, "q1")
    log.dequeued(10 * S, "q0", "answered", 40 * S)
    log.answered(10 * S, "q0", "h2")
    log.announced(10 * S, "q1", 1, 30)
    log.announced(30 * S, "q1", 1, 5)
    log.offered(40 * S, "q1", "h1")
    log.dequeued(42 * S, "q1", "answered", 42 * S)
    log.answered(42 * S, "q1", "h1")
    log.released(162 * S, "q1", "h1", "hangup")
    log.ended(162 * S, "q1", "answered")
    log.arrived(300 * S, "q2")
    log.queued(300 * S, "q2")
    log.announced(310 * S, "q2", 1, 20)
    log.dequeued(325 * S, "q2", "abandoned", 25 * S)
    log.ended(325 * S, "q2", "abandoned")
    log.arrived(600 * S, "q3")
    log.offered(600 * S, "q3", "h1")
    log.failed(615 * S, "q3", "h1", "noanswer")
    log.queued(615 * S, "q3")
    log.announced(625 * S, "q3", 1, None)
    log.offered(630 * S, "q3", "h2")
    log.dequeued(633 * S, "q3", "answered", 18 * S)
    log.answered(633 * S, "q3", "h2")
    log.released(693 * S, "q3", "h2", "hangup")
    log.ended(693 * S, "q3", "answered")
    log.arrived(1200 * S, "q4")
    log.overflowed(1200 * S, "q4", "full")
    log.arrived(1200 * S, "q4", group="backup")
    log.offered(1200 * S, "q4", "b1", group="backup")
    log.answered(1204 * S, "q4", "b1", group="backup")
    log.released(1300 * S, "q4", "b1", "hangup", group="backup")
    log.ended(1300 * S, "q4", "answered")
    log.arrived(2400 * S, "q6")
    log.overflowed(2400 * S, "q6", "no_agents")
    log.ended(2400 * S, "q6", "no_answer")
    log.voicemail(2700 * S, "m1")
    log.arrived(3480 * S, "q5")
    log.queued(3480 * S, "q5")
    log.announced(3510 * S, "q5", 1, 60)
    log.dequeued(3600 * S, "q5", "timeout", 120 * S)
    log.arrived(3600 * S, "q5", group="backup")
    log.ended(3601 * S, "q5", "no_answer")
    log.arrived(3660 * S, "q7")
    log.queued(3660 * S, "q7")
    log.dequeued(3675 * S, "q7", "lost", 15 * S)
    log.arrived(4200 * S, "q8")
    log.queued(4200 * S, "q8")
    log.dequeued(4230 * S, "q8", "no_agents", 30 * S)
    log.ended(4230 * S, "q8", "no_answer")
    log.arrived(4800 * S, "q9")
    log.queued(4800 * S, "q9")
    log.dequeued(4801 * S, "q9", "error", 1 * S)
    log.ended(4801 * S, "q9", "no_answer")
    log.arrived(5400 * S, "q10")
    log.queued(5400 * S, "q10")
    log.announced(5410 * S, "q10", 1, 15)
    log.arrived(6000 * S, "q11")
    log.queued(6000 * S, "q11")
    log.announced(6005 * S, "q11", 1, 10)
    log.offered(6010 * S, "q11", "h2")
    log.dequeued(6012 * S, "q11", "answered", 12 * S)
    log.answered(6012 * S, "q11", "h2")
    log.announced(6012 * S + 200, "q11", 1, 3)
    log.released(6100 * S, "q11", "h2", "hangup")
    log.ended(6100 * S, "q11", "answered")
    log.voicemail(6600 * S, "m2", group="backup")
    log.voicemail(7300 * S, "m3")
    return log.events


EVENTS = _build()


def group(calls: dict, queue: dict) -> dict:
    """A group's figures: the call figures as given, the queue's from QUEUE_NONE and `queue`."""
    return {**calls, **QUEUE_NONE, **queue}


def calls(
    offered: int,
    answered: int,
    abandoned: int,
    unanswered: int,
    pending: int,
    in_sl: int,
    tta: list[float],
    talk: list[float],
) -> dict:
    """The call figures of a group from its counts, answer times and talk times (s)."""
    return {
        "offered": offered,
        "answered": answered,
        "abandoned": abandoned,
        "unanswered": unanswered,
        "pending": pending,
        "answered_in_sl": in_sl,
        "short_abandoned": 0,
        "service_level": round(in_sl / offered, 4) if offered else None,
        **times(tta, talk),
    }


# hotline: 11 visits; answered q1 (42 s) q3 (33 s) q11 (12 s), only q11 within 20 s;
# abandoned q2; unanswered q4 q5 (left for backup) q6 q8 q9 (the reply); pending q7 q10.
# Queued: all but q4 and q6 (refused at join). Waits of those that left: q9 1, q11 12,
# q7 15, q3 18, q2 25, q8 30, q1 42, q5 120 s: p50 = 4th = 18, p90 = p95 = 8th = 120.
# Estimate errors, of q1 and q11 (answered from the queue): 2, 7, 3, 3: 15 / 4.
HOTLINE_TOTAL = group(
    calls(11, 3, 1, 5, 2, 1, [42.0, 33.0, 12.0], [120.0, 60.0, 88.0]),
    {
        "queued": 9,
        "queue_answered": 3,
        "queue_abandoned": 1,
        "queue_waiting": 1,
        "overflowed": 6,
        "overflowed_full": 1,
        "overflowed_no_agents": 2,
        "overflowed_timeout": 1,
        "overflowed_lost": 1,
        "overflowed_error": 1,
        "voicemails": 1,
        "queue_wait_p50_s": 18.0,
        "queue_wait_p90_s": 120.0,
        "queue_wait_p95_s": 120.0,
        "queue_wait_max_s": 120.0,
        **{f"queue_abandoned_wait_{p}_s": 25.0 for p in ("p50", "p90", "p95", "max")},
        "ewt_announcements": 4,
        "ewt_mae_s": 3.75,
    },
)
# 09:00: q1-q6 (q5 arrived 09:58 and counts here, though it left at 10:00). Waits 18, 25,
# 42, 120: p50 = 2nd = 25.
HOTLINE_0900 = group(
    calls(6, 2, 1, 3, 0, 0, [42.0, 33.0], [120.0, 60.0]),
    {
        "queued": 4,
        "queue_answered": 2,
        "queue_abandoned": 1,
        "overflowed": 3,
        "overflowed_full": 1,
        "overflowed_no_agents": 1,
        "overflowed_timeout": 1,
        "voicemails": 1,
        "queue_wait_p50_s": 25.0,
        "queue_wait_p90_s": 120.0,
        "queue_wait_p95_s": 120.0,
        "queue_wait_max_s": 120.0,
        **{f"queue_abandoned_wait_{p}_s": 25.0 for p in ("p50", "p90", "p95", "max")},
        "ewt_announcements": 2,
        "ewt_mae_s": 4.5,
    },
)
# 10:00: q7-q11. Waits 1, 12, 15, 30: p50 = 2nd = 12, p90 = 4th = 30.
HOTLINE_1000 = group(
    calls(5, 1, 0, 2, 2, 1, [12.0], [88.0]),
    {
        "queued": 5,
        "queue_answered": 1,
        "queue_waiting": 1,
        "overflowed": 3,
        "overflowed_no_agents": 1,
        "overflowed_lost": 1,
        "overflowed_error": 1,
        "queue_wait_p50_s": 12.0,
        "queue_wait_p90_s": 30.0,
        "queue_wait_p95_s": 30.0,
        "queue_wait_max_s": 30.0,
        "ewt_announcements": 2,
        "ewt_mae_s": 3.0,
    },
)
# backup: q4 (09:20, answered after 4 s, talks 96 s) and q5 (10:00, the reply).
BACKUP_TOTAL = group(calls(2, 1, 0, 1, 0, 1, [4.0], [96.0]), {"voicemails": 1})
BACKUP_0900 = group(calls(1, 1, 0, 0, 0, 1, [4.0], [96.0]), {})
BACKUP_1000 = group(calls(1, 0, 0, 1, 0, 0, [], []), {"voicemails": 1})
# Both groups' visits together: 13, answered after 4, 12, 33, 42 s.
TENANT_TOTAL = group(
    calls(13, 4, 1, 6, 2, 2, [42.0, 33.0, 12.0, 4.0], [120.0, 60.0, 88.0, 96.0]),
    {k: v for k, v in HOTLINE_TOTAL.items() if k in QUEUE_NONE} | {"voicemails": 2},
)
