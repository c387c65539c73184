"""The selection core: the compiled `_core` where it is built, else its twin `_core_py`.

Both follow docs/contracts.md, "Selection core". `DISPATCHER_NO_EXTENSIONS=1` forces the
twin (for debugging, and to run the suite the way a pure install would). `COMPILED` says
which one loaded, so tests and start-up logs can tell.
"""

from __future__ import annotations

import os

if os.environ.get("DISPATCHER_NO_EXTENSIONS") == "1":
    from dispatcher import _core_py as _impl
else:
    try:
        from dispatcher import _core as _impl  # type: ignore[no-redef]
    except ImportError:
        from dispatcher import _core_py as _impl  # type: ignore[no-redef]

COMPILED: bool = _impl.__name__ == "dispatcher._core"

RING_ALL: int = _impl.RING_ALL
RANDOM: int = _impl.RANDOM
SEQUENTIAL: int = _impl.SEQUENTIAL
PRIORITY: int = _impl.PRIORITY
LEAST_BUSY: int = _impl.LEAST_BUSY
ROUND_ROBIN: int = _impl.ROUND_ROBIN
WEIGHTED_RANDOM: int = _impl.WEIGHTED_RANDOM
LONGEST_IDLE: int = _impl.LONGEST_IDLE
STRATEGIES: dict[str, int] = _impl.STRATEGIES
AVAILABLE: int = _impl.AVAILABLE
PAUSED: int = _impl.PAUSED
LOGGED_OUT: int = _impl.LOGGED_OUT
LIVE_FIELDS: int = _impl.LIVE_FIELDS
GroupTable = _impl.GroupTable
LiveTable = _impl.LiveTable
Wave = _impl.Wave
next_wave = _impl.next_wave
plan = _impl.plan

__all__ = ["COMPILED", *_impl.__all__]
