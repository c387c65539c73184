# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled selection core: which agents a call group offers a call to next.

The contract is docs/contracts.md, "Selection core"; `dispatcher._core_py` is the
twin that gives the same answers and raises the same errors. Import `dispatcher.core`,
which picks one.

A routing decision is one `next_wave` call from Python; everything inside it runs in C
over the tables' arrays, so its cost is one Python call plus the Wave it returns.
"""

cimport cython
from cpython.long cimport (
    PyLong_AsLongLongAndOverflow,
    PyLong_AsUnsignedLongLongMask,
    PyLong_CheckExact,
)
from cpython.number cimport PyNumber_Index
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.limits cimport INT_MAX, INT_MIN
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

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

RING_ALL = S_RING_ALL
RANDOM = S_RANDOM
SEQUENTIAL = S_SEQUENTIAL
PRIORITY = S_PRIORITY
LEAST_BUSY = S_LEAST_BUSY
ROUND_ROBIN = S_ROUND_ROBIN
WEIGHTED_RANDOM = S_WEIGHTED_RANDOM
LONGEST_IDLE = S_LONGEST_IDLE

STRATEGIES = {
    "ring_all": RING_ALL,
    "random": RANDOM,
    "sequential": SEQUENTIAL,
    "priority": PRIORITY,
    "least_busy": LEAST_BUSY,
    "round_robin": ROUND_ROBIN,
    "weighted_random": WEIGHTED_RANDOM,
    "longest_idle": LONGEST_IDLE,
}

AVAILABLE = ST_AVAILABLE
PAUSED = ST_PAUSED
LOGGED_OUT = ST_LOGGED_OUT

LIVE_FIELDS = F_COUNT

cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL

# Groups up to this size keep their per-call scratch on the C stack: no malloc per call.
cdef enum:
    STACK_MEMBERS = 256


cdef int64_t _as_int(object value, str what, int64_t low, int64_t high) except? -1:
    """`value` as a C integer in [low, high], with the twin's errors (not Cython's)."""
    cdef int overflow = 0
    cdef long long number
    if not PyLong_CheckExact(value):
        value = PyNumber_Index(value)
    number = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or number < low or number > high:
        raise OverflowError(f"{what} out of range: {value}")
    return number


cdef inline uint64_t _seed64(object seed) except? 0xFFFFFFFFFFFFFFFFULL:
    """The seed mod 2**64."""
    if not PyLong_CheckExact(seed):
        seed = PyNumber_Index(seed)
    return PyLong_AsUnsignedLongLongMask(seed)


cdef inline uint64_t _splitmix64(uint64_t *state) noexcept nogil:
    # SplitMix64 (Steele, Lea, Flood 2014); uint64_t wraps, which is the "mod 2**64".
    cdef uint64_t z
    state[0] += GOLDEN
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef void *_alloc(Py_ssize_t count, size_t size) except NULL:
    # malloc(0) may return NULL, which would read as out of memory.
    cdef void *block = malloc((count if count > 0 else 1) * size)
    if block == NULL:
        raise MemoryError()
    return block


@cython.freelist(16)
cdef class Wave:
    """Agents to ring at once, for `timeout` seconds.

    `sticky` if the wave is the caller's last agent, offered first.
    """

    def __init__(self, agents, timeout, sticky):
        self.agents = tuple(agents)
        self.timeout = <int>_as_int(timeout, "timeout", INT_MIN, INT_MAX)
        self.sticky = sticky

    def __eq__(self, other):
        cdef Wave that
        if not isinstance(other, Wave):
            return NotImplemented
        that = <Wave>other
        return (
            self.agents == that.agents
            and self.timeout == that.timeout
            and self.sticky == that.sticky
        )

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self):
        return hash((self.agents, self.timeout, bool(self.sticky)))

    def __repr__(self):
        return (
            f"Wave(agents={self.agents!r}, timeout={self.timeout}, "
            f"sticky={bool(self.sticky)})"
        )


cdef class GroupTable:
    """A call group's members and strategy, with the orders the strategies walk
    precomputed.

    Built once per group configuration, O(n log n); `members` are
    `(agent_id, tier, position, weight)` in the group's canonical order.
    """

    def __cinit__(self, strategy, ring_timeout, members):
        cdef Py_ssize_t i, count
        self.strategy = <int>_as_int(strategy, "strategy", INT_MIN, INT_MAX)
        if not S_RING_ALL <= self.strategy <= S_LONGEST_IDLE:
            raise ValueError(f"unknown strategy {self.strategy}")
        self.ring_timeout = <int>_as_int(ring_timeout, "ring_timeout", INT_MIN, INT_MAX)
        if self.ring_timeout < 1:
            raise ValueError(f"ring_timeout must be >= 1, got {self.ring_timeout}")
        agent_ids = []
        index = {}
        tiers = []
        positions = []
        weights = []
        for member in members:
            fields = tuple(member)
            if len(fields) != 4:
                raise ValueError(
                    f"member {member!r}: not (agent_id, tier, position, weight)"
                )
            agent_id, tier, position, weight = fields
            if not isinstance(agent_id, str):
                raise TypeError(f"member {agent_id!r}: agent id must be a str")
            tier = _as_int(tier, f"member {agent_id!r}: tier", INT_MIN, INT_MAX)
            position = _as_int(
                position, f"member {agent_id!r}: position", INT_MIN, INT_MAX
            )
            weight = _as_int(weight, f"member {agent_id!r}: weight", INT_MIN, INT_MAX)
            if tier < 0:
                raise ValueError(f"member {agent_id!r}: tier must be >= 0, got {tier}")
            if weight < 1:
                raise ValueError(
                    f"member {agent_id!r}: weight must be >= 1, got {weight}"
                )
            if agent_id in index:
                raise ValueError(f"member {agent_id!r}: duplicate agent id")
            index[agent_id] = len(agent_ids)
            agent_ids.append(agent_id)
            tiers.append(tier)
            positions.append(position)
            weights.append(weight)
        count = len(agent_ids)
        # sorted() is stable, so equal positions keep canonical order and each tier
        # keeps position order: the contract's (position, index) and (tier, rank) keys.
        by_position = sorted(range(count), key=positions.__getitem__)
        by_tier = sorted(by_position, key=tiers.__getitem__)
        self.agent_ids = tuple(agent_ids)
        self._index = index
        self._singles = tuple([(agent_id,) for agent_id in agent_ids])
        self.tiers = <int *>_alloc(count, sizeof(int))
        self.positions = <int *>_alloc(count, sizeof(int))
        self.weights = <int *>_alloc(count, sizeof(int))
        self.by_position = <Py_ssize_t *>_alloc(count, sizeof(Py_ssize_t))
        self.rank = <Py_ssize_t *>_alloc(count, sizeof(Py_ssize_t))
        self.by_tier = <Py_ssize_t *>_alloc(count, sizeof(Py_ssize_t))
        self.n = count
        for i in range(count):
            self.tiers[i] = tiers[i]
            self.positions[i] = positions[i]
            self.weights[i] = weights[i]
            self.by_position[i] = by_position[i]
            self.by_tier[i] = by_tier[i]
        for i in range(count):
            self.rank[self.by_position[i]] = i

    def __dealloc__(self):
        free(self.tiers)
        free(self.positions)
        free(self.weights)
        free(self.by_position)
        free(self.rank)
        free(self.by_tier)

    def __len__(self):
        return self.n

    def index(self, agent_id):
        """Canonical index of `agent_id`, O(1); KeyError if it is not a member."""
        return self._index[agent_id]

    def _check(self):
        """Assert the table's invariants, O(n log n)."""
        cdef Py_ssize_t i, a, b
        count = self.n
        assert S_RING_ALL <= self.strategy <= S_LONGEST_IDLE
        assert self.ring_timeout >= 1
        assert len(self.agent_ids) == len(self._singles) == count
        assert self._index == {agent_id: i for i, agent_id in enumerate(self.agent_ids)}
        assert all([self._singles[i] == (self.agent_ids[i],) for i in range(count)])
        assert sorted([self.by_position[i] for i in range(count)]) == list(range(count))
        assert sorted([self.by_tier[i] for i in range(count)]) == list(range(count))
        for i in range(count):
            assert self.tiers[i] >= 0
            assert self.weights[i] >= 1
            assert self.by_position[self.rank[i]] == i
        for i in range(1, count):
            a = self.by_position[i - 1]
            b = self.by_position[i]
            assert (self.positions[a], a) < (self.positions[b], b)
            a = self.by_tier[i - 1]
            b = self.by_tier[i]
            assert (self.tiers[a], self.rank[a]) < (self.tiers[b], self.rank[b])


cdef class LiveTable:
    """The members' live state: `LIVE_FIELDS` ints per member, in canonical order.

    Built per routing decision from the shared state, O(n).
    """

    def __cinit__(self, rows, rr_cursor=-1):
        cdef Py_ssize_t j, length, count
        cdef int overflow = 0
        cdef long long number
        length = len(rows)
        if length % F_COUNT:
            raise ValueError(
                f"len(rows) is {length}, not a multiple of LIVE_FIELDS ({F_COUNT})"
            )
        count = length // F_COUNT
        cursor = _as_int(rr_cursor, "rr_cursor", INT64_MIN, INT64_MAX)
        if not -1 <= cursor < count:
            raise ValueError(
                f"rr_cursor must be -1 or a member index below {count}, got {cursor}"
            )
        self.rows = <int64_t *>_alloc(length, sizeof(int64_t))
        self.reachable = <uint8_t *>_alloc(count, sizeof(uint8_t))
        self.n = count
        self.rr_cursor = cursor
        memset(self.reachable, 1, count)
        for j in range(length):
            value = rows[j]
            if not PyLong_CheckExact(value):
                value = PyNumber_Index(value)
            number = PyLong_AsLongLongAndOverflow(value, &overflow)
            if overflow:
                raise OverflowError(f"rows[{j}] out of range: {value}")
            self.rows[j] = number

    def __dealloc__(self):
        free(self.rows)
        free(self.reachable)

    def __len__(self):
        return self.n

    def set_reachable(self, index, reachable):
        """Mark member `index` (canonical) reachable or not, O(1)."""
        cdef int64_t i = _as_int(index, "index", INT64_MIN, INT64_MAX)
        if not 0 <= i < self.n:
            raise IndexError(f"member index {i} out of range for {self.n}")
        self.reachable[i] = 1 if reachable else 0

    def _check(self):
        """Assert the table's invariants, O(n)."""
        cdef Py_ssize_t i
        assert -1 <= self.rr_cursor < self.n
        for i in range(self.n):
            assert self.reachable[i] in (0, 1)


cdef Py_ssize_t _mark_tried(GroupTable group, object tried, uint8_t *flags) except -1:
    """Flag the tried members, O(|tried|) dict lookups; returns how many were new."""
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t i
    for agent_id in tried:
        index = group._index.get(agent_id)
        if index is not None:
            i = index
            if not flags[i]:
                flags[i] = 1
                count += 1
    return count


cdef Py_ssize_t _sticky_index(GroupTable group, object sticky) except -2:
    if sticky is None:
        return -1
    index = group._index.get(sticky)
    return -1 if index is None else index


cdef inline Py_ssize_t _mark_eligible(
    LiveTable live, int64_t now_ms, const uint8_t *tried, uint8_t *eligible
) noexcept:
    """Fill `eligible` for every member, O(n); returns how many are."""
    cdef Py_ssize_t i
    cdef Py_ssize_t count = 0
    cdef const int64_t *row = live.rows
    for i in range(live.n):
        eligible[i] = (
            not tried[i]
            and live.reachable[i]
            and row[F_STATUS] == ST_AVAILABLE
            and now_ms >= row[F_WRAPUP_UNTIL]
            and row[F_BUSY] < row[F_MAX_CALLS]
        )
        count += eligible[i]
        row += F_COUNT
    return count


cdef inline Py_ssize_t _least_busy(
    GroupTable group, LiveTable live, const uint8_t *eligible
) noexcept:
    # Walking in position order makes the first of equal (busy, idle) the lowest rank.
    cdef Py_ssize_t p, i
    cdef Py_ssize_t best = -1
    cdef int64_t busy, idle
    cdef int64_t best_busy = 0
    cdef int64_t best_idle = 0
    for p in range(group.n):
        i = group.by_position[p]
        if not eligible[i]:
            continue
        busy = live.rows[i * F_COUNT + F_BUSY]
        idle = live.rows[i * F_COUNT + F_IDLE_SINCE]
        if best < 0 or busy < best_busy or (busy == best_busy and idle < best_idle):
            best = i
            best_busy = busy
            best_idle = idle
    return best


cdef inline Py_ssize_t _longest_idle(
    GroupTable group, LiveTable live, const uint8_t *eligible
) noexcept:
    cdef Py_ssize_t p, i
    cdef Py_ssize_t best = -1
    cdef int64_t idle
    cdef int64_t best_idle = 0
    for p in range(group.n):
        i = group.by_position[p]
        if not eligible[i]:
            continue
        idle = live.rows[i * F_COUNT + F_IDLE_SINCE]
        if best < 0 or idle < best_idle:
            best = i
            best_idle = idle
    return best


cdef inline Py_ssize_t _round_robin(
    GroupTable group, LiveTable live, const uint8_t *eligible
) noexcept:
    cdef Py_ssize_t step, p, i
    cdef Py_ssize_t start = 0 if live.rr_cursor < 0 else group.rank[live.rr_cursor] + 1
    for step in range(group.n):
        p = start + step
        if p >= group.n:
            p -= group.n
        i = group.by_position[p]
        if eligible[i]:
            return i
    return -1


cdef inline Py_ssize_t _random(
    GroupTable group, const uint8_t *eligible, uint64_t seed, Py_ssize_t *order
) noexcept:
    # The whole shuffle is needed: order[0] is the last slot Fisher-Yates settles.
    cdef Py_ssize_t i, j, swap
    cdef uint64_t state = seed
    for i in range(group.n):
        order[i] = i
    for i in range(group.n - 1, 0, -1):
        j = <Py_ssize_t>(_splitmix64(&state) % <uint64_t>(i + 1))
        swap = order[i]
        order[i] = order[j]
        order[j] = swap
    for i in range(group.n):
        if eligible[order[i]]:
            return order[i]
    return -1


cdef inline Py_ssize_t _weighted_random(
    GroupTable group, const uint8_t *eligible, Py_ssize_t tried_count, uint64_t seed
) noexcept:
    # A fresh stream per wave, keyed by how many were tried, keeps each wave
    # reproducible from the call's seed alone, whichever worker computes it.
    cdef Py_ssize_t i
    cdef uint64_t total = 0
    cdef uint64_t r
    cdef uint64_t state = seed + <uint64_t>tried_count * GOLDEN
    for i in range(group.n):
        if eligible[i]:
            total += <uint64_t>group.weights[i]
    if total == 0:
        return -1
    r = _splitmix64(&state) % total
    for i in range(group.n):
        if eligible[i]:
            if r < <uint64_t>group.weights[i]:
                return i
            r -= <uint64_t>group.weights[i]
    return -1


cdef Py_ssize_t _choose(
    GroupTable group,
    LiveTable live,
    const uint8_t *eligible,
    Py_ssize_t tried_count,
    uint64_t seed,
    Py_ssize_t *chosen,
) noexcept:
    """Write the wave's canonical indices to `chosen`, O(n); returns how many."""
    cdef Py_ssize_t p, i, first, tier
    cdef Py_ssize_t count = 0
    cdef int strategy = group.strategy
    if strategy == S_RING_ALL:
        for i in range(group.n):
            if eligible[i]:
                chosen[count] = i
                count += 1
        return count
    if strategy == S_PRIORITY:
        first = -1
        for p in range(group.n):
            if eligible[group.by_tier[p]]:
                first = p
                break
        if first < 0:
            return 0
        tier = group.tiers[group.by_tier[first]]
        for p in range(first, group.n):
            i = group.by_tier[p]
            if group.tiers[i] != tier:
                break
            if eligible[i]:
                chosen[count] = i
                count += 1
        return count
    if strategy == S_SEQUENTIAL:
        i = -1
        for p in range(group.n):
            if eligible[group.by_position[p]]:
                i = group.by_position[p]
                break
    elif strategy == S_LEAST_BUSY:
        i = _least_busy(group, live, eligible)
    elif strategy == S_LONGEST_IDLE:
        i = _longest_idle(group, live, eligible)
    elif strategy == S_ROUND_ROBIN:
        i = _round_robin(group, live, eligible)
    elif strategy == S_RANDOM:
        i = _random(group, eligible, seed, chosen)
    else:
        i = _weighted_random(group, eligible, tried_count, seed)
    if i < 0:
        return 0
    chosen[0] = i
    return 1


cdef Py_ssize_t _decide(
    GroupTable group,
    LiveTable live,
    int64_t now_ms,
    uint64_t seed,
    const uint8_t *tried,
    Py_ssize_t tried_count,
    Py_ssize_t sticky,
    uint8_t *eligible,
    Py_ssize_t *chosen,
    bint *was_sticky,
) noexcept:
    """One wave into `chosen` (0 when nobody is eligible), O(n)."""
    was_sticky[0] = False
    if _mark_eligible(live, now_ms, tried, eligible) == 0:
        return 0
    if sticky >= 0 and eligible[sticky]:
        was_sticky[0] = True
        chosen[0] = sticky
        return 1
    return _choose(group, live, eligible, tried_count, seed, chosen)


cdef Wave _make_wave(
    GroupTable group, const Py_ssize_t *chosen, Py_ssize_t count, bint sticky
):
    cdef Py_ssize_t j
    cdef Wave wave = Wave.__new__(Wave)
    if count == 1:
        wave.agents = <tuple>group._singles[chosen[0]]
    else:
        agents = PyTuple_New(count)
        for j in range(count):
            agent_id = group.agent_ids[chosen[j]]
            Py_INCREF(agent_id)  # PyTuple_SET_ITEM steals a reference
            PyTuple_SET_ITEM(agents, j, agent_id)
        wave.agents = agents
    wave.timeout = group.ring_timeout
    wave.sticky = sticky
    return wave


def next_wave(
    GroupTable group not None,
    LiveTable live not None,
    now_ms,
    seed,
    tried=(),
    sticky=None,
):
    """The next wave of agents to offer the call to, or None when no member is eligible.

    O(n + |tried|); random is O(n) too (a full Fisher-Yates shuffle).
    """
    cdef Py_ssize_t n = group.n
    cdef Py_ssize_t tried_count, sticky_index, count
    cdef bint was_sticky = False
    cdef uint8_t flags_stack[2 * STACK_MEMBERS]
    cdef Py_ssize_t chosen_stack[STACK_MEMBERS]
    cdef uint8_t *flags = flags_stack
    cdef Py_ssize_t *chosen = chosen_stack
    cdef int64_t now = _as_int(now_ms, "now_ms", INT64_MIN, INT64_MAX)
    cdef uint64_t state = _seed64(seed)
    if live.n != n:
        raise ValueError(f"live table has {live.n} members, group has {n}")
    if n > STACK_MEMBERS:
        chosen = <Py_ssize_t *>_alloc(n, sizeof(Py_ssize_t) + 2)
        flags = <uint8_t *>(chosen + n)
    try:
        memset(flags, 0, n)
        tried_count = _mark_tried(group, tried, flags)
        sticky_index = _sticky_index(group, sticky)
        count = _decide(
            group, live, now, state, flags, tried_count, sticky_index,
            flags + n, chosen, &was_sticky,
        )
        if count == 0:
            return None
        return _make_wave(group, chosen, count, was_sticky)
    finally:
        if chosen != chosen_stack:
            free(chosen)


def plan(
    GroupTable group not None,
    LiveTable live not None,
    now_ms,
    seed,
    tried=(),
    sticky=None,
):
    """Every wave the call would go through if nobody answered, in order.

    O(n * waves + |tried|): the tried flags carry over from wave to wave.
    """
    cdef Py_ssize_t n = group.n
    cdef Py_ssize_t j, tried_count, sticky_index, count
    cdef bint was_sticky = False
    cdef uint8_t flags_stack[2 * STACK_MEMBERS]
    cdef Py_ssize_t chosen_stack[STACK_MEMBERS]
    cdef uint8_t *flags = flags_stack
    cdef Py_ssize_t *chosen = chosen_stack
    cdef int64_t now = _as_int(now_ms, "now_ms", INT64_MIN, INT64_MAX)
    cdef uint64_t state = _seed64(seed)
    if live.n != n:
        raise ValueError(f"live table has {live.n} members, group has {n}")
    if n > STACK_MEMBERS:
        chosen = <Py_ssize_t *>_alloc(n, sizeof(Py_ssize_t) + 2)
        flags = <uint8_t *>(chosen + n)
    waves = []
    try:
        memset(flags, 0, n)
        tried_count = _mark_tried(group, tried, flags)
        sticky_index = _sticky_index(group, sticky)
        while True:
            count = _decide(
                group, live, now, state, flags, tried_count, sticky_index,
                flags + n, chosen, &was_sticky,
            )
            if count == 0:
                return waves
            waves.append(_make_wave(group, chosen, count, was_sticky))
            for j in range(count):
                flags[chosen[j]] = 1
            tried_count += count
    finally:
        if chosen != chosen_stack:
            free(chosen)
