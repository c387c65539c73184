"""SIP digest authentication (RFC 3261 22, RFC 2617, RFC 8760): challenges, responses, HA1.

Pure functions; the router (`dispatcher.sip.routing.Router.authenticate`) applies them to
REGISTERs and INVITEs. Why not Kamailio's auth module: in 5.6 it challenges with one
algorithm per instance (modparam "algorithm"), while RFC 8760 has a server offer SHA-256 and
MD5 side by side - one header each, the strongest first - so a current phone uses SHA-256
and an old one still registers with MD5.

Nonces are stateless and shared by every node: `<issued, hex seconds>.<HMAC-SHA256(secret,
issued:realm), 32 hex>`, valid NONCE_TTL_S. A node checks a nonce another node issued with
the secret they share (`{dispatcher}:auth_secret` in Redis). qop=auth only; a nonce may be
replayed within its lifetime (no nonce-count tracking across nodes): the response binds the
method and Request-URI, and failed attempts are limited per source and user
(`dispatcher.sip.edge`).

Only HA1 digests are stored (`dispatcher.state.credentials`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import Enum

from dispatcher.state.credentials import ha1

__all__ = ["ha1"]  # re-exported: the tests compute answers with it

NONCE_TTL_S = 300
ALGORITHMS = ("SHA-256", "MD5")  # offered in this order: strongest first (RFC 8760 2.4)
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM = re.compile(r'\s*([A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*(?:,|$)')


class Verdict(Enum):
    """How a request's credentials fared."""

    OK = "ok"
    STALE = "stale"  # a nonce of ours that expired: challenge again with stale=true
    BAD = "bad"  # wrong password, a forged or foreign nonce, a malformed header


def _hash(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode()).hexdigest()


def _nonce_mac(secret: bytes, issued: int, realm: str) -> str:
    return hmac.new(secret, f"{issued:x}:{realm}".encode(), hashlib.sha256).hexdigest()[:32]


def nonce(secret: bytes, realm: str, now_s: int) -> str:
    """A fresh nonce for `realm`."""
    return f"{now_s:x}.{_nonce_mac(secret, now_s, realm)}"


def challenges(
    secret: bytes,
    realm: str,
    now_s: int,
    stale: bool = False,
    algorithms: tuple[str, ...] = ALGORITHMS,
) -> list[str]:
    """The WWW-/Proxy-Authenticate header values to send: one per algorithm in the order
    given (strongest first by default), sharing one nonce."""
    value = nonce(secret, realm, now_s)
    extra = ", stale=true" if stale else ""
    return [
        f'Digest realm="{realm}", nonce="{value}", algorithm={algorithm}, qop="auth"{extra}'
        for algorithm in algorithms
    ]


@dataclass(frozen=True, slots=True)
class Credentials:
    """The fields of an Authorization / Proxy-Authorization header (Digest)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""


def parse_credentials(header: str) -> Credentials | None:
    """The Digest credentials of a header value; None when it is not Digest, lacks a field
    the response needs, or names an algorithm we do not offer."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    fields: dict[str, str] = {}
    position = 0
    while position < len(rest):
        found = _PARAM.match(rest, position)
        if found is None or found.end() == position:
            return None
        quoted, token = found.group(2), found.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token
        fields[found.group(1).lower()] = value
        position = found.end()
    algorithm = fields.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES or not all(
        fields.get(k) for k in ("username", "realm", "nonce", "uri", "response")
    ):
        return None
    qop = fields.get("qop", "")
    if qop and (qop != "auth" or not fields.get("nc") or not fields.get("cnonce")):
        return None
    return Credentials(
        username=fields["username"],
        realm=fields["realm"],
        nonce=fields["nonce"],
        uri=fields["uri"],
        response=fields["response"].lower(),
        algorithm=algorithm,
        qop=qop,
        nc=fields.get("nc", ""),
        cnonce=fields.get("cnonce", ""),
    )


def response(creds: Credentials, method: str, user_ha1: str) -> str:
    """The response a client that knows the password sends (RFC 2617 3.2.2.1)."""
    ha2 = _hash(creds.algorithm, f"{method}:{creds.uri}")
    if creds.qop:
        text = f"{user_ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}"
    else:
        text = f"{user_ha1}:{creds.nonce}:{ha2}"
    return _hash(creds.algorithm, text)


def verify(
    creds: Credentials, method: str, realm: str, user_ha1: str, secret: bytes, now_s: int
) -> Verdict:
    """Check `creds` against the user's HA1 for `creds.algorithm`, our realm and nonce."""
    issued_text, _, mac = creds.nonce.partition(".")
    try:
        issued = int(issued_text, 16)
    except ValueError:
        return Verdict.BAD
    if creds.realm != realm or not hmac.compare_digest(mac, _nonce_mac(secret, issued, realm)):
        return Verdict.BAD
    if not hmac.compare_digest(creds.response, response(creds, method, user_ha1)):
        return Verdict.BAD
    if not 0 <= now_s - issued <= NONCE_TTL_S:
        return Verdict.STALE  # the right password on an old nonce: a new one, no failure
    return Verdict.OK
