from libc.stdint cimport int64_t, uint8_t


# Strategies.
cdef enum:
    S_RING_ALL = 0
    S_RANDOM = 1
    S_SEQUENTIAL = 2
    S_PRIORITY = 3
    S_LEAST_BUSY = 4
    S_ROUND_ROBIN = 5
    S_WEIGHTED_RANDOM = 6
    S_LONGEST_IDLE = 7


# Agent statuses.
cdef enum:
    ST_AVAILABLE = 0
    ST_PAUSED = 1
    ST_LOGGED_OUT = 2


# Offsets inside one member's live row.
cdef enum:
    F_STATUS = 0
    F_BUSY = 1
    F_MAX_CALLS = 2
    F_WRAPUP_UNTIL = 3
    F_IDLE_SINCE = 4
    F_COUNT = 5


cdef class Wave:
    cdef readonly tuple agents
    cdef readonly int timeout
    cdef readonly bint sticky


cdef class GroupTable:
    cdef readonly int strategy
    cdef readonly int ring_timeout
    cdef readonly tuple agent_ids
    cdef dict _index
    # One-agent tuples, shared by every one-agent wave: most strategies offer one agent.
    cdef tuple _singles
    cdef Py_ssize_t n
    cdef int *tiers
    cdef int *positions
    cdef int *weights
    cdef Py_ssize_t *by_position
    cdef Py_ssize_t *rank
    cdef Py_ssize_t *by_tier


cdef class LiveTable:
    cdef Py_ssize_t n
    cdef Py_ssize_t rr_cursor
    cdef int64_t *rows
    cdef uint8_t *reachable
