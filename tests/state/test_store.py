"""StateStore plumbing: library loading, error mapping, Redis restarts and outages."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis_support import library_names
from state_support import AGENTS, GROUPS, TENANT, check_invariants

from dispatcher.run.procs import RedisProcess, free_port
from dispatcher.state import (
    StateError,
    StateStore,
    StateUnavailable,
    UnknownGroup,
)
from dispatcher.state.connect import sync_client
from dispatcher.state.store import LIBRARY_SOURCE

pytestmark = pytest.mark.redis


def test_every_function_has_a_header() -> None:
    names = re.findall(r"register_function\('(disp_\w+)', (\w+)\)", LIBRARY_SOURCE)
    # the 6 call functions + tokens, 3 queue, 4 voicemail and prompts, registrations, names,
    # credentials, tenant delete, node heartbeat
    assert len(names) == 21
    for name, local in names:
        header = LIBRARY_SOURCE.split(f"local function {local}(")[0].rsplit("\n\n", 1)[1]
        assert header.startswith(f"-- {name}:"), name
        for part in ("KEYS:", "ARGV:", "Returns:", "Errors:"):
            assert f"-- {part}" in header, f"{name} header lacks {part}"


def test_library_is_loaded_on_first_use(redis_url: str, client: redis.Redis) -> None:
    client.function_flush()  # FLUSHALL between tests keeps functions
    assert all(names == [] for names in library_names(client))
    with StateStore(redis_url, TENANT) as state:
        state.put_config(b"{}", AGENTS, GROUPS)
    assert all(names == [b"dispatcher"] for names in library_names(client))  # every primary


def test_missing_library_is_reloaded(store: StateStore, client: redis.Redis) -> None:
    client.function_delete("dispatcher")
    assert store.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
    client.function_delete("dispatcher")
    store.release("c1")
    check_invariants(client, TENANT)
    assert check_invariants(client, TENANT)["resv"] == 0


def test_other_redis_errors_are_state_errors(store: StateStore, client: redis.Redis) -> None:
    client.delete(store.keys.resv)
    client.set(store.keys.resv, "not a zset")
    with pytest.raises(StateError, match="WRONGTYPE") as info:
        store.claim("c1", "g1", "", ["a1"], 5000)
    assert type(info.value) is StateError and info.value.code == ""


def run_mixed_ops(state: StateStore, start: int, n: int) -> None:
    for i in range(start, start + n):
        call = f"call-{i}"
        claimed = state.claim(call, "g1" if i % 2 else "g2", "", ["a2", "a3", "a4"], 5000)
        if claimed.claimed:
            state.answered(call, "g1" if i % 2 else "g2", claimed.claimed[0])
        state.release(call)


def test_restart_mid_run_reloads_and_goes_on(own_redis: RedisProcess) -> None:
    with StateStore(own_redis.url, TENANT) as state, sync_client(own_redis.url) as raw:
        state.put_config(b"{}", AGENTS, GROUPS)
        run_mixed_ops(state, 0, 20)
        state.claim("talking", "g1", "", ["a1"], 5000)
        state.answered("talking", "g1", "a1")
        state.claim("ringing", "g2", "", ["a4"], 5000)
        own_redis.restart()  # empty memory: no library, no config, no counters

        # The store's pooled connection died with the server; the next call reconnects,
        # finds the function missing, reloads the library and reaches the (empty) state.
        with pytest.raises(UnknownGroup):
            state.claim("call-x", "g1", "", ["a1"], 5000)
        assert library_names(raw) == [[b"dispatcher"]]
        assert state.put_config(b"{}", AGENTS, GROUPS) == 1
        # Calls from before the restart end without driving any counter below zero.
        assert state.release("talking") == 0
        assert state.failed("ringing", "a4", "noanswer").released is False
        assert state.release("ringing") == 0
        run_mixed_ops(state, 20, 20)
        assert check_invariants(raw, TENANT) == dict.fromkeys(
            ("live", "resv", "reservations", "live_calls", "full"), 0
        )


def every_call(state: StateStore) -> list[tuple[str, Callable[[], object]]]:
    return [
        ("put_config", lambda: state.put_config(b"{}", AGENTS, GROUPS)),
        ("config_version", state.config_version),
        ("config_doc", state.config_doc),
        ("config", state.config),
        ("claim", lambda: state.claim("c1", "g1", "", ["a1"], 5000)),
        ("answered", lambda: state.answered("c1", "g1", "a1")),
        ("failed", lambda: state.failed("c1", "a1", "busy")),
        ("release", lambda: state.release("c1")),
        ("set_state", lambda: state.set_state("a1", 0)),
        ("snapshot", lambda: state.snapshot("g1")),
        ("sweep", state.sweep),
        ("agent_counters", lambda: state.agent_counters("a1")),
        ("events", lambda: state.events(5)),
        ("load_library", state.load_library),
    ]


def test_stopped_redis_fails_fast(own_redis: RedisProcess) -> None:
    with StateStore(own_redis.url, TENANT) as state:
        state.put_config(b"{}", AGENTS, GROUPS)
        own_redis.stop()
        for name, call in every_call(state):
            started = time.monotonic()
            with pytest.raises(StateUnavailable) as info:
                call()
            assert time.monotonic() - started < 2, name
            assert own_redis.url in str(info.value) and "0.5s" in str(info.value)
            assert info.value.url == own_redis.url and info.value.timeout == 0.5
            assert isinstance(info.value.__cause__, redis.ConnectionError)

        own_redis.start()
        state.put_config(b"{}", AGENTS, GROUPS)
        assert state.claim("c2", "g1", "", ["a1"], 5000).claimed == ("a1",)


def test_frozen_redis_times_out(own_redis: RedisProcess) -> None:
    with StateStore(own_redis.url, TENANT, socket_timeout=0.3, connect_timeout=0.3) as state:
        state.put_config(b"{}", AGENTS, GROUPS)
        assert own_redis.proc is not None
        # SIGSTOP: the kernel still accepts connections, the server never answers.
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            for name in ("claim", "snapshot", "config_version"):
                call = dict(every_call(state))[name]
                started = time.monotonic()
                with pytest.raises(StateUnavailable, match=r"timeout 0\.3s"):
                    call()
                assert time.monotonic() - started < 2, name
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert state.snapshot("g1").version == 1


def test_unavailable_message_hides_the_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    with StateStore(url, TENANT) as state:
        assert "s3cret" not in repr(state)
        with pytest.raises(StateUnavailable) as info:
            state.config_version()
    assert "s3cret" not in str(info.value)
    assert "user:***@127.0.0.1" in str(info.value)


def test_a_store_over_the_unix_socket(tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    try:
        with RedisProcess(short, unix_socket=True) as server:
            assert server.unix_url.startswith("unix://")
            with StateStore(server.unix_url, TENANT) as state:
                state.put_config(b"{}", AGENTS, GROUPS)
                assert state.claim("c1", "g1", "", ["a1"], 5000).claimed == ("a1",)
                assert state.release("c1") == 0
        with (
            pytest.raises(StateUnavailable, match="unavailable"),
            StateStore(server.unix_url, TENANT) as state,
        ):
            state.config_version()
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_a_unix_socket_path_too_long_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unix socket path too long"):
        RedisProcess(tmp_path / ("x" * 120), unix_socket=True)
    with pytest.raises(ValueError, match="TCP only"):
        _ = RedisProcess(tmp_path).unix_url


def test_a_late_unpause_never_undoes_a_logout(redis_url: str) -> None:
    """Unpause and logout race (two clients, 100 rounds): an unpause applies only to a
    paused agent, checked inside the FUNCTION, so whichever comes first the agent ends
    logged out - without the check, an unpause after the logout would log it back in."""
    import threading

    from dispatcher.state import AVAILABLE, LOGGED_OUT, PAUSED
    from dispatcher.state.errors import StateChanged

    def race(barrier: threading.Barrier, action: Callable[[], object]) -> None:
        barrier.wait()
        with contextlib.suppress(StateChanged):
            action()

    with StateStore(redis_url, TENANT) as first, StateStore(redis_url, TENANT) as second:
        first.put_config(b"{}", AGENTS, GROUPS)
        for _ in range(100):
            first.set_state("a1", PAUSED, "lunch")
            barrier = threading.Barrier(2)
            actions = (
                lambda: first.set_state("a1", AVAILABLE, expected=(PAUSED,)),
                lambda: second.set_state("a1", LOGGED_OUT),
            )
            threads = [threading.Thread(target=race, args=(barrier, a)) for a in actions]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert first.agent_counters("a1")["status"] == LOGGED_OUT
        with pytest.raises(StateChanged, match="a1 is logged out, not paused"):
            first.set_state("a1", AVAILABLE, expected=(PAUSED,))
        with pytest.raises(StateChanged, match="not available or paused"):
            first.set_state("a1", PAUSED, "coffee", expected=(AVAILABLE, PAUSED))


def test_stale_calls_of_many_tenants_are_read_in_one_round_trip(redis_url: str) -> None:
    """The backstop's slice: the calls older than the max age of each tenant that has any,
    with one TIME for all of them, like `stale_calls` tenant by tenant."""
    with StateStore(redis_url, "acme") as acme:
        stores = [acme, *(acme.for_tenant(t) for t in ("beta", "gamma"))]
        for store in stores:
            store.put_config(b"{}", AGENTS, GROUPS)
        for store in stores[:2]:
            assert store.claim("c1", "g1", "", ["a1"], 60_000).claimed == ("a1",)
            store.answered("c1", "g1", "a1")
        time.sleep(0.01)
        tenants = ["acme", "beta", "gamma", "nobody"]
        assert acme.stale_calls_of(tenants, 0) == {"acme": ["c1"], "beta": ["c1"]}
        assert acme.stale_calls_of(tenants, 60_000) == {}
        assert acme.stale_calls_of([], 0) == {}
        for store in stores:
            assert acme.stale_calls_of([store.tenant], 0) == (
                {store.tenant: store.stale_calls(0)} if store.stale_calls(0) else {}
            )
