"""Child processes the project starts itself: redis-server and the admin API (kamailio and
sipp are in dispatcher.run.sipprocs).

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
from pathlib import Path
from typing import ClassVar, Self

from dispatcher.run.faketime import MovableClock, server_env


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """Return a loopback port that is free right now (TCP by default)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProcessError(RuntimeError):
    """A child server did not start or stopped unexpectedly."""


class _ServerProcess:
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

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    `dispatcher.run.faketime`.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        unix_socket: bool = False,
        movable_clock: bool = False,
        durable: bool = False,
    ) -> None:
        super().__init__(workdir, port)
        self.unix_socket = unix_socket
        self.durable = durable
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
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.clock.env() if self.clock is not None else server_env(),
        )
        self._wait_ready(timeout)

    def _ready(self) -> bool:
        """True when the server answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self) -> None:
        """Stop and start again on the same port, with empty memory."""
        self.stop()
        self.start()


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
