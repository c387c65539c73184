"""Queue load benchmark: how many callers can wait with audio, and how fast a freed agent
gets the head of the queue.

One stack on 127.0.0.1: redis-server, RTPengine (rtpengine/rtpengine.conf; 5 media ports per
caller of the largest step), one Kamailio with the dispatcher (kamailio.cfg + KEMI, 4 SIP
workers and the queue keeper, -m 1024; DLG_KA_INTERVAL=0, as SIPp answers no in-dialog
OPTIONS it does not expect), the default prompts. The tenant: 4 agents (max_calls 1, no
wrap-up), each a SIPp UAS (tests/sip/scenarios/uas_answer.xml: 180 and 200 at once)
registered with REGISTER; a group `hold` (810, no queue) through which the benchmark keeps
the agents busy; queue groups q1, q2, ... (811, 812, ...) of the same agents, each
max_length 1000 (the model's maximum: a step above 1000 callers spreads over several
groups), max_wait 170 s (+ ring_timeout 10 s: the model's 180 s early-media limit), the
greeting (7 s), music on hold, and announcements every --announce-interval s (10, the
model's minimum, so that the windows measured hear announcements too).

A step of N callers:

1. Fill. One call per agent through `hold` (bench/scenarios/uac_hold.xml), up until the
   benchmark says hang up; then N callers (bench/scenarios/uac_queue_wait.xml, --rate per
   second). Their SDP offers the benchmark's RTP sink, one port for all: RTPengine sends
   each call from a port of its own, so the sink tells callers apart by source port (and
   SSRC). The first `served` of them call from a prefix with queue priority 9, so they are
   the head of the queue in the latency phase; the rest wait behind them.
2. RTP. Once all N have an entry in Redis' queue and the sink hears N sources: --settle s,
   then a window of --measure s in which the sink counts per stream the packets, the
   sequence gaps (lost) and the packets later than 20 ms against the cadence their RTP
   timestamps promise, as tests/support/rtp.py defines late: a stream's schedule is
   anchored on its earliest packet (arrival - RTP time, minimised), and a packet more than
   20 ms behind it is late. A caller that hears nothing in the window has all its packets
   of the window lost. CPU over the window (/proc): rtpengine (and its busiest thread),
   Kamailio (all processes; the busiest one and the keeper named), redis, SIPp, the sink,
   the benchmark, and the machine; "other jobs" = the machine minus all of these.
3. Latency. The hold calls hang up (BYE, 100 ms apart). Each freed agent gets the head
   caller, who talks 500 ms and hangs up, freeing the agent for the next head caller: one
   release -> INVITE sample per hang-up, --samples of them. Release = the `ts` (Redis'
   TIME, ms) of the `released` event (reason hangup) that Kamailio's release FCALL appends
   when it sees the BYE; INVITE = when the agent's SIPp received it (its -trace_shortmsg
   log: gettimeofday, us). One host, one clock. The INVITE is found by the Call-ID of the
   `offered` event that follows the release for that agent, so a sample spans: release in
   Redis, doorbell (PUBLISH) to the node's keeper, t_continue, claim, INVITE relayed,
   received. release_to_offer_ms is the part up to the claim (both Redis ts).
4. Leave. The agents are paused (nobody is offered while callers leave); every caller still
   waiting is told to leave - a MESSAGE with its Call-ID from the benchmark (-cid_str makes
   them known), upon which the scenario CANCELs -, --leave-rate per second. The step ends
   when SIPp has finished every call and the queue holds none of them; then the agents are
   made available again for the next step.

Two faults of the dispatcher that a step counts (steps[].checks) and works around, so that
each step measures its own callers only:

- rtpengine_sessions_left: RTPengine sessions of the step's calls still there after they
  ended. A queued caller who hangs up (CANCEL, 487, dialog:failed) keeps its session: the
  delete Queueing.ended() sends through the rtpengine module in that event route carries
  the faked message's From tag "123", which RTPengine refuses ("Tag '123' in delete message
  not found, ignoring"); the music plays on to the caller's address until RTPengine's media
  timeout (600 s), with its ports. The benchmark deletes them (NG, by call-id).
- requeued_after_end: callers queued again after their call ended (the keeper acting on the
  held-call list it read before a CANCEL dropped one, see dispatcher/sip/keeper.py _rejoin):
  the entry stays in the queue until its lease lapses (10 s, swept as "lost"). The drain
  does not wait for those.

A step passes with no SIP failure (every caller got its 183, is queued and still waits at
the end of the window, SIPp failed none) and lost + late < 0.1% of the packets due in the
window. Steps go 100, 250, 500, 1000, 1500, 2000 (the cap) and stop at the first failing
one, or when --budget s are used. Before each step the benchmark waits (up to 20 s) for
other jobs on the shared machine to use under 30% of a core; a step that fails while they
used more runs again (up to twice; the failed run stays in steps[], superseded). The
headline is the largest passing step: max_waiting_callers, its rtp_lost_or_late_pct and its
release_to_invite_ms (nearest-rank p50 and p99; every step with no SIP failure is timed).

The sink is a process of its own (its CPU is measured apart) on one UDP socket (and its RTCP
neighbour): recvmmsg through ctypes, up to 2048 datagrams a call, each cut to its 12-byte RTP
header, with the kernel's receive timestamp (SO_TIMESTAMPNS); the per-stream bookkeeping is
vectorised with numpy (0.15 us a packet; it gives tests/support/rtp.py's counts exactly).
In all about 2 us of CPU a packet, mostly the kernel's receive path: 5% of a core at 500
callers (25,000 packets/s), where a recvmsg and a Python loop per packet took 4-5 us here.
With kernel timestamps, when the sink gets the CPU does not
change the lateness it measures; it only has to drain its socket (32 MB buffer, every 50 ms)
before that overflows. Each step reports the sink's CPU, its worst backlog and the socket's
drops (/proc/net/udp); a step whose sink dropped packets fails with limit "sink".

    .venv/bin/python bench/queue_load.py [--json] [--quick] [--steps 100,250,...]
        [--rate 50] [--measure 10] [--samples 100] [--announce-interval 10] [--keep]

Writes bench/results/queue_load.json (--quick: queue_load-quick.json) and queue_load.png
(lost + late and CPU against waiting callers); prints a table, or with --json exactly
{"max_waiting_callers", "rtp_lost_or_late_pct", "release_to_invite_ms", "steps"} (the file
adds "limit" and "setup"). Bounded: every SIPp run and every wait has a timeout, at most
2000 callers, no new step after --budget (420) s; a default run takes about 4-9 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import math
import multiprocessing
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCH_SCENARIOS = ROOT / "bench" / "scenarios"
TEST_SCENARIOS = ROOT / "tests" / "sip" / "scenarios"

# Run as a script from a checkout, where the package is not installed.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sip_load import (  # noqa: E402
    CLK_TCK,
    BenchKamailio,
    _git_revision,
    core_times,
    group_pids,
    process_cpu_ms,
)

from dispatcher.core import AVAILABLE, PAUSED  # noqa: E402
from dispatcher.run.procs import ProcessError, RedisProcess  # noqa: E402
from dispatcher.run.rtpengine import PORT_CEILING, PORT_FLOOR, RtpengineProcess  # noqa: E402
from dispatcher.run.sipprocs import SippProcess, SippStats, run_sipp, sipp_uas  # noqa: E402

TENANT = "queue-load"
HOLD_EXTENSION = "810"
QUEUE_EXTENSION_BASE = 811  # q1 = 811, q2 = 812, ...
QUEUE_MAX_LENGTH = 1000  # the model's maximum per group
MAX_WAIT_S = 170  # + RING_TIMEOUT_S = EARLY_MEDIA_LIMIT_S (180)
RING_TIMEOUT_S = 10
SERVED_CALLER = "+4930100"  # prefix +4930: queue priority 9, the head of the queue
WAITING_CALLER = "+4989100"
TALK_MS = 500  # a served caller's conversation (uac_queue_wait.xml)
MAX_LOST_OR_LATE = 0.001  # a step passes below 0.1% lost + late packets
PTIME_S = 0.020
LATE_S = 0.020  # tests/support/rtp.py's LATE_S
DEFAULT_STEPS = (100, 250, 500, 1000, 1500, 2000)
CAP = 2000
# Other jobs on the shared machine using this much of a core make a run noisy: each step
# first waits (up to Settings.noise_wait_s) for a quieter moment, and a failed step that
# ran while they used more runs again, up to RETRIES times (the failed runs are kept,
# marked superseded).
NOISY_PCT = 30.0
RETRIES = 2


@dataclass(frozen=True)
class Settings:
    """What one run does; `quick()` is a tiny smoke run."""

    steps: tuple[int, ...] = DEFAULT_STEPS
    rate: float = 50.0  # callers entering per second
    leave_rate: float = 100.0  # callers told to leave per second
    settle_s: float = 2.0
    measure_s: float = 10.0
    samples: int = 100  # release -> INVITE samples per step
    agents: int = 4
    announce_interval: int = 10
    children: int = 4
    shm_mb: int = 1024
    pkg_mb: int = 32
    budget_s: float = 420.0  # no new step after this many seconds
    noise_wait: bool = True
    noise_wait_s: float = 20.0
    keep: bool = False

    @classmethod
    def quick(cls) -> Settings:
        return cls(steps=(20, 40), settle_s=1.0, measure_s=3.0, samples=10, agents=2,
                   shm_mb=256, budget_s=90.0, noise_wait=False)  # fmt: skip


# -- the RTP sink (a process of its own) ----------------------------------------------------

_SO_RCVBUFFORCE = 33
_SO_TIMESTAMPNS = 35  # also the cmsg type of its struct timespec (x86-64, 64-bit time_t)
_MSG_DONTWAIT = 0x40
_BATCH = 2048  # datagrams per recvmmsg
_RTP_BYTES = 12  # the fixed RTP header is all the sink reads of a datagram
_SOCKADDR = 16
_CMSG_SPACE = 32  # cmsghdr (16) + timespec (16)
_RCVBUF = 32 << 20
_CYCLE_S = 0.05  # the sink drains its socket this often (kernel times: the rest may wait)

_HEADER = np.dtype([("b0", "u1"), ("b1", "u1"), ("seq", ">u2"), ("ts", ">u4"), ("ssrc", ">u4")])
_ADDRESS = np.dtype([("family", "<u2"), ("port", ">u2"), ("addr", ">u4"), ("zero", "V8")])
_CONTROL = np.dtype([("len", "<u8"), ("level", "<i4"), ("type", "<i4"), ("sec", "<i8"),
                     ("nsec", "<i8")])  # fmt: skip


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


class _Receiver:
    """recvmmsg(2) on one socket into fixed buffers: up to _BATCH datagrams a call, each cut
    to its RTP header, with source address and kernel receive time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._recvmmsg = libc.recvmmsg
        self._recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                   ctypes.c_void_p]  # fmt: skip
        self._data = ctypes.create_string_buffer(_BATCH * _RTP_BYTES)
        self._names = ctypes.create_string_buffer(_BATCH * _SOCKADDR)
        self._control = ctypes.create_string_buffer(_BATCH * _CMSG_SPACE)
        self._iov = (_Iovec * _BATCH)()
        self._msgs = (_Mmsghdr * _BATCH)()
        for i in range(_BATCH):
            self._iov[i].iov_base = ctypes.addressof(self._data) + i * _RTP_BYTES
            self._iov[i].iov_len = _RTP_BYTES
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name = ctypes.addressof(self._names) + i * _SOCKADDR
            hdr.msg_namelen = _SOCKADDR
            hdr.msg_iov = ctypes.addressof(self._iov[i])
            hdr.msg_iovlen = 1
            hdr.msg_control = ctypes.addressof(self._control) + i * _CMSG_SPACE
            hdr.msg_controllen = _CMSG_SPACE
        self._lengths = np.dtype(
            {
                "names": ["msg_len"],
                "formats": ["<u4"],
                "offsets": [_Mmsghdr.msg_len.offset],
                "itemsize": ctypes.sizeof(_Mmsghdr),
            }
        )
        # the kernel overwrites namelen/controllen: restored from this copy before each call
        self._pristine = ctypes.string_at(ctypes.addressof(self._msgs), ctypes.sizeof(self._msgs))

    def receive(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(headers, source ports, kernel times in s) of the RTP datagrams queued, and how
        many datagrams were read: _BATCH when more may be waiting."""
        ctypes.memmove(ctypes.addressof(self._msgs), self._pristine, len(self._pristine))
        count = self._recvmmsg(self.fd, ctypes.addressof(self._msgs), _BATCH, _MSG_DONTWAIT, None)
        if count <= 0:
            empty = np.empty(0)
            return np.empty(0, _HEADER), empty, empty, 0
        lengths = np.frombuffer(self._msgs, self._lengths, count)["msg_len"]
        headers = np.frombuffer(self._data, _HEADER, count).copy()
        ports = np.frombuffer(self._names, _ADDRESS, count)["port"].astype(np.int64)
        control = np.frombuffer(self._control, _CONTROL, count)
        stamped = (control["level"] == socket.SOL_SOCKET) & (control["type"] == _SO_TIMESTAMPNS)
        times = control["sec"] + control["nsec"] * 1e-9
        if not stamped.all():  # never seen on Linux; the receive time is the next best
            times = np.where(stamped, times, time.time())
        rtp = (lengths >= _RTP_BYTES) & ((headers["b0"] >> 6) == 2)
        return headers[rtp], ports[rtp], times[rtp], count


class _Streams:
    """Per stream (RTPengine source port, SSRC) counters, updated a batch at a time.

    Sequence numbers and RTP timestamps are extended packet by packet (the signed 16- and
    32-bit difference to the stream's previous packet), so wrap-around and reordering are
    followed; a stream's first packet is its number 0. lost = (highest - lowest + 1) -
    received. Lateness as tests/support/rtp.py's StreamStats: the anchor is the running
    minimum of arrival - RTP time; a packet more than LATE_S behind it is late. O(batch
    log batch) numpy work, no Python loop over packets.
    """

    def __init__(self, time_base: float) -> None:
        self.time_base = time_base
        self.clear()

    # per stream: (initial value, dtype)
    _FIELDS: ClassVar[dict[str, tuple[float, Any]]] = {
        "port": (0, np.int64), "last_seq": (0, np.int64), "last_ext": (0, np.int64),
        "low": (0, np.int64), "high": (0, np.int64), "last_ts": (0, np.int64),
        "last_ets": (0, np.int64), "anchor": (np.inf, np.float64), "received": (0, np.int64),
        "late": (0, np.int64), "max_late": (0.0, np.float64), "last_t": (0.0, np.float64),
        "max_gap": (0.0, np.float64),
    }  # fmt: skip

    def clear(self) -> None:
        self.n = 0
        self._keys = np.empty(0, np.uint64)  # sorted
        self._slots = np.empty(0, np.int64)  # the stream index of each sorted key
        self.capacity = 4096
        for name, (fill, dtype) in self._FIELDS.items():
            setattr(self, name, np.full(self.capacity, fill, dtype))

    def _grow(self, capacity: int) -> None:
        for name, (fill, dtype) in self._FIELDS.items():
            grown = np.full(capacity, fill, dtype)
            grown[: self.capacity] = getattr(self, name)
            setattr(self, name, grown)
        self.capacity = capacity

    def _index(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stream index per key; new keys become streams. Returns (indexes, new streams)."""
        pos = np.searchsorted(self._keys, keys)
        known = np.zeros(len(keys), bool)
        if len(self._keys):
            known = self._keys[np.minimum(pos, len(self._keys) - 1)] == keys
        new_streams = np.empty(0, np.int64)
        if not known.all():
            fresh = np.unique(keys[~known])
            new_streams = np.arange(self.n, self.n + len(fresh))
            self.n += len(fresh)
            if self.n > self.capacity:
                self._grow(max(self.n, 2 * self.capacity))
            merged = np.concatenate([self._keys, fresh])
            order = np.argsort(merged, kind="stable")
            self._keys = merged[order]
            self._slots = np.concatenate([self._slots, new_streams])[order]
            pos = np.searchsorted(self._keys, keys)
        return self._slots[pos], new_streams

    def add(self, headers: np.ndarray, ports: np.ndarray, times: np.ndarray) -> None:
        if not len(headers):
            return
        seq_all = headers["seq"].astype(np.int64)
        ts_all = headers["ts"].astype(np.int64)
        t_all = times - self.time_base
        keys = (ports.astype(np.uint64) << np.uint64(32)) | headers["ssrc"].astype(np.uint64)
        idx, new_streams = self._index(keys)
        if len(new_streams):
            # each new stream starts from its first packet in this batch: number 0, time 0
            streams, first = np.unique(idx, return_index=True)
            fresh = np.isin(streams, new_streams)
            s, f = streams[fresh], first[fresh]
            self.port[s] = ports[f]
            self.last_seq[s] = seq_all[f] - 1
            self.last_ext[s] = -1
            self.low[s] = 0
            self.high[s] = -1
            self.last_ts[s] = ts_all[f]
            self.last_ets[s] = 0
            self.anchor[s] = np.inf
            self.last_t[s] = t_all[f]
        order = np.argsort(idx, kind="stable")
        si, seq, ts, t = idx[order], seq_all[order], ts_all[order], t_all[order]
        starts = np.empty(len(si), bool)
        starts[0] = True
        starts[1:] = si[1:] != si[:-1]
        firsts = np.flatnonzero(starts)
        sizes = np.diff(np.append(firsts, len(si)))
        lasts = firsts + sizes - 1
        g = si[firsts]

        def extended(values: np.ndarray, last: np.ndarray, last_ext: np.ndarray, bits: int):
            half, mask = 1 << (bits - 1), (1 << bits) - 1
            prev = np.empty_like(values)
            prev[1:] = values[:-1]
            prev[firsts] = last[g]
            step = ((values - prev + half) & mask) - half
            total = np.cumsum(step)
            return (
                total
                - np.repeat(total[firsts] - step[firsts], sizes)
                + np.repeat(last_ext[g], sizes)
            )

        ext = extended(seq, self.last_seq, self.last_ext, 16)
        ets = extended(ts, self.last_ts, self.last_ets, 32)
        ahead = t - ets / 8000.0
        # running minimum within each stream: later streams shifted below earlier ones
        rank = np.repeat(np.arange(len(firsts), dtype=np.float64), sizes) * 1e6
        anchor = np.minimum(
            np.minimum.accumulate(ahead - rank) + rank, np.repeat(self.anchor[g], sizes)
        )
        lateness = ahead - anchor
        prev_t = np.empty_like(t)
        prev_t[1:] = t[:-1]
        prev_t[firsts] = self.last_t[g]
        self.last_seq[g], self.last_ext[g] = seq[lasts], ext[lasts]
        self.last_ts[g], self.last_ets[g] = ts[lasts], ets[lasts]
        self.anchor[g], self.last_t[g] = anchor[lasts], t[lasts]
        self.low[g] = np.minimum(self.low[g], np.minimum.reduceat(ext, firsts))
        self.high[g] = np.maximum(self.high[g], np.maximum.reduceat(ext, firsts))
        self.received[g] += sizes
        self.late[g] += np.add.reduceat((lateness > LATE_S).astype(np.int64), firsts)
        self.max_late[g] = np.maximum(self.max_late[g], np.maximum.reduceat(lateness, firsts))
        self.max_gap[g] = np.maximum(self.max_gap[g], np.maximum.reduceat(t - prev_t, firsts))

    def summary(self) -> dict[str, Any]:
        n = self.n
        received = self.received[:n]
        lost = np.clip(self.high[:n] - self.low[:n] + 1 - received, 0, None)
        ports = self.port[:n]
        per_caller = np.bincount(np.unique(ports, return_inverse=True)[1], weights=received)
        return {
            "streams": int(n),
            "callers": len(np.unique(ports)),
            "packets": int(received.sum()),
            "lost": int(lost.sum()),
            "late": int(self.late[:n].sum()),
            "max_late_ms": round(float(self.max_late[:n].max(initial=0.0)) * 1000, 1),
            "max_gap_ms": round(float(self.max_gap[:n].max(initial=0.0)) * 1000, 1),
            "min_packets_per_caller": int(per_caller.min()) if n else 0,
        }


def _udp_drops(inodes: set[int]) -> int:
    """Datagrams the kernel dropped on these sockets (full buffer), from /proc/net/udp."""
    drops = 0
    with open("/proc/net/udp") as table:
        next(table)
        for fields in map(str.split, table):
            if int(fields[9]) in inodes:
                drops += int(fields[-1])
    return drops


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    """An even RTP port on 127.0.0.1 and the odd RTCP port above it, both bound."""
    for _ in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("127.0.0.1", port + 1))
            except OSError:
                rtcp.close()
            else:
                return rtp, rtcp
        rtp.close()
    raise RuntimeError("no free even/odd UDP port pair on 127.0.0.1")


def _sink_main(conn: Connection) -> None:
    """The sink process: drain, count, answer "reset" / "snapshot" / "stop" on `conn`."""
    rtp, rtcp = _bind_pair()
    for sock in (rtp, rtcp):
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)  # root: past rmem_max
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        sock.setblocking(False)
    rtp.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    receiver = _Receiver(rtp)
    inodes = {os.fstat(rtp.fileno()).st_ino}
    streams = _Streams(time_base=float(int(time.time())))
    window_start = time.time()
    drops_at_reset = _udp_drops(inodes)
    max_backlog = 0.0
    rtcp_packets = 0
    rcvbuf = rtp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    conn.send({"port": rtp.getsockname()[1], "rcvbuf": rcvbuf})

    def drain() -> None:
        """Count what the socket holds that arrived in the window."""
        nonlocal max_backlog, rtcp_packets
        parts = []
        while True:
            *part, count = receiver.receive()
            parts.append(part)
            if count < _BATCH:
                break
        headers, ports, times = (np.concatenate(column) for column in zip(*parts, strict=True))
        if len(times):
            max_backlog = max(max_backlog, time.time() - float(times.min()))
            inside = times >= window_start  # queued before the window began: not counted
            streams.add(headers[inside], ports[inside], times[inside])
        with contextlib.suppress(BlockingIOError):
            while rtcp.recv(2048):
                rtcp_packets += 1

    while True:
        cycle = time.monotonic()
        drain()
        while conn.poll():
            command = conn.recv()
            drain()
            if command == "reset":
                streams.clear()
                window_start, max_backlog = time.time(), 0.0
                drops_at_reset = _udp_drops(inodes)
            elif command == "snapshot":
                conn.send(
                    {
                        **streams.summary(),
                        "window_s": round(time.time() - window_start, 3),
                        "sink_drops": _udp_drops(inodes) - drops_at_reset,
                        "sink_max_backlog_ms": round(max_backlog * 1000, 1),
                        "rtcp_packets": rtcp_packets,
                    }
                )
            elif command == "stop":
                return
        time.sleep(max(0.0, _CYCLE_S - (time.monotonic() - cycle)))


class RtpSink:
    """The sink process, from the benchmark's side: `port` goes into the callers' SDP."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_sink_main, args=(child,), daemon=True)
        self.process.start()
        if not self._conn.poll(20):
            raise RuntimeError("the RTP sink did not start")
        hello = self._conn.recv()
        self.port: int = hello["port"]
        self.rcvbuf: int = hello["rcvbuf"]

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def reset(self) -> None:
        """Forget every stream: the window starts now."""
        self._conn.send("reset")

    def snapshot(self) -> dict[str, Any]:
        self._conn.send("snapshot")
        if not self._conn.poll(10):
            raise RuntimeError("the RTP sink does not answer")
        return dict(self._conn.recv())

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._conn.send("stop")
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# -- the stack --------------------------------------------------------------------------------


def queue_groups(callers: int) -> int:
    return max(1, math.ceil(callers / QUEUE_MAX_LENGTH))


def tenant_doc(settings: Settings) -> dict[str, Any]:
    """Agents a1.. (registered AORs, max_calls 1, no wrap-up), the hold group and the queue
    groups, all of the same agents."""
    agents = [f"a{i}" for i in range(1, settings.agents + 1)]
    members = [{"agent": a} for a in agents]
    queue = {
        "max_length": QUEUE_MAX_LENGTH,
        "max_wait": MAX_WAIT_S,
        "announce_interval": settings.announce_interval,
        "language": "en",
        "priority_callers": [{"prefix": SERVED_CALLER[:5], "priority": 9}],
        "overflow": {
            "full": {"kind": "reply", "code": 486},
            "timeout": {"kind": "reply", "code": 408},
        },
    }
    groups: list[dict[str, Any]] = [
        {"id": "hold", "extension": HOLD_EXTENSION, "name": "Hold", "strategy": "sequential",
         "sticky": False, "ring_timeout": RING_TIMEOUT_S, "members": members},
    ]  # fmt: skip
    for g in range(queue_groups(max(settings.steps))):
        groups.append(
            {
                "id": f"q{g + 1}",
                "extension": str(QUEUE_EXTENSION_BASE + g),
                "name": f"Queue {g + 1}",
                "strategy": "longest_idle",
                "sticky": False,
                "ring_timeout": RING_TIMEOUT_S,
                "overall_timeout": MAX_WAIT_S + RING_TIMEOUT_S,
                "members": members,
                "queue": queue,
            }
        )
    return {
        "id": TENANT,
        "name": "Queue load",
        "agents": [
            {
                "id": a,
                "name": a.upper(),
                "targets": {"aor": a},
                "state": "available",
                "max_calls": 1,
                "wrapup": 0,
            }
            for a in agents
        ],
        "groups": groups,
    }


def prompts_dir() -> Path:
    """The node's prompts: DISPATCHER_PROMPTS or the default cache (as `make run`)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("DISPATCHER_PROMPTS") or Path(cache) / "dispatcher" / "prompts")


@dataclass
class Stack:
    """Redis, RTPengine, Kamailio, the agents' phones and the sink; `stop()` ends them."""

    workdir: Path
    settings: Settings
    redis: RedisProcess | None = None
    rtpengine: RtpengineProcess | None = None
    kamailio: BenchKamailio | None = None
    phones: dict[str, SippProcess] = field(default_factory=dict)
    sink: RtpSink | None = None
    roles: dict[int, str] = field(default_factory=dict)  # Kamailio pid -> what it does

    def start(self) -> None:
        from dispatcher.admin.config_sync import import_tenant
        from dispatcher.config.model import Tenant
        from dispatcher.media.prompts import ensure_default_prompts
        from dispatcher.state import StateStore

        s = self.settings
        self.sink = RtpSink()  # first: a spawned process, before this one has threads
        prompts = prompts_dir()
        ensure_default_prompts(prompts)
        self.redis = RedisProcess(self.workdir / "redis")
        self.redis.start()
        with StateStore(self.redis.url, TENANT) as store:
            import_tenant(store, Tenant.model_validate(tenant_doc(s)))
        self.rtpengine = rtpengine_for(self.workdir / "rtpe", max(s.steps))
        self.rtpengine.start()
        self.kamailio = BenchKamailio(
            self.workdir / "kam",
            redis_url=self.redis.url,
            tenant=TENANT,
            children=s.children,
            rtpengine_ng=("127.0.0.1", self.rtpengine.ng_port),
            prompts_dir=prompts,
            # SIPp answers no in-dialog OPTIONS it does not expect: no keepalives
            extra_defines={"DLG_KA_INTERVAL": 0},
            shm_mb=s.shm_mb,
            pkg_mb=s.pkg_mb,
        )
        self.kamailio.start()
        self.roles = kamailio_roles(self.kamailio)
        for agent in agent_ids(s):
            phone = sipp_uas(
                self.workdir / "phones",
                TEST_SCENARIOS / "uas_answer.xml",
                extra_args=["-trace_shortmsg", "-shortmessage_file",
                            str(self.workdir / "phones" / f"{agent}.short.log")],
            )  # fmt: skip
            self.phones[agent] = phone
            result = run_sipp(
                self.workdir / "register",
                TEST_SCENARIOS / "register.xml",
                self.kamailio.address,
                calls=1,
                service=agent,
                keys={"contact_port": phone.local_port, "expires": 3600},
                timeout=10,
            )
            if not result.ok:
                raise RuntimeError(f"REGISTER {agent} failed: {result.errors or result.output}")

    def stop(self) -> None:
        for phone in self.phones.values():
            if phone.proc is not None and phone.proc.returncode is None:
                phone.stop(timeout=1.0)
        if self.kamailio is not None:
            self.kamailio.stop()
        if self.rtpengine is not None:
            self.rtpengine.close()  # stops it and gives its port range back
        if self.redis is not None:
            self.redis.stop()
        if self.sink is not None:
            self.sink.stop()

    def client(self) -> Any:
        import redis

        assert self.redis is not None
        return redis.Redis.from_url(self.redis.url, decode_responses=True)


def rtpengine_for(workdir: Path, callers: int) -> RtpengineProcess:
    """An RTPengine with 5 media ports per caller of the largest step and 400 more: a call
    takes 4 (RTP and RTCP on both sides), and RTPengine wants consecutive even/odd pairs
    from what is free. A smaller block when a range that large is not free (the tests'
    RTPengines take blocks of the same pool), down to 4 per caller."""
    size = min(5 * callers + 400, PORT_CEILING - PORT_FLOOR + 1)
    while True:
        try:
            return RtpengineProcess(workdir, ports=size)
        except ProcessError:
            if size <= 4 * callers + 200:
                raise
            size = max(4 * callers + 200, size - 1000)


def agent_ids(settings: Settings) -> list[str]:
    return [f"a{i}" for i in range(1, settings.agents + 1)]


def kamailio_roles(kamailio: BenchKamailio) -> dict[int, str]:
    """Kamailio's processes (core.psx): pid -> description, e.g. "udp receiver child=0"."""
    try:
        listed = kamailio.rpc("core.psx")
    except Exception:  # an older Kamailio without core.psx: CPU per process stays unnamed
        return {}
    return {int(p["PID"]): str(p["DSC"]) for p in listed if "PID" in p}


# -- measuring ----------------------------------------------------------------------------------


def thread_cpu_ms(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (thread name, utime + stime ms) of each thread of `pid`."""
    threads = {}
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as stat:
                text = stat.read()
                name = text[text.index("(") + 1 : text.rindex(")")]
                fields = text[text.rindex(")") + 2 :].split()
                threads[int(tid)] = (name, (int(fields[11]) + int(fields[12])) * 1000 / CLK_TCK)
    return threads


@dataclass
class CpuSample:
    """CPU ms of each part at one instant, and the machine's busy jiffies."""

    at: float
    rtpengine: float
    rtpengine_threads: dict[int, tuple[str, float]]
    kamailio: dict[int, float]
    redis: float
    sink: float
    sipp: float
    bench: float
    cores: dict[str, tuple[int, int]]

    @classmethod
    def take(cls, stack: Stack, sipps: Iterable[SippProcess]) -> CpuSample:
        assert stack.kamailio and stack.kamailio.proc and stack.rtpengine and stack.redis
        assert stack.redis.proc and stack.sink
        return cls(
            at=time.monotonic(),
            rtpengine=process_cpu_ms(stack.rtpengine.pid),
            rtpengine_threads=thread_cpu_ms(stack.rtpengine.pid),
            kamailio={p: process_cpu_ms(p) for p in group_pids(stack.kamailio.proc.pid)},
            redis=process_cpu_ms(stack.redis.proc.pid),
            sink=process_cpu_ms(stack.sink.pid),
            sipp=sum(process_cpu_ms(p.proc.pid) for p in sipps if p.proc is not None),
            bench=process_cpu_ms(os.getpid()),
            cores=core_times(),
        )


def cpu_usage(before: CpuSample, after: CpuSample, roles: dict[int, str]) -> dict[str, Any]:
    """% of one core per part between two samples; the busiest Kamailio process named."""
    wall_ms = (after.at - before.at) * 1000

    def pct(ms: float) -> float:
        return round(100 * ms / wall_ms, 1) if wall_ms > 0 else 0.0

    kamailio = {p: after.kamailio[p] - before.kamailio.get(p, 0.0) for p in after.kamailio}
    threads: dict[str, float] = {}  # rtpengine's threads by name: the busiest one, and each kind
    busiest_thread = ("", 0.0)
    for tid, (name, ms) in after.rtpengine_threads.items():
        used = ms - before.rtpengine_threads.get(tid, (name, 0.0))[1]
        threads[name] = threads.get(name, 0.0) + used
        busiest_thread = max(busiest_thread, (name, used), key=lambda pair: pair[1])
    busiest = max(kamailio, key=kamailio.__getitem__, default=None)
    keeper = [p for p, role in roles.items() if "keeper" in role.lower()]
    busy = sum(a[0] - before.cores.get(c, (0, 0))[0] for c, a in after.cores.items())
    total = sum(a[1] - before.cores.get(c, (0, 0))[1] for c, a in after.cores.items())
    cores = len(after.cores)
    machine = 100 * cores * busy / total if total else 0.0
    ours = {
        "rtpengine": after.rtpengine - before.rtpengine,
        "kamailio": sum(kamailio.values()),
        "redis": after.redis - before.redis,
        "sink": after.sink - before.sink,
        "sipp": after.sipp - before.sipp,
        "bench": after.bench - before.bench,
    }
    return {
        **{f"{name}_cpu_pct": pct(ms) for name, ms in ours.items()},
        "rtpengine_busiest_thread": {
            "name": busiest_thread[0],
            "cpu_pct": pct(busiest_thread[1]),
        },
        "rtpengine_threads_cpu_pct": {
            name: pct(ms) for name, ms in sorted(threads.items(), key=lambda kv: -kv[1]) if ms
        },
        "kamailio_busiest_process": {
            "role": roles.get(busiest, f"pid {busiest}") if busiest else None,
            "cpu_pct": pct(kamailio[busiest]) if busiest else 0.0,
        },
        "kamailio_keeper_cpu_pct": pct(sum(kamailio.get(p, 0.0) for p in keeper)),
        "machine_cpu_pct": round(machine, 1),  # of one core: 200 = both cores busy
        "other_jobs_cpu_pct": round(max(0.0, machine - pct(sum(ours.values()))), 1),
        "cores": cores,
    }


def read_stats(sipp: SippProcess) -> SippStats:
    """SIPp's cumulative counters so far (its -fd 1 statistics file)."""
    return SippStats.from_stat_file(sipp.stat_path)


def queued(client: Any, tag: str) -> tuple[int, int]:
    """(queue entries of this step's callers - Call-IDs starting with `tag` -, how many of
    them belong to a call that has ended already: a ghost entry, see requeued_after_end)."""
    from dispatcher.state import TenantKeys

    keys = TenantKeys(TENANT)
    calls = [c for c in client.hkeys(keys.queue["qe"]) if c.startswith(tag)]
    if not calls:
        return 0, 0
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.exists(keys.ended(call))
    return len(calls), sum(pipe.execute())


def requeued_after_end(events: Iterable[dict[str, str]]) -> int:
    """Calls with a `queued` event after their `ended` one (a caller queued again after it
    hung up)."""
    ended, requeued = set(), set()
    for event in events:
        call = event.get("call", "")
        if event["type"] == "ended":
            ended.add(call)
        elif event["type"] == "queued" and call in ended:
            requeued.add(call)
    return len(requeued)


def delete_sessions(rtpengine: RtpengineProcess, call_ids: Iterable[str]) -> int:
    """Delete what RTPengine still holds of these calls; how many it held. Each caller's
    session should be gone once its call ended (see the module docstring on
    rtpengine_sessions_left). One NG round trip per call."""
    held = 0
    with rtpengine.client(timeout=1.0) as ng:
        for call_id in call_ids:
            # an unknown call-id (deleted when its call ended, as it should be) is answered
            # with result ok and a warning
            held += "warning" not in ng.delete(call_id, delete_delay=0)
    return held


def out_of_ports(rtpengine: RtpengineProcess) -> int:
    """How often RTPengine's log says it ran out of media ports."""
    try:
        return rtpengine.log_path.read_text(errors="replace").count("Ran out of ports")
    except FileNotFoundError:
        return 0


def agents_live(client: Any) -> int:
    from dispatcher.state import TenantKeys

    keys = TenantKeys(TENANT)
    return sum(int(v) for v in client.hvals(keys.agent["live"])) + sum(
        int(v) for v in client.hvals(keys.agent["resv"])
    )


def last_event_id(client: Any) -> str:
    from dispatcher.state import TenantKeys

    last = client.xrevrange(TenantKeys(TENANT).events, count=1)
    return last[0][0] if last else "0-0"


def events_after(client: Any, after: str) -> list[dict[str, str]]:
    from dispatcher.state import TenantKeys

    return [fields for _, fields in client.xrange(TenantKeys(TENANT).events, f"({after}", "+")]


def wait_until(condition: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def set_agents(stack: Stack, status: int) -> None:
    from dispatcher.state import StateStore

    assert stack.redis is not None
    with StateStore(stack.redis.url, TENANT) as store:
        for agent in agent_ids(stack.settings):
            store.set_state(agent, status, "queue_load" if status == PAUSED else "")


class Messenger:
    """Tells a SIPp call to go on (uac_queue_wait: leave; uac_hold: hang up): a MESSAGE
    with its Call-ID to its SIPp's port. SIPp maps it to the call by Call-ID; nothing
    answers it, nothing retransmits it (loopback)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def tell(self, sipp: SippProcess, call_id: str) -> None:
        request = (
            f"MESSAGE sip:go@127.0.0.1:{sipp.local_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-go-{call_id}\r\n"
            f"From: <sip:bench@127.0.0.1:{self.port}>;tag=queue-load\r\n"
            f"To: <sip:caller@127.0.0.1:{sipp.local_port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 MESSAGE\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        self.sock.sendto(request.encode(), ("127.0.0.1", sipp.local_port))

    def close(self) -> None:
        self.sock.close()


@dataclass
class Callers:
    """One SIPp UAC process of callers and the Call-IDs it uses (-cid_str)."""

    sipp: SippProcess
    prefix: str
    count: int

    def call_ids(self) -> list[str]:
        return [f"{self.prefix}{n}" for n in range(1, self.count + 1)]


def start_callers(
    stack: Stack, workdir: Path, prefix: str, count: int, extension: str, caller: str,
    rate: float, scenario: str, timeout: float,
) -> Callers:  # fmt: skip
    assert stack.kamailio is not None and stack.sink is not None
    sipp = SippProcess(
        workdir,
        BENCH_SCENARIOS / scenario,
        stack.kamailio.address,
        calls=count,
        rate=rate,
        limit=count,
        service=extension,
        keys={"caller": caller, "rtp_port": stack.sink.port},
        timeout=timeout,
        extra_args=["-cid_str", f"{prefix}%u"],
    )
    sipp.start()
    return Callers(sipp, prefix, count)


def agent_invites(stack: Stack) -> dict[tuple[str, str], float]:
    """(agent, Call-ID) -> epoch s the agent's phone received the INVITE (first copy), from
    the phones' -trace_shortmsg logs: date, time, epoch.us, R|S, Call-ID, CSeq, first line."""
    seen: dict[tuple[str, str], float] = {}
    for agent in stack.phones:
        path = stack.workdir / "phones" / f"{agent}.short.log"
        with contextlib.suppress(FileNotFoundError), path.open(errors="replace") as log:
            for line in log:
                cols = line.rstrip("\n").split("\t")
                if len(cols) >= 7 and cols[3] == "R" and cols[6].startswith("INVITE "):
                    seen.setdefault((agent, cols[4]), float(cols[2]))
    return seen


def latency_samples(
    events: Sequence[dict[str, str]], invites: dict[tuple[str, str], float], agents: set[str]
) -> list[tuple[float, float]]:
    """(release -> INVITE ms, release -> offer ms) per agent release that led to an offer:
    each `released` (reason hangup) of an agent, paired with that agent's next `offered`
    event in a queue group, whose Call-ID names the INVITE the phone received."""
    pending: dict[str, int] = {}  # agent -> ts of its release not yet followed by an offer
    samples = []
    for event in events:
        agent = event.get("agent", "")
        if agent not in agents:
            continue
        if event["type"] == "released" and event.get("reason") == "hangup":
            pending[agent] = int(event["ts"])
        elif event["type"] == "offered" and event.get("group", "").startswith("q"):
            released = pending.pop(agent, None)
            received = invites.get((agent, event["call"]))
            if released is not None and received is not None:
                samples.append((received * 1000 - released, int(event["ts"]) - released))
    return samples


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (as dispatcher/reports/figures.py)."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 1)


# -- one step -----------------------------------------------------------------------------------


def run_step(stack: Stack, n: int, index: int, messenger: Messenger, say: Any) -> dict[str, Any]:
    """N callers waiting: fill, RTP window, latency phase, leave. Returns the step's report."""
    s = stack.settings
    client = stack.client()
    workdir = stack.workdir / f"step{index}-{n}"
    agents = agent_ids(s)
    tag = f"ql{index}-"
    entry_budget = n / s.rate * 2 + 20
    timeout = entry_budget + s.settle_s + s.measure_s + s.samples * TALK_MS / 1000 + 120
    step: dict[str, Any] = {"callers": n}
    sipps: list[SippProcess] = [*stack.phones.values()]
    started = time.monotonic()
    set_agents(stack, AVAILABLE)
    mark = last_event_id(client)
    assert stack.rtpengine is not None
    ports_before = out_of_ports(stack.rtpengine)

    # 1. fill: the agents busy, then the callers, the served ones first (they are few)
    holders = start_callers(stack, workdir, f"{tag}hold-", s.agents, HOLD_EXTENSION, "hold",
                            s.agents * 5, "uac_hold.xml", timeout)  # fmt: skip
    sipps.append(holders.sipp)
    if not wait_until(lambda: agents_live(client) == s.agents, 15):
        raise RuntimeError(f"the hold calls did not make all {s.agents} agents busy")
    served_n = min(s.samples + s.agents + 8, int(n * 0.8))
    groups = queue_groups(n)
    share = math.ceil(n / groups)
    callers = [
        start_callers(stack, workdir, f"{tag}sv-", served_n, str(QUEUE_EXTENSION_BASE),
                      SERVED_CALLER, s.rate, "uac_queue_wait.xml", timeout)
    ]  # fmt: skip
    sipps.append(callers[0].sipp)

    def failed_calls() -> int:
        return sum(read_stats(c.sipp).failed for c in callers)

    wait_until(lambda: queued(client, tag)[0] >= served_n or failed_calls() > 0,
               served_n / s.rate * 2 + 10)  # fmt: skip
    remaining = n - served_n
    for g in range(groups):
        count = min(remaining, share - (served_n if g == 0 else 0))
        remaining -= count
        if count > 0:
            group_callers = start_callers(
                stack, workdir, f"{tag}w{g + 1}-", count, str(QUEUE_EXTENSION_BASE + g),
                WAITING_CALLER, s.rate / groups, "uac_queue_wait.xml", timeout,
            )  # fmt: skip
            callers.append(group_callers)
            sipps.append(group_callers.sipp)

    def all_in() -> bool:
        return failed_calls() > 0 or (
            queued(client, tag)[0] >= n
            and stack.sink is not None
            and stack.sink.snapshot()["callers"] >= n
        )

    assert stack.sink is not None
    stack.sink.reset()  # "callers" in all_in counts the sources heard since now
    entered = wait_until(all_in, entry_budget, interval=0.25)
    step["entry_s"] = round(time.monotonic() - started, 1)
    step["all_queued_in_time"] = entered and failed_calls() == 0

    # 2. the RTP window
    time.sleep(s.settle_s)
    stack.sink.reset()
    window_mark = last_event_id(client)
    before = CpuSample.take(stack, sipps)
    time.sleep(s.measure_s)
    heard = stack.sink.snapshot()
    after = CpuSample.take(stack, sipps)
    waiting = queued(client, tag)[0]
    failed = failed_calls()
    window_events = events_after(client, window_mark)
    step.update(cpu_usage(before, after, stack.roles))
    silent = max(0, n - heard["callers"])
    due_per_caller = heard["window_s"] / PTIME_S
    lost = heard["lost"] + round(silent * due_per_caller)
    due = heard["packets"] + lost
    step["rtp_lost_or_late_pct"] = round(100 * (lost + heard["late"]) / due, 4) if due else None
    step["sip_failures"] = max(failed, n - waiting)
    step["rtp"] = {
        **heard,
        "silent_callers": silent,
        "lost_with_silent": lost,
        "packets_due_by_time": round(n * due_per_caller),
        "announcements": sum(1 for e in window_events if e["type"] == "announced"),
    }
    step["sink_kept_up"] = heard["sink_drops"] == 0
    step["passed"] = (
        step["sip_failures"] == 0
        and step["rtp_lost_or_late_pct"] is not None
        and step["rtp_lost_or_late_pct"] < 100 * MAX_LOST_OR_LATE
        and step["sink_kept_up"]
    )
    say(
        f"{n:>5} callers: in after {step['entry_s']} s, lost+late "
        f"{step['rtp_lost_or_late_pct']}% ({heard['lost']} lost, {heard['late']} late of "
        f"{heard['packets']}, {silent} silent), sip failures {step['sip_failures']}, cpu "
        f"rtpengine {step['rtpengine_cpu_pct']}% kamailio {step['kamailio_cpu_pct']}% "
        f"sink {step['sink_cpu_pct']}% machine {step['machine_cpu_pct']}%"
    )

    # 3. latency: the hold calls hang up; each freed agent takes the head caller, who talks
    # TALK_MS and hangs up, freeing it for the next
    latency_mark = last_event_id(client)
    latency_before = CpuSample.take(stack, sipps)
    if step["sip_failures"] == 0:
        target = served_n - s.agents - 8
        for call_id in holders.call_ids():
            messenger.tell(holders.sipp, call_id)
            time.sleep(0.1)

        def offers() -> int:
            return sum(
                1
                for e in events_after(client, latency_mark)
                if e["type"] == "offered" and e.get("group", "").startswith("q")
            )

        wait_until(lambda: offers() >= target, target * TALK_MS / 1000 / s.agents * 3 + 15, 0.2)
    during = cpu_usage(latency_before, CpuSample.take(stack, sipps), stack.roles)
    set_agents(stack, PAUSED)  # nobody is offered while the callers leave
    for call_id in holders.call_ids():  # (hold calls that are still up)
        messenger.tell(holders.sipp, call_id)
    wait_until(lambda: agents_live(client) == 0, 10)

    # 4. everyone still waiting leaves
    leave_started = time.monotonic()
    for group_callers in callers:
        for call_id in group_callers.call_ids():
            messenger.tell(group_callers.sipp, call_id)
            time.sleep(1 / s.leave_rate)
    results = {}
    for c in [holders, *callers]:
        try:
            results[c.prefix] = c.sipp.wait(timeout=n / s.leave_rate + 30)
        except Exception as exc:  # killed after its timeout: counted as failed below
            say(f"  {c.prefix}: {exc}")

    def drained() -> bool:  # ghost entries (see requeued_after_end) lapse by themselves
        entries, ghosts = queued(client, tag)
        return entries == ghosts and agents_live(client) == 0

    is_drained = wait_until(drained, 20)
    sessions_left = delete_sessions(
        stack.rtpengine, [call for c in callers for call in c.call_ids()]
    )
    entries, ghosts = queued(client, tag)
    left = {"queued": entries, "of_ended_calls": ghosts, "agents_busy": agents_live(client)}
    step["leave_s"] = round(time.monotonic() - leave_started, 1)

    samples = latency_samples(events_after(client, latency_mark), agent_invites(stack), set(agents))
    invite_ms = [a for a, _ in samples]
    offer_ms = [b for _, b in samples]
    step["release_to_invite_ms"] = {
        **{f"p{q}": percentile(invite_ms, q) for q in (50, 90, 99)},
        "max": round(max(invite_ms), 1) if invite_ms else None,
        "over_20ms": sum(1 for v in invite_ms if v > 20),
        "samples": len(invite_ms),
    }
    step["release_to_offer_ms"] = {f"p{q}": percentile(offer_ms, q) for q in (50, 90, 99)}
    step["latency_phase_cpu_pct"] = {
        key: during[f"{key}_cpu_pct"] for key in ("rtpengine", "kamailio", "machine", "other_jobs")
    } | {"kamailio_keeper": during["kamailio_keeper_cpu_pct"]}
    step_events = events_after(client, mark)
    overflowed = [e for e in step_events if e["type"] == "overflowed"]
    dequeued = [e for e in step_events if e["type"] == "dequeued"]
    step["checks"] = {
        "sipp_failed_calls_total": sum(r.stats.failed for r in results.values()),
        "sipp_successful_calls_total": sum(r.stats.successful for r in results.values()),
        "sipp_runs_not_ended": 1 + len(callers) - len(results),
        "overflowed": len(overflowed),
        "dequeued": dict(Counter(e.get("reason", "") for e in dequeued)),
        "requeued_after_end": requeued_after_end(step_events),
        "rtpengine_out_of_ports": out_of_ports(stack.rtpengine) - ports_before,
        "rtpengine_sessions_left": sessions_left,
        "drained": is_drained,
        "left": left,
    }
    step["seconds"] = round(time.monotonic() - started, 1)
    lat = step["release_to_invite_ms"]
    say(
        f"       release -> INVITE p50 {lat['p50']} ms p99 {lat['p99']} ms "
        f"({lat['samples']} samples); step took {step['seconds']} s; checks {step['checks']}"
    )
    client.close()
    return step


def limit_of(step: dict[str, Any]) -> str:
    """What most likely stopped a failing step, from its own figures."""
    if not step["sink_kept_up"]:
        return f"the RTP sink: it dropped {step['rtp']['sink_drops']} packets (its socket buffer)"
    refused = step["checks"]["rtpengine_out_of_ports"]
    if refused:
        return f"RTPengine's media port range: it refused {refused} offers (out of ports)"
    thread = step["rtpengine_busiest_thread"]
    parts = (
        f"rtpengine {step['rtpengine_cpu_pct']}% (busiest thread: {thread['name']} "
        f"{thread['cpu_pct']}%), kamailio {step['kamailio_cpu_pct']}% "
        f"(busiest: {step['kamailio_busiest_process']['role']} "
        f"{step['kamailio_busiest_process']['cpu_pct']}%), redis {step['redis_cpu_pct']}%, "
        f"sink {step['sink_cpu_pct']}%, sipp {step['sipp_cpu_pct']}%, other jobs "
        f"{step['other_jobs_cpu_pct']}% of one core"
    )
    cores = step["cores"]
    if step["other_jobs_cpu_pct"] >= NOISY_PCT:
        return f"inconclusive, other jobs on the machine: {parts}"
    if step["machine_cpu_pct"] >= 90 * cores:
        return f"CPU: the machine's {cores} cores were busy ({step['machine_cpu_pct']}%): {parts}"
    if thread["cpu_pct"] >= 85:
        return f"one rtpengine thread ({thread['name']}) at a full core: {parts}"
    if step["kamailio_busiest_process"]["cpu_pct"] >= 90:
        return f"one Kamailio process at a full core: {parts}"
    if step["sip_failures"]:
        return f"SIP: {step['sip_failures']} callers failed or were not queued; {parts}"
    return f"not a full CPU: {parts}"


# -- the run ------------------------------------------------------------------------------------


def measure(settings: Settings, log: Any = None) -> dict[str, Any]:
    def say(text: str) -> None:
        if log is not None:
            print(text, file=log, flush=True)

    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="qload-"))
    stack = Stack(workdir, settings)
    messenger = Messenger()
    steps: list[dict[str, Any]] = []
    error = None
    try:
        stack.start()
        assert stack.sink is not None
        say(f"started in {workdir} ({time.monotonic() - began:.1f} s); sink port "
            f"{stack.sink.port}, rcvbuf {stack.sink.rcvbuf} bytes")  # fmt: skip
        runs = 0
        for n in settings.steps:
            if time.monotonic() - began > settings.budget_s:
                say(f"budget of {settings.budget_s} s used: no step of {n}")
                break
            for attempt in range(1 + RETRIES):
                quiet = wait_for_quiet(stack, settings.noise_wait_s if settings.noise_wait else 0)
                runs += 1
                try:
                    step = run_step(stack, n, runs, messenger, say)
                except (RuntimeError, ProcessError) as exc:  # the stack is not usable now
                    error = f"the step of {n} callers broke off: {exc}"
                    say(error)
                    break
                step["other_jobs_before_cpu_pct"] = quiet
                steps.append(step)
                noisy = step["other_jobs_cpu_pct"] >= NOISY_PCT
                in_time = time.monotonic() - began < settings.budget_s
                if step["passed"] or not noisy or attempt == RETRIES or not in_time:
                    break
                step["superseded"] = True  # failed while other jobs were busy: again
                say(f"       other jobs used {step['other_jobs_cpu_pct']}% of a core: again")
            if error:
                break
            if attempt:
                step["retry_of_noisy_run"] = True
            if not step["passed"]:
                step["limit"] = limit_of(step)
                say(f"       failed: {step['limit']}")
                break
        python_errors = len(stack.kamailio.python_errors()) if stack.kamailio else 0
    finally:
        messenger.close()
        stack.stop()
    if not settings.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return build_report(settings, steps, python_errors, time.monotonic() - began, error)


def wait_for_quiet(stack: Stack, limit_s: float) -> float:
    """Wait up to `limit_s` for other jobs on the machine to use under NOISY_PCT of a core
    (1 s slices); returns what they used in the last slice."""
    deadline = time.monotonic() + limit_s
    while True:
        before = CpuSample.take(stack, stack.phones.values())
        time.sleep(1.0)
        other = cpu_usage(before, CpuSample.take(stack, stack.phones.values()), {})
        if other["other_jobs_cpu_pct"] < NOISY_PCT or time.monotonic() >= deadline:
            return float(other["other_jobs_cpu_pct"])


def build_report(
    settings: Settings,
    steps: list[dict[str, Any]],
    python_errors: int,
    seconds: float,
    error: str | None = None,
) -> dict[str, Any]:
    counted = [s for s in steps if not s.get("superseded")]
    best = max((s for s in counted if s["passed"]), key=lambda s: s["callers"], default=None)
    failing = next((s for s in counted if not s["passed"]), None)
    latency = best["release_to_invite_ms"] if best else {"p50": None, "p99": None}
    report: dict[str, Any] = {
        "max_waiting_callers": best["callers"] if best else 0,
        "rtp_lost_or_late_pct": best["rtp_lost_or_late_pct"] if best else None,
        "release_to_invite_ms": {"p50": latency["p50"], "p99": latency["p99"]},
        "steps": steps,
    }
    if failing:
        limit = failing["limit"]
    elif error:
        limit = error
    else:
        limit = f"none reached: every step passed, up to {steps[-1]['callers'] if steps else 0}"
    extra = {
        "limit": limit,
        "setup": {
            **{k: v for k, v in asdict(settings).items() if k not in ("keep",)},
            "queue": {
                "max_length_per_group": QUEUE_MAX_LENGTH,
                "max_wait_s": MAX_WAIT_S,
                "ring_timeout_s": RING_TIMEOUT_S,
                "greeting": "default (7 s)",
                "music": "default",
                "language": "en",
            },
            "talk_ms_of_served_callers": TALK_MS,
            "pass_rule": f"no SIP failure and lost + late < {100 * MAX_LOST_OR_LATE}% "
            "of the packets due in the window (silent callers: all theirs lost)",
            "late": f"> {LATE_S * 1000:.0f} ms behind the stream's anchored RTP schedule",
            "latency": "Redis ts of `released` (hangup) -> the agent's SIPp receiving the "
            "INVITE of the next `offered` (its -trace_shortmsg log); one host clock",
            "kamailio_python_errors": python_errors,
            "cpus": os.cpu_count(),
            "seconds": round(seconds, 1),
            "source": _git_revision(),
        },
    }
    return {**report, **extra}


def printed(report: dict[str, Any]) -> dict[str, Any]:
    """The --json output: exactly the four headline keys."""
    keys = ("max_waiting_callers", "rtp_lost_or_late_pct", "release_to_invite_ms", "steps")
    return {k: report[k] for k in keys}


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"{'callers':>7} {'in s':>5} {'lost+late%':>10} {'lost':>6} {'late':>6} {'sip fail':>8} "
        f"{'rtpe%':>6} {'kam%':>6} {'keeper%':>7} {'redis%':>6} {'sink%':>6} {'machine%':>8} "
        f"{'other%':>6} {'inv p50':>7} {'inv p99':>7} {'pass':>4}"
    ]
    for s in report["steps"]:
        lat = s["release_to_invite_ms"]
        callers = f"{s['callers']}{'*' if s.get('superseded') else ''}"
        lines.append(
            f"{callers:>7} {s['entry_s']:>5} {s['rtp_lost_or_late_pct'] or 0:>10.4f} "
            f"{s['rtp']['lost_with_silent']:>6} {s['rtp']['late']:>6} {s['sip_failures']:>8} "
            f"{s['rtpengine_cpu_pct']:>6} {s['kamailio_cpu_pct']:>6} "
            f"{s['kamailio_keeper_cpu_pct']:>7} {s['redis_cpu_pct']:>6} {s['sink_cpu_pct']:>6} "
            f"{s['machine_cpu_pct']:>8} {s['other_jobs_cpu_pct']:>6} "
            f"{lat['p50'] if lat['p50'] is not None else '-':>7} "
            f"{lat['p99'] if lat['p99'] is not None else '-':>7} "
            f"{'yes' if s['passed'] else 'NO':>4}"
        )
    lat = report["release_to_invite_ms"]
    lines += [
        "",
        f"max_waiting_callers {report['max_waiting_callers']} "
        f"(lost+late {report['rtp_lost_or_late_pct']}%), release -> agent INVITE "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms",
        f"limit: {report.get('limit')}",
        "CPU columns: % of one core over the RTP window; machine = all cores (100 per core)",
        f"* failed while other jobs used >= {NOISY_PCT}% of a core: run again, not counted",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Lost + late, CPU and release -> INVITE against waiting callers (runs that counted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [s for s in report["steps"] if not s.get("superseded")]
    if not steps:
        return
    x = [s["callers"] for s in steps]
    fig, (rtp_ax, cpu_ax, lat_ax) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    rtp_ax.plot(x, [s["rtp_lost_or_late_pct"] or 0 for s in steps], marker="o",
                label="lost + late")  # fmt: skip
    rtp_ax.axhline(100 * MAX_LOST_OR_LATE, color="grey", linestyle="--", label="0.1% limit")
    rtp_ax.set_yscale("symlog", linthresh=0.01)
    rtp_ax.set_ylim(bottom=0)
    rtp_ax.set_ylabel("RTP packets lost or late %")
    for key, label in (("rtpengine_cpu_pct", "rtpengine"), ("kamailio_cpu_pct", "kamailio"),
                       ("sink_cpu_pct", "sink"), ("machine_cpu_pct", "machine")):  # fmt: skip
        cpu_ax.plot(x, [s[key] for s in steps], marker="o", label=label)
    cpu_ax.set_ylabel("CPU % of one core")
    for q in ("p50", "p99"):
        points = [(s["callers"], s["release_to_invite_ms"][q]) for s in steps]
        points = [(c, v) for c, v in points if v is not None]
        lat_ax.plot([c for c, _ in points], [v for _, v in points], marker="o", label=q)
    lat_ax.set_yscale("log")
    lat_ax.set_ylabel("release -> agent INVITE ms")
    lat_ax.set_xlabel("callers waiting")
    rtp_ax.set_title(f"Queue load: max {report['max_waiting_callers']} waiting callers")
    for ax in (rtp_ax, cpu_ax, lat_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quick", action="store_true", help="2 tiny steps (smoke test)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    parser.add_argument("--steps", help=f"comma-separated caller counts (at most {CAP})")
    parser.add_argument("--rate", type=float, help="callers entering per second")
    parser.add_argument("--measure", type=float, help="seconds of the RTP window")
    parser.add_argument("--samples", type=int, help="release -> INVITE samples per step")
    parser.add_argument("--announce-interval", type=int, help="s between announcements")
    parser.add_argument("--budget", type=float, help="no new step after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    overrides: dict[str, Any] = {"keep": args.keep}
    if args.steps:
        overrides["steps"] = tuple(min(CAP, int(v)) for v in args.steps.split(","))
    for key, value in (("rate", args.rate), ("measure_s", args.measure),
                       ("samples", args.samples), ("announce_interval", args.announce_interval),
                       ("budget_s", args.budget)):  # fmt: skip
        if value is not None:
            overrides[key] = value
    settings = Settings(**{**asdict(settings), **overrides})

    report = measure(settings, log=sys.stderr)
    stem = "queue_load-quick" if args.quick else "queue_load"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.results / f"{stem}.png")
    print(json.dumps(printed(report), indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
