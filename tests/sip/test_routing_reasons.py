"""The router's mappings: an agent's final SIP reply to a `Decider.failed` reason, a dialog's
end to the call's outcome."""

from __future__ import annotations

import pytest

from dispatcher.sip.routing import call_outcome, failure_reason
from dispatcher.state.store import CALL_OUTCOMES, FAILURE_REASONS


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


@pytest.mark.parametrize(
    ("event", "cancelled", "outcome"),
    [
        ("dialog:end", False, "answered"),
        ("dialog:end", True, "answered"),  # a CANCEL that lost the race with a 200 OK
        ("dialog:failed", True, "abandoned"),
        ("dialog:failed", False, "no_answer"),
    ],
)
def test_call_outcome(event: str, cancelled: bool, outcome: str) -> None:
    assert call_outcome(event, cancelled) == outcome
    assert outcome in CALL_OUTCOMES
