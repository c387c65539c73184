"""A client for RTPengine's NG control protocol: bencode over UDP (RTPengine's README, "The ng
Control Protocol").

Each request is `<cookie> <bencoded dict>`; the reply carries the same cookie, which is how a
reply is matched to its request and how RTPengine recognises a retransmission (it answers a
repeated cookie from its cache, without running the command twice). The SIP path talks to
RTPengine through Kamailio's rtpengine module; this client is for health checks, tests,
benchmarks and the queue's own media commands.

Values: a bencode string is sent from `str` (UTF-8) or `bytes`, an integer from `int`, lists
and dicts nest. Replies decode strings to `str` (UTF-8; undecodable bytes kept as surrogates,
so `.encode("utf-8", "surrogateescape")` gives the exact bytes back).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

NgValue: TypeAlias = "str | bytes | int | Sequence[NgValue] | Mapping[str, NgValue]"
Reply: TypeAlias = dict[str, Any]


class BencodeError(ValueError):
    """Bytes that are not one well-formed bencode value."""


class NgError(RuntimeError):
    """RTPengine answered `result: error`; `reason` is its `error-reason`."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"rtpengine {command}: {reason}")
        self.command = command
        self.reason = reason


class NgUnavailable(RuntimeError):
    """No reply from RTPengine: every attempt timed out, or nothing listens on its port."""

    def __init__(self, command: str, address: tuple[str, int], detail: str) -> None:
        super().__init__(f"rtpengine {command} at {address[0]}:{address[1]}: {detail}")
        self.command = command
        self.address = address


# --- bencode ------------------------------------------------------------------------------


def bencode(value: NgValue) -> bytes:
    """Encode `value` (dict keys sorted, as bencode wants). O(size of the value)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: NgValue, out: list[bytes]) -> None:
    if isinstance(value, bool):  # a bool is an int to Python, but NG has no booleans
        raise TypeError("bencode has no booleans; send 'yes'/'no' or 1/0 as NG expects")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, Mapping):
        out.append(b"d")
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError(f"bencode dict keys must be str, not {type(key).__name__}")
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencode value that fills `data` exactly; BencodeError otherwise.
    O(len(data))."""
    try:
        value, end = _decode(data, 0)
    except (IndexError, ValueError) as exc:
        raise BencodeError(f"malformed bencode: {exc}") from None
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the bencode value")
    return value


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    lead = data[pos]
    if lead == 0x69:  # i<digits>e
        end = data.index(b"e", pos)
        return int(data[pos + 1 : end]), end + 1
    if lead == 0x6C:  # l<values>e
        items: list[Any] = []
        pos += 1
        while data[pos] != 0x65:
            item, pos = _decode(data, pos)
            items.append(item)
        return items, pos + 1
    if lead == 0x64:  # d<key value ...>e
        mapping: dict[str, Any] = {}
        pos += 1
        while data[pos] != 0x65:
            key, pos = _decode(data, pos)
            if not isinstance(key, str):
                raise ValueError(f"dict key at {pos} is not a string")
            mapping[key], pos = _decode(data, pos)
        return mapping, pos + 1
    if 0x30 <= lead <= 0x39:  # <length>:<bytes>
        colon = data.index(b":", pos)
        start = colon + 1
        end = start + int(data[pos:colon])
        if end > len(data):
            raise ValueError(f"string at {pos} runs past the end")
        return data[start:end].decode("utf-8", "surrogateescape"), end
    raise ValueError(f"unexpected byte {lead:#x} at {pos}")


# --- the client ---------------------------------------------------------------------------


class NgClient:
    """Talks NG to one RTPengine at `host`:`port` (UDP).

    Each request waits `timeout` seconds for its reply, then retransmits with the same cookie,
    `retries` times; so a silent RTPengine costs (retries + 1) * timeout before NgUnavailable.
    On loopback an RTPengine that is gone costs almost nothing: the socket is connected, so the
    ICMP port-unreachable the kernel answers with fails the request at once (NgUnavailable).
    One request at a time per client (a lock serialises threads); use a client per thread to
    run requests in parallel. Close it (or use it as a context manager) to free the socket.
    """

    def __init__(self, host: str, port: int, *, timeout: float = 0.5, retries: int = 2) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self.address = (host, port)
        self.timeout = timeout
        self.retries = retries
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.connect(self.address)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NgClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        command: str,
        params: Mapping[str, NgValue] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Reply:
        """Send `command` with `params` (NG key names verbatim, e.g. "record call") and return
        the reply dict (its `result` is "ok" or "pong"; a `warning` may be present).

        NgError for `result: error`, NgUnavailable when no reply comes. One round trip
        (about 0.1 ms on loopback plus the command's own work); at most
        (retries + 1) * timeout seconds.
        """
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        cookie = os.urandom(8).hex().encode()
        message = cookie + b" " + bencode({**(params or {}), "command": command})
        with self._lock:
            data = self._exchange(command, cookie, message, timeout, retries)
        try:
            reply = bdecode(data)
        except BencodeError as exc:
            raise NgError(command, f"unreadable reply ({exc})") from None
        if not isinstance(reply, dict):
            raise NgError(command, f"reply is no dictionary: {reply!r}")
        if reply.get("result") == "error":
            raise NgError(command, str(reply.get("error-reason", "(no error-reason)")))
        return reply

    def _exchange(
        self, command: str, cookie: bytes, message: bytes, timeout: float, retries: int
    ) -> bytes:
        """Send `message` up to retries + 1 times; return the bencoded part of the reply
        that carries `cookie`. Replies to earlier requests (that timed out) are skipped."""
        # An ICMP error left from an earlier request would fail this one: clear it first.
        self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        prefix = cookie + b" "
        for attempt in range(retries + 1):
            try:
                self._sock.send(message)
            except ConnectionRefusedError:
                raise NgUnavailable(command, self.address, "connection refused") from None
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(left)
                try:
                    data = self._sock.recv(65535)
                except TimeoutError:
                    break
                except ConnectionRefusedError:
                    raise NgUnavailable(
                        command, self.address, f"connection refused (attempt {attempt + 1})"
                    ) from None
                if data.startswith(prefix):
                    return data[len(prefix) :]
        raise NgUnavailable(
            command, self.address, f"no reply to {retries + 1} attempts of {timeout:g}s"
        )

    # --- commands -------------------------------------------------------------------------

    def ping(self, *, timeout: float | None = None, retries: int | None = None) -> float:
        """Ping; returns the round trip in seconds (about 0.1 ms on loopback). NgError if the
        reply is not `pong`."""
        started = time.perf_counter()
        reply = self.request("ping", timeout=timeout, retries=retries)
        if reply.get("result") != "pong":
            raise NgError("ping", f"unexpected reply {reply!r}")
        return time.perf_counter() - started

    def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: str,
        *,
        flags: Iterable[str] = (),
        options: Mapping[str, NgValue] | None = None,
    ) -> Reply:
        """Offer `sdp` from the party `from_tag`; reply["sdp"] is RTPengine's rewritten SDP
        toward the other side (what the callee gets in the INVITE). `options` adds NG keys
        (e.g. {"record call": "yes", "replace": ["origin"]}). One round trip; RTPengine
        allocates its ports (RTP + RTCP on each side) here."""
        params = _params(call_id, options, flags, {"from-tag": from_tag, "sdp": sdp})
        return self.request("offer", params)

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: str,
        *,
        flags: Iterable[str] = (),
        options: Mapping[str, NgValue] | None = None,
    ) -> Reply:
        """Answer the offer of `from_tag` with `sdp` from `to_tag`; reply["sdp"] is
        RTPengine's SDP toward the offerer (what the caller gets in a 183/200). One round
        trip."""
        params = _params(
            call_id, options, flags, {"from-tag": from_tag, "to-tag": to_tag, "sdp": sdp}
        )
        return self.request("answer", params)

    def delete(
        self,
        call_id: str,
        *,
        from_tag: str | None = None,
        to_tag: str | None = None,
        delete_delay: int | None = None,
        options: Mapping[str, NgValue] | None = None,
    ) -> Reply:
        """Delete the call (or with tags only that branch); the reply carries the call's
        statistics (as in `query`). `delete_delay` 0 frees its ports now, whatever the
        daemon's delete-delay. One round trip."""
        extra: dict[str, NgValue] = {}
        if from_tag is not None:
            extra["from-tag"] = from_tag
        if to_tag is not None:
            extra["to-tag"] = to_tag
        if delete_delay is not None:
            extra["delete delay"] = delete_delay
        return self.request("delete", _params(call_id, options, (), extra))

    def query(
        self, call_id: str, *, from_tag: str | None = None, to_tag: str | None = None
    ) -> Reply:
        """The call's state: `tags` (each party's medias, streams, endpoints, packet
        counters) and `totals`. One round trip; the reply grows with the call's parties."""
        extra: dict[str, NgValue] = {}
        if from_tag is not None:
            extra["from-tag"] = from_tag
        if to_tag is not None:
            extra["to-tag"] = to_tag
        return self.request("query", _params(call_id, None, (), extra))

    def play_media(
        self,
        call_id: str,
        from_tag: str,
        *,
        file: str | None = None,
        blob: bytes | None = None,
        repeat_times: int | None = None,
        options: Mapping[str, NgValue] | None = None,
    ) -> int | None:
        """Play a media file (a path RTPengine can read, any format its ffmpeg reads) or a
        short `blob` to the party `from_tag`, `repeat_times` times; it replaces whatever that
        party heard from a previous play. Returns the file's duration in ms when RTPengine
        could tell it (one pass, not times repeat_times), else None. One round trip;
        RTPengine opens and starts decoding the file before it answers."""
        if (file is None) == (blob is None):
            raise ValueError("give exactly one of file and blob")
        extra: dict[str, NgValue] = {"from-tag": from_tag}
        if file is not None:
            extra["file"] = file
        if blob is not None:
            extra["blob"] = blob
        if repeat_times is not None:
            extra["repeat-times"] = repeat_times
        reply = self.request("play media", _params(call_id, options, (), extra))
        duration = reply.get("duration")
        return int(duration) if isinstance(duration, int) else None

    def stop_media(self, call_id: str, from_tag: str) -> None:
        """Stop what `play_media` plays to `from_tag`. NgError "Not currently playing media"
        if nothing was ever played to it. One round trip."""
        self.request("stop media", {"call-id": call_id, "from-tag": from_tag})

    def start_recording(self, call_id: str) -> Reply:
        """Record the whole call from now on (RTPengine records every leg; the daemon's
        recording-method decides how). One round trip."""
        return self.request("start recording", {"call-id": call_id})

    def stop_recording(self, call_id: str) -> Reply:
        """Stop recording the call; with the pcap method this closes the pcap and moves the
        metadata file to <spool>/metadata/. One round trip."""
        return self.request("stop recording", {"call-id": call_id})

    def list_calls(self, limit: int = 32) -> list[str]:
        """Call-ids RTPengine holds, at most `limit` (a large limit may not fit one UDP
        reply). One round trip."""
        reply = self.request("list", {"limit": limit})
        return [str(call) for call in reply.get("calls", [])]

    def statistics(self) -> dict[str, Any]:
        """The daemon's counters (`currentstatistics`: sessions, packet rates;
        `totalstatistics`; `controlstatistics` per NG client). One round trip."""
        reply = self.request("statistics")
        stats = reply.get("statistics", {})
        return stats if isinstance(stats, dict) else {}


def _params(
    call_id: str,
    options: Mapping[str, NgValue] | None,
    flags: Iterable[str],
    fixed: Mapping[str, NgValue],
) -> dict[str, NgValue]:
    """A request's keys: `options`, then the call-id and `fixed` keys (which win), with
    `flags` appended to any flags in `options`."""
    params: dict[str, NgValue] = dict(options or {})
    params.update(fixed)
    params["call-id"] = call_id
    extra_flags = list(flags)
    if extra_flags:
        given = params.get("flags", [])
        if not isinstance(given, Sequence) or isinstance(given, str | bytes):
            raise TypeError("options['flags'] must be a list of strings")
        params["flags"] = [*given, *extra_flags]
    return params
