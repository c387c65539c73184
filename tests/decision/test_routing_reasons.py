"""The router's mapping of an agent's final SIP reply to a `Decider.failed` reason."""

from __future__ import annotations

import pytest

from dispatcher.routing import failure_reason
from dispatcher.state.store import FAILURE_REASONS


@pytest.mark.parametrize(
    ("code", "cancelled", "reason"),
    [
        (486, False, "busy"),
        (600, False, "busy"),
        (603, False, "declined"),
        (408, False, "noanswer"),
        (480, False, "noanswer"),
        (487, False, "noanswer"),  # tm cancelled the branch when the wave timed out
        (None, False, "noanswer"),  # no final reply before the ring timer
        (500, False, "error"),
        (503, False, "error"),
        (404, False, "error"),
        (302, False, "error"),
        (487, True, "cancelled"),
        (None, True, "cancelled"),
        (486, True, "cancelled"),
    ],
)
def test_failure_reason(code: int | None, cancelled: bool, reason: str) -> None:
    assert failure_reason(code, cancelled) == reason
    assert reason in FAILURE_REASONS
