"""Environment knobs shared by every part of the stack.

REDIS_URL               use this Redis instead of starting one (`make run`, workers, API):
                        redis://host:port/db (rediss://, unix://), or a Cluster:
                        redis+cluster://host:port[,host:port...] (`dispatcher.redis_address`)
REDIS_SENTINELS         the Sentinels' host:port list: the state lives on the master they
                        name REDIS_SENTINEL_MASTER and follows its failovers; REDIS_URL then
                        gives only credentials and db (redis://:password@/0) or is unset
REDIS_SENTINEL_MASTER   the master's service name in the Sentinels (default mymaster)
SIP_PORT                Kamailio's SIP port (default 5060)
API_PORT                admin API port on 127.0.0.1 (default 8080)
DISPATCHER_ADMIN_TOKEN  bootstrap admin token of the admin API
DISPATCHER_TENANT       the node's default tenant: it serves requests whose domain and number
                        no tenant names, while it names no domains itself (default "demo";
                        set it empty for none: such requests get 404)
DISPATCHER_TENANT_CACHE tenants whose config a worker keeps at most (LRU; default 256)
DISPATCHER_TRUSTED      the carrier's trusted sources, comma-separated addresses or networks
                        (its trunks, SBCs): their REGISTERs and INVITEs need no digest
                        authentication; default 127.0.0.1 (this host); each tenant adds its
                        own (`trusted` in its config)
DISPATCHER_AUTH_ALGORITHMS
                        the digest challenges offered, in order (default "SHA-256,MD5",
                        RFC 8760; a client that only reads the first challenge and knows no
                        SHA-256 - old phones, SIPVicious - needs "MD5,SHA-256")
DISPATCHER_AUTH_SECRET  the digest nonces' key, the same on every node (32+ characters);
                        unset, a random one is kept in Redis ({dispatcher}:auth_secret)
REDIS_TIMEOUT_MS        per-command Redis timeout; past it a call gets 503 (default 500)
DISPATCHER_NODE         this Kamailio node's id in the queues (its doorbell channel); default
                        <hostname>:<SIP_PORT>; unique per node
RTPENGINE_NG            host:port of this node's RTPengine NG control (the one kamailio.cfg's
                        RTPENGINE_SOCK names); unset: queued callers hear nothing and go to
                        the queue's overflow target for a full queue
DISPATCHER_PROMPTS      folder of the prompts (generated default set, composed sentences);
                        default ~/.cache/dispatcher/prompts
DISPATCHER_VOICEMAIL    folder of the recorded voicemail WAVs (<tenant>/<group>/<id>.wav);
                        default ~/.local/share/dispatcher/voicemail; the admin API serves
                        them from there, so nodes and API share it (one host, or NFS)
RTPENGINE_SPOOL         RTPengine's recording-dir (its pcaps/ and metadata/), where this node
                        reads voicemail recordings; unset: messages are not recorded
DISPATCHER_CLOCK_OFFSET_MS
                        shifts this node's wall clock for what stays on the node: inbound
                        schedules and overall timeouts (tests: "Wednesday 10:00" without
                        waiting for it). Shared state, sticky days included, follows Redis'
                        TIME whatever this says. 0 in production
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from dispatcher.redis_address import (
    DEFAULT_SENTINEL_MASTER,
    host_ports,
    parse_address,
    redacted,
    sentinel_address,
    service_name,
)


class SettingsError(ValueError):
    """An environment knob holds a value that cannot be used."""


def _int_env(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value}: must be between {lo} and {hi}")
    return value


_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def _node_env(sip_port: int) -> str:
    node = os.environ.get("DISPATCHER_NODE") or f"{socket.gethostname()}:{sip_port}"
    if _NODE.fullmatch(node) is None:
        raise SettingsError(
            f"DISPATCHER_NODE={node!r}: letters, digits and _ . : - only, 1..128 characters"
        )
    return node


def _networks_env(name: str, default: str) -> tuple[str, ...]:
    raw = os.environ.get(name, default)
    out = []
    for entry in raw.split(","):
        if entry.strip():
            try:
                out.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise SettingsError(f"{name}: {entry.strip()!r} is no address or network") from None
    return tuple(out)


def _algorithms_env(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name) or "SHA-256,MD5"
    chosen = tuple(a.strip().upper() for a in raw.split(",") if a.strip())
    if not chosen or len(set(chosen)) != len(chosen) or set(chosen) - {"SHA-256", "MD5"}:
        raise SettingsError(f"{name}={raw!r}: SHA-256 and/or MD5, each once")
    return chosen


def _secret_env(name: str) -> str | None:
    raw = os.environ.get(name)
    if raw is not None and len(raw) < 32:
        raise SettingsError(f"{name}: at least 32 characters")
    return raw or None


def _address_env(name: str) -> tuple[str, int] | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name}={raw!r}: expected host:port, e.g. 127.0.0.1:2223")
    return host, int(port)


def _redis_env() -> str | None:
    """REDIS_URL, or the Sentinel address REDIS_SENTINELS and REDIS_SENTINEL_MASTER compose
    with REDIS_URL's credentials and db; checked, errors naming the variable."""
    url = os.environ.get("REDIS_URL") or None
    sentinels = os.environ.get("REDIS_SENTINELS") or None
    service = os.environ.get("REDIS_SENTINEL_MASTER") or None
    if sentinels is None:
        if service is not None:
            raise SettingsError("REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not")
        if url is not None:
            try:
                parse_address(url)
            except ValueError as exc:
                raise SettingsError(f"REDIS_URL={redacted(url)!r}: {exc}") from None
        return url
    try:
        hosts = host_ports(sentinels)
    except ValueError as exc:
        raise SettingsError(f"REDIS_SENTINELS={sentinels!r}: {exc}") from None
    if not hosts:
        raise SettingsError(f"REDIS_SENTINELS={sentinels!r}: expected host:port,host:port")
    try:
        service = service_name(service or DEFAULT_SENTINEL_MASTER)
    except ValueError as exc:
        raise SettingsError(f"REDIS_SENTINEL_MASTER: {exc}") from None
    try:
        return sentinel_address(hosts, service, url)
    except ValueError as exc:
        raise SettingsError(
            f"REDIS_URL={redacted(url or '')!r} with REDIS_SENTINELS: {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class Settings:
    """The knobs as read from the environment, validated. `redis_url` is the address of
    the shared state in any form of `dispatcher.redis_address` (with REDIS_SENTINELS, the
    redis+sentinel:// address they compose), None when unset."""

    redis_url: str | None
    sip_port: int
    api_port: int
    admin_token: str | None
    tenant: str
    redis_timeout_ms: int
    clock_offset_ms: int
    node: str
    tenant_cache: int
    trusted: tuple[str, ...]
    auth_secret: str | None
    auth_algorithms: tuple[str, ...]
    rtpengine_ng: tuple[str, int] | None
    prompts_dir: Path
    voicemail_dir: Path = Path("voicemail")
    rtpengine_spool: Path | None = None

    def clock_ms(self) -> int:
        """This node's wall clock in ms, shifted by DISPATCHER_CLOCK_OFFSET_MS."""
        return time.time_ns() // 1_000_000 + self.clock_offset_ms

    @classmethod
    def from_env(cls) -> Settings:
        """Read and validate the knobs; raises SettingsError naming the variable."""
        sip_port = _int_env("SIP_PORT", 5060, 1, 65535)
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return cls(
            redis_url=_redis_env(),
            sip_port=sip_port,
            api_port=_int_env("API_PORT", 8080, 1, 65535),
            admin_token=os.environ.get("DISPATCHER_ADMIN_TOKEN") or None,
            tenant=os.environ.get("DISPATCHER_TENANT", "demo"),
            redis_timeout_ms=_int_env("REDIS_TIMEOUT_MS", 500, 10, 60_000),
            clock_offset_ms=_int_env("DISPATCHER_CLOCK_OFFSET_MS", 0, -(10**12), 10**12),
            node=_node_env(sip_port),
            tenant_cache=_int_env("DISPATCHER_TENANT_CACHE", 256, 1, 1_000_000),
            trusted=_networks_env("DISPATCHER_TRUSTED", "127.0.0.1"),
            auth_secret=_secret_env("DISPATCHER_AUTH_SECRET"),
            auth_algorithms=_algorithms_env("DISPATCHER_AUTH_ALGORITHMS"),
            rtpengine_ng=_address_env("RTPENGINE_NG"),
            prompts_dir=Path(
                os.environ.get("DISPATCHER_PROMPTS") or Path(cache) / "dispatcher" / "prompts"
            ),
            voicemail_dir=Path(
                os.environ.get("DISPATCHER_VOICEMAIL")
                or Path.home() / ".local" / "share" / "dispatcher" / "voicemail"
            ),
            rtpengine_spool=Path(spool) if (spool := os.environ.get("RTPENGINE_SPOOL")) else None,
        )
