"""Audit events of config puts and state changes, API tokens (disp_token_set), the tenant list
and the atomic live read."""

from __future__ import annotations

import pytest
import redis
from state_support import AGENTS, GROUPS, TENANT

from dispatcher.state import AVAILABLE, PAUSED, InvalidArgument, StateStore, UnknownAgent
from dispatcher.state.keys import TENANTS_KEY

pytestmark = pytest.mark.redis

AUDIT = {"actor": "token:abc", "action": "group.put", "object": "group:g1", "detail": "x"}


def test_config_put_appends_the_audit_event_in_the_same_call(store: StateStore) -> None:
    version = store.put_config(b"{}", AGENTS, GROUPS, audit=AUDIT)
    changed, audit = store.events(2)
    assert changed["type"] == "config_changed" and changed["version"] == str(version)
    assert {k: v for k, v in audit.items() if k not in ("id", "ts")} == {
        "type": "audit",
        **AUDIT,
        "version": str(version),
    }


def test_without_audit_there_is_no_audit_event(store: StateStore) -> None:
    store.put_config(b"{}", AGENTS, GROUPS)
    assert [e["type"] for e in store.events(10)] == ["config_changed", "config_changed"]


@pytest.mark.parametrize("audit", [b"not json", b"[1, 2]", b'{"actor": 7}'])
def test_malformed_audit_changes_nothing(
    store: StateStore, client: redis.Redis, audit: bytes
) -> None:
    keys, args = [*store.keys.base], [1, b"new", 100, 0, 0, audit]
    before = client.hgetall(store.keys.config)
    with pytest.raises(InvalidArgument, match="audit"):
        store._fcall("disp_config_put", keys, args)
    assert client.hgetall(store.keys.config) == before
    with pytest.raises(InvalidArgument, match="audit"):
        store._fcall("disp_set_state", store.keys.base, ["a1", PAUSED, "", audit])
    assert store.agent_counters("a1")["status"] == AVAILABLE


def test_events_maxlen_up_to_int64_max_is_kept_exactly(
    store: StateStore, client: redis.Redis
) -> None:
    # tonumber() would make 2**63-1 a float that XADD refuses, after the other writes.
    assert store.put_config(b"big", AGENTS, GROUPS, events_maxlen=2**63 - 1) == 2
    assert client.hget(store.keys.config, "events_maxlen") == b"9223372036854775807"
    assert store.events(1)[0]["type"] == "config_changed"
    with pytest.raises(InvalidArgument, match="events_maxlen"):
        store._fcall("disp_config_put", store.keys.base, [2, b"x", "9223372036854775808", 0, 0])
    assert store.config_version() == 2


def test_set_state_with_audit_names_the_actor(store: StateStore) -> None:
    audit = {"actor": "cli:ops", "action": "agent.pause", "object": "agent:a1", "detail": "lunch"}
    assert store.set_state("a1", PAUSED, "lunch", audit) == AVAILABLE
    changed, logged = store.events(2)
    assert (changed["type"], changed["agent"], changed["actor"]) == (
        "state_changed",
        "a1",
        "cli:ops",
    )
    assert (logged["type"], logged["action"], logged["status"], logged["reason"]) == (
        "audit",
        "agent.pause",
        "1",
        "lunch",
    )
    # a repeated request changes no state but is still an admin action on record
    store.set_state("a1", PAUSED, "lunch", audit)
    assert [e["type"] for e in store.events(3)] == ["state_changed", "audit", "audit"]
    with pytest.raises(UnknownAgent):
        store.set_state("ghost", AVAILABLE, "", audit)


def test_tokens_are_set_and_revoked_with_audit(store: StateStore, client: redis.Redis) -> None:
    audit = {"actor": "bootstrap", "action": "token.create", "object": "token:t1"}
    assert store.set_token("t1", b'{"role": "admin"}', audit) is True
    assert store.tokens() == {"t1": b'{"role": "admin"}'}
    assert client.hgetall("{t:acme}:tokens") == {b"t1": b'{"role": "admin"}'}
    assert store.events(1)[0]["action"] == "token.create"
    revoke = {"actor": "bootstrap", "action": "token.revoke", "object": "token:t1"}
    assert store.set_token("t1", None, revoke) is True
    assert store.set_token("t1", None, revoke) is False  # nothing changed: no event
    assert store.tokens() == {}
    assert [e.get("action") for e in store.events(2)] == ["token.create", "token.revoke"]
    with pytest.raises(InvalidArgument, match="not the tokens key"):
        store._fcall("disp_token_set", [*store.keys.base, "{t:acme}:other"], ["t1", "x"])


def test_every_put_registers_the_tenant(store: StateStore, client: redis.Redis) -> None:
    assert client.smembers(TENANTS_KEY) == {TENANT.encode()}
    with StateStore(store.url, "beta") as other:
        other.put_config(b"{}", [], [])
        assert other.registered_tenants() == ["acme", "beta"]


def test_live_reads_counters_and_calls_at_one_instant(store: StateStore) -> None:
    store.claim("c1", "g1", "", ["a1"], 10_000)
    store.answered("c1", "g1", "a1")
    store.claim("c2", "g2", "", ["a4"], 10_000)
    store.set_state("a2", PAUSED, "coffee")
    live = store.live()
    assert live.version == 1 and live.doc == b'{"tenant": "acme"}'
    assert sorted(live.agents) == ["a1", "a2", "a3", "a4"]
    a1, a2, a4 = live.agents["a1"], live.agents["a2"], live.agents["a4"]
    assert (a1.live, a1.activity(live.now_ms)) == (1, "on_call")
    assert (a2.status_name, a2.reason, a2.activity(live.now_ms)) == ("paused", "coffee", "paused")
    assert (a4.resv, a4.max_calls, a4.activity(live.now_ms)) == (1, 3, "ringing")
    assert live.calls == {"g1": 1}
    assert live.oldest_call_ms["g1"] <= live.now_ms
    store.release("c1")
    after = store.live()
    assert after.calls == {} and after.agents["a1"].activity(after.now_ms) == "available"
