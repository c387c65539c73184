"""The router's mappings: an agent's final SIP reply to a `Decider.failed` reason, a dialog's
end to the call's outcome."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dispatcher.sip.routing import Router, call_outcome, failure_reason
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


class _Contacts:
    """KSR's registrar and pv as `Router._targets` reads an AOR's contacts."""

    def __init__(self, rows: list[tuple[str, str, int]]) -> None:
        self.rows = rows  # (addr, received, expires)
        self.registrar = self
        self.pv = self

    def reg_fetch_contacts(self, table: str, aor: str, profile: str) -> int:
        return 1

    def reg_free_contacts(self, profile: str) -> int:
        return 1

    def get(self, name: str) -> object:
        if name.endswith("=>count)"):
            return len(self.rows)
        field, index = name.split("=>")[1].split(")")[0], int(name.split("[")[1].rstrip("])"))
        addr, received, expires = self.rows[index]
        return {"addr": addr, "received": received, "expires": expires}[field]


def test_two_rows_of_one_contact_make_one_branch() -> None:
    """usrloc can hold two rows of one phone (dispatcher.state.locations): one branch."""
    agent = SimpleNamespace(targets=SimpleNamespace(aor="r1", uris=["sip:desk@example.org"]))
    router = object.__new__(Router)
    router.ksr = _Contacts(
        [
            ("sip:r1@127.0.0.1:5090", "", 0),
            ("sip:r1@127.0.0.1:5090", "", 0),
            ("sip:r1@127.0.0.1:5092", "", 0),
        ]
    )
    router.decider = SimpleNamespace(
        view=lambda: SimpleNamespace(agents={"r1": agent}), store=SimpleNamespace(tenant="t")
    )
    router.tenants = SimpleNamespace(aor_domain=lambda tenant: tenant)

    assert router._targets("r1") == [
        ("sip:r1@127.0.0.1:5090", ""),
        ("sip:r1@127.0.0.1:5092", ""),
        ("sip:desk@example.org", ""),
    ]
