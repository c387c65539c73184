"""Shared state in Redis: agent load, reservations, sticky memory and events of each tenant.

The FUNCTION library `library.lua` is the only writer; `StateStore` calls it. Imports only the
core's constants: everything that routes, administers or reports builds on it.
"""

from .errors import (
    ConfigConflict,
    InvalidArgument,
    StateError,
    StateUnavailable,
    UnknownAgent,
    UnknownGroup,
)
from .keys import TenantKeys, validate_call_id, validate_id
from .sticky import StickyDays, sticky_day, sticky_days
from .store import (
    AVAILABLE,
    LOGGED_OUT,
    PAUSED,
    AgentLimits,
    AnswerOutcome,
    ClaimResult,
    FailResult,
    Snapshot,
    StateStore,
)

__all__ = [
    "AVAILABLE",
    "LOGGED_OUT",
    "PAUSED",
    "AgentLimits",
    "AnswerOutcome",
    "ClaimResult",
    "ConfigConflict",
    "FailResult",
    "InvalidArgument",
    "Snapshot",
    "StateError",
    "StateStore",
    "StateUnavailable",
    "StickyDays",
    "TenantKeys",
    "UnknownAgent",
    "UnknownGroup",
    "sticky_day",
    "sticky_days",
    "validate_call_id",
    "validate_id",
]
