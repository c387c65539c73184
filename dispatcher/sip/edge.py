"""The node's edge (issue 11 §4): which sources no rate limit applies to, which User-Agents
are scanners, and the failed-authentication limits per source and per user.

kamailio/kemi.py's REQINIT route uses `EdgeRules` (read once per process from kamailio.cfg's
#!defines); the digest authentication uses `auth_blocked` and `auth_failed`, whose counts
and bans live in the node's shared-memory htable `authfail`, so every worker of the node sees
them (they are per node, not cluster-wide: Redis is not asked). Everything here goes through
the `ksr` object it is given, app_python3's KSR module or a test's fake; nothing opens a
socket or reads a file.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

# The htable of failed authentications (kamailio.cfg): counters and bans, each item with its
# own expiry (sht_setex / sht_setxi; per-item expiry needs the table's autoexpire > 0, and
# sht_inc resets an item's expiry to that autoexpire, so every increment sets it again).
AUTH_TABLE = "authfail"

# auth module return codes (auth_check, pv_auth_check, ...) that count as a failed attempt:
# a wrong password, a user the realm does not know, credentials of another user than the
# From/To one. Not a failure: no credentials yet (-5, the 401 challenge of every first
# request), a stale nonce (-4, a phone's normal re-authentication), a reused nonce (-6, a
# retransmission can carry it).
AUTH_FAILURE_CODES = frozenset({-2, -3, -8})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Source addresses and User-Agents whose parse or scanner check a worker keeps (bounded, LRU).
ADDRESS_CACHE = 4096
USER_AGENT_CACHE = 1024


def define(ksr: Any, name: str) -> str:
    """The value of kamailio.cfg's `#!define name` ($def), without the quotes of a string
    define. KeyError if it is not defined: kamailio.cfg gives every one a default."""
    value = ksr.pv.get(f"$def({name})")
    if value is None:
        raise KeyError(f"kamailio.cfg defines no {name}")
    text = str(value)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def define_int(ksr: Any, name: str) -> int:
    """A number define; KeyError if undefined, ValueError if it is no integer."""
    return int(define(ksr, name))


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks ("127.0.0.0/8, 192.0.2.7, 2001:db8::/32") as
    networks; a bare address is a /32 (/128). "" is none. ValueError names a bad entry."""
    networks = []
    for entry in text.split(","):
        if entry.strip():
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"not an address or network: {entry.strip()!r}") from exc
    return tuple(networks)


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # Parsing a source address costs about as much as the rest of REQINIT's Python, and
    # every request of a call comes from the same few: a cache, bounded so a flood from
    # many addresses only refills it.
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """True when `address` lies in one of `networks`; an address that is none is in none.
    O(networks)."""
    ip = _address(address)
    if ip is None:
        return False
    return any(ip in network for network in networks)


@functools.lru_cache(maxsize=USER_AGENT_CACHE)
def _is_scanner(pattern: re.Pattern[str], user_agent: str) -> bool:
    # A regex search per request, for the few User-Agents a node's phones send: cached,
    # bounded as _address is (a scanner that varies its User-Agent only refills it).
    return pattern.search(user_agent) is not None


def scanner_pattern(text: str) -> re.Pattern[str] | None:
    """The scanner User-Agent regex (searched, case-insensitive); None for "" (no check)."""
    return re.compile(text, re.IGNORECASE) if text else None


@dataclass(frozen=True, slots=True)
class EdgeRules:
    """What REQINIT checks every request against, from kamailio.cfg's defines.

    `trusted`: the sources pike never counts (PIKE_TRUSTED); `ipban_s`: how long a source
    pike flagged stays banned (IPBAN_S); `scanner_ua`: the User-Agents dropped unanswered
    (SCANNER_UA, None: no check); `max_msg_size`: the largest request taken (MAX_MSG_SIZE);
    `dmq_port` / `dmq_peers`: where and from whom the nodes' KDMQ requests (replicated
    registrations) are taken (DMQ_PORT, DMQ_PEERS).
    """

    trusted: tuple[Network, ...]
    ipban_s: int
    scanner_ua: re.Pattern[str] | None
    max_msg_size: int
    dmq_port: int = 0
    dmq_peers: tuple[Network, ...] = ()

    @classmethod
    def from_defines(cls, ksr: Any) -> EdgeRules:
        """Read the defines through `ksr` (seven $def lookups): once per process. ValueError
        for a DMQ_PORT that is the SIP port (KDMQ would then come from anyone)."""
        dmq_port = define_int(ksr, "DMQ_PORT")
        if dmq_port == define_int(ksr, "SIP_PORT"):
            raise ValueError(
                f"DMQ_PORT {dmq_port} is SIP_PORT: the DMQ bus needs a port of its own"
            )
        return cls(
            trusted=parse_networks(define(ksr, "PIKE_TRUSTED")),
            ipban_s=define_int(ksr, "IPBAN_S"),
            scanner_ua=scanner_pattern(define(ksr, "SCANNER_UA")),
            max_msg_size=define_int(ksr, "MAX_MSG_SIZE"),
            dmq_port=dmq_port,
            dmq_peers=parse_networks(define(ksr, "DMQ_PEERS")),
        )

    def is_dmq_peer(self, port: int, source_ip: str) -> bool:
        """True for a KDMQ request taken: it came to the DMQ port from a peer's network. A
        KDMQ inserts and deletes registrations, so any other is dropped unanswered."""
        return port == self.dmq_port and in_networks(source_ip, self.dmq_peers)

    def is_trusted(self, source_ip: str) -> bool:
        """True when `source_ip` lies in a trusted network. O(trusted networks)."""
        return in_networks(source_ip, self.trusted)

    def is_scanner(self, user_agent: str | None) -> bool:
        """True when the User-Agent matches SCANNER_UA; a request without one is fine."""
        return bool(user_agent and self.scanner_ua and _is_scanner(self.scanner_ua, user_agent))


@dataclass(frozen=True, slots=True)
class AuthLimits:
    """Failed authentications allowed before a block, and for how long.

    `source` failures from one source IP (AUTH_FAIL_LIMIT_SRC) or `user` failures for one user
    (AUTH_FAIL_LIMIT_USER), each count kept until `window_s` seconds pass without a failure
    (AUTH_FAIL_WINDOW_S), block that source or user for `ban_s` seconds (AUTH_BAN_S).
    """

    source: int
    user: int
    window_s: int
    ban_s: int

    @classmethod
    def from_defines(cls, ksr: Any) -> AuthLimits:
        """Read the defines through `ksr` (four $def lookups)."""
        return cls(
            source=define_int(ksr, "AUTH_FAIL_LIMIT_SRC"),
            user=define_int(ksr, "AUTH_FAIL_LIMIT_USER"),
            window_s=define_int(ksr, "AUTH_FAIL_WINDOW_S"),
            ban_s=define_int(ksr, "AUTH_BAN_S"),
        )


def _subjects(source_ip: str | None, user: str | None) -> list[tuple[str, str]]:
    """(kind, value) of what a failure counts against: "src" and "user"."""
    subjects = []
    if source_ip:
        subjects.append(("src", source_ip))
    if user:
        subjects.append(("user", user))
    return subjects


def auth_blocked(ksr: Any, source_ip: str | None, user: str | None) -> bool:
    """True while `source_ip` or `user` is blocked after too many failed authentications.

    Call it before checking credentials; a blocked request gets 403 without a challenge.
    None (or "") skips that side, e.g. source_ip=None for a trusted SBC whose address many
    users share. Cost: one htable lookup per side, no round trip.
    """
    return any(
        ksr.htable.sht_get(AUTH_TABLE, f"ban:{kind}:{value}") == 1
        for kind, value in _subjects(source_ip, user)
    )


def auth_failed(
    ksr: Any, source_ip: str | None, user: str | None, limits: AuthLimits | None = None
) -> bool:
    """Count one failed authentication against `source_ip` and against `user`; True when
    this failure blocked either of them (auth_blocked is True from now on for `ban_s`).

    A count that reaches its limit becomes a ban and starts again from zero, so a blocked
    source or user has the full allowance when its ban ends. `limits` default to
    kamailio.cfg's defines (four $def lookups). None (or "") skips that side, as for
    auth_blocked. Cost: up to three htable operations per side, no round trip.
    """
    limits = limits or AuthLimits.from_defines(ksr)
    blocked = False
    for kind, value in _subjects(source_ip, user):
        count_key = f"fail:{kind}:{value}"
        count = ksr.htable.sht_inc(AUTH_TABLE, count_key)
        if count >= (limits.source if kind == "src" else limits.user):
            ksr.htable.sht_setxi(AUTH_TABLE, f"ban:{kind}:{value}", 1, limits.ban_s)
            ksr.htable.sht_rm(AUTH_TABLE, count_key)
            blocked = True
        else:
            ksr.htable.sht_setex(AUTH_TABLE, count_key, limits.window_s)
    return blocked
