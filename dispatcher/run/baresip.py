"""baresip as a real phone for the tests: Debian's baresip-core, one config folder per phone.

A `BaresipPhone` listens on loopback only (`net_interface 127.0.0.1`, SIP on a free UDP
port, RTP in a small range of its own), registers its user at a Kamailio (or not), answers
every call itself when `auto_answer` (account parameter `answermode=auto`), and is driven
over ctrl_tcp: netstring-framed JSON commands (`dial`, `hangup`, `quit`) and the events it
sends back (`CALL_ESTABLISHED`, `CALL_CLOSED`, `REGISTER_OK`, ...), collected in `events`.
It sends a 440 Hz sine (ausine, which wants 48 kHz stereo: baresip resamples for PCMU) and
plays into nothing (no audio player module), so it needs no sound hardware.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from dispatcher.run.procs import ProcessError, free_port
from dispatcher.run.sipprocs import _stop_group, _tail, _udp_port_bound_by, free_sip_port

# Each phone's RTP ports: a range of its own, so phones on one host never collide.
_RTP_SPAN = 20
_rtp_base = itertools.count(31000, _RTP_SPAN)

CONFIG = """\
poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
net_interface		127.0.0.1
rtp_ports		{rtp_low}-{rtp_high}
audio_source		ausine,440
ausrc_srate		48000
ausrc_channels		2
auplay_srate		48000
auplay_channels		2
module_path		/usr/lib/baresip/modules
module			g711.so
module			ausine.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{ctrl_port}
"""


def _free_sip_ports() -> int:
    """A port free for SIP over UDP and TCP whose next port is free for TCP: baresip listens
    on all three (TLS on the next port) and fails to start when one is taken."""
    while True:
        port = free_sip_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port


def _netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


class BaresipPhone:
    """A baresip user agent for `user`, registered at `registrar` ("host:port") if given."""

    def __init__(
        self,
        workdir: Path,
        user: str,
        registrar: str | None = None,
        *,
        auto_answer: bool = True,
    ) -> None:
        self.workdir = Path(workdir)
        self.user = user
        self.registrar = registrar
        self.sip_port = _free_sip_ports()
        self.ctrl_port = free_port()
        while self.ctrl_port in (self.sip_port, self.sip_port + 1):
            self.ctrl_port = free_port()
        self.auto_answer = auto_answer
        self.events: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._responses: dict[str, dict[str, Any]] = {}

    @property
    def log_path(self) -> Path:
        return self.workdir / "baresip.log"

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        low = next(_rtp_base)
        (self.workdir / "config").write_text(
            CONFIG.format(
                sip_port=self.sip_port,
                rtp_low=low,
                rtp_high=low + _RTP_SPAN - 1,
                ctrl_port=self.ctrl_port,
            )
        )
        host = self.registrar or "127.0.0.1"
        params = ["audio_codecs=PCMU", f"regint={300 if self.registrar else 0}"]
        if self.auto_answer:
            params.append("answermode=auto")
        (self.workdir / "accounts").write_text(f"<sip:{self.user}@{host}>;{';'.join(params)}\n")

    def start(self, timeout: float = 10.0) -> None:
        """Start baresip; return once its ctrl_tcp answers and, with a registrar, its
        registration succeeded."""
        self._write_config()
        binary = shutil.which("baresip") or "/usr/bin/baresip"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-f", str(self.workdir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while self._ctrl is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ProcessError(f"baresip did not start:\n{_tail(self.log_path)}")
            if _udp_port_bound_by(self.proc.pid, "127.0.0.1", self.sip_port):
                with contextlib.suppress(OSError):
                    self._ctrl = socket.create_connection(("127.0.0.1", self.ctrl_port), 1)
            time.sleep(0.05)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # The REGISTER may be answered before ctrl_tcp is connected (its event is then
        # lost): ask for the registrations' state until it says OK.
        while self.registrar and "OK" not in str(self.command("reginfo").get("data")):
            if time.monotonic() > deadline:
                self.stop()
                raise ProcessError(f"baresip did not register:\n{_tail(self.log_path)}")
            time.sleep(0.05)

    def command(self, command: str, params: str = "", timeout: float = 3.0) -> dict[str, Any]:
        """Send a ctrl_tcp command; its response ({"ok": ..., "data": ...})."""
        if self._ctrl is None:
            raise ProcessError("baresip is not running")
        token = str(next(self._tokens))
        message = {"command": command, "params": params, "token": token}
        self._ctrl.sendall(_netstring(json.dumps(message).encode()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if token in self._responses:
                    return self._responses.pop(token)
            time.sleep(0.01)
        raise ProcessError(f"baresip did not answer {command!r}:\n{_tail(self.log_path)}")

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def wait_event(self, kind: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The first `count` events of `kind` (waiting up to `timeout` for them)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [e for e in self.events if e.get("type") == kind]
            if len(found) >= count:
                return found[:count]
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"baresip {self.user}: {len(found)} of {count} {kind} events in {timeout}s;"
                    f" events {[e.get('type') for e in self.events]}"
                )
            time.sleep(0.02)

    def _read(self) -> None:
        """Collect ctrl_tcp's netstrings: events into `events`, responses by token."""
        assert self._ctrl is not None
        buffer = b""
        self._ctrl.settimeout(None)
        while True:
            try:
                chunk = self._ctrl.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b":" in buffer:
                size, _, rest = buffer.partition(b":")
                if len(rest) < int(size) + 1:
                    break
                message = json.loads(rest[: int(size)])
                buffer = rest[int(size) + 1 :]
                with self._lock:
                    if message.get("event"):
                        self.events.append(message)
                    elif message.get("response"):
                        self._responses[str(message.get("token"))] = message

    def stop(self, timeout: float = 3.0) -> None:
        """End every call (baresip sends their BYEs on quit) and the process."""
        if self.proc is None:
            return
        if self._ctrl is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError, ProcessError):
                self.command("quit", timeout=1.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        _stop_group(self.proc, signal.SIGTERM, timeout)

    def __enter__(self) -> BaresipPhone:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
