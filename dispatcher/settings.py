"""Environment knobs shared by every part of the stack.

REDIS_URL               use this Redis instead of starting one (`make run`, workers, API)
SIP_PORT                Kamailio's SIP port (default 5060)
API_PORT                admin API port on 127.0.0.1 (default 8080)
DISPATCHER_ADMIN_TOKEN  bootstrap admin token of the admin API
DISPATCHER_TENANT       tenant a Kamailio node serves (default "demo")
REDIS_TIMEOUT_MS        per-command Redis timeout; past it a call gets 503 (default 500)
DISPATCHER_CLOCK_OFFSET_MS
                        shifts this node's wall clock for what stays on the node: inbound
                        schedules and overall timeouts (tests: "Wednesday 10:00" without
                        waiting for it). Shared state, sticky days included, follows Redis'
                        TIME whatever this says. 0 in production
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class Settings:
    """The knobs as read from the environment, validated."""

    redis_url: str | None
    sip_port: int
    api_port: int
    admin_token: str | None
    tenant: str
    redis_timeout_ms: int
    clock_offset_ms: int

    def clock_ms(self) -> int:
        """This node's wall clock in ms, shifted by DISPATCHER_CLOCK_OFFSET_MS."""
        return time.time_ns() // 1_000_000 + self.clock_offset_ms

    @classmethod
    def from_env(cls) -> Settings:
        """Read and validate the knobs; raises SettingsError naming the variable."""
        return cls(
            redis_url=os.environ.get("REDIS_URL") or None,
            sip_port=_int_env("SIP_PORT", 5060, 1, 65535),
            api_port=_int_env("API_PORT", 8080, 1, 65535),
            admin_token=os.environ.get("DISPATCHER_ADMIN_TOKEN") or None,
            tenant=os.environ.get("DISPATCHER_TENANT") or "demo",
            redis_timeout_ms=_int_env("REDIS_TIMEOUT_MS", 500, 10, 60_000),
            clock_offset_ms=_int_env("DISPATCHER_CLOCK_OFFSET_MS", 0, -(10**12), 10**12),
        )
