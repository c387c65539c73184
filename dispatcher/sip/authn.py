"""Who may REGISTER and call: trusted sources by address, phones by digest authentication.

`Authenticator.check` runs for every REGISTER and initial INVITE (kamailio/kemi.py, after
REQINIT), before anything reaches a tenant:

1. a source in DISPATCHER_TRUSTED (the carrier's trunks and SBCs; default this host) or in
   the tenant's own `trusted` list passes: they authenticate their users themselves, and a
   trunk delivers calls to the tenant's DIDs;
2. anyone else must be one of the tenant's SIP users (`dispatcher.state.credentials`) and
   prove it with a digest (`dispatcher.sip.digest`: SHA-256 or MD5, RFC 8760): without
   credentials a REGISTER gets 401 and an INVITE 407 with both challenges; a wrong password
   counts against the source and the user (`dispatcher.sip.edge`: a guesser is slowed, then
   blocked with 403 for AUTH_BAN_S); the authenticated user must be the one it registers (To)
   or calls as (From), else 403;
3. a domain or number no tenant has: 404, as for routing.

The realm is the tenant's id. Redis unreachable: 503 (nobody can say who the user is).
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from dispatcher.sip import edge
from dispatcher.sip.digest import Verdict, challenges, parse_credentials, verify
from dispatcher.sip.tenants import UnknownTenant
from dispatcher.state import StateUnavailable
from dispatcher.state.keys import AUTH_SECRET_KEY

if TYPE_CHECKING:
    from dispatcher.sip.routing import Router


class Authenticator:
    """The authentication of one process's `Router`."""

    def __init__(self, router: Router, clock: Any = time.time) -> None:
        self.router = router
        self.clock = clock
        self.carrier_trusted = edge.parse_networks(",".join(router.settings.trusted))
        self._secret: bytes | None = (
            router.settings.auth_secret.encode() if router.settings.auth_secret else None
        )
        self._limits: edge.AuthLimits | None = None
        self._tenant_trusted: dict[str, tuple[int, tuple[edge.Network, ...]]] = {}

    def check(self) -> bool:
        """True when the request may go on; else it has been answered (401/407/403/404/503)."""
        router, ksr = self.router, self.router.ksr
        source = str(ksr.pv.get("$si") or "")
        if edge.in_networks(source, self.carrier_trusted):
            return True
        register = bool(ksr.is_REGISTER())
        try:
            if register:
                tenant = router.tenants.resolve("", str(ksr.pv.get("$td") or ""))
            else:
                tenant = router.tenants.resolve(
                    str(ksr.pv.get("$rU") or ""), str(ksr.pv.get("$rd") or "")
                )
            if edge.in_networks(source, self._trusted_of(tenant)):
                return True
            return self._digest(tenant, source, register)
        except UnknownTenant as exc:
            ksr.info(f"dispatcher: {ksr.pv.get('$rm')} from {source} refused: {exc}\n")
            ksr.sl.sl_send_reply(404, "Not Found")
        except StateUnavailable as exc:
            router._unavailable(exc)
            ksr.sl.sl_send_reply(503, "Service Unavailable")
        return False

    def _trusted_of(self, tenant: str) -> tuple[edge.Network, ...]:
        view = self.router.tenants.decider(tenant).view()
        cached = self._tenant_trusted.get(tenant)
        if cached is None or cached[0] != view.version:
            cached = (view.version, edge.parse_networks(",".join(view.tenant.trusted)))
            self._tenant_trusted[tenant] = cached
        return cached[1]

    def _digest(self, tenant: str, source: str, register: bool) -> bool:
        router, ksr = self.router, self.router.ksr
        header = ksr.pv.get("$hdr(Authorization)" if register else "$hdr(Proxy-Authorization)")
        creds = parse_credentials(str(header)) if header else None
        user_key = f"{tenant}/{creds.username}" if creds is not None else None
        if edge.auth_blocked(ksr, source, user_key):
            ksr.sl.sl_send_reply(403, "Forbidden")
            return False
        if creds is None:
            if header:  # a header we cannot read counts like a wrong password
                return self._failed(tenant, source, None, register)
            self._challenge(tenant, register)
            return False
        store = router.tenants.decider(tenant).store
        stored = store.credential(creds.username)
        verdict = Verdict.BAD
        if stored is not None:
            verdict = verify(
                creds,
                str(ksr.pv.get("$rm") or ""),
                tenant,
                stored.ha1(creds.algorithm),
                self._nonce_secret(),
                int(self.clock()),
            )
        if verdict == Verdict.STALE:
            self._challenge(tenant, register, stale=True)
            return False
        if verdict == Verdict.BAD:
            return self._failed(tenant, source, user_key, register)
        claimed = ksr.pv.get("$tU" if register else "$fU")
        if str(claimed or "") != creds.username:
            ksr.info(f"dispatcher: {creds.username} authenticated as someone else ({claimed})\n")
            ksr.sl.sl_send_reply(403, "Forbidden")
            return False
        return True

    def _failed(self, tenant: str, source: str, user_key: str | None, register: bool) -> bool:
        ksr = self.router.ksr
        if self._limits is None:
            self._limits = edge.AuthLimits.from_defines(ksr)
        if edge.auth_failed(ksr, source, user_key, self._limits):
            ksr.notice(f"dispatcher: failed authentications block {source} / {user_key}\n")
            ksr.sl.sl_send_reply(403, "Forbidden")
        else:
            self._challenge(tenant, register)
        return False

    def _challenge(self, realm: str, register: bool, stale: bool = False) -> None:
        ksr = self.router.ksr
        name = "WWW-Authenticate" if register else "Proxy-Authenticate"
        secret, now = self._nonce_secret(), int(self.clock())
        for value in challenges(secret, realm, now, stale, self.router.settings.auth_algorithms):
            ksr.hdr.append_to_reply(f"{name}: {value}\r\n")
        if register:
            ksr.sl.sl_send_reply(401, "Unauthorized")
        else:
            ksr.sl.sl_send_reply(407, "Proxy Authentication Required")

    def _nonce_secret(self) -> bytes:
        """DISPATCHER_AUTH_SECRET, else the one every node shares in Redis (made once)."""
        if self._secret is None:
            store = self.router.tenants.store
            with store._reachable():
                store._redis.set(AUTH_SECRET_KEY, secrets.token_hex(32), nx=True)
                value = store._redis.get(AUTH_SECRET_KEY)
            if not isinstance(value, bytes) or not value:
                raise StateUnavailable(
                    "no auth secret in Redis", url=store.url, timeout=store.socket_timeout
                )
            self._secret = value
        return self._secret
