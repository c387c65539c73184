"""answered_later / release_later: sent at once, replies read before the next FCALL's."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from redis_support import command_calls
from state_support import AGENTS, GROUPS, TENANT, check_invariants

from dispatcher.run.procs import RedisProcess
from dispatcher.state import AnswerOutcome, StateStore, StateUnavailable
from dispatcher.state.store import MAX_DEFERRED

pytestmark = pytest.mark.redis


class Reports:
    """Collects what a store hands to its callbacks."""

    def __init__(self, store: StateStore) -> None:
        self.outcomes: list[AnswerOutcome] = []
        self.errors: list[tuple[str, Exception]] = []
        store.deferred_error = lambda function, exc: self.errors.append((function, exc))


def due(store: StateStore) -> int:
    """Deferred FCALLs whose replies are not read yet, on every connection of the store."""
    return sum(len(channel.pending) for channel in store._link.every_channel())


def fcalls(client: redis.Redis) -> int:
    return command_calls(client, "fcall")


@contextlib.contextmanager
def configured_store(own_redis: RedisProcess) -> Iterator[tuple[StateStore, Reports]]:
    """A store on `own_redis` with short timeouts, the config put, and its Reports."""
    with StateStore(own_redis.url, TENANT, socket_timeout=0.3, connect_timeout=0.3) as state:
        seen = Reports(state)
        state.put_config(b"{}", AGENTS, GROUPS)
        yield state, seen


def replied_release(state: StateStore, own_redis: RedisProcess) -> int:
    """A release_later of "c1" that Redis has run and replied to (its reply is due); the
    server's pid."""
    state.release_later("c1")
    time.sleep(0.1)
    assert own_redis.proc is not None
    return own_redis.proc.pid


def test_replies_are_read_before_the_next_fcall_and_nothing_waits(
    store: StateStore, client: redis.Redis
) -> None:
    seen = Reports(store)
    store.claim("c1", "g1", "", ["a1"], 5000)
    store.answered_later("c1", "g1", "a1", done=seen.outcomes.append)
    store.answered_later("c1", "g1", "a1", done=seen.outcomes.append)  # a repeat: dup
    # the first reply is read when the second call goes out, if it has come by then ...
    assert seen.outcomes in ([], [AnswerOutcome.OK])
    assert store.agent_counters("a1")["live"] == 1  # ... but done (another connection reads)
    store.release_later("c1", outcome="answered")
    assert store.claim("c2", "g1", "", ["a2"], 5000).claimed == ("a2",)
    assert seen.outcomes == [AnswerOutcome.OK, AnswerOutcome.DUP]
    assert seen.errors == []
    assert not store.agent_counters("a1")["live"]
    # Redis ran them in the order they were sent (the dup emits nothing)
    assert [e["type"] for e in store.events(4)] == ["answered", "released", "ended", "offered"]
    store.release("c2")
    assert check_invariants(client, TENANT)["resv"] == 0


def test_an_answer_recorded_after_its_calls_release_is_refused(
    store: StateStore, client: redis.Redis
) -> None:
    store.claim("c1", "g1", "", ["a1"], 5000)
    store.release("c1", outcome="abandoned")  # another worker's release came first
    assert store.answered("c1", "g1", "a1") is AnswerOutcome.ENDED
    assert not store.agent_counters("a1")["live"]
    assert check_invariants(client, TENANT) == dict.fromkeys(
        ("live", "resv", "reservations", "live_calls", "full"), 0
    )


def test_error_replies_go_to_the_callback_and_the_connection_stays(
    store: StateStore, client: redis.Redis
) -> None:
    seen = Reports(store)
    store.put_config(b"{}", [a for a in AGENTS if a.id != "a3"], GROUPS[:0])
    store.answered_later("c1", "nogroup-but-fine", "a1", done=seen.outcomes.append)
    store.release_later("c1")
    store.flush()
    assert seen.outcomes == [AnswerOutcome.LATE]
    assert seen.errors == []
    client.function_delete("dispatcher")  # a restart that lost the library, say
    store.release_later("c2")
    store.flush()
    assert [function for function, _ in seen.errors] == ["disp_release"]
    assert "Function not found" in str(seen.errors[0][1])
    assert store.release("c3") == 0  # the sync call reloads and goes on


def test_at_most_max_deferred_wait(own_redis: RedisProcess) -> None:
    with configured_store(own_redis) as (state, seen):
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)  # frozen: no reply comes, all stay due
        try:
            for i in range(MAX_DEFERRED - 1):
                state.release_later(f"c{i}")
            assert due(state) == MAX_DEFERRED - 1
            with pytest.raises(StateUnavailable):
                state.release_later("last")  # the bound: now the store waits for them
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert due(state) == 0
        assert [function for function, _ in seen.errors] == ["disp_release"] * MAX_DEFERRED


def test_a_deferred_call_is_never_sent_into_a_connection_the_server_closed(
    own_redis: RedisProcess,
) -> None:
    """A deferred call sent into a dead TCP connection would be lost unseen (the write is
    taken after the peer closed): its agent busy until a sweep. It fails where it is made."""
    with configured_store(own_redis) as (state, seen):
        pid = replied_release(state, own_redis)
        os.kill(pid, signal.SIGKILL)  # a master killed, say
        own_redis.stop()
        with pytest.raises(StateUnavailable):
            state.release_later("c2")
        assert seen.errors == []  # c1's reply had come: read, not lost


def test_calls_due_on_a_lost_connection_are_reported(own_redis: RedisProcess) -> None:
    with configured_store(own_redis) as (state, seen):
        pid = replied_release(state, own_redis)
        os.kill(pid, signal.SIGSTOP)  # frozen: the reply never comes
        state.release_later("c2")  # sent into the socket buffer
        with pytest.raises(StateUnavailable):
            state.config_version()  # another connection: times out
        with pytest.raises(StateUnavailable):
            state.release("c3")  # reads c2's reply (c1's was read as c2 went): times out
        assert [function for function, _ in seen.errors] == ["disp_release"]
        assert isinstance(seen.errors[0][1], StateUnavailable)
        os.kill(pid, signal.SIGCONT)
        assert state.release("c4") == 0  # a new connection
        assert len(seen.errors) == 1
