"""disp_answered, disp_failed, disp_release and disp_set_state."""

from __future__ import annotations

import time

import pytest
import redis
from state_support import TENANT, check_invariants

from dispatcher.state import (
    AVAILABLE,
    LOGGED_OUT,
    PAUSED,
    AnswerOutcome,
    FailResult,
    StateStore,
    UnknownAgent,
)

pytestmark = pytest.mark.redis


def kinds(store: StateStore, n: int) -> list[tuple[str, str, str]]:
    return [(e["type"], e.get("agent", ""), e.get("reason", "")) for e in store.events(n)]


class TestAnswered:
    def test_ok_converts_and_releases_the_others(
        self, store: StateStore, client: redis.Redis
    ) -> None:
        claim = store.claim("c1", "g1", "", ["a1", "a2", "a3"], 5000)
        assert store.answered("c1", "g1", "a2") is AnswerOutcome.OK
        a2 = store.agent_counters("a2")
        assert (a2["live"], a2["resv"], a2["missed"]) == (1, 0, 0)
        assert store.agent_counters("a1")["resv"] == 0
        gid, start = client.hget(store.keys.live, "c1\x1fa2").split(b"\x1f")
        assert gid == b"g1" and int(start) >= claim.now_ms
        assert client.zcard(store.keys.resv) == 0
        assert sorted(kinds(store, 3)) == [
            ("answered", "a2", ""),
            ("released", "a1", "other_answered"),
            ("released", "a3", "other_answered"),
        ]
        check_invariants(client, TENANT)

    def test_answer_resets_missed(self, store: StateStore) -> None:
        store.claim("c1", "g1", "", ["a2"], 5000)
        store.failed("c1", "a2", "noanswer")
        assert store.agent_counters("a2")["missed"] == 1
        store.claim("c2", "g1", "", ["a2"], 5000)
        store.answered("c2", "g1", "a2")
        assert store.agent_counters("a2")["missed"] == 0

    def test_dup_changes_nothing(self, store: StateStore, client: redis.Redis) -> None:
        store.claim("c1", "g1", "", ["a2"], 5000)
        store.answered("c1", "g1", "a2")
        before = store.agent_counters("a2")
        n_events = client.xlen(store.keys.events)
        assert store.answered("c1", "g1", "a2") is AnswerOutcome.DUP
        assert store.agent_counters("a2") == before
        assert client.xlen(store.keys.events) == n_events

    def test_late_takes_a_free_slot(self, store: StateStore, client: redis.Redis) -> None:
        store.claim("c1", "g1", "", ["a2"], 20)
        time.sleep(0.04)
        assert store.sweep() == 1
        assert store.answered("c1", "g1", "a2") is AnswerOutcome.LATE
        assert store.agent_counters("a2")["live"] == 1
        assert store.events(1)[0]["reason"] == "late"
        assert store.release("c1") == 1
        check_invariants(client, TENANT)

    def test_over_counts_nothing(self, store: StateStore, client: redis.Redis) -> None:
        store.claim("c1", "g1", "", ["a1", "a2"], 20)
        time.sleep(0.04)
        store.claim("c2", "g1", "", ["a1"], 5000)  # sweeps c1; a1 (max 1) is now full
        assert store.answered("c1", "g1", "a1") is AnswerOutcome.OVER
        a1 = store.agent_counters("a1")
        assert (a1["live"], a1["resv"]) == (None, 1)
        assert not client.hexists(store.keys.live, "c1\x1fa1")
        assert store.events(1)[0]["reason"] == "over"
        assert store.release("c1", "a1") == 0
        check_invariants(client, TENANT)

    def test_unknown_agent_is_over(self, store: StateStore) -> None:
        assert store.answered("c1", "g1", "nobody") is AnswerOutcome.OVER


class TestFailed:
    def test_miss_is_counted_once(self, store: StateStore) -> None:
        store.claim("c1", "g1", "", ["a1"], 5000)
        assert store.failed("c1", "a1", "noanswer") == FailResult(released=True, paused=False)
        assert store.failed("c1", "a1", "noanswer") == FailResult(released=False, paused=False)
        counters = store.agent_counters("a1")
        assert (counters["resv"], counters["missed"]) == (0, 1)
        assert kinds(store, 1) == [("failed", "a1", "noanswer")]

    @pytest.mark.parametrize("reason", ["busy", "noanswer", "declined", "error"])
    def test_miss_reasons(self, store: StateStore, reason: str) -> None:
        store.claim("c1", "g1", "", ["a1"], 5000)
        store.failed("c1", "a1", reason)
        assert store.agent_counters("a1")["missed"] == 1

    def test_cancelled_is_no_miss(self, store: StateStore) -> None:
        store.claim("c1", "g1", "", ["a1"], 5000)
        assert store.failed("c1", "a1", "cancelled").released
        assert store.agent_counters("a1")["missed"] is None

    def test_after_expiry_nothing_counts(self, store: StateStore) -> None:
        store.claim("c1", "g1", "", ["a1"], 20)
        time.sleep(0.04)
        store.sweep()
        assert store.failed("c1", "a1", "noanswer") == FailResult(False, False)
        assert store.agent_counters("a1")["missed"] is None

    def test_auto_pause(self, store: StateStore) -> None:
        for call in ("c1", "c2"):
            store.claim(call, "g1", "", ["a3"], 5000)
            result = store.failed(call, "a3", "busy")
        assert result == FailResult(released=True, paused=True)
        a3 = store.agent_counters("a3")
        assert (a3["status"], a3["reason"], a3["missed"]) == (PAUSED, "auto: 2 missed offers", 2)
        changed = store.events(2)[0]
        assert (changed["type"], changed["agent"], changed["status"]) == (
            "state_changed",
            "a3",
            "1",
        )
        assert store.claim("c3", "g1", "", ["a3"], 5000).claimed == ()
        assert store.set_state("a3", AVAILABLE) == PAUSED
        assert store.agent_counters("a3")["missed"] == 0
        assert store.claim("c3", "g1", "", ["a3"], 5000).claimed == ("a3",)

    def test_no_auto_pause_when_off_or_not_available(self, store: StateStore) -> None:
        for i in range(5):
            store.claim(f"c{i}", "g1", "", ["a1"], 5000)  # a1: autopause 0
            assert not store.failed(f"c{i}", "a1", "noanswer").paused
        store.claim("x1", "g1", "", ["a3"], 5000)
        store.claim("x2", "g2", "", ["a3"], 5000)  # a3 max 1: not claimed
        store.set_state("a3", LOGGED_OUT)
        store.failed("x1", "a3", "busy")
        assert store.agent_counters("a3")["status"] == LOGGED_OUT

    def test_bad_reason(self, store: StateStore, client: redis.Redis) -> None:
        with pytest.raises(ValueError, match="reason"):
            store.failed("c1", "a1", "timeout")
        with pytest.raises(redis.ResponseError, match=r"^BADARG unknown failure reason x"):
            client.fcall("disp_failed", len(store.keys.base), *store.keys.base, "c1", "a1", "x")


class TestRelease:
    def test_ends_the_live_call_with_wrapup(self, store: StateStore, client: redis.Redis) -> None:
        store.claim("c1", "g2", "", ["a4", "a2"], 5000)
        store.answered("c1", "g2", "a4")
        assert store.release("c1") == 1
        a4 = store.agent_counters("a4")
        assert a4["live"] == 0 and a4["wrapuntil"] == a4["idle"] + 30_000
        assert not client.exists(store.keys.call("c1"))
        hangup = store.events(2)[0]
        assert (hangup["type"], hangup["agent"], hangup["group"], hangup["reason"]) == (
            "released",
            "a4",
            "g2",
            "hangup",
        )
        assert store.release("c1") == 0
        assert store.release("c1", "a4") == 0
        assert store.agent_counters("a4")["live"] == 0
        check_invariants(client, TENANT)

    def test_releases_reservations_without_a_miss(self, store: StateStore) -> None:
        store.claim("c1", "g1", "", ["a1", "a2"], 5000)
        assert store.release("c1") == 0
        assert store.agent_counters("a1")["resv"] == 0
        assert store.agent_counters("a1")["missed"] is None
        assert sorted(kinds(store, 3)) == [
            ("ended", "", ""),
            ("released", "a1", "call_released"),
            ("released", "a2", "call_released"),
        ]

    def test_one_agent_keeps_the_other_leg(self, store: StateStore, client: redis.Redis) -> None:
        store.claim("c1", "g1", "", ["a1", "a2"], 20)
        time.sleep(0.04)
        store.sweep()
        # Both 200 OK raced past the expiry: two live legs on one call.
        assert store.answered("c1", "g1", "a1") is AnswerOutcome.LATE
        assert store.answered("c1", "g1", "a2") is AnswerOutcome.LATE
        assert store.release("c1", "a2") == 1
        assert client.exists(store.keys.call("c1"))
        assert store.agent_counters("a1")["live"] == 1
        assert store.release("c1") == 1
        assert not client.exists(store.keys.call("c1"))
        check_invariants(client, TENANT)

    def test_repeated_release_is_harmless(self, store: StateStore, client: redis.Redis) -> None:
        store.claim("c1", "g1", "", ["a2"], 5000)
        store.answered("c1", "g1", "a2")
        store.claim("c2", "g1", "", ["a2"], 5000)
        store.answered("c2", "g1", "a2")
        for _ in range(3):
            store.release("c1")
            store.release("c1", "a2")
            store.release("c1", None)
        assert store.agent_counters("a2")["live"] == 1
        assert check_invariants(client, TENANT)["live"] == 1


class TestEnded:
    """The `ended` event of a whole call's release: once per call, with its outcome."""

    @staticmethod
    def ended(store: StateStore) -> list[dict[str, str]]:
        return [e for e in store.events(100) if e["type"] == "ended"]

    def test_answered_call_ends_once_after_its_hangup(self, store: StateStore) -> None:
        store.claim("c1", "g1", "", ["a1"], 5000, arrival=True)
        store.answered("c1", "g1", "a1")
        assert store.release("c1", outcome="answered") == 1
        last = store.events(2)
        assert [(e["type"], e.get("reason")) for e in last] == [
            ("released", "hangup"),
            ("ended", None),
        ]
        assert last[1]["call"] == "c1" and last[1]["outcome"] == "answered"
        assert int(last[1]["ts"]) >= int(last[0]["ts"])
        for outcome in ("answered", "abandoned", ""):
            assert store.release("c1", outcome=outcome) == 0
        assert len(self.ended(store)) == 1

    def test_call_that_reserved_nobody_still_ends_once(
        self, store: StateStore, client: redis.Redis
    ) -> None:
        store.claim("c0", "g1", "", ["a1"], 5000)
        store.claim("c1", "g1", "", ["a1"], 5000, arrival=True)  # a1 (max 1) is full
        assert not client.exists(store.keys.call("c1"))
        store.release("c1", outcome="no_answer")
        store.release("c1", outcome="no_answer")
        assert [(e["call"], e["outcome"]) for e in self.ended(store)] == [("c1", "no_answer")]
        assert 0 < client.ttl(store.keys.ended("c1")) <= 86400

    def test_unknown_outcome_is_left_out(self, store: StateStore) -> None:
        store.claim("c1", "g1", "", ["a1"], 5000)
        store.release("c1")
        [ended] = self.ended(store)
        assert ended["call"] == "c1" and "outcome" not in ended

    def test_one_leg_does_not_end_the_call(self, store: StateStore) -> None:
        store.claim("c1", "g1", "", ["a2"], 5000)
        store.answered("c1", "g1", "a2")
        assert store.release("c1", "a2") == 1
        assert self.ended(store) == []
        store.release("c1", outcome="answered")
        assert len(self.ended(store)) == 1

    def test_bad_outcome(self, store: StateStore, client: redis.Redis) -> None:
        with pytest.raises(ValueError, match="outcome"):
            store.release("c1", outcome="hungup")
        with pytest.raises(ValueError, match="whole calls only"):
            store.release("c1", "a1", outcome="answered")
        keys = [*store.keys.base, store.keys.call("c1"), store.keys.ended("c1")]
        with pytest.raises(redis.ResponseError, match=r"^BADARG unknown outcome x"):
            client.fcall("disp_release", len(keys), *keys, "c1", "", "x")
        with pytest.raises(redis.ResponseError, match=r"^BADARG an outcome ends the whole"):
            client.fcall("disp_release", len(keys), *keys, "c1", "a1", "answered")
        wrong = [*store.keys.base, store.keys.call("c1"), store.keys.ended("c2")]
        with pytest.raises(redis.ResponseError, match=r"^BADARG end marker key"):
            client.fcall("disp_release", len(wrong), *wrong, "c1", "", "")
        assert self.ended(store) == []


class TestSetState:
    def test_transitions_and_events(self, store: StateStore) -> None:
        assert store.set_state("a1", PAUSED, "lunch") == AVAILABLE
        assert kinds(store, 1) == [("state_changed", "a1", "lunch")]
        assert store.events(1)[0]["status"] == "1"
        n = len(store.events(100))
        assert store.set_state("a1", PAUSED, "lunch") == PAUSED
        assert len(store.events(100)) == n
        assert store.set_state("a1", LOGGED_OUT) == PAUSED
        assert store.set_state("a1", AVAILABLE) == LOGGED_OUT
        assert store.agent_counters("a1")["reason"] == ""

    def test_unknown_agent(self, store: StateStore) -> None:
        with pytest.raises(UnknownAgent, match=r"^NOAGENT agent zz is not configured$"):
            store.set_state("zz", AVAILABLE)

    def test_bad_status(self, store: StateStore, client: redis.Redis) -> None:
        with pytest.raises(ValueError, match="status"):
            store.set_state("a1", 3)
        with pytest.raises(redis.ResponseError, match=r"^BADARG status must be 0, 1 or 2"):
            client.fcall("disp_set_state", len(store.keys.base), *store.keys.base, "a1", "7", "")
