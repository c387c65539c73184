"""usrloc's location table mended before a node loads it (dispatcher.state.locations): the
pure rules, then deletes on a real redis-server of the test's own (db_redis' keys are no
Cluster's); a real node loading a mended table in tests/sip/test_shared_registrations.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.client import Pipeline

from dispatcher.run.procs import RedisProcess
from dispatcher.state import locations
from dispatcher.state.connect import sync_client
from dispatcher.state.locations import (
    BATCH,
    ENTRY,
    PAD_RUID,
    TIMER,
    TIMER_INDEX,
    USRDOM,
    USRDOM_INDEX,
    mend,
    pad_change,
    replaced_rows,
    write_row,
)


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


@pytest.fixture
def table(own_redis: RedisProcess) -> Iterator[redis.Redis]:
    """A client of the test's own Redis, holding r1's phone registered twice (an old row that
    a newer one replaces) and r2's once, at two expiry times."""
    with sync_client(own_redis.url) as client:
        for ruid, user, modified, expires in (
            ("r1-old", "r1", 10, 2000000000),
            ("r1-new", "r1", 20, 2000000001),
            ("r2", "r2", 10, 2000000001),
        ):
            write_row(
                client,
                ruid,
                username=user,
                domain="d",
                contact=f"sip:{user}@127.0.0.1:5070",
                expires=expires,
                last_modified=modified,
            )
        yield client


def _members(client: redis.Redis, key: str) -> set[str]:
    return {member.decode() for member in client.smembers(key)}


def test_mend_deletes_a_replaced_row_with_its_set_entries(table: redis.Redis) -> None:
    done = mend(table)

    assert (done.replaced, done.rows, done.pad) == (1, 2, 0)
    assert not table.exists(ENTRY + "r1-old")
    assert _members(table, USRDOM + "r1:d") == {ENTRY + "r1-new"}
    # the old row's expiry set had it alone: the set and its index entry went with it
    assert not table.exists(TIMER + "2000000000")
    assert _members(table, TIMER_INDEX) == {TIMER + "2000000001"}
    assert _members(table, USRDOM_INDEX) == {USRDOM + "r1:d", USRDOM + "r2:d"}


def test_a_row_another_node_adds_meanwhile_keeps_its_set_indexed(
    table: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # r1 registers a second phone at another node after mend looked at r1's set, before
    # its delete runs: the delete starts again and leaves the set and its index entry
    real_multi = Pipeline.multi
    raced: list[bool] = []

    def multi(pipe: Pipeline) -> None:
        if not raced:
            raced.append(True)
            write_row(
                table,
                "r1-desk",
                username="r1",
                domain="d",
                contact="sip:r1@127.0.0.1:5071",
                expires=2000000000,
                last_modified=30,
            )
        real_multi(pipe)

    monkeypatch.setattr(Pipeline, "multi", multi)
    table.delete(ENTRY + "r1-new")
    table.srem(USRDOM + "r1:d", ENTRY + "r1-new")  # r1-old is its AOR's only row now

    locations._delete_row(
        table, "r1-old", {"username": "r1", "domain": "d", "expires": "2000000000"}
    )

    assert raced
    assert not table.exists(ENTRY + "r1-old")
    assert _members(table, USRDOM + "r1:d") == {ENTRY + "r1-desk"}
    assert USRDOM + "r1:d" in _members(table, USRDOM_INDEX)
    assert _members(table, TIMER + "2000000000") == {ENTRY + "r1-desk"}
    assert TIMER + "2000000000" in _members(table, TIMER_INDEX)
