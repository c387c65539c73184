"""A builder of hand-written event streams, shaped as dispatcher/state/library.lua emits them.

Times are ms after `t0` (the scenario modules derive it from the real clock); ids are
`<ts>-<seq>` as Redis gives them, so a stream written in time order loads into a real Redis
with its own ids.
"""

from __future__ import annotations


class EventLog:
    """The events of one scenario, in the order they were written (`events`)."""

    def __init__(self, t0: int, group: str, caller: str = "+4930123") -> None:
        self.t0, self.group, self.caller = t0, group, caller
        self.events: list[dict[str, str]] = []
        self._seq: dict[int, int] = {}

    def at(self, ms: int, kind: str, **fields: str) -> None:
        """Any event `kind` at t0 + ms with these fields."""
        ts = self.t0 + ms
        seq = self._seq[ts] = self._seq.get(ts, -1) + 1
        self.events.append({"type": kind, "ts": str(ts), **fields, "id": f"{ts}-{seq}"})

    def arrived(self, ms: int, call: str, group: str = "") -> None:
        self.at(ms, "arrived", call=call, group=group or self.group, caller=self.caller)

    def offered(self, ms: int, call: str, agent: str, group: str = "") -> None:
        fields = {"group": group or self.group, "caller": self.caller}
        self.at(ms, "offered", call=call, agent=agent, **fields)

    def answered(self, ms: int, call: str, agent: str, group: str = "", reason: str = "") -> None:
        fields = {"group": group or self.group, "caller": self.caller}
        if reason:
            fields["reason"] = reason
        self.at(ms, "answered", call=call, agent=agent, **fields)

    def failed(self, ms: int, call: str, agent: str, reason: str) -> None:
        self.at(ms, "failed", call=call, agent=agent, reason=reason)

    def released(self, ms: int, call: str, agent: str, reason: str, group: str = "") -> None:
        self.at(ms, "released", call=call, agent=agent, group=group or self.group, reason=reason)

    def ended(self, ms: int, call: str, outcome: str) -> None:
        self.at(ms, "ended", call=call, outcome=outcome)

    def queued(self, ms: int, call: str, position: int = 1, priority: int = 0) -> None:
        fields = {"group": self.group, "caller": self.caller}
        self.at(ms, "queued", call=call, priority=str(priority), position=str(position), **fields)

    def dequeued(self, ms: int, call: str, reason: str, wait_ms: int) -> None:
        """Left the queue; as in library.lua's queue_remove, wait_ms is given by the caller
        (Redis computes it from the entry's join time)."""
        fields = {"group": self.group, "caller": self.caller, "reason": reason}
        self.at(ms, "dequeued", call=call, wait_ms=str(wait_ms), **fields)

    def overflowed(self, ms: int, call: str, reason: str) -> None:
        self.at(ms, "overflowed", call=call, group=self.group, caller=self.caller, reason=reason)

    def announced(self, ms: int, call: str, position: int, wait_s: int | None) -> None:
        """An announcement; wait_s None: the position alone (emit leaves the field out)."""
        fields = {} if wait_s is None else {"wait_s": str(wait_s)}
        self.at(ms, "announced", call=call, group=self.group, position=str(position), **fields)

    def voicemail(self, ms: int, message: str, group: str = "", duration_ms: int = 9000) -> None:
        fields = {"group": group or self.group, "caller": self.caller}
        self.at(ms, "voicemail", message=message, duration_ms=str(duration_ms), **fields)
