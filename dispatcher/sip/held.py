"""What a Kamailio node knows of the queued callers it holds: one record per call in the
node's shared-memory htable `dspq` (call-id -> `HeldCall`), written by the worker that
suspended the caller's INVITE and read by the node's keeper process.

The htable, not Redis: a suspended transaction lives in this node's memory alone, and its
handle (tm's index and label) means nothing elsewhere. Redis keeps the queue itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

HTABLE = "dspq"

# A held call's states: its INVITE transaction is suspended (waiting, t_continue may resume
# it); being served (resumed: ringing agents, or on its way to an overflow target); cancelling
# (the caller's CANCEL resumed it to reply 487).
SUSPENDED, SERVING, CANCELLING = "suspended", "serving", "cancelling"


@dataclass(frozen=True, slots=True)
class HeldCall:
    """A queued caller this node holds.

    `tindex`/`tlabel` name its suspended INVITE transaction (tm); `from_tag` is the caller's,
    for RTPengine; `caller` its number (its priority, should it join again); `joined_ms` and
    `music_at_ms` (this node's clock) when it was first held and when the greeting ends and
    the music starts; `overflow` the case a resumed overflow route applies (full, timeout,
    no_agents) or "".
    """

    call_id: str
    tenant: str
    group: str
    tindex: int
    tlabel: int
    from_tag: str
    joined_ms: int
    music_at_ms: int
    caller: str = ""
    state: str = SUSPENDED
    overflow: str = ""

    def encode(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def decode(cls, text: str) -> HeldCall:
        """Inverse of `encode`; ValueError on anything else."""
        try:
            return cls(**orjson.loads(text))
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"not a held call: {text[:80]!r}") from exc

    def moved(self, **changes: Any) -> HeldCall:
        return replace(self, **changes)


def put(ksr: Any, held: HeldCall) -> None:
    """Record (or replace) `held` in the node's htable."""
    ksr.htable.sht_sets(HTABLE, held.call_id, held.encode())


def get(ksr: Any, call_id: str) -> HeldCall | None:
    """The node's record of `call_id`, None when it holds no such call."""
    text = ksr.htable.sht_get(HTABLE, call_id)
    return HeldCall.decode(str(text)) if text else None


def drop(ksr: Any, call_id: str) -> None:
    """The node holds `call_id` no longer (answered, gone to an overflow, hung up)."""
    ksr.htable.sht_rm(HTABLE, call_id)


def every(ksr: Any) -> list[HeldCall]:
    """Every call the node holds: O(held calls)."""
    return [HeldCall.decode(text) for text in values(ksr, HTABLE)]


def values(ksr: Any, table: str) -> list[str]:
    """Every value of a node htable. Reads the whole table (its slots stay locked while it
    iterates, so nothing is written meanwhile)."""
    texts: list[str] = []
    iterator = f"{table}_it"
    ksr.htable.sht_iterator_start(iterator, table)
    try:
        while ksr.htable.sht_iterator_next(iterator) > 0:
            value = ksr.pv.get(f"$shtitval({iterator})")
            if value:
                texts.append(str(value))
    finally:
        ksr.htable.sht_iterator_end(iterator)
    return texts
