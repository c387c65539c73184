"""RTPengine as a child process: the media side of the tests and of `make run`.

Like the servers of dispatcher.run.procs: NG control on a free loopback UDP port, a media port
range of its own, its files (log, recording spool) in a folder of its own, stopped on exit.
It runs rtpengine/rtpengine.conf (section `dispatcher`), with the per-instance values on
the command line, which override the file's. Two instances side by side get separate port
ranges; under libfaketime (`make test`'s year-ahead run) it simply inherits the preload.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from dispatcher.media.ng import NgClient, NgError, NgUnavailable
from dispatcher.run.procs import ProcessError, _ServerProcess, free_port
from dispatcher.run.sipprocs import _tail

REPO = Path(__file__).resolve().parents[2]
RTPENGINE_CONF = REPO / "rtpengine" / "rtpengine.conf"
CONFIG_SECTION = "dispatcher"

# Media port blocks are carved from below Linux's ephemeral range (32768-60999 by default),
# so the ports free_port() and the kernel hand out never fall inside an instance's range.
PORT_FLOOR = 20000
PORT_CEILING = 32767
DEFAULT_PORTS = 1000  # about 250 calls: each takes RTP + RTCP on two sides

_reserved: set[int] = set()  # block starts given to instances of this process
_reserved_lock = threading.Lock()


def _udp_ports_in_use() -> set[int]:
    """Local UDP ports bound by anyone on this host (IPv4 and IPv6), from /proc/net."""
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for fields in map(str.split, lines):
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def reserve_port_range(size: int = DEFAULT_PORTS) -> tuple[int, int]:
    """An even-aligned (port_min, port_max) of `size` ports, none bound right now and none
    given to another instance of this process. Blocks are tried in random order, so two test
    processes rarely pick the same one (and rtpengine skips a port it cannot bind anyway).
    ProcessError when no block is free. O(blocks + bound ports)."""
    size += size % 2
    starts = list(range(PORT_FLOOR, PORT_CEILING - size + 2, size))
    random.shuffle(starts)
    in_use = _udp_ports_in_use()
    with _reserved_lock:
        for start in starts:
            if start in _reserved or any(p in in_use for p in range(start, start + size)):
                continue
            _reserved.add(start)
            return start, start + size - 1
    raise ProcessError(f"no free block of {size} UDP ports in {PORT_FLOOR}-{PORT_CEILING}")


def _release_port_range(port_min: int) -> None:
    with _reserved_lock:
        _reserved.discard(port_min)


class RtpengineProcess(_ServerProcess):
    """An rtpengine with NG control on 127.0.0.1:`ng_port` (UDP) and media on
    127.0.0.1:`port_min`-`port_max`, its files in `workdir`: `rtpengine.log` (stderr) and
    `spool/` (recording-dir: pcaps/, metadata/, tmp/).

    Ports default to a free NG port and a free block of `ports` media ports. `extra_args`
    are appended to the command line (e.g. ["--timeout=5"]); `env` adds to the environment
    it inherits. `start` returns once it answers an NG ping; `stop` sends SIGTERM, then
    SIGKILL after 5 s; `kill` is kill -9 (for failure tests); `restart` starts it again on
    the same ports, with no calls.
    """

    name = "rtpengine"
    log_name = "rtpengine.log"
    poll_interval = 0.02

    def __init__(
        self,
        workdir: Path,
        ng_port: int | None = None,
        port_min: int | None = None,
        port_max: int | None = None,
        *,
        ports: int = DEFAULT_PORTS,
        config: Path = RTPENGINE_CONF,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir, ng_port or free_port(socket.SOCK_DGRAM))
        if (port_min is None) != (port_max is None):
            raise ValueError("give both port_min and port_max, or neither")
        self._own_range = port_min is None
        if port_min is None or port_max is None:
            port_min, port_max = reserve_port_range(ports)
        self.port_min = port_min
        self.port_max = port_max
        self.config = Path(config).resolve()
        self.extra_args = list(extra_args)
        self.env = dict(env or {})

    @property
    def ng_port(self) -> int:
        return self.port

    @property
    def spool_dir(self) -> Path:
        """rtpengine's recording-dir: pcaps/ while recording, metadata/ once a call ends."""
        return self.workdir / "spool"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ProcessError("rtpengine was not started")
        return self.proc.pid

    def client(self, *, timeout: float = 0.5, retries: int = 2) -> NgClient:
        """A new NG client for this instance (close it when done)."""
        return NgClient("127.0.0.1", self.ng_port, timeout=timeout, retries=retries)

    def command(self) -> list[str]:
        """The rtpengine command line `start` runs."""
        binary = shutil.which("rtpengine") or "/usr/bin/rtpengine"
        return [
            binary,
            f"--config-file={self.config}",
            f"--config-section={CONFIG_SECTION}",
            f"--listen-ng=127.0.0.1:{self.ng_port}",
            f"--port-min={self.port_min}",
            f"--port-max={self.port_max}",
            f"--recording-dir={self.spool_dir}",
            *self.extra_args,
        ]

    def start(self, timeout: float = 10.0) -> None:
        """Start rtpengine and wait until it answers an NG ping; ProcessError quoting the
        log tail when it exits first or stays silent (then it is stopped)."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout
        with self.client(timeout=0.1, retries=0) as ng:
            while time.monotonic() < deadline:
                self.check()
                if _answers_ping(ng):
                    return
                time.sleep(self.poll_interval)
        self.stop()
        raise ProcessError(
            f"rtpengine did not answer NG ping on 127.0.0.1:{self.ng_port} in {timeout}s; "
            f"{self.log_path}:\n" + _tail(self.log_path)
        )

    def _ready(self) -> bool:
        with self.client(timeout=0.2, retries=0) as ng:
            return _answers_ping(ng)

    def check(self) -> None:
        """ProcessError with the log tail if rtpengine is not running (it died, or was
        never started); nothing otherwise. Cheap: one waitpid."""
        if self.proc is None:
            raise ProcessError("rtpengine was not started")
        code = self.proc.poll()
        if code is not None:
            how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
            raise ProcessError(f"rtpengine {how}; {self.log_path}:\n" + _tail(self.log_path))

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (if running) and start again on the same ports: no calls survive."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop it and give its port range back to this process's pool."""
        self.stop()
        if self._own_range:
            _release_port_range(self.port_min)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cpu_seconds(self) -> float:
        """User + system CPU time rtpengine used so far (all its threads), from
        /proc/<pid>/stat. O(1)."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")


def _answers_ping(ng: NgClient) -> bool:
    try:
        ng.ping()
    except (NgUnavailable, NgError):
        return False
    return True
