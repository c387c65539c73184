"""Child processes the project starts itself: redis-server (alone, as a Sentinel-watched
master with a replica, or as a Cluster) and the admin API (kamailio and sipp are in
dispatcher.run.sipprocs).

Used by the test fixtures and by `make run`, so both start servers the same way:
on a free loopback port, in a folder of their own, stopped on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Self

import redis

from dispatcher.run.faketime import MovableClock, server_env


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """Return a loopback port that is free right now (TCP by default)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessError(RuntimeError):
    """A child server did not start or stopped unexpectedly."""


class _Started:
    """Started on entry, stopped on exit, as a context manager."""

    def start(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ServerProcess(_Started):
    """A child server on 127.0.0.1:`port` with its files (log included) in `workdir`.

    A subclass's `start` launches `self.proc` and calls `_wait_ready`; stopping, and use as
    a context manager (started on entry, stopped on exit), are shared.
    """

    name: ClassVar[str]  # how errors name the server
    log_name: ClassVar[str]  # its log file in `workdir`
    poll_interval: ClassVar[float] = 0.1  # seconds between readiness checks while starting

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once the server answers."""
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> None:
        """Wait until `_ready`; ProcessError when the server exits first or does not answer
        within `timeout` seconds (then it is stopped)."""
        assert self.proc is not None, "start the process first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProcessError(f"{self.name} exited; see {self.log_path}")
            if self._ready():
                return
            time.sleep(self.poll_interval)
        self.stop()
        raise ProcessError(f"{self.name} did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); harmless if stopped."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """kill -9: the server dies at once, as in a crash (nothing flushed, no goodbye)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RedisProcess(_ServerProcess):
    """A redis-server on 127.0.0.1:`port` with its files in `workdir`.

    Persistence is off: the dispatcher's state is rebuilt from the tenant
    config, and a restart test wants an empty server, like a crashed one.
    With `unix_socket` it also listens on the unix socket `socket_path` (`unix_url`): a
    Kamailio on the same host spends less CPU per round trip there than on loopback TCP.
    The path must fit a socket address (107 bytes): keep `workdir` short.
    With `movable_clock` it runs under libfaketime with a clock the caller moves
    (`clock.shift(seconds)`): Redis' TIME and its key expiry follow at once, which is how a
    test reaches "tomorrow" for a server that decides by its own clock. Under libfaketime
    (that one, or `make test`'s year-ahead run) it starts with the allocator shim of
    `dispatcher.run.faketime`. `options` are more redis-server options (a replica's
    `--replicaof`, a Cluster node's `--cluster-enabled yes`, ...). `wrapper` is a command
    the server runs under (a benchmark's `valgrind --tool=callgrind ...`).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        unix_socket: bool = False,
        movable_clock: bool = False,
        durable: bool = False,
        options: Sequence[str] = (),
        wrapper: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, port)
        self.unix_socket = unix_socket
        self.durable = durable
        self.options = tuple(options)
        self.wrapper = tuple(wrapper)
        if unix_socket and len(os.fsencode(self.socket_path)) > 107:
            raise ValueError(f"unix socket path too long (max 107 bytes): {self.socket_path}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.clock = MovableClock(self.workdir / "faketime.rc") if movable_clock else None

    name = "redis-server"
    log_name = "redis.log"
    poll_interval = 0.02

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.workdir / "redis.sock"

    @property
    def unix_url(self) -> str:
        if not self.unix_socket:
            raise ValueError("this redis-server listens on TCP only (unix_socket=False)")
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                # `make run`'s Redis keeps every tenant's config, tokens and state across
                # a restart (append-only file, fsync once a second); the tests' start empty.
                *(
                    ("--appendonly", "yes", "--appendfsync", "everysec")
                    if self.durable
                    else ("--appendonly", "no")
                ),
                *(
                    ("--unixsocket", str(self.socket_path), "--unixsocketperm", "700")
                    if self.unix_socket
                    else ()
                ),
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.log_path),
                "--daemonize",
                "no",
                *self.options,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.clock.env() if self.clock is not None else server_env(),
        )
        self._wait_ready(timeout)

    def _ready(self) -> bool:
        """True when the server answers PING."""
        return _answers_ping(self.port)

    def restart(self) -> None:
        """Stop and start again on the same port, with empty memory."""
        self.stop()
        self.start()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Poll `check` until it is true; ProcessError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ProcessError(f"{what}: not after {timeout} s")
        time.sleep(0.05)


def _in_sync(server: RedisProcess) -> bool:
    """Whether a server is a master, or a replica whose link to its master is up."""
    try:
        with redis.Redis(port=server.port, socket_timeout=1) as client:
            replication = client.info("replication")
    except redis.RedisError:
        return False
    return replication["role"] == "master" or replication["master_link_status"] == "up"


class SentinelProcess(_ServerProcess):
    """One Redis Sentinel (`redis-server sentinel.conf --sentinel`) on 127.0.0.1:`port`,
    watching the master `service` at 127.0.0.1:`master_port`. Its config file lives in
    `workdir` (Sentinels rewrite it as they learn the set)."""

    name = "redis-sentinel"
    log_name = "sentinel.log"
    poll_interval = 0.02

    def __init__(
        self,
        workdir: Path,
        master_port: int,
        service: str,
        down_after_ms: int,
        failover_timeout_ms: int,
        port: int | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.master_port = master_port
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def start(self, timeout: float = 10.0) -> None:
        """Write the config and start the Sentinel; wait until it answers PING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "sentinel.conf"
        name = self.service
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\n"
            f"dir {self.workdir}\nlogfile {self.log_path}\n"
            f"sentinel monitor {name} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, str(config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=server_env(),
        )
        self._wait_ready(timeout)

    def _ready(self) -> bool:
        return _answers_ping(self.port)


# A master waits 5 s for more replicas before a diskless full sync by default; a replica
# never synced does not fail over (its data is too old to take over).
_NO_SYNC_DELAY = ("--repl-diskless-sync-delay", "0")


class _ServerSet(_Started):
    """Servers started and stopped together: `start` them all (all stopped again when one
    fails), `stop` them in `processes` order; a context manager like one server."""

    def processes(self) -> list[_ServerProcess]:
        """Every process of the set, in the order they stop."""
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        """Start the set and wait until it serves; ProcessError (all stopped) if it does
        not within `timeout` seconds a step."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process (harmless if stopped)."""
        for process in self.processes():
            process.stop()


class RedisSentinelSet(_ServerSet):
    """A master, one replica and three Sentinels (quorum 2) on free loopback ports, each in
    a folder of `workdir`: the smallest set that fails over like production.

    `down_after_ms` is how long the master must be silent before a Sentinel thinks it down
    (then the Sentinels agree, elect a leader and promote the replica); `failover_timeout_ms`
    bounds a failover that stalls. `address` is the redis+sentinel:// address, `sentinels`
    the REDIS_SENTINELS value. Use it as a context manager (started on entry, everything
    stopped on exit) or call `start` and `stop`.
    """

    def __init__(
        self,
        workdir: Path,
        service: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.workdir = Path(workdir)
        self.service = service
        self.master = RedisProcess(self.workdir / "redis-a", options=_NO_SYNC_DELAY)
        self.replica = RedisProcess(
            self.workdir / "redis-b",
            options=(*_NO_SYNC_DELAY, "--replicaof", "127.0.0.1", str(self.master.port)),
        )
        self.watchers = [
            SentinelProcess(
                self.workdir / f"sentinel-{n}",
                self.master.port,
                service,
                down_after_ms,
                failover_timeout_ms,
            )
            for n in range(3)
        ]

    @property
    def servers(self) -> list[RedisProcess]:
        """The two data servers, the first-started master first."""
        return [self.master, self.replica]

    @property
    def sentinels(self) -> str:
        """The Sentinels as REDIS_SENTINELS wants them."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.watchers)

    @property
    def address(self) -> str:
        """The redis+sentinel:// address of the master (db 0)."""
        return f"redis+sentinel://{self.sentinels}/{self.service}/0"

    def _start(self, timeout: float) -> None:
        """Start the servers, wait until the replica is in sync, start the Sentinels and
        wait until each knows the replica and the two other Sentinels."""
        self.master.start()
        self.replica.start()
        _wait_until("the replica in sync", lambda: _in_sync(self.replica), timeout)
        for watcher in self.watchers:
            watcher.start()
        _wait_until("the Sentinels know each other", self._sentinels_ready, timeout)

    def master_port(self) -> int:
        """The port of the master the Sentinels name now (asks one that answers)."""
        for watcher in self.watchers:
            try:
                with redis.Redis(port=watcher.port, socket_timeout=1) as sentinel:
                    _, port = sentinel.sentinel_get_master_addr_by_name(self.service)
                    return int(port)
            except (redis.RedisError, TypeError):
                continue
        raise ProcessError("no Sentinel names a master")

    def current_master(self) -> RedisProcess:
        """The data server the Sentinels name master now."""
        port = self.master_port()
        return next(s for s in self.servers if s.port == port)

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> RedisProcess:
        """Wait until the Sentinels name another master than `old_port` and it takes writes;
        that server."""

        def switched() -> bool:
            try:
                port = self.master_port()
            except ProcessError:
                return False
            return port != old_port and self._is_master(port)

        _wait_until(f"a master other than :{old_port}", switched, timeout)
        return self.current_master()

    def wait_until_healthy(self, timeout: float = 30.0) -> RedisProcess:
        """Wait until the Sentinels name a master that takes writes and the other data
        server is its replica, in sync - after a fault, when an old master is back (started
        again after a kill: empty; or resumed after a stop) and the Sentinels made it a
        replica: then the set can fail over again. The master."""

        def healthy() -> bool:
            try:
                port = self.master_port()
            except ProcessError:
                return False
            if not self._is_master(port):
                return False
            for server in self.servers:
                if server.port == port:
                    continue
                try:
                    with redis.Redis(port=server.port, socket_timeout=1) as client:
                        replication = client.info("replication")
                except redis.RedisError:
                    return False
                if (
                    replication["role"] != "slave"
                    or replication.get("master_port") != port
                    or replication.get("master_link_status") != "up"
                ):
                    return False
            return True

        _wait_until("a master and its replica in sync", healthy, timeout)
        return self.current_master()

    def _is_master(self, port: int) -> bool:
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                return client.info("replication").get("role") == "master"
        except redis.RedisError:
            return False

    def _sentinels_ready(self) -> bool:
        for watcher in self.watchers:
            try:
                with redis.Redis(port=watcher.port, socket_timeout=1) as sentinel:
                    state = sentinel.sentinel_master(self.service)
            except redis.RedisError:
                return False
            if state.get("num-slaves") != 1 or state.get("num-other-sentinels") != 2:
                return False
        return True

    def processes(self) -> list[_ServerProcess]:
        """The Sentinels first (no failover of a set going away), then the servers."""
        return [*self.watchers, *self.servers]


def _start_node(node: RedisProcess, attempts: int = 3) -> None:
    """Start a Cluster node with its bus on a free port named just before (by default the
    bus takes the node's port + 10000: past 65535 for a high free port, maybe taken); a
    port taken meanwhile by another process (free_port's race) costs another try on new
    ports."""
    options = node.options
    for attempt in range(attempts):
        node.options = (*options, "--cluster-port", str(free_port()))
        try:
            node.start()
            return
        except ProcessError:
            if attempt == attempts - 1 or "Address already in use" not in _tail(node.log_path):
                raise
            node.port = free_port()


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except FileNotFoundError:
        return ""


class RedisClusterSet(_ServerSet):
    """A Redis Cluster of `masters` primaries (each with `replicas` replicas) on free
    loopback ports, made with `redis-cli --cluster create`, each node in a folder of
    `workdir`. `url` is its redis+cluster:// address. `node_timeout_ms` is how long a
    primary must be silent before its replica takes over. A context manager like
    `RedisSentinelSet`."""

    def __init__(
        self, workdir: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000
    ) -> None:
        self.workdir = Path(workdir)
        self.replicas = replicas
        cluster_options = (
            *_NO_SYNC_DELAY,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(node_timeout_ms),
        )
        self.nodes = [
            RedisProcess(self.workdir / f"node-{n}", options=cluster_options)
            for n in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """The redis+cluster:// address, every node a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _start(self, timeout: float) -> None:
        """Start the nodes, join them (slots spread evenly over the primaries) and wait
        until every node says cluster_state:ok."""
        for node in self.nodes:
            _start_node(node)
        binary = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        create = subprocess.run(
            [
                binary,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if create.returncode != 0:
            raise ProcessError(f"redis-cli --cluster create failed: {create.stdout[-2000:]}")
        _wait_until("cluster_state:ok on every node", self._ok, timeout)
        _wait_until("every replica in sync", lambda: all(map(_in_sync, self.nodes)), timeout)

    def _ok(self) -> bool:
        for node in self.nodes:
            try:
                with redis.Redis(port=node.port, socket_timeout=1) as client:
                    info = client.cluster("info")  # parsed: {"cluster_state": "ok", ...}
            except redis.RedisError:
                return False
            if info.get("cluster_state") != "ok":
                return False
        return True

    def processes(self) -> list[_ServerProcess]:
        """The nodes."""
        return list(self.nodes)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Seconds uvicorn lets open requests finish on SIGTERM before it cancels them.
GRACEFUL_SHUTDOWN_S = 2


class ApiProcess(_ServerProcess):
    """The admin API (uvicorn) on 127.0.0.1:`port`, its log in `workdir`/api.log.

    `env` adds to the environment it inherits (REDIS_URL, DISPATCHER_ADMIN_TOKEN,
    PROMETHEUS_MULTIPROC_DIR, ...).
    """

    name = "the admin API"
    log_name = "api.log"

    def __init__(
        self, workdir: Path, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(workdir, port)
        self.env = dict(env or {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start uvicorn and wait until /healthz answers 200."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "dispatcher.api.app:app_from_env",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    # open event streams (the dashboard's SSE) never end by themselves:
                    # without a limit a graceful shutdown would wait for them forever
                    "--timeout-graceful-shutdown",
                    str(GRACEFUL_SHUTDOWN_S),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
        self._wait_ready(timeout)

    def _ready(self) -> bool:
        """True when /healthz answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False
