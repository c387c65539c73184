"""Releases that Kamailio's timer processes hand to the node's keeper.

A dialog that times out ends in the process that runs the dialog module's timer (Kamailio's
shared "slow timer", or tm's timer for a failure route's dialog:failed): every dialog timeout
of the node waits behind what runs there. Sending the release to Redis from there would make
them all wait on Redis: a Redis that stalls for 5 s (a snapshot fork, a failover) made every
BYE of a timed-out dialog up to 5.5 s late at the caller (`bench/dialog_timer.py
--stall-redis 5`), since each release met a reconnect that waited its full timeout. So a
timer process only writes the release into the node's shared htable `dsprel` (no I/O) and
the keeper, which looks every 10 ms, sends it. A release stays in the table until Redis
has it: while Redis is stopped or failing over, the keeper tries again every
`dispatcher.sip.routing.HANDOFF_RETRY_S` (a release is idempotent), so the calls are
released as soon as Redis is back, not at the next reconciliation. A node that dies with
releases not yet sent has its calls released by the others when its heartbeat lapses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dispatcher.sip.held import values
from dispatcher.sip.names import HANDOFF_TABLE

_SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class Release:
    """A whole call's release: its tenant, call-id and outcome (for reports)."""

    tenant: str
    call_id: str
    outcome: str

    def encode(self) -> str:
        return _SEP.join((self.tenant, self.call_id, self.outcome))

    @classmethod
    def decode(cls, text: str) -> Release:
        tenant, call_id, outcome = text.split(_SEP, 2)
        return cls(tenant, call_id, outcome)


def hand_over(ksr: Any, release: Release) -> None:
    """Leave `release` for the keeper: one shared-memory write, no I/O."""
    ksr.htable.sht_sets(HANDOFF_TABLE, release.call_id, release.encode())


def handed(ksr: Any) -> list[Release]:
    """Every release handed over and not yet `taken`, left in the table: O(releases).
    (A list, not an iterator: the table's iterator holds the slots' locks.)"""
    return [Release.decode(text) for text in values(ksr, HANDOFF_TABLE)]


def taken(ksr: Any, release: Release) -> None:
    """Remove `release` from the table once Redis has it."""
    ksr.htable.sht_rm(HANDOFF_TABLE, release.call_id)
