"""Fixtures for the selection core: each test runs against the twin (`py`) and the compiled
core (`c`), so CI cannot quietly test only one of them."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

import dispatcher
from dispatcher import _core_py


@pytest.fixture(scope="session")
def built_extensions() -> list[Path]:
    """The compiled cores built next to the sources (`setup.py build_ext --inplace`)."""
    return sorted(Path(dispatcher.__file__).parent.glob("_core*.so"))


@pytest.fixture(scope="session")
def c_core(built_extensions: list[Path]) -> ModuleType:
    """The compiled core; skipped where it was never built, a failure where it was built
    but does not import (stale ABI, missing symbol)."""
    try:
        return importlib.import_module("dispatcher._core")
    except ImportError as exc:
        if built_extensions:
            pytest.fail(f"{[p.name for p in built_extensions]} built but not importable: {exc}")
        pytest.skip("compiled core not built (setup.py build_ext --inplace)")


@pytest.fixture(scope="session")
def py_core() -> ModuleType:
    return _core_py


# Session scope: the modules are stateless, and Hypothesis rejects function-scoped fixtures.
@pytest.fixture(scope="session", params=["py", "c"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The selection core under test, once as the twin and once compiled."""
    module: ModuleType = request.getfixturevalue(f"{request.param}_core")
    return module
