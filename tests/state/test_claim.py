"""disp_claim, disp_snapshot and disp_sweep."""

from __future__ import annotations

import time

import pytest
import redis
from state_support import AGENTS, GROUPS, TENANT, check_invariants

from dispatcher.state import (
    AVAILABLE,
    LOGGED_OUT,
    PAUSED,
    AgentLimits,
    StateStore,
    UnknownGroup,
    sticky_days,
)

pytestmark = pytest.mark.redis

FIELDS = 5  # status, busy, max, wrapuntil, idle


def row(rows: list[int], index: int) -> list[int]:
    return rows[index * FIELDS : (index + 1) * FIELDS]


def test_claim_reserves_and_returns_the_rows_it_decided_on(
    store: StateStore, client: redis.Redis
) -> None:
    result = store.claim("c1", "g1", "+491", ["a1", "a2", "a3"], 5000)
    assert result.claimed == ("a1", "a2", "a3")
    assert result.version == 1
    # rr and rows as the claim found them, before its own reservations.
    assert result.rr == -1
    assert (result.sticky_agent, result.is_sticky) == ("", False)
    assert result.rows == [0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0]
    # The claim's own reservations are stored: rr on the last claimed, each agent busy.
    after = store.snapshot("g1")
    assert after.rr == 2
    assert after.rows == [0, 1, 1, 0, 0, 0, 1, 2, 0, 0, 0, 1, 1, 0, 0]
    assert client.hget(store.keys.group("g1"), "rr") == b"2"
    deadline = client.zscore(store.keys.resv, "c1\x1fa1")
    assert deadline == result.now_ms + 5000
    assert client.smembers(store.keys.call("c1")) == {b"a1", b"a2", b"a3"}
    assert 0 < client.ttl(store.keys.call("c1")) <= 86400
    offered = store.events(3)
    assert [e["agent"] for e in offered] == ["a1", "a2", "a3"]
    assert offered[0] | {"id": "", "ts": ""} == {
        "type": "offered",
        "call": "c1",
        "agent": "a1",
        "group": "g1",
        "caller": "+491",
        "id": "",
        "ts": "",
    }
    assert int(offered[0]["ts"]) == result.now_ms
    assert check_invariants(client, TENANT)["resv"] == 3


def test_claim_time_is_redis_time_in_ms(store: StateStore, client: redis.Redis) -> None:
    # The library builds the ms text from TIME's seconds and zero-padded microseconds; enough
    # claims that some fall in a second's first 100 ms (microseconds with fewer digits).
    for n in range(300):
        before_s, before_us = client.time()
        result = store.claim(f"t{n}", "g1", "", ["a1"], 5000)
        after_s, after_us = client.time()
        assert before_s * 1000 + before_us // 1000 <= result.now_ms
        assert result.now_ms <= after_s * 1000 + after_us // 1000
        store.release(f"t{n}", "", "abandoned")


def test_load_counts_across_groups(store: StateStore) -> None:
    store.claim("c1", "g1", "", ["a2", "a3"], 5000)
    snap = store.snapshot("g2")
    assert [row(snap.rows, i)[1] for i in range(3)] == [1, 1, 0]  # a2, a3 busy; a4 free
    assert snap.rr == -1 and snap.version == 1
    # A claim's rows count the other calls' holds (any group), not its own.
    result = store.claim("c2", "g2", "", ["a2", "a4"], 5000)
    assert result.claimed == ("a2", "a4")
    assert [row(result.rows, i)[1] for i in range(3)] == [1, 1, 0]
    assert [row(store.snapshot("g2").rows, i)[1] for i in range(3)] == [2, 1, 1]


def test_full_agent_is_skipped(store: StateStore) -> None:
    assert store.claim("c1", "g1", "", ["a3"], 5000).claimed == ("a3",)
    result = store.claim("c2", "g2", "", ["a3", "a4"], 5000)
    assert result.claimed == ("a4",)
    assert result.rr == -1  # g2's cursor before the claim
    assert [row(result.rows, i)[1] for i in range(3)] == [0, 1, 0]  # a3 full (c1), a4 free
    assert store.snapshot("g2").rr == 2


def test_max_calls_counts_live_and_reserved(store: StateStore) -> None:
    assert store.claim("c1", "g1", "", ["a2"], 5000).claimed == ("a2",)
    store.answered("c1", "g1", "a2")
    assert store.claim("c2", "g1", "", ["a2"], 5000).claimed == ("a2",)
    assert store.claim("c3", "g2", "", ["a2"], 5000).claimed == ()


@pytest.mark.parametrize("status", [PAUSED, LOGGED_OUT])
def test_unavailable_agent_is_skipped(store: StateStore, status: int) -> None:
    store.set_state("a1", status, "x")
    assert store.claim("c1", "g1", "", ["a1", "a2"], 5000).claimed == ("a2",)


def test_agent_in_wrapup_is_skipped(store: StateStore) -> None:
    store.claim("c1", "g2", "", ["a4"], 5000)
    store.answered("c1", "g2", "a4")
    store.release("c1")
    result = store.claim("c2", "g2", "", ["a4"], 5000)
    assert result.claimed == ()
    status, busy, max_calls, wrapuntil, idle = row(result.rows, 2)
    assert (status, busy, max_calls) == (AVAILABLE, 0, 3)
    assert wrapuntil == idle + 30_000 and idle <= result.now_ms


def test_non_members_and_offered_agents_are_skipped(store: StateStore) -> None:
    assert store.claim("c1", "g1", "", ["a4", "a1", "a1"], 5000).claimed == ("a1",)
    store.failed("c1", "a1", "noanswer")
    # a1 was offered on c1 already: a later wave of the same call does not ring it again.
    assert store.claim("c1", "g1", "", ["a1", "a2"], 5000).claimed == ("a2",)


def test_rr_is_the_last_claimed_and_kept_when_none(store: StateStore) -> None:
    # Each claim returns the cursor it found, i.e. the one the claim before it left.
    first = store.claim("c1", "g1", "", ["a2"], 5000)
    assert first.claimed == ("a2",) and first.rr == -1
    assert store.snapshot("g1").rr == 1
    second = store.claim("c2", "g1", "", ["a3", "a1"], 5000)
    assert second.claimed == ("a3", "a1") and second.rr == 1
    assert store.snapshot("g1").rr == 0
    nothing = store.claim("c3", "g1", "", ["a1"], 5000)
    assert nothing.claimed == () and nothing.rr == 0
    assert store.snapshot("g1").rr == 0


def test_empty_wave_only_reads(store: StateStore) -> None:
    result = store.claim("c1", "g1", "", [], 5000)
    assert result.claimed == () and len(result.rows) == 15
    assert store.events(1)[0]["type"] == "config_changed"


def test_unknown_group(store: StateStore) -> None:
    with pytest.raises(UnknownGroup, match="NOGROUP group g9 is not configured"):
        store.claim("c1", "g9", "", ["a1"], 5000)
    with pytest.raises(UnknownGroup):
        store.snapshot("g9")


def test_expired_reservation_frees_the_agent(store: StateStore, client: redis.Redis) -> None:
    assert store.claim("c1", "g1", "", ["a1"], 150).claimed == ("a1",)
    assert store.claim("c2", "g1", "", ["a1"], 5000).claimed == ()
    time.sleep(0.2)
    result = store.claim("c3", "g1", "", ["a1"], 5000)
    assert result.claimed == ("a1",)
    assert row(result.rows, 0)[1] == 0  # swept before the rows were read
    assert client.zscore(store.keys.resv, "c1\x1fa1") is None
    assert store.agent_counters("a1")["resv"] == 1
    expired = [e for e in store.events(10) if e["type"] == "expired"]
    assert [(e["call"], e["agent"]) for e in expired] == [("c1", "a1")]
    check_invariants(client, TENANT)


def test_sweeps_are_bounded(redis_url: str, client: redis.Redis) -> None:
    with StateStore(redis_url, TENANT) as state:
        state.put_config(b"{}", [AgentLimits("big", 1000, status=AVAILABLE)], [("g", ["big"])])
        for i in range(100):
            state.claim(f"c{i}", "g", "", ["big"], 60_000)
        # Back-date every deadline rather than sleep: each claim would sweep the ones before.
        client.zadd(state.keys.resv, {f"c{i}\x1fbig": 1 for i in range(100)}, xx=True)
        state.snapshot("g")  # sweeps 64
        assert client.zcard(state.keys.resv) == 36
        assert state.sweep(10) == 10
        assert state.sweep() == 26
        assert state.sweep() == 0
        assert state.agent_counters("big")["resv"] == 0
        check_invariants(client, TENANT)


@pytest.mark.parametrize("ttl", [0, -5, 1.5, True])
def test_bad_ttl(store: StateStore, ttl: object) -> None:
    with pytest.raises(ValueError):
        store.claim("c1", "g1", "", ["a1"], ttl)  # type: ignore[arg-type]


def test_bad_wave_id(store: StateStore) -> None:
    with pytest.raises(ValueError, match="agent id"):
        store.claim("c1", "g1", "", ["a1", "a\x1f"], 5000)
    with pytest.raises(ValueError, match="agent id"):
        store.claim("c1", "g1", "", ["a1"], 5000, withdraw=["a\x1f"])
    # not a string (and not hashable): the same clear error, twice (nothing remembered)
    for _ in range(2):
        with pytest.raises(ValueError, match="agent id"):
            store.claim("c1", "g1", "", [["a1"]], 5000)  # type: ignore[list-item]
        with pytest.raises(ValueError, match="agent id"):
            store.claim("c1", "g1", "", ["a\x1f"], 5000)


# ARGV 1..6 of a claim: call, gid, caller, ttl, arrival, pick (7 sticky bounds, 8 W follow).
CLAIM_HEAD = ["c1", "g1", "", 100, 0, "first"]


@pytest.mark.parametrize(
    ("keys_tail", "args", "match"),
    [
        (
            ["{t:acme}:g:g2", "{t:acme}:call:c1"],
            ["c1", "g1", "", 100, 0, "first", "", 0],
            "group key",
        ),
        (
            ["{t:acme}:g:g1", "{t:acme}:call:c2"],
            ["c1", "g1", "", 100, 0, "first", "", 0],
            "call key",
        ),
        (
            ["{t:acme}:g:g1", "{t:acme}:call:c1"],
            ["c1", "g1", "", 0, 0, "first", "", 0],
            "reservation_ttl_ms",
        ),
        (
            ["{t:acme}:g:g1", "{t:acme}:call:c1"],
            ["c1", "g1", "", 100, "x", "first", "", 0],
            "arrival flag",
        ),
        (["{t:acme}:g:g1"], ["c1", "g1", "", 100, 0, "first", "", 0], "expected at least 24 keys"),
    ],
)
def test_library_refuses_malformed_claims(
    store: StateStore, client: redis.Redis, keys_tail: list, args: list, match: str
) -> None:
    keys = [*store.keys.base, *keys_tail]
    with pytest.raises(redis.ResponseError, match=f"^BADARG .*{match}"):
        client.fcall("disp_claim", len(keys), *keys, *args)


def test_rows_of_a_config_without_state(redis_url: str) -> None:
    with StateStore(redis_url, "other") as state:
        state.put_config(b"{}", AGENTS, GROUPS)
        snap = state.snapshot("g2")
        assert snap.rows == [0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 3, 0, 0]


def test_library_refuses_a_sticky_key_of_another_group(
    store: StateStore, client: redis.Redis
) -> None:
    days = sticky_days(int(time.time() * 1000), "UTC")
    keys = [*store.keys.base, store.keys.group("g1"), store.keys.call("c1")]
    keys += [store.keys.sticky("g1", days.days[0]), store.keys.sticky("g2", days.days[1])]
    keys.append(store.keys.sticky("g1", days.days[2]))
    bounds = ",".join(map(str, days.bounds))
    with pytest.raises(redis.ResponseError, match=r"^BADARG sticky key .* group g1"):
        client.fcall("disp_claim", len(keys), *keys, "c1", "g1", "+491", 100, 0, "first", bounds, 0)
    assert client.xlen(store.keys.events) == 1  # the config put's: nothing written


# -- withdraw -----------------------------------------------------------------------------


def released(store: StateStore, n: int) -> list[tuple[str, str, str]]:
    """(call, agent, reason) of the released events among the last n events."""
    return [
        (e["call"], e["agent"], e["reason"]) for e in store.events(n) if e["type"] == "released"
    ]


def test_withdraw_releases_only_this_calls_reservation(
    store: StateStore, client: redis.Redis
) -> None:
    assert store.claim("c1", "g2", "", ["a2", "a4"], 5000).claimed == ("a2", "a4")
    assert store.claim("c2", "g1", "", ["a2"], 5000).claimed == ("a2",)  # a2: max 2
    c2_deadline = client.zscore(store.keys.resv, "c2\x1fa2")
    c1_a4_deadline = client.zscore(store.keys.resv, "c1\x1fa4")
    assert store.agent_counters("a2")["resv"] == 2
    n_events = client.xlen(store.keys.events)

    result = store.claim("c1", "g2", "", [], 5000, withdraw=["a2"])
    assert result.claimed == ()
    # The rows are after the withdrawal: a2 keeps only c2's hold.
    assert [row(result.rows, i)[1] for i in range(3)] == [1, 0, 1]
    assert client.zscore(store.keys.resv, "c1\x1fa2") is None
    assert client.zscore(store.keys.resv, "c2\x1fa2") == c2_deadline
    assert client.zscore(store.keys.resv, "c1\x1fa4") == c1_a4_deadline
    assert store.agent_counters("a2")["resv"] == 1
    assert store.agent_counters("a4")["resv"] == 1
    assert client.smembers(store.keys.call("c1")) == {b"a4"}
    assert client.smembers(store.keys.call("c2")) == {b"a2"}
    assert client.xlen(store.keys.events) == n_events + 1
    event = store.events(1)[0]
    assert event | {"id": "", "ts": ""} == {
        "type": "released",
        "call": "c1",
        "agent": "a2",
        "group": "g2",
        "reason": "replanned",
        "id": "",
        "ts": "",
    }
    assert int(event["ts"]) == result.now_ms
    assert check_invariants(client, TENANT)["resv"] == 2


def test_withdrawn_agent_can_be_claimed_again_on_the_same_call(
    store: StateStore, client: redis.Redis
) -> None:
    assert store.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
    # Replanned: a1 given back, a2 taken instead; the rows show a1 free again.
    result = store.claim("c1", "g1", "", ["a2"], 5000, withdraw=["a1"])
    assert result.claimed == ("a2",)
    assert [row(result.rows, i)[1] for i in range(3)] == [0, 0, 0]
    assert client.smembers(store.keys.call("c1")) == {b"a2"}
    assert store.agent_counters("a1")["resv"] == 0
    # An offered agent is skipped by a later wave of the call; a withdrawn one is not.
    again = store.claim("c1", "g1", "", ["a1", "a2"], 5000)
    assert again.claimed == ("a1",)
    assert row(again.rows, 0)[1] == 0 and row(again.rows, 1)[1] == 1
    assert client.smembers(store.keys.call("c1")) == {b"a1", b"a2"}
    check_invariants(client, TENANT)

    # Withdrawn and claimed again by one claim: a fresh reservation, counted once.
    old_deadline = client.zscore(store.keys.resv, "c1\x1fa2")
    both = store.claim("c1", "g1", "", ["a2"], 9000, withdraw=["a2"])
    assert both.claimed == ("a2",)
    assert row(both.rows, 1)[1] == 0  # a2 free once withdrawn, before the new hold
    assert client.zscore(store.keys.resv, "c1\x1fa2") == both.now_ms + 9000 > old_deadline
    assert store.agent_counters("a2")["resv"] == 1
    assert [(e["type"], e["agent"], e.get("reason", "")) for e in store.events(2)] == [
        ("released", "a2", "replanned"),
        ("offered", "a2", ""),
    ]
    assert check_invariants(client, TENANT)["resv"] == 2


def test_withdraw_of_agents_not_reserved_is_harmless(
    store: StateStore, client: redis.Redis
) -> None:
    assert store.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
    assert store.claim("c2", "g2", "", ["a3"], 5000).claimed == ("a3",)
    before = {a: store.agent_counters(a) for a in ("a1", "a2", "a3", "a4")}
    resv_before = client.zrange(store.keys.resv, 0, -1, withscores=True)
    n_events = client.xlen(store.keys.events)

    # Never offered on c1 (a2), reserved by another call only (a3), not in the group (a4),
    # not configured at all (ghost).
    result = store.claim("c1", "g1", "", [], 5000, withdraw=["a2", "a3", "a4", "ghost"])
    assert result.claimed == ()
    assert [row(result.rows, i)[1] for i in range(3)] == [1, 0, 1]
    assert client.xlen(store.keys.events) == n_events
    assert client.zrange(store.keys.resv, 0, -1, withscores=True) == resv_before
    assert {a: store.agent_counters(a) for a in ("a1", "a2", "a3", "a4")} == before
    assert set(store.agent_counters("ghost").values()) == {None}
    assert client.smembers(store.keys.call("c1")) == {b"a1"}
    assert client.smembers(store.keys.call("c2")) == {b"a3"}
    check_invariants(client, TENANT)


def test_withdraw_never_drives_a_counter_below_zero(store: StateStore, client: redis.Redis) -> None:
    assert store.claim("c1", "g1", "", ["a1", "a2"], 5000).claimed == ("a1", "a2")
    # Twice in one claim, then again: released once.
    store.claim("c1", "g1", "", [], 5000, withdraw=["a1", "a1"])
    store.claim("c1", "g1", "", [], 5000, withdraw=["a1"])
    assert released(store, 10) == [("c1", "a1", "replanned")]
    assert store.agent_counters("a1")["resv"] == 0
    # Expired: the claim's sweep releases it first, the withdraw finds nothing.
    client.zadd(store.keys.resv, {"c1\x1fa2": 1}, xx=True)
    result = store.claim("c1", "g1", "", [], 5000, withdraw=["a2"])
    assert row(result.rows, 1)[1] == 0
    assert [(e["type"], e["agent"]) for e in store.events(1)] == [("expired", "a2")]
    assert store.agent_counters("a2")["resv"] == 0
    # Failed, then withdrawn: nothing left to release.
    assert store.claim("c1", "g1", "", ["a3"], 5000).claimed == ("a3",)
    assert store.failed("c1", "a3", "cancelled").released
    store.claim("c1", "g1", "", [], 5000, withdraw=["a3"])
    assert store.events(1)[0]["type"] == "failed"
    assert store.agent_counters("a3")["resv"] == 0
    assert check_invariants(client, TENANT) == dict.fromkeys(
        ("live", "resv", "reservations", "live_calls", "full"), 0
    )


def test_withdraw_of_an_agent_removed_from_the_config_drains_it(
    store: StateStore, client: redis.Redis
) -> None:
    assert store.claim("c1", "g2", "", ["a4"], 5000).claimed == ("a4",)
    store.put_config(b"{}", AGENTS[:3], (("g1", ("a1", "a2", "a3")), ("g2", ("a2", "a3"))))
    assert store.agent_counters("a4")["resv"] == 1  # drains
    store.claim("c1", "g2", "", [], 5000, withdraw=["a4"])
    assert released(store, 1) == [("c1", "a4", "replanned")]
    store.claim("c1", "g2", "", [], 5000, withdraw=["a4"])
    assert store.agent_counters("a4")["resv"] is None  # the last decrement deleted it
    assert not client.hexists(store.keys.agent["resv"], "a4")
    assert len(released(store, 10)) == 1
    check_invariants(client, TENANT)


def test_withdraw_keeps_an_agent_live_on_the_call(store: StateStore, client: redis.Redis) -> None:
    assert store.claim("c1", "g1", "", ["a2"], 5000).claimed == ("a2",)
    assert store.answered("c1", "g1", "a2") == "ok"
    n_events = client.xlen(store.keys.events)
    result = store.claim("c1", "g1", "", ["a2"], 5000, withdraw=["a2"])
    # No reservation to release, and the live leg stays on the call: not offered again,
    # and the call's release still ends it.
    assert result.claimed == ()
    assert client.xlen(store.keys.events) == n_events
    assert client.smembers(store.keys.call("c1")) == {b"a2"}
    assert store.agent_counters("a2")["live"] == 1
    assert store.release("c1") == 1
    assert store.agent_counters("a2")["live"] == 0
    assert check_invariants(client, TENANT)["live"] == 0


def test_withdrawing_the_cursor_agent_puts_the_rr_cursor_back(store: StateStore) -> None:
    assert store.claim("c0", "g1", "", ["a1"], 5000).claimed == ("a1",)
    assert store.snapshot("g1").rr == 0
    assert store.claim("c1", "g1", "", ["a2", "a3"], 5000).claimed == ("a2", "a3")
    assert store.snapshot("g1").rr == 2
    # a3 was a stale pick: never offered, so the rotation continues as if it was not taken
    result = store.claim("c1", "g1", "", [], 5000, withdraw=["a3"])
    assert result.claimed == () and result.rr == 0
    assert store.snapshot("g1").rr == 0
    # withdrawing an agent the cursor does not point at leaves the cursor alone
    moved = store.claim("c1", "g1", "", ["a3"], 5000, withdraw=["a2"])
    assert moved.claimed == ("a3",) and moved.rr == 0
    assert store.snapshot("g1").rr == 2


def test_argv_withdraw_count_splits_withdraw_from_wave(
    store: StateStore, client: redis.Redis
) -> None:
    assert store.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
    keys = [*store.keys.base, store.keys.group("g1"), store.keys.call("c1")]
    reply = client.fcall(
        "disp_claim", len(keys), *keys, "c1", "g1", "", 5000, 0, "first", "", 1, "a1", "a2"
    )
    assert reply[5] == [b"a2"]  # a1 was withdrawn, not part of the wave
    assert client.smembers(store.keys.call("c1")) == {b"a2"}
    reply = client.fcall(
        "disp_claim", len(keys), *keys, "c1", "g1", "", 5000, 0, "first", "", 2, "a2", "a3"
    )
    assert reply[5] == []  # every argument after the count withdrawn: empty wave
    assert released(store, 2) == [("c1", "a2", "replanned")]
    assert check_invariants(client, TENANT)["resv"] == 0


@pytest.mark.parametrize(
    ("tail", "match"),
    [
        ([], "withdraw count must be an integer >= 0, got nil"),
        (["-1", "a1"], "withdraw count must be an integer >= 0, got -1"),
        (["1.5", "a1"], "withdraw count must be an integer >= 0, got 1\\.5"),
        (["x", "a1"], "withdraw count must be an integer >= 0, got x"),
        (["", "a1"], "withdraw count must be an integer >= 0, got (?!\\S)"),  # empty
        (["nan", "a1"], "withdraw count must be an integer >= 0, got nan"),
        (["2", "a1"], "withdraw count 2 exceeds the arguments"),
        (["1"], "withdraw count 1 exceeds the arguments"),
        (["inf", "a1"], "withdraw count inf exceeds the arguments"),
    ],
)
def test_bad_withdraw_count_is_refused_before_any_write(
    store: StateStore, client: redis.Redis, tail: list, match: str
) -> None:
    assert store.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
    assert store.claim("c0", "g1", "", ["a2"], 5000).claimed == ("a2",)
    client.zadd(store.keys.resv, {"c0\x1fa2": 1}, xx=True)  # overdue: a claim would sweep it
    resv_before = client.zrange(store.keys.resv, 0, -1, withscores=True)
    counters_before = {a: store.agent_counters(a) for a in ("a1", "a2")}
    n_events = client.xlen(store.keys.events)
    keys = [*store.keys.base, store.keys.group("g1"), store.keys.call("c1")]
    with pytest.raises(redis.ResponseError, match=f"^BADARG {match}"):
        client.fcall("disp_claim", len(keys), *keys, "c1", "g1", "", 5000, 0, "first", "", *tail)
    assert client.zrange(store.keys.resv, 0, -1, withscores=True) == resv_before
    assert {a: store.agent_counters(a) for a in ("a1", "a2")} == counters_before
    assert client.xlen(store.keys.events) == n_events
    assert client.smembers(store.keys.call("c1")) == {b"a1"}
    check_invariants(client, TENANT)


# -- pick: the claim ranks the candidate waves on current counts ----------------------------


def test_pick_busy_takes_the_least_busy_candidate_wave(store: StateStore) -> None:
    assert store.claim("c0", "g1", "", ["a2"], 5000).claimed == ("a2",)  # a2: 1 of 2
    assert store.claim("c1", "g1", "", ["a2"], 5000, then=[["a1"]]).claimed == ("a2",)
    # least busy on Redis' counts, though the worker ranked a2 first
    assert store.claim("c2", "g1", "", ["a2"], 5000, then=[["a1"]], pick="busy").claimed == ("a1",)
    # a tie (a3 and nobody else free) goes to the earlier wave; full agents are skipped
    result = store.claim("c3", "g1", "", ["a1"], 5000, then=[["a3"], ["a2"]], pick="busy")
    assert result.claimed == ("a3",)


def test_pick_idle_takes_the_longest_idle_and_ties_go_to_the_earlier_wave(
    store: StateStore, client: redis.Redis
) -> None:
    client.hset(store.keys.base[11], mapping={"a1": 10, "a2": 5, "a3": 5})
    assert store.claim(
        "c1", "g1", "", ["a1"], 5000, then=[["a3"], ["a2"]], pick="idle"
    ).claimed == ("a3",)
    assert store.claim("c2", "g1", "", ["a1"], 5000, then=[["a2"]], pick="idle").claimed == ("a2",)


def test_a_bad_pick_is_refused_before_any_write(store: StateStore, client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="pick must be one of"):
        store.claim("c1", "g1", "", ["a1"], 5000, pick="worst")
    keys = [*store.keys.base, store.keys.group("g1"), store.keys.call("c1")]
    with pytest.raises(redis.ResponseError, match=r"^BADARG pick must be 'first'"):
        client.fcall("disp_claim", len(keys), *keys, "c1", "g1", "", 5000, 1, "worst", "", 0, "a1")
    assert client.xlen(store.keys.events) == 1  # the config put's, no arrived/offered
    assert check_invariants(client, TENANT)["resv"] == 0
