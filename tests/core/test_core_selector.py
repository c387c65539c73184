"""Which core `dispatcher.core` loaded, and that both cores export the same API."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from dispatcher import core as selected


def test_compiled_loaded(built_extensions: list[Path]) -> None:
    """Fails where the extension was built but the selector fell back to the twin."""
    if os.environ.get("DISPATCHER_NO_EXTENSIONS") == "1":
        assert not selected.COMPILED
    elif built_extensions:
        assert selected.COMPILED, (
            f"{[p.name for p in built_extensions]} is built but dispatcher.core loaded the twin"
        )
    else:
        assert not selected.COMPILED


def test_selector_reexports_the_loaded_core() -> None:
    expected = "dispatcher._core" if selected.COMPILED else "dispatcher._core_py"
    assert selected.GroupTable.__module__ == expected
    for name in selected.__all__:
        assert hasattr(selected, name), name


def test_both_cores_export_the_same_names(py_core: ModuleType, c_core: ModuleType) -> None:
    assert sorted(c_core.__all__) == sorted(py_core.__all__)
    assert set(selected.__all__) == {*py_core.__all__, "COMPILED"}
    public_c = {name for name in dir(c_core) if not name.startswith("_")}
    assert public_c == set(c_core.__all__)
    for name in py_core.__all__:
        assert hasattr(py_core, name), name


def test_constants(core: ModuleType) -> None:
    assert (core.RING_ALL, core.RANDOM, core.SEQUENTIAL, core.PRIORITY) == (0, 1, 2, 3)
    assert (core.LEAST_BUSY, core.ROUND_ROBIN, core.WEIGHTED_RANDOM, core.LONGEST_IDLE) == (
        4,
        5,
        6,
        7,
    )
    assert (core.AVAILABLE, core.PAUSED, core.LOGGED_OUT) == (0, 1, 2)
    assert core.LIVE_FIELDS == 5
    assert core.STRATEGIES == {
        "ring_all": 0,
        "random": 1,
        "sequential": 2,
        "priority": 3,
        "least_busy": 4,
        "round_robin": 5,
        "weighted_random": 6,
        "longest_idle": 7,
    }
    for value in (core.RING_ALL, core.AVAILABLE, core.LIVE_FIELDS, *core.STRATEGIES.values()):
        assert type(value) is int
