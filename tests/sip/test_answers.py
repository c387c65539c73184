"""Unit tests of `Answers`: which dialog's end releases what, when workers interleave.

Kamailio's htable is shared by the node's workers, each operation atomic on its own; two
phones hanging up at the same instant are two workers reading and removing records of one
call in any interleaving. These tests replay such interleavings on a dict standing in for
the table; tests/sip/test_simultaneous_answers.py runs the real thing."""

from __future__ import annotations

from typing import Any

from dispatcher.sip.answers import ANSWERS_TABLE, Answers

CALL = "c1"


class Htable:
    """sht_get / sht_inc / sht_sets / sht_rm on one shared dict (missing items read None)."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}

    def sht_get(self, table: str, key: str) -> Any:
        assert table == ANSWERS_TABLE
        return self.items.get(key)

    def sht_inc(self, table: str, key: str) -> int:
        self.items[key] = int(self.items.get(key) or 0) + 1
        return int(self.items[key])

    def sht_sets(self, table: str, key: str, value: str) -> None:
        self.items[key] = value

    def sht_rm(self, table: str, key: str) -> None:
        self.items.pop(key, None)


class Ksr:
    def __init__(self, htable: Htable) -> None:
        self.htable = htable
        self.vars: dict[str, str] = {}
        self.pv = self

    def get(self, name: str) -> str | None:
        return self.vars.get(name)

    def info(self, message: str) -> None:
        pass


class Worker:
    """A router process as Answers sees it: its KSR, and the releases it asks for."""

    def __init__(self, htable: Htable, releases: list[tuple[str, str]]) -> None:
        self.ksr = Ksr(htable)
        self.releases = releases
        self.decider = self
        self.store = self
        self.tenant = "t1"

    def use(self, tenant: str) -> Worker:
        return self

    def release_later(self, call_id: str, agent: str = "", outcome: str = "") -> None:
        self.releases.append((call_id, agent or f"call:{outcome}"))

    def _up(self) -> None:
        pass


def answered(htable: Htable, *tagged_agents: tuple[str, str]) -> list[Worker]:
    """The 2xx of `tagged_agents` (to tag, agent) recorded; one worker per dialog."""
    releases: list[tuple[str, str]] = []
    recorder = Worker(htable, releases)
    for tag, agent in tagged_agents:
        recorder.ksr.vars["$tt"] = tag
        Answers(recorder).record(CALL, agent)  # type: ignore[arg-type]
    return [Worker(htable, releases) for _ in tagged_agents]


def test_two_extra_dialogs_ending_at_once_end_the_call() -> None:
    """Both workers read the records before either removes its own: the one that removes
    last must still see that no dialog is left and end the call."""
    htable = Htable()
    first, second = answered(htable, ("ta", "a1"), ("tb", "a2"))
    one, other = Answers(first), Answers(second)  # type: ignore[arg-type]
    read_by_one = one._records(CALL, 2)
    read_by_other = other._records(CALL, 2)

    assert one._dialog_gone(CALL, read_by_one, 1) is True  # a2's dialog is still up
    assert other._dialog_gone(CALL, read_by_other, 2) is False  # the last: whole call

    assert first.releases == [(CALL, "a1")]  # then the call, by the caller of _dialog_gone
    assert htable.items == {}


def test_a_dialog_ending_leaves_an_agent_with_another_dialog_counted() -> None:
    htable = Htable()
    worker, *_ = answered(htable, ("ta", "a1"), ("tb", "a1"), ("tc", "a2"))
    answers = Answers(worker)  # type: ignore[arg-type]

    assert answers._dialog_gone(CALL, answers._records(CALL, 3), 1) is True

    assert worker.releases == []  # a1 is still on the phone in dialog tb


def test_a_retransmitted_answer_ends_with_its_dialog() -> None:
    htable = Htable()
    worker, *_ = answered(htable, ("ta", "a1"), ("ta", "a1"), ("tb", "a2"))
    answers = Answers(worker)  # type: ignore[arg-type]

    assert answers._dialog_gone(CALL, answers._records(CALL, 3), 1) is True
    assert worker.releases == [(CALL, "a1")]
    assert answers._dialog_gone(CALL, answers._records(CALL, 3), 3) is False
    assert htable.items == {}
