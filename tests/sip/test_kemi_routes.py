"""kamailio/kemi.py's thin routes, run without Kamailio: a stand-in KSR module and router.

Only what the routes decide themselves is checked here; what Kamailio does with them is
tests/sip/test_kamailio.py's and the group routing tests' business.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

KEMI = Path(__file__).resolve().parents[2] / "kamailio" / "kemi.py"


class _Router:
    def __init__(self) -> None:
        self.events: list[str] = []

    def dialog_event(self, event: str) -> None:
        self.events.append(event)


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A KamailioRoutes of kemi.py whose router records the dialog events it is given."""
    monkeypatch.setitem(sys.modules, "KSR", types.ModuleType("KSR"))
    spec = importlib.util.spec_from_file_location("kemi_under_test", KEMI)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    routes = object.__new__(module.KamailioRoutes)
    routes.router = _Router()
    routes.open_worker_state = lambda: routes.router
    return routes


@pytest.mark.parametrize("name", ["dialog:start", "dialog:end", "dialog:failed"])
def test_a_named_dialog_event_reaches_the_router(routes: Any, name: str) -> None:
    assert routes.ksr_dialog_event(None, name) == 1
    assert routes.router.events == [name]


@pytest.mark.parametrize("name", ["unknown", ""])
def test_the_other_state_changes_return_at_once(routes: Any, name: str) -> None:
    # dialog 5.6 calls back on every state change (180, ACK) and names these "unknown";
    # later releases pass no name
    assert routes.ksr_dialog_event(None, name) == 1
    assert routes.router.events == []
