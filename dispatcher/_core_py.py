"""Pure-Python twin of the compiled selection core `dispatcher._core`.

The contract both follow is docs/contracts.md, "Selection core": same names, same answers,
same errors. This module is the reference the property tests hold the compiled one to, and
what runs where the extension is not built (`DISPATCHER_NO_EXTENSIONS=1`). Import
`dispatcher.core`, which picks one of the two.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "AVAILABLE",
    "LEAST_BUSY",
    "LIVE_FIELDS",
    "LOGGED_OUT",
    "LONGEST_IDLE",
    "PAUSED",
    "PRIORITY",
    "RANDOM",
    "RING_ALL",
    "ROUND_ROBIN",
    "SEQUENTIAL",
    "STRATEGIES",
    "WEIGHTED_RANDOM",
    "GroupTable",
    "LiveTable",
    "Wave",
    "next_wave",
    "plan",
]

RING_ALL = 0
RANDOM = 1
SEQUENTIAL = 2
PRIORITY = 3
LEAST_BUSY = 4
ROUND_ROBIN = 5
WEIGHTED_RANDOM = 6
LONGEST_IDLE = 7

STRATEGIES: dict[str, int] = {
    "ring_all": RING_ALL,
    "random": RANDOM,
    "sequential": SEQUENTIAL,
    "priority": PRIORITY,
    "least_busy": LEAST_BUSY,
    "round_robin": ROUND_ROBIN,
    "weighted_random": WEIGHTED_RANDOM,
    "longest_idle": LONGEST_IDLE,
}

AVAILABLE = 0
PAUSED = 1
LOGGED_OUT = 2

LIVE_FIELDS = 5
_STATUS, _BUSY, _MAX_CALLS, _WRAPUP_UNTIL, _IDLE_SINCE = range(LIVE_FIELDS)

# The compiled core keeps tier/position/weight/timeout in C ints and live values in int64;
# the twin enforces the same ranges so that both reject the same inputs.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MASK64 = 2**64 - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _as_int(value: object, what: str, low: int, high: int) -> int:
    """`value` as an int in [low, high]; TypeError for non-integers, OverflowError outside."""
    number = operator.index(value)  # type: ignore[arg-type]
    if not low <= number <= high:
        raise OverflowError(f"{what} out of range: {number}")
    return number


class _SplitMix64:
    """SplitMix64 (Steele, Lea, Flood 2014): tiny, and easy to reproduce bit for bit in C."""

    __slots__ = ("state",)

    def __init__(self, state: int) -> None:
        self.state = state & _MASK64

    def next(self) -> int:
        self.state = (self.state + _GOLDEN) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)


class Wave:
    """Agents to ring at once, for `timeout` seconds; `sticky` if it is the caller's last agent."""

    __slots__ = ("_agents", "_sticky", "_timeout")

    def __init__(self, agents: Iterable[str], timeout: int, sticky: bool) -> None:
        self._agents = tuple(agents)
        self._timeout = _as_int(timeout, "timeout", _INT_MIN, _INT_MAX)
        self._sticky = bool(sticky)

    @property
    def agents(self) -> tuple[str, ...]:
        return self._agents

    @property
    def timeout(self) -> int:
        return self._timeout

    @property
    def sticky(self) -> bool:
        return self._sticky

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Wave):
            return NotImplemented
        return (
            self._agents == other._agents
            and self._timeout == other._timeout
            and self._sticky == other._sticky
        )

    def __hash__(self) -> int:
        return hash((self._agents, self._timeout, self._sticky))

    def __repr__(self) -> str:
        return f"Wave(agents={self._agents!r}, timeout={self._timeout}, sticky={self._sticky})"


class GroupTable:
    """A call group's members and strategy, with the orders the strategies walk precomputed.

    Built once per group configuration, O(n log n); `members` are
    `(agent_id, tier, position, weight)` in the group's canonical order.
    """

    __slots__ = (
        "_agent_ids",
        "_by_position",
        "_by_tier",
        "_index",
        "_positions",
        "_rank",
        "_ring_timeout",
        "_strategy",
        "_tiers",
        "_weights",
    )

    def __init__(
        self, strategy: int, ring_timeout: int, members: Iterable[tuple[str, int, int, int]]
    ) -> None:
        strategy = _as_int(strategy, "strategy", _INT_MIN, _INT_MAX)
        if not RING_ALL <= strategy <= LONGEST_IDLE:
            raise ValueError(f"unknown strategy {strategy}")
        ring_timeout = _as_int(ring_timeout, "ring_timeout", _INT_MIN, _INT_MAX)
        if ring_timeout < 1:
            raise ValueError(f"ring_timeout must be >= 1, got {ring_timeout}")
        agent_ids: list[str] = []
        index: dict[str, int] = {}
        tiers: list[int] = []
        positions: list[int] = []
        weights: list[int] = []
        for member in members:
            fields = tuple(member)
            if len(fields) != 4:
                raise ValueError(f"member {member!r}: not (agent_id, tier, position, weight)")
            agent_id, tier, position, weight = fields
            if not isinstance(agent_id, str):
                raise TypeError(f"member {agent_id!r}: agent id must be a str")
            tier = _as_int(tier, f"member {agent_id!r}: tier", _INT_MIN, _INT_MAX)
            position = _as_int(position, f"member {agent_id!r}: position", _INT_MIN, _INT_MAX)
            weight = _as_int(weight, f"member {agent_id!r}: weight", _INT_MIN, _INT_MAX)
            if tier < 0:
                raise ValueError(f"member {agent_id!r}: tier must be >= 0, got {tier}")
            if weight < 1:
                raise ValueError(f"member {agent_id!r}: weight must be >= 1, got {weight}")
            if agent_id in index:
                raise ValueError(f"member {agent_id!r}: duplicate agent id")
            index[agent_id] = len(agent_ids)
            agent_ids.append(agent_id)
            tiers.append(tier)
            positions.append(position)
            weights.append(weight)
        count = len(agent_ids)
        self._strategy = strategy
        self._ring_timeout = ring_timeout
        self._agent_ids = tuple(agent_ids)
        self._index = index
        self._tiers = tiers
        self._positions = positions
        self._weights = weights
        self._by_position = sorted(range(count), key=lambda i: (positions[i], i))
        self._rank = [0] * count
        for rank, i in enumerate(self._by_position):
            self._rank[i] = rank
        # Position order inside each tier, tiers ascending: priority takes a prefix run of it.
        self._by_tier = sorted(range(count), key=lambda i: (tiers[i], self._rank[i]))

    @property
    def strategy(self) -> int:
        return self._strategy

    @property
    def ring_timeout(self) -> int:
        return self._ring_timeout

    @property
    def agent_ids(self) -> tuple[str, ...]:
        return self._agent_ids

    def __len__(self) -> int:
        return len(self._agent_ids)

    def index(self, agent_id: str) -> int:
        """Canonical index of `agent_id`, O(1); KeyError if it is not a member."""
        return self._index[agent_id]

    def _check(self) -> None:
        """Assert the table's invariants, O(n log n)."""
        count = len(self._agent_ids)
        assert RING_ALL <= self._strategy <= LONGEST_IDLE
        assert self._ring_timeout >= 1
        assert len(self._tiers) == len(self._positions) == len(self._weights) == count
        assert self._index == {agent_id: i for i, agent_id in enumerate(self._agent_ids)}
        assert all(tier >= 0 for tier in self._tiers)
        assert all(weight >= 1 for weight in self._weights)
        assert sorted(self._by_position) == list(range(count))
        keys = [(self._positions[i], i) for i in self._by_position]
        assert keys == sorted(keys)
        assert all(self._by_position[self._rank[i]] == i for i in range(count))
        assert sorted(self._by_tier) == list(range(count))
        keys = [(self._tiers[i], self._rank[i]) for i in self._by_tier]
        assert keys == sorted(keys)


class LiveTable:
    """The group's members' live state: `LIVE_FIELDS` ints per member, in canonical order.

    Built per routing decision from the shared state, O(n).
    """

    __slots__ = ("_reachable", "_rows", "_rr_cursor")

    def __init__(self, rows: Sequence[int], rr_cursor: int = -1) -> None:
        length = len(rows)
        if length % LIVE_FIELDS:
            raise ValueError(
                f"len(rows) is {length}, not a multiple of LIVE_FIELDS ({LIVE_FIELDS})"
            )
        count = length // LIVE_FIELDS
        rr_cursor = _as_int(rr_cursor, "rr_cursor", _INT64_MIN, _INT64_MAX)
        if not -1 <= rr_cursor < count:
            raise ValueError(
                f"rr_cursor must be -1 or a member index below {count}, got {rr_cursor}"
            )
        self._rows = [_as_int(rows[j], f"rows[{j}]", _INT64_MIN, _INT64_MAX) for j in range(length)]
        self._rr_cursor = rr_cursor
        self._reachable = [True] * count

    def __len__(self) -> int:
        return len(self._reachable)

    def set_reachable(self, index: int, reachable: bool) -> None:
        """Mark member `index` (canonical) reachable or not, O(1)."""
        index = _as_int(index, "index", _INT64_MIN, _INT64_MAX)
        if not 0 <= index < len(self._reachable):
            raise IndexError(f"member index {index} out of range for {len(self._reachable)}")
        self._reachable[index] = bool(reachable)

    def _check(self) -> None:
        """Assert the table's invariants, O(n)."""
        assert len(self._rows) == LIVE_FIELDS * len(self._reachable)
        assert -1 <= self._rr_cursor < len(self._reachable)
        assert all(_INT64_MIN <= value <= _INT64_MAX for value in self._rows)
        assert all(type(flag) is bool for flag in self._reachable)


def _tried_flags(group: GroupTable, tried: Iterable[str]) -> list[bool]:
    """Per-member flags for the tried agents, O(|tried|) lookups; non-members are ignored."""
    flags = [False] * len(group)
    for agent_id in tried:
        index = group._index.get(agent_id)
        if index is not None:
            flags[index] = True
    return flags


def _eligible(live: LiveTable, now_ms: int, tried: list[bool]) -> list[bool]:
    """Per-member eligibility (the contract's five conditions), O(n)."""
    eligible = []
    for i, reachable in enumerate(live._reachable):
        status, busy, max_calls, wrapup_until, _ = live._rows[
            LIVE_FIELDS * i : LIVE_FIELDS * (i + 1)
        ]
        eligible.append(
            not tried[i]
            and reachable
            and status == AVAILABLE
            and now_ms >= wrapup_until
            and busy < max_calls
        )
    return eligible


# Each chooser returns the canonical indices of the wave, [] when no member is eligible.
_Chooser = Callable[[GroupTable, LiveTable, list[bool], int, int], list[int]]


def _ring_all(
    group: GroupTable, live: LiveTable, eligible: list[bool], k: int, seed: int
) -> list[int]:
    return [i for i, ok in enumerate(eligible) if ok]


def _sequential(
    group: GroupTable, live: LiveTable, eligible: list[bool], k: int, seed: int
) -> list[int]:
    return [i for i in group._by_position if eligible[i]][:1]


def _priority(
    group: GroupTable, live: LiveTable, eligible: list[bool], k: int, seed: int
) -> list[int]:
    candidates = [i for i in group._by_tier if eligible[i]]
    if not candidates:
        return []
    tier = group._tiers[candidates[0]]
    return [i for i in candidates if group._tiers[i] == tier]


def _least_busy(
    group: GroupTable, live: LiveTable, eligible: list[bool], k: int, seed: int
) -> list[int]:
    candidates = [i for i in range(len(eligible)) if eligible[i]]
    if not candidates:
        return []

    def key(i: int) -> tuple[int, int, int]:
        row = LIVE_FIELDS * i
        return (live._rows[row + _BUSY], live._rows[row + _IDLE_SINCE], group._rank[i])

    return [min(candidates, key=key)]


def _longest_idle(
    group: GroupTable, live: LiveTable, eligible: list[bool], k: int, seed: int
) -> list[int]:
    candidates = [i for i in range(len(eligible)) if eligible[i]]
    if not candidates:
        return []
    return [
        min(candidates, key=lambda i: (live._rows[LIVE_FIELDS * i + _IDLE_SINCE], group._rank[i]))
    ]


def _round_robin(
    group: GroupTable, live: LiveTable, eligible: list[bool], k: int, seed: int
) -> list[int]:
    count = len(eligible)
    start = 0 if live._rr_cursor < 0 else group._rank[live._rr_cursor] + 1
    for step in range(count):
        i = group._by_position[(start + step) % count]
        if eligible[i]:
            return [i]
    return []


def _random(
    group: GroupTable, live: LiveTable, eligible: list[bool], k: int, seed: int
) -> list[int]:
    rng = _SplitMix64(seed)
    order = list(range(len(eligible)))
    for i in range(len(order) - 1, 0, -1):
        j = rng.next() % (i + 1)
        order[i], order[j] = order[j], order[i]
    return [i for i in order if eligible[i]][:1]


def _weighted_random(
    group: GroupTable, live: LiveTable, eligible: list[bool], k: int, seed: int
) -> list[int]:
    total = sum(w for w, ok in zip(group._weights, eligible, strict=True) if ok)
    if not total:
        return []
    # A fresh stream per wave (keyed by how many were tried) keeps each wave reproducible
    # from the call's seed alone, whichever worker computes it.
    r = _SplitMix64(seed + k * _GOLDEN).next() % total
    for i, ok in enumerate(eligible):
        if ok:
            if r < group._weights[i]:
                return [i]
            r -= group._weights[i]
    raise AssertionError("unreachable: r < total")


_CHOOSERS: dict[int, _Chooser] = {
    RING_ALL: _ring_all,
    RANDOM: _random,
    SEQUENTIAL: _sequential,
    PRIORITY: _priority,
    LEAST_BUSY: _least_busy,
    ROUND_ROBIN: _round_robin,
    WEIGHTED_RANDOM: _weighted_random,
    LONGEST_IDLE: _longest_idle,
}


def _check_call(group: GroupTable, live: LiveTable, now_ms: int, seed: int) -> tuple[int, int]:
    """The arguments' errors, in the compiled core's order; returns (now_ms, seed mod 2**64)."""
    if not isinstance(group, GroupTable):
        raise TypeError(f"group must be a GroupTable, not {type(group).__name__}")
    if not isinstance(live, LiveTable):
        raise TypeError(f"live must be a LiveTable, not {type(live).__name__}")
    now_ms = _as_int(now_ms, "now_ms", _INT64_MIN, _INT64_MAX)
    seed = operator.index(seed) & _MASK64
    if len(live) != len(group):
        raise ValueError(f"live table has {len(live)} members, group has {len(group)}")
    return now_ms, seed


def next_wave(
    group: GroupTable,
    live: LiveTable,
    now_ms: int,
    seed: int,
    tried: Iterable[str] = (),
    sticky: str | None = None,
) -> Wave | None:
    """The next wave of agents to offer the call to, or None when no member is eligible.

    O(n + |tried|); random is O(n) too (a full Fisher-Yates shuffle).
    """
    now_ms, seed = _check_call(group, live, now_ms, seed)
    tried_flags = _tried_flags(group, tried)
    sticky_index = None if sticky is None else group._index.get(sticky)
    eligible = _eligible(live, now_ms, tried_flags)
    if sticky_index is not None and eligible[sticky_index]:
        return Wave((group._agent_ids[sticky_index],), group._ring_timeout, True)
    chosen = _CHOOSERS[group._strategy](group, live, eligible, sum(tried_flags), seed)
    if not chosen:
        return None
    return Wave([group._agent_ids[i] for i in chosen], group._ring_timeout, False)


def plan(
    group: GroupTable,
    live: LiveTable,
    now_ms: int,
    seed: int,
    tried: Iterable[str] = (),
    sticky: str | None = None,
) -> list[Wave]:
    """Every wave the call would go through if nobody answered, in order, O(n * (n + |tried|))."""
    _check_call(group, live, now_ms, seed)
    offered = list(tried)
    waves: list[Wave] = []
    while (wave := next_wave(group, live, now_ms, seed, offered, sticky)) is not None:
        waves.append(wave)
        offered.extend(wave.agents)
    return waves
