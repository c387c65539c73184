"""Where the shared state lives, written as one address: a Redis server, the master a set of
Sentinels watches, or a Redis Cluster. Pure parsing (no I/O, no redis-py); the clients for
an address are built by `dispatcher.state.connect`.

    redis://[[user]:password@]host[:port][/db]       one server (rediss:// with TLS;
    unix:///path/redis.sock[?db=N]                    unix: redis-py's URL forms)
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
                                                      the master Sentinels name `service`
    redis+cluster://[[user]:password@]host:port[,host:port...]
                                                      a Cluster, reached through these nodes

The Sentinel and Cluster forms take `rediss+` for TLS to the data nodes; credentials are the
data nodes' (Sentinels are asked without a password). Settings also composes the Sentinel
form from REDIS_SENTINELS and REDIS_SENTINEL_MASTER (`dispatcher.settings`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

PLAIN, SENTINEL, CLUSTER = "plain", "sentinel", "cluster"
_PLAIN_SCHEMES = ("redis", "rediss", "unix")
_MODES = {
    "redis+sentinel": (SENTINEL, False),
    "rediss+sentinel": (SENTINEL, True),
    "redis+cluster": (CLUSTER, False),
    "rediss+cluster": (CLUSTER, True),
}
DEFAULT_SENTINEL_MASTER = "mymaster"  # the name in the sample sentinel.conf Redis ships
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """A parsed address. `url` is the text it was parsed from; `hosts` are the Sentinels
    or the Cluster's seed nodes (empty for one server); `service` is the Sentinel master's
    name; `db`, `username`, `password` and `tls` apply to the data nodes."""

    mode: str
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_address(text: str) -> RedisAddress:
    """The address `text` names; ValueError saying what is wrong (never the password)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError("expected a URL such as redis://127.0.0.1:6379/0")
    if scheme in _PLAIN_SCHEMES:
        return _plain(text)
    if scheme not in _MODES:
        known = ", ".join(f"{s}://" for s in (*_PLAIN_SCHEMES, *_MODES))
        raise ValueError(f"unknown scheme {scheme}:// (one of {known})")
    mode, tls = _MODES[scheme]
    netloc, _, path = rest.partition("/")
    if "?" in rest or "#" in rest:
        raise ValueError(f"{scheme}:// takes no query or fragment")
    userinfo, at, hostlist = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    hosts = host_ports(hostlist)
    if not hosts:
        raise ValueError(f"{scheme}:// needs at least one host:port")
    segments = path.split("/") if path else []
    if mode == SENTINEL:
        if not segments or not segments[0]:
            raise ValueError(
                f"{scheme}:// needs the master's service name after the hosts "
                f"({scheme}://host:port,host:port/mymaster/0)"
            )
        service, db_segments = service_name(segments[0]), segments[1:]
    else:
        service, db_segments = "", segments
    if len(db_segments) > 1 or (db_segments and not db_segments[0].isdigit()):
        raise ValueError(f"the path after {'the service' if service else 'the hosts'} is a db")
    db = int(db_segments[0]) if db_segments and db_segments[0] else 0
    if mode == CLUSTER and db != 0:
        raise ValueError("a Redis Cluster has database 0 only")
    return RedisAddress(mode, text, hosts, service, db, username, password, tls)


def host_ports(text: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` as pairs (IPv6 hosts in brackets); ValueError naming the entry."""
    out = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r} is not host:port")
        out.append((host, int(port)))
    return tuple(out)


def service_name(text: str) -> str:
    """`text` if it can name a Sentinel master: letters, digits, _ . - (1..64); else
    ValueError."""
    if _SERVICE.fullmatch(text) is None:
        raise ValueError(f"{text!r} is no service name: letters, digits, _ . - (1..64)")
    return text


def sentinel_address(
    hosts: tuple[tuple[str, int], ...], service: str, credentials: str | None
) -> str:
    """The `redis+sentinel://` address of `service` watched by the Sentinels at `hosts`,
    with the user, password, db and TLS of `credentials`, a URL without a host such as
    `redis://:password@/0` (None: no password, db 0). ValueError saying what is wrong."""
    if not hosts:
        raise ValueError("no Sentinel host:port given")
    service_name(service)
    scheme, userinfo, db = "redis", "", 0
    if credentials:
        parts = urlsplit(credentials)
        if parts.scheme not in ("redis", "rediss") or parts.hostname or parts.port:
            raise ValueError(
                "with Sentinels the URL gives credentials and db only, e.g. "
                "redis://:password@/0 (the Sentinels name the master's host)"
            )
        scheme = parts.scheme
        userinfo = parts.netloc
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the path of the URL is a db number, not {path!r}")
        db = int(path or 0)
    joined = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)
    return f"{scheme}+sentinel://{userinfo}{joined}/{service}/{db}"


def redacted(text: str) -> str:
    """`text` with its password replaced by ***, for logs and errors."""
    scheme, sep, rest = text.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return text
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{path}"


def _plain(text: str) -> RedisAddress:
    parts = urlsplit(text)
    if parts.scheme != "unix":
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is no number
        except ValueError:
            raise ValueError("the port is not a number") from None
        if not parts.hostname:
            raise ValueError(f"{parts.scheme}:// needs a host (redis://host:port/db)")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the path of the URL is a db number, not {path!r}")
    elif not parts.path:
        raise ValueError("unix:// needs the socket's path (unix:///run/redis/redis.sock)")
    return RedisAddress(PLAIN, text, tls=parts.scheme == "rediss")


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)
