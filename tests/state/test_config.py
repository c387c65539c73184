"""disp_config_put through StateStore.put_config."""

from __future__ import annotations

import pytest
import redis
from state_support import AGENTS, GROUPS, TENANT, check_invariants

from dispatcher.state import (
    AVAILABLE,
    LOGGED_OUT,
    PAUSED,
    AgentLimits,
    ConfigConflict,
    InvalidArgument,
    StateStore,
)

pytestmark = pytest.mark.redis


def test_first_put_is_version_1_and_bumps(store: StateStore, client: redis.Redis) -> None:
    assert store.config_version() == 1
    assert store.config_doc() == b'{"tenant": "acme"}'
    assert store.config() == (1, b'{"tenant": "acme"}')
    assert store.tenant == TENANT
    assert store.put_config(b"{}", AGENTS, GROUPS) == 2
    assert store.put_config(b"{}", AGENTS, GROUPS, expected_version=2) == 3
    config = client.hgetall(store.keys.config)
    assert config[b"groups"] == b"g1,g2"
    assert config[b"events_maxlen"] == b"1000000"
    assert client.hgetall(store.keys.group("g2")) == {b"members": b"a2,a3,a4", b"rr": b"-1"}
    changes = [e for e in store.events(10) if e["type"] == "config_changed"]
    assert [e["version"] for e in changes] == ["1", "2", "3"]


def test_empty_redis_reads_version_0(redis_url: str) -> None:
    with StateStore(redis_url, TENANT) as state:
        assert state.config_version() == 0
        assert state.config_doc() is None
        assert state.config() == (0, None)
        assert state.put_config(b"x", [], [], expected_version=0) == 1


def test_stale_expected_version_conflicts(store: StateStore) -> None:
    with pytest.raises(ConfigConflict, match="config version is 1, expected 0") as info:
        store.put_config(b"new", AGENTS, GROUPS, expected_version=0)
    assert info.value.code == "CONFLICT"
    assert "script:" not in str(info.value)
    assert store.config_version() == 1
    assert store.config_doc() == b'{"tenant": "acme"}'


def test_without_expected_version_retries_a_conflict(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = StateStore(store.url, TENANT)
    real_fcall = store._fcall
    calls = []

    def racing_fcall(function, keys, args):  # another writer gets in before each first try
        calls.append(function)
        if len(calls) == 1:
            other.put_config(b"other", AGENTS, GROUPS)
        return real_fcall(function, keys, args)

    monkeypatch.setattr(store, "_fcall", racing_fcall)
    assert store.put_config(b"mine", AGENTS, GROUPS) == 3
    assert calls == ["disp_config_put", "disp_config_put"]
    assert store.config_doc() == b"mine"
    other.close()


def test_existing_agents_keep_their_state(store: StateStore) -> None:
    store.set_state("a1", PAUSED, "lunch")
    changed = [
        AgentLimits("a1", max_calls=4, wrapup_s=7, auto_pause_after=3, status=AVAILABLE),
        AgentLimits("a5", max_calls=1, status=PAUSED, reason="new hire"),
    ]
    store.put_config(b"{}", changed, [("g1", ["a1", "a5"])])
    a1 = store.agent_counters("a1")
    assert (a1["status"], a1["reason"]) == (PAUSED, "lunch")
    assert (a1["max"], a1["wrapup"], a1["autopause"]) == (4, 7, 3)
    a5 = store.agent_counters("a5")
    assert (a5["status"], a5["reason"], a5["max"]) == (PAUSED, "new hire", 1)


def test_removed_agent_keeps_busy_counters_until_they_drain(
    store: StateStore, client: redis.Redis
) -> None:
    store.claim("c1", "g2", "", ["a4"], 60_000)
    store.answered("c1", "g2", "a4")
    store.claim("c2", "g2", "", ["a4"], 60_000)
    store.put_config(b"{}", AGENTS[:3], [("g1", ["a1", "a2", "a3"])])
    a4 = store.agent_counters("a4")
    assert a4 == dict.fromkeys(a4, None) | {"live": 1, "resv": 1}
    check_invariants(client, TENANT)
    store.release("c1")
    store.release("c2")
    assert store.agent_counters("a4") == dict.fromkeys(a4, None)


def test_removed_idle_agent_leaves_nothing(store: StateStore, client: redis.Redis) -> None:
    store.claim("c1", "g1", "", ["a1"], 60_000)
    store.release("c1")  # a1's counters are now 0
    store.put_config(b"{}", AGENTS[1:], [("g2", ["a2", "a3", "a4"])])
    for key in store.keys.agent.values():
        assert not client.hexists(key, "a1")


def test_dropped_group_is_deleted(store: StateStore, client: redis.Redis) -> None:
    store.put_config(b"{}", AGENTS, [("g2", ["a2", "a3", "a4"]), ("g3", ["a1"])])
    assert not client.exists(store.keys.group("g1"))
    assert client.hget(store.keys.config, "groups") == b"g2,g3"
    assert client.hget(store.keys.group("g3"), "members") == b"a1"


def test_rr_follows_the_agent_it_pointed_at(store: StateStore, client: redis.Redis) -> None:
    store.claim("c1", "g1", "", ["a2"], 60_000)
    assert client.hget(store.keys.group("g1"), "rr") == b"1"
    store.put_config(b"{}", AGENTS, [("g1", ["a3", "a1", "a2"]), GROUPS[1]])
    assert client.hget(store.keys.group("g1"), "rr") == b"2"
    store.put_config(b"{}", AGENTS, [("g1", ["a3", "a1"]), GROUPS[1]])
    assert client.hget(store.keys.group("g1"), "rr") == b"-1"


def test_events_maxlen_trims_the_stream(store: StateStore, client: redis.Redis) -> None:
    store.put_config(b"{}", AGENTS, GROUPS, events_maxlen=10)
    for i in range(300):
        store.set_state("a1", i % 2)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): near, not exact.
    assert client.xlen(store.keys.events) <= 10 + 100


@pytest.mark.parametrize(
    ("agents", "groups", "match"),
    [
        ([AgentLimits("a1", 1), AgentLimits("a1", 2)], [], "duplicate agent"),
        ([AgentLimits("a 1", 1)], [], "agent id"),
        ([AgentLimits("a1", -1)], [], "max_calls"),
        ([AgentLimits("a1", 1, status=3)], [], "status"),
        ([AgentLimits("a1", 1)], [("g1", ["a2"])], "not a configured agent"),
        ([AgentLimits("a1", 1)], [("g1", ["a1", "a1"])], "listed twice"),
        ([AgentLimits("a1", 1)], [("g1", ["a1"]), ("g1", [])], "duplicate group"),
        ([AgentLimits("a1", 1)], [("g:1", ["a1"])], "group id"),
    ],
)
def test_invalid_config_is_refused_before_redis(
    store: StateStore, agents: list, groups: list, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        store.put_config(b"{}", agents, groups)
    assert store.config_version() == 1


def fcall_put(client: redis.Redis, store: StateStore, keys: list[str], args: list) -> object:
    return client.fcall("disp_config_put", len(keys), *keys, *args)


@pytest.mark.parametrize(
    ("extra_keys", "args", "match"),
    [
        ([], [1, "{}", 100, 1, 0], "expected 11 arguments"),
        ([], ["x", "{}", 100, 0, 0], "expected_version must be an integer"),
        ([], [1, "{}", 0, 0, 0], "events_maxlen"),
        ([], [1, "{}", 100, 1, 0, "a1", "1", "0", "0", "7", ""], "status of a1"),
        ([], [1, "{}", 100, 2, 0, "a1", 1, 0, 0, 0, "", "a1", 1, 0, 0, 0, ""], "duplicate agent"),
        (["{t:acme}:g:other"], [1, "{}", 100, 0, 1, "g1", "", 0], "does not belong to group g1"),
        (["{t:acme}:g:g1"], [1, "{}", 100, 0, 1, "g1", "a9", 0], "member a9 unknown"),
        # g2 is in the current config and dropped: its key must be passed.
        (["{t:acme}:g:g1"], [1, "{}", 100, 0, 1, "g1", "", 0], "dropped group g2"),
        (["{t:acme}:g:g1"], [1, "{}", 100, 0, 1, "g1", "", -1], "queue max length of g1"),
    ],
)
def test_library_refuses_malformed_puts(
    store: StateStore, client: redis.Redis, extra_keys: list, args: list, match: str
) -> None:
    keys = [*store.keys.base, *extra_keys]
    with pytest.raises(redis.ResponseError, match=f"^BADARG .*{match}"):
        fcall_put(client, store, keys, args)
    assert store.config_version() == 1


def test_badarg_maps_to_invalid_argument(store: StateStore) -> None:
    with pytest.raises(InvalidArgument, match="BADARG"):
        store._fcall("disp_config_put", store.keys.base, [1, "{}", 100, 1, 0])


def test_new_agent_default_status_is_logged_out(store: StateStore) -> None:
    store.put_config(b"{}", [*AGENTS, AgentLimits("a9", 1)], GROUPS)
    assert store.agent_counters("a9")["status"] == LOGGED_OUT
