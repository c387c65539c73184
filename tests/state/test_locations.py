"""usrloc's location table mended before a node loads it (dispatcher.state.locations): the
pure rules here; a real node loading a mended table in tests/sip/test_shared_registrations.py."""

from __future__ import annotations

import pytest

from dispatcher.state.locations import BATCH, PAD_RUID, pad_change, replaced_rows


@pytest.mark.parametrize(
    ("rows", "has_pad", "change"),
    [
        (0, False, 0),
        (999, False, 0),
        (BATCH, False, 0),  # db_redis reads one batch of 1000 whole
        (BATCH + 1, True, 0),
        (2 * BATCH, False, 1),
        (2 * BATCH, True, -1),
        (2 * BATCH + 1, True, 0),  # a pad no longer needed stays until a node loads it
        (7 * BATCH, False, 1),
    ],
)
def test_the_pad_keeps_the_count_off_the_multiples_db_redis_loads_short(
    rows: int, has_pad: bool, change: int
) -> None:
    assert pad_change(rows, has_pad) == change
    after = rows + change
    assert after <= BATCH or after % BATCH


def _row(user: str, contact: str, modified: int) -> dict[str, str]:
    return {"username": user, "domain": "d", "contact": contact, "last_modified": str(modified)}


def test_only_rows_a_newer_row_of_the_same_contact_replaces_go() -> None:
    rows = {
        "a-old": _row("a", "sip:a@h:1", 10),
        "a-new": _row("a", "sip:a@h:1", 20),
        "a-other-phone": _row("a", "sip:a@h:2", 5),
        "b-same-contact": _row("b", "sip:a@h:1", 1),  # another AOR: its own binding
        "c-tie-1": _row("c", "sip:c@h:1", 7),
        "c-tie-2": _row("c", "sip:c@h:1", 7),
        PAD_RUID: _row("a", "sip:a@h:1", 0),
    }

    assert replaced_rows(rows) == ["a-old", "c-tie-1"]
