"""Kamailio and SIPp as child processes: the SIP side of the test fixtures and `make run`.

Like dispatcher.run.procs: each process runs on free loopback ports, keeps its files in a
folder of its own (so two Kamailio instances can run side by side) and is stopped with
its children.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.connection import parse_url

from dispatcher.redis_address import PLAIN, parse_address
from dispatcher.run.procs import ProcessError, free_port

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = REPO / "kamailio" / "kamailio.cfg"
KEMI_SCRIPT = REPO / "kamailio" / "kemi.py"
DB_REDIS_SCHEMA = REPO / "kamailio" / "db_redis"

# Start of a Kamailio log entry with -E: " 3(1234) ERROR: ..." (process index, pid).
_LOG_LINE = re.compile(r"\s*\d+\(\d+\) ")

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_UNIX_PATH_MAX = 107


# Kamailio's memory managers. Debian's build ships qm with its memory debugging compiled in
# (DBG_SR_MEMORY): every allocation is tracked and a free-list search costs, qm_malloc was
# 13 % of a worker's CPU in a profile. tlsf (two-level segregated fit: O(1), little
# fragmentation) halved the CPU per call of both the dispatcher's stack and Kamailio's
# native dispatcher in bench/sip_load.py; qm stays available for memory debugging.
MEM_MANAGERS = ("tlsf", "fm", "qm")
DEFAULT_MEM_MANAGER = "tlsf"


def free_sip_port(host: str = "127.0.0.1") -> int:
    """Return a port free for both UDP and TCP on `host` right now."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, port))
        except OSError:
            continue
        return port


def registrations_url_for(redis_url: str) -> str:
    """The Redis database usrloc keeps registrations in, for the dispatcher's `redis_url`:
    the same server, the next database index (redis:// URL, redis-py's syntax).

    A database of its own because a node that starts loads the rows through db_redis, which
    finds them with KEYS (5.6 has no SCAN): a walk over every key of the database while
    Redis serves nobody else, about 14 ms per 100 000 keys - over the dispatcher's keys (a
    day of per-call markers) it would stall the calls of every node. In its own database the
    walk covers the registrations only. ProcessError for a unix socket, TLS or a Redis
    Cluster URL: db_redis connects with hiredis' redisConnectWithTimeout(host, port) only.
    """
    parts = urllib.parse.urlsplit(redis_url)
    if parts.scheme != "redis":
        raise ProcessError(
            f"usrloc keeps registrations in Redis through Kamailio's db_redis, which reaches "
            f"Redis over plain TCP only (hiredis redisConnectWithTimeout(host, port): no unix "
            f"socket, no TLS), not {parts.scheme}://; give Kamailio the same Redis as "
            "redis://host:port/db (REDIS_URL, or KamailioProcess registrations_url)"
        )
    db = int(parse_url(redis_url).get("db", 0))
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "db"]
    )
    return urllib.parse.urlunsplit(("redis", parts.netloc, f"/{db + 1}", query, ""))


def _db_redis_url(url: str) -> str:
    """`url` (redis://, redis-py's syntax) as Kamailio's db_redis module reads it:
    redis://[:password@]host:port/db, the password not %-encoded. ProcessError for what
    db_redis 5.6 cannot do: other schemes (see registrations_url_for), an ACL user (it
    sends AUTH <password>), a password with "/" (Kamailio's db URL parser ends there)."""
    if urllib.parse.urlsplit(url).scheme != "redis":
        registrations_url_for(url)  # raises, naming why
    options = parse_url(url)
    if options.get("username") not in (None, "", "default"):
        raise ProcessError(
            "Kamailio's db_redis authenticates with a password only (AUTH <password>), "
            f"not as the Redis ACL user {options['username']!r}; use the default user"
        )
    password = options.get("password") or ""
    if "/" in password:
        raise ProcessError(
            "Kamailio's db URL parser cannot take a Redis password with '/' (usrloc's db_url)"
        )
    host = options.get("host", "localhost")
    host = f"[{host}]" if ":" in host else host
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{host}:{options.get('port', 6379)}/{options.get('db', 0)}"


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return f"({path} does not exist)"


def _stop_group(proc: subprocess.Popen[bytes], first: signal.Signals, timeout: float) -> None:
    """Send `first` to `proc`, then SIGKILL whatever is left of the process group it
    leads (started with start_new_session) after `timeout` seconds.

    Only the leader gets `first`: Kamailio's main process stops its children itself.
    """
    if proc.poll() is None:
        proc.send_signal(first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    # The leader may be gone while children it forked live on in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _udp_port_bound_by(pid: int, host: str, port: int) -> bool:
    """True when process `pid` has bound UDP host:port. Read from /proc: a test bind()
    could steal the port, and a port bound by some other process is not ours."""
    octets = socket.inet_aton(host)[::-1].hex().upper()
    wanted = {f"{octets}:{port:04X}", f"00000000:{port:04X}"}
    with open("/proc/net/udp") as table:
        next(table)
        inodes = {fields[9] for fields in map(str.split, table) if fields[1] in wanted}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    sockets = {f"socket:[{inode}]" for inode in inodes}
    for fd in fds:
        with contextlib.suppress(OSError):  # closed since listdir
            if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                return True
    return False


class KamailioProcess:
    """A Kamailio on `listen_addr`:`sip_port` (UDP) running kamailio/kamailio.cfg.

    Its files live in `workdir`: `kamailio.log` (stdout and stderr, -E) and `run/`
    (pid file, JSON-RPC FIFO and socket, ctl socket). `redis_url` and `tenant` reach
    the KEMI script as REDIS_URL and DISPATCHER_TENANT in the environment; with
    redis_url=None the variable is removed, not inherited.

    `mem_manager` is Kamailio's memory manager for shared and private memory (-x:
    MEM_MANAGERS, tlsf by default).

    `extra_defines` become `-A NAME=value` (`-A NAME` for None), verbatim: quote string
    values yourself, e.g. {"FR_INV_TIMER": 2000, "WITH_DEBUG": None}. `env` adds to (or
    overrides) the environment Kamailio inherits, e.g. {"DISPATCHER_CLOCK_OFFSET_MS":
    "3600000"} for a node whose own clock is an hour ahead (its inbound schedules see that
    hour; shared state keeps Redis' clock); REDIS_URL and DISPATCHER_TENANT still come from
    `redis_url` and `tenant`.

    `rtpengine_ng` (host, port) is the RTPengine of the node's queue and voicemail audio
    (RTPENGINE_SOCK for the module, RTPENGINE_NG for the router); `prompts_dir` the folder of
    its prompts (DISPATCHER_PROMPTS); `voicemail_dir` where its voicemail WAVs go
    (DISPATCHER_VOICEMAIL, default <workdir>/voicemail) and `rtpengine_spool` the RTPengine's
    recording folder it reads them from (RTPENGINE_SPOOL). The node's id (DISPATCHER_NODE) is
    its address.

    Registrations are shared by every node (`shared_registrations`, the default): a node of
    a cluster - one given `dmq_seed`, the host:port of a peer's DMQ bus it learns the bus
    from - holds them all in memory, replicated over the nodes' DMQ bus (on `dmq_port`, a
    free UDP port by default); a node without a seed is a cluster of one and runs no bus (a
    lone DMQ node logs an error every ping for want of peers). With a plain `redis_url` they
    are also written back to Redis (usrloc db_mode 2), which a node loads at start: in
    `registrations_url`, by default `registrations_url_for(redis_url)` (the same server, the
    next database index). That URL reaches Kamailio as USRLOC_DBURL in the environment, not
    on the command line, which every local user can read, since it may carry the Redis
    password; a Kamailio with such a Redis does not start while that Redis is down. A Redis
    Cluster or Sentinel (`redis+cluster://`, `redis+sentinel://`, or REDIS_SENTINELS in
    `env` and no `redis_url`) has no copy, as db_redis can follow neither: a restarted node
    learns the phones from a peer. `shared_registrations=False`, or no Redis at all (group
    routing off), keeps them in the node's memory (db_mode 0, no DMQ).
    ProcessError at once for a URL db_redis cannot use where it would need it (a unix
    socket: pass the same Redis's TCP URL as registrations_url).
    """

    def __init__(
        self,
        workdir: Path,
        sip_port: int | None = None,
        redis_url: str | None = None,
        tenant: str = "demo",
        cfg: Path = KAMAILIO_CFG,
        kemi_script: Path = KEMI_SCRIPT,
        extra_defines: Mapping[str, str | int | None] | None = None,
        children: int | None = None,
        listen_addr: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        rtpengine_ng: tuple[str, int] | None = None,
        prompts_dir: Path | None = None,
        voicemail_dir: Path | None = None,
        rtpengine_spool: Path | None = None,
        shared_registrations: bool = True,
        registrations_url: str | None = None,
        dmq_port: int | None = None,
        dmq_seed: str | None = None,
        mem_manager: str = DEFAULT_MEM_MANAGER,
    ) -> None:
        self.workdir = Path(workdir)
        routing = bool(redis_url or registrations_url or (env or {}).get("REDIS_SENTINELS"))
        self.shared_registrations = shared_registrations and routing
        self.registrations_url: str | None = None
        if shared_registrations and (registrations_url or redis_url):
            # db_redis reaches one server: a Sentinel's or a Cluster's nodes move
            one_server = redis_url is None or parse_address(redis_url).mode == PLAIN
            if registrations_url or one_server:
                self.registrations_url = registrations_url or registrations_url_for(str(redis_url))
                _db_redis_url(self.registrations_url)  # refuses what db_redis cannot use
        self.dmq_port = dmq_port or free_sip_port(listen_addr)
        self.dmq_seed = dmq_seed
        if mem_manager not in MEM_MANAGERS:
            raise ProcessError(
                f"mem_manager {mem_manager!r}: Kamailio's are {', '.join(MEM_MANAGERS)}"
            )
        self.mem_manager = mem_manager
        self.rtpengine_ng = rtpengine_ng
        self.prompts_dir = prompts_dir
        self.voicemail_dir = voicemail_dir or self.workdir / "voicemail"
        self.rtpengine_spool = rtpengine_spool
        self.listen_addr = listen_addr
        self.sip_port = sip_port or free_sip_port(listen_addr)
        self.redis_url = redis_url
        self.tenant = tenant
        self.cfg = Path(cfg).resolve()
        self.kemi_script = Path(kemi_script).resolve()
        self.extra_defines = dict(extra_defines or {})
        self.children = children
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kamailio.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kamailio.pid"

    @property
    def rpc_socket(self) -> Path:
        """JSON-RPC datagram socket (jsonrpcs); the FIFO is run/kamailio_rpc.fifo."""
        return self.run_dir / "kamailio_rpc.sock"

    @property
    def ctl_socket(self) -> Path:
        """binrpc socket for `kamcmd -s unix:<path>`."""
        return self.run_dir / "kamailio_ctl"

    @property
    def address(self) -> str:
        """host:port, as SIPp wants its remote host."""
        return f"{self.listen_addr}:{self.sip_port}"

    @property
    def runs_dmq(self) -> bool:
        """Whether the node joins a DMQ bus (a cluster's node: shared registrations and a
        peer to learn the bus from); only such a node starts closed to calls."""
        return self.shared_registrations and bool(self.dmq_seed)

    @property
    def dmq_address(self) -> str:
        """host:port of the node's DMQ bus, as a peer names it in `dmq_seed`."""
        return f"{self.listen_addr}:{self.dmq_port}"

    def command(self) -> list[str]:
        """The kamailio command line start() runs."""
        binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
        defines: dict[str, str | int | None] = {
            "SIP_PORT": self.sip_port,
            "LISTEN_ADDR": self.listen_addr,
            "KEMI_SCRIPT": f'"{self.kemi_script}"',
            "DB_REDIS_SCHEMA": f'"{DB_REDIS_SCHEMA}"',
        }
        if self.children is not None:
            defines["CHILDREN"] = self.children
        if self.rtpengine_ng is not None:
            host, port = self.rtpengine_ng
            defines["RTPENGINE_SOCK"] = f'"udp:{host}:{port}"'
        # Always given, so the port is known and never the default one of another instance
        # (the DMQ socket itself exists only with shared registrations).
        if self.runs_dmq:
            defines["WITH_DMQ"] = None
        defines["DMQ_PORT"] = self.dmq_port
        defines["DMQ_SERVER"] = f'"sip:{self.dmq_address}"'
        defines["DMQ_NOTIFY"] = f'"sip:{self.dmq_seed or self.dmq_address}"'
        defines.update(self.extra_defines)
        args = [
            binary,
            "-DD",  # no daemon: the main process stays our child and leads its group
            "-E",  # log to stderr, which goes to kamailio.log
            "-f", str(self.cfg),
            "-P", str(self.pid_file),
            # RUN_DIR is replaced inside string values too (see kamailio.cfg header)
            "--substdef", f"!RUN_DIR!{self.run_dir}!g",
            # shared and private memory (-X follows -x)
            "-x", self.mem_manager,
        ]  # fmt: skip
        for name, value in defines.items():
            args += ["-A", name if value is None else f"{name}={value}"]
        return args

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env["DISPATCHER_TENANT"] = self.tenant
        # Two nodes on one host differ by port: each has its own queue doorbell.
        env.setdefault("DISPATCHER_NODE", f"{self.listen_addr}:{self.sip_port}")
        if self.rtpengine_ng is not None:
            env["RTPENGINE_NG"] = "{}:{}".format(*self.rtpengine_ng)
        else:
            env.pop("RTPENGINE_NG", None)
        if self.prompts_dir is not None:
            env["DISPATCHER_PROMPTS"] = str(self.prompts_dir)
        env["DISPATCHER_VOICEMAIL"] = str(self.voicemail_dir)
        if self.rtpengine_spool is not None:
            env["RTPENGINE_SPOOL"] = str(self.rtpengine_spool)
        else:
            env.pop("RTPENGINE_SPOOL", None)
        if self.redis_url is None:
            env.pop("REDIS_URL", None)
        else:
            env["REDIS_URL"] = self.redis_url
        if self.registrations_url is None:
            env.pop("USRLOC_DBURL", None)
        else:
            env["USRLOC_DBURL"] = _db_redis_url(self.registrations_url)
        return env

    def start(self, timeout: float = 15.0) -> None:
        """Start Kamailio and wait until it answers an OPTIONS on its SIP port and, on a
        DMQ bus (`runs_dmq`), takes calls (`takes_calls`: it holds the phones its peers
        have, dispatcher.sip.warmup).

        Raises ProcessError quoting the log tail if it exits or stays silent.
        """
        for path in (self.ctl_socket, self.rpc_socket):
            if len(os.fsencode(path)) > _UNIX_PATH_MAX:
                raise ProcessError(f"{path}: too long for a Unix socket; use a shorter workdir")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._environment(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.stop()  # children it forked before failing
                raise ProcessError(
                    f"kamailio exited with {code} while starting; {self.log_path}:\n"
                    + _tail(self.log_path)
                )
            if self.answers_options() and (not self.runs_dmq or self.takes_calls()):
                return
            time.sleep(0.05)
        self.stop()
        raise ProcessError(
            f"kamailio did not answer OPTIONS (or take calls) on {self.address} in {timeout}s; "
            f"{self.log_path}:\n" + _tail(self.log_path)
        )

    def answers_options(self, wait: float = 0.2) -> bool:
        """Send one OPTIONS to the server itself; True if any SIP reply comes back."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.listen_addr, 0))
            sock.settimeout(wait)
            local_port = sock.getsockname()[1]
            tag = uuid.uuid4().hex[:12]
            request = (
                f"OPTIONS sip:{self.address} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.listen_addr}:{local_port};branch=z9hG4bK{tag}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:probe@{self.listen_addr}:{local_port}>;tag={tag}\r\n"
                f"To: <sip:{self.address}>\r\n"
                f"Call-ID: probe-{tag}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            try:
                sock.sendto(request.encode(), (self.listen_addr, self.sip_port))
                reply = sock.recv(65535)
            except OSError:  # timeout, or ICMP port unreachable before the bind
                return False
            return reply.startswith(b"SIP/2.0 ")

    def takes_calls(self) -> bool:
        """Whether the node's keeper opened it for calls (htable dspnode, key open): a node
        that shares registrations drops INVITEs until it holds its peers' phones."""
        try:
            item = self.rpc("htable.get", "dspnode", "open")
        except (OSError, ProcessError):  # not set yet, or the RPC process not up
            return False
        return bool((item or {}).get("item", {}).get("value"))

    def rpc(self, method: str, *params: Any, timeout: float = 2.0) -> Any:
        """Call a Kamailio RPC (e.g. "ul.lookup", "location", "alice") over the JSON-RPC
        datagram socket; return its result. One round trip."""
        client_path = self.run_dir / f"rpc-{uuid.uuid4().hex[:8]}.sock"
        request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # jsonrpcs replies to the sender's address, so the client needs a bound path.
            sock.bind(str(client_path))
            try:
                sock.settimeout(timeout)
                sock.sendto(json.dumps(request).encode(), str(self.rpc_socket))
                # a SIP field may hold octets that are not UTF-8 (a torture REGISTER's
                # contact): they come back as U+FFFD rather than failing the whole reply
                reply = json.loads(sock.recv(1 << 20).decode("utf-8", errors="replace"))
            finally:
                client_path.unlink(missing_ok=True)
        if "error" in reply:
            raise ProcessError(f"kamailio rpc {method}{params}: {reply['error']}")
        return reply.get("result")

    def statistic(self, name: str) -> int:
        """One Kamailio statistic ("dialog:active_dialogs", "usrloc:location_users") as
        an int (RPC stats.get_statistics of its group); KeyError when not reported."""
        group = name.split(":", 1)[0] + ":"
        for line in self.rpc("stats.get_statistics", group) or []:
            stat, _, value = str(line).partition(" = ")
            if stat == name:
                return int(value)
        raise KeyError(f"kamailio reports no statistic {name}")

    def dmq_nodes(self) -> set[str]:
        """host:port of every node on this node's DMQ bus that it counts as active, itself
        included (RPC dmq.list_nodes)."""
        nodes = self.rpc("dmq.list_nodes") or []
        return {f"{n['host']}:{n['port']}" for n in nodes if n.get("status") == "active"}

    def wait_for_dmq_peers(self, *peers: KamailioProcess, timeout: float = 10.0) -> None:
        """Wait until this node and every one of `peers` list each other on the DMQ bus
        (a node joins by its seed's node list, asynchronously after its start)."""
        everyone = [self, *peers]
        wanted = {node.dmq_address for node in everyone}
        deadline = time.monotonic() + timeout
        while not all(wanted <= node.dmq_nodes() for node in everyone):
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"DMQ bus not formed in {timeout}s: "
                    + ", ".join(f"{n.dmq_address} knows {sorted(n.dmq_nodes())}" for n in everyone)
                )
            time.sleep(0.05)

    def log_text(self) -> str:
        """Everything Kamailio logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def python_errors(self) -> list[str]:
        """Each exception the KEMI script raised, as logged: app_python3's ERROR line
        and the traceback after it. app_python3 logs an exception and goes on with the
        next message, so only the log tells. O(log size)."""
        errors: list[str] = []
        in_error = False
        for line in self.log_text().splitlines():
            if _LOG_LINE.match(line):  # a new log entry ends a traceback
                in_error = "ERROR:" in line and "app_python3" in line
                if in_error:
                    errors.append(line)
            elif in_error:
                errors[-1] += "\n" + line
        return errors

    def registrations(self) -> dict[str, list[str]]:
        """Every AOR this node holds, with its live contacts' addresses (RPC ul.dump: the
        node's memory; contacts deleted or expired but not yet purged are left out)."""
        out: dict[str, list[str]] = {}
        for domain in (self.rpc("ul.dump") or {}).get("Domains", []):
            for record in domain["Domain"]["AoRs"]:
                info = record["Info"]
                live = [
                    c["Contact"]["Address"]
                    for c in info.get("Contacts", [])
                    if c["Contact"]["Expires"] not in ("deleted", "expired")
                ]
                if live:
                    out[info["AoR"]] = live
        return out

    def rpc_lookup(self, user: str, domain: str | None = None) -> list[str]:
        """The contacts this node holds for user@domain (RPC ul.lookup, table "location"), []
        for none. `domain` defaults to the AOR domain of a tenant without domains of its
        own: its id (dispatcher.sip.tenants.Tenants.aor_domain)."""
        try:
            record = self.rpc("ul.lookup", "location", f"{user}@{domain or self.tenant}")
        except ProcessError as exc:
            if "not found" in str(exc) or "no contacts" in str(exc):
                return []
            raise
        return [c["Contact"]["Address"] for c in (record or {}).get("Contacts", [])]

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to Kamailio and its children, SIGKILL after `timeout` s; harmless
        if stopped."""
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGTERM, timeout)

    def kill(self) -> None:
        """kill -9 of every process of this Kamailio (a crashed node): nothing runs its
        shutdown, so nothing is flushed or unregistered."""
        if self.proc is not None:
            _stop_group(self.proc, signal.SIGKILL, 0)

    def __enter__(self) -> KamailioProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class SippStats:
    """Call counters from the last row of SIPp's -trace_stat file (cumulative)."""

    successful: int
    failed: int
    retransmissions: int

    @classmethod
    def from_stat_file(cls, path: Path) -> SippStats:
        """Parse `path`; all zero if SIPp wrote no statistics (it failed to start)."""
        try:
            with path.open(newline="") as stat_file:
                rows = list(csv.DictReader(stat_file, delimiter=";"))
        except FileNotFoundError:
            rows = []
        if not rows:
            return cls(0, 0, 0)
        last = rows[-1]
        return cls(
            successful=int(last["SuccessfulCall(C)"]),
            failed=int(last["FailedCall(C)"]),
            retransmissions=int(last["Retransmissions(C)"]),
        )


@dataclass(frozen=True, slots=True)
class SippResult:
    """How a SIPp run ended.

    returncode: 0 every call succeeded; 1 at least one failed, or the scenario did
    not load; 97 stopped by an internal command; 99 ended without processing a call;
    255 (-1) a fatal error, also -timeout reached (-timeout_error); 254 (-2) a socket
    it could not bind.
    """

    returncode: int
    stats: SippStats
    errors: str  # the -trace_err file: unexpected messages, aborted calls
    output: str  # the end of SIPp's screen and stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class SippProcess:
    """One SIPp process running `scenario` - a scenario XML file (a Path, or a str
    ending in .xml) or a built-in name such as "uac" / "uas" (-sn).

    `remote` ("host:port") is where a UAC sends its requests; a UAS leaves it None.
    Options map to SIPp's: calls -m, rate -r (calls per second), limit -l,
    duration_ms -d (length of <pause/>), service -s, keys -key NAME VALUE. The local
    SIP port (-p) is a free one unless given, on local_ip (-i, and -mi for media);
    the control socket (-cp) gets a free loopback port too, so any number of SIPp
    processes can run at once. `timeout` (s) becomes SIPp's -timeout with
    -timeout_error; None for a UAS that runs until stop().

    Files go to `workdir` as sipp-<scenario>-<n>.{stat.csv,errors.log,out}.
    """

    _runs = itertools.count(1)

    def __init__(
        self,
        workdir: Path,
        scenario: str | Path,
        remote: str | None = None,
        *,
        calls: int | None = None,
        rate: float | None = None,
        limit: int | None = None,
        duration_ms: int | None = None,
        service: str | None = None,
        keys: Mapping[str, str | int] | None = None,
        local_port: int | None = None,
        local_ip: str = "127.0.0.1",
        timeout: float | None = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.scenario = scenario
        self.remote = remote
        self.local_ip = local_ip
        self.local_port = local_port or free_port(socket.SOCK_DGRAM)
        self.timeout = timeout
        is_file = isinstance(scenario, Path) or str(scenario).endswith(".xml")
        stem = Path(scenario).stem if is_file else str(scenario)
        prefix = f"sipp-{stem}-{next(self._runs)}"
        self.stat_path = self.workdir / f"{prefix}.stat.csv"
        self.errors_path = self.workdir / f"{prefix}.errors.log"
        self.output_path = self.workdir / f"{prefix}.out"
        args = [shutil.which("sipp") or "/usr/bin/sipp"]
        if remote is not None:
            args.append(remote)
        args += ["-sf", str(Path(scenario).resolve())] if is_file else ["-sn", str(scenario)]
        args += [
            "-i", local_ip,
            "-p", str(self.local_port),
            "-mi", local_ip,
            "-ci", local_ip,
            "-cp", str(free_port(socket.SOCK_DGRAM)),
            "-nostdin",  # no keyboard control: stdin is not a terminal here
            "-trace_stat", "-stf", str(self.stat_path), "-fd", "1",
            "-trace_err", "-error_file", str(self.errors_path),
        ]  # fmt: skip
        options = {"-m": calls, "-r": rate, "-l": limit, "-d": duration_ms, "-s": service}
        for flag, value in options.items():
            if value is not None:
                args += [flag, str(value)]
        for name, value in (keys or {}).items():
            args += ["-key", name, str(value)]
        if timeout is not None:
            args += ["-timeout", f"{round(timeout * 1000)}ms", "-timeout_error"]
        self.args = [*args, *extra_args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> None:
        """Start SIPp; a UAS (no remote) is waited for until its SIP port is bound,
        so it can take calls when this returns."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.output_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        if self.remote is not None:
            return  # a UAC may be done before a bind check could see its port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ProcessError(
                    f"sipp exited with {self.proc.returncode} while starting:\n"
                    + _tail(self.output_path)
                )
            if _udp_port_bound_by(self.proc.pid, self.local_ip, self.local_port):
                return
            time.sleep(0.02)
        _stop_group(self.proc, signal.SIGKILL, 1.0)
        raise ProcessError(f"sipp did not bind {self.local_ip}:{self.local_port} in {timeout}s")

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to end by itself (all calls done, or its -timeout).

        `timeout` defaults to SIPp's own plus 10 s; past it SIPp is killed and
        ProcessError raised.
        """
        if self.proc is None:
            raise ProcessError("sipp was not started")
        if timeout is None and self.timeout is not None:
            timeout = self.timeout + 10.0
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(self.proc, signal.SIGKILL, 1.0)
            raise ProcessError(
                f"sipp still running after {timeout}s:\n{_tail(self.output_path)}"
            ) from None
        return self.result()

    def stop(self, timeout: float = 5.0) -> SippResult:
        """Stop a SIPp that runs until told (a UAS): SIGUSR1, SIPp's soft stop that
        still writes its statistics, then SIGKILL after `timeout` s."""
        if self.proc is None:
            raise ProcessError("sipp was not started")
        _stop_group(self.proc, signal.SIGUSR1, timeout)
        return self.result()

    def result(self) -> SippResult:
        """The ended run's exit code, statistics, error trace and screen output."""
        if self.proc is None or self.proc.returncode is None:
            raise ProcessError("sipp has not ended")
        errors = self.errors_path.read_text(errors="replace") if self.errors_path.exists() else ""
        return SippResult(
            returncode=self.proc.returncode,
            stats=SippStats.from_stat_file(self.stat_path),
            errors=errors,
            output=_tail(self.output_path),
        )

    def __enter__(self) -> SippProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.stop()


def run_sipp(workdir: Path, scenario: str | Path, remote: str, **options: Any) -> SippResult:
    """Run a SIPp UAC scenario against `remote` ("host:port") to the end; returns its
    SippResult. `options` as for SippProcess (calls, rate, limit, keys, timeout...)."""
    sipp = SippProcess(workdir, scenario, remote, **options)
    sipp.start()
    return sipp.wait()


def sipp_uas(workdir: Path, scenario: str | Path, **options: Any) -> SippProcess:
    """Start a SIPp UAS (an agent's phone) in the background and return it once its
    port is bound; its SIP address is `local_ip:local_port`. Stop it with stop(),
    which returns its SippResult, or use it as a context manager."""
    sipp = SippProcess(workdir, scenario, None, timeout=None, **options)
    sipp.start()
    return sipp
