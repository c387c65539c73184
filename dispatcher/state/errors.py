"""Errors of the shared-state layer.

`StateUnavailable` means Redis could not be reached in time: the router falls back instead of
waiting. The other subclasses carry the error code the FUNCTION library replied with.
"""

from __future__ import annotations


class StateError(Exception):
    """Base of every shared-state error; `code` is the library's error code, if any."""

    code = ""


class StateUnavailable(StateError):
    """Redis did not answer: connection refused or lost, or a timeout."""

    def __init__(self, message: str, *, url: str, timeout: float) -> None:
        super().__init__(message)
        self.url = url
        self.timeout = timeout


class ConfigConflict(StateError):
    """The tenant config changed since the version the caller expected."""

    code = "CONFLICT"


class UnknownAgent(StateError):
    """The agent is not in the tenant's config."""

    code = "NOAGENT"


class UnknownGroup(StateError):
    """The group is not in the tenant's config (or Redis lost it in a restart)."""

    code = "NOGROUP"


class UnknownQueue(StateError):
    """The group has no queue (the config put with the call's view had one)."""

    code = "NOQUEUE"


class StateChanged(StateError):
    """An agent state change found the agent in another status than it expected (an
    unpause of an agent logged out meanwhile): nothing changed."""

    code = "STATE"


class TenantBusy(StateError):
    """The tenant to delete has live calls or ringing offers (not forced)."""

    code = "BUSY"


class NameTaken(StateError):
    """A SIP domain or DID another tenant holds (the message names it and its tenant)."""

    code = "TAKEN"


class InvalidArgument(StateError):
    """The library rejected KEYS or ARGV: the Python side and library.lua disagree."""

    code = "BADARG"


LIBRARY_ERRORS: dict[str, type[StateError]] = {
    cls.code: cls
    for cls in (
        ConfigConflict,
        UnknownAgent,
        UnknownGroup,
        UnknownQueue,
        NameTaken,
        TenantBusy,
        StateChanged,
        InvalidArgument,
    )
}
