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
from .sticky import sticky_day
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
    "TenantKeys",
    "UnknownAgent",
    "UnknownGroup",
    "sticky_day",
    "validate_call_id",
    "validate_id",
]
