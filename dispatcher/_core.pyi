"""Types of the compiled selection core; the twin `_core_py` has the same API."""

from collections.abc import Iterable, Sequence
from typing import Final

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

RING_ALL: Final[int]
RANDOM: Final[int]
SEQUENTIAL: Final[int]
PRIORITY: Final[int]
LEAST_BUSY: Final[int]
ROUND_ROBIN: Final[int]
WEIGHTED_RANDOM: Final[int]
LONGEST_IDLE: Final[int]
STRATEGIES: dict[str, int]
AVAILABLE: Final[int]
PAUSED: Final[int]
LOGGED_OUT: Final[int]
LIVE_FIELDS: Final[int]

class Wave:
    @property
    def agents(self) -> tuple[str, ...]: ...
    @property
    def timeout(self) -> int: ...
    @property
    def sticky(self) -> bool: ...
    def __init__(self, agents: Iterable[str], timeout: int, sticky: bool) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class GroupTable:
    @property
    def strategy(self) -> int: ...
    @property
    def ring_timeout(self) -> int: ...
    @property
    def agent_ids(self) -> tuple[str, ...]: ...
    def __init__(
        self, strategy: int, ring_timeout: int, members: Iterable[tuple[str, int, int, int]]
    ) -> None: ...
    def __len__(self) -> int: ...
    def index(self, agent_id: str) -> int: ...
    def _check(self) -> None: ...

class LiveTable:
    def __init__(self, rows: Sequence[int], rr_cursor: int = -1) -> None: ...
    def __len__(self) -> int: ...
    def set_reachable(self, index: int, reachable: bool) -> None: ...
    def _check(self) -> None: ...

def next_wave(
    group: GroupTable,
    live: LiveTable,
    now_ms: int,
    seed: int,
    tried: Iterable[str] = (),
    sticky: str | None = None,
) -> Wave | None: ...
def plan(
    group: GroupTable,
    live: LiveTable,
    now_ms: int,
    seed: int,
    tried: Iterable[str] = (),
    sticky: str | None = None,
) -> list[Wave]: ...
