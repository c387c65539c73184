"""The archiver against a real Redis: files, trimming, reports across both, crash repair."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from known_calls import END_MS, EVENTS, SALES_TOTAL, START_MS, day_of

from dispatcher.reports.archive import STATE_FILE, ArchiveError, Archiver
from dispatcher.reports.events import FOLLOW_MS, archive_days, read_archive_file, read_events
from dispatcher.reports.figures import Period, compute
from dispatcher.state.connect import sync_client
from dispatcher.state.keys import TenantKeys

pytestmark = pytest.mark.redis

TENANT = "acme"
KEY = TenantKeys(TENANT).events
PERIOD = Period(START_MS, END_MS, "hour")
NEXT_DAY_ID = f"{START_MS + 86_400_000}-0"
# The archive files of the known calls' day and of the next day's event.
DAY_FILE = f"{day_of(START_MS)}.jsonl.gz"
NEXT_DAY_FILE = f"{day_of(START_MS + 86_400_000)}.jsonl.gz"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with sync_client(redis_url, decode_responses=True) as plain:
        yield plain


def load_known(client: redis.Redis) -> list[str]:
    """The known calls with their own ids, then one event the next day; all ids."""
    for event in EVENTS:
        fields = {k: v for k, v in event.items() if k != "id"}
        client.xadd(KEY, fields, id=event["id"])  # type: ignore[arg-type]
    client.xadd(KEY, {"type": "config_changed", "ts": NEXT_DAY_ID[:-2], "version": "2"},
                id=NEXT_DAY_ID)  # fmt: skip
    return [e["id"] for e in EVENTS] + [NEXT_DAY_ID]


def add_recent(client: redis.Redis, n: int) -> list[str]:
    ids = []
    for i in range(n):
        seconds, micros = client.time()
        ts = str(seconds * 1000 + micros // 1000)
        ids.append(client.xadd(KEY, {"type": "state_changed", "ts": ts, "agent": f"r{i}"}))
    return ids


def known_report(client: redis.Redis | None, archive: Path | None) -> dict:
    events = read_events(client, TENANT, START_MS, END_MS + FOLLOW_MS, archive)
    return compute(events, PERIOD, tenant=TENANT).as_dict()


def archived_ids(directory: Path) -> list[str]:
    return [e["id"] for _, path in archive_days(directory, TENANT) for e in read_archive_file(path)]


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (directory / TENANT).iterdir()}


def test_archive_trim_and_the_same_report_afterwards(client: redis.Redis, tmp_path: Path) -> None:
    old = load_known(client)
    recent = add_recent(client, 2)
    before = known_report(client, None)
    assert before == compute(EVENTS, PERIOD, tenant=TENANT).as_dict()
    assert before["groups"][0]["total"] == SALES_TOTAL

    result = Archiver(client, TENANT, tmp_path, keep_hours=48).run()

    assert result.archived == len(old) + 2 and result.last_id == recent[-1]
    assert result.trimmed == len(old)  # the recent ones stay for 48 h
    assert result.lost == 0
    assert [e[0] for e in client.xrange(KEY)] == recent
    names = [p.name for _, p in archive_days(tmp_path, TENANT)]
    assert names[:2] == [DAY_FILE, NEXT_DAY_FILE] and len(names) == 3
    assert set(result.files) == set(names)
    assert archived_ids(tmp_path) == old + recent
    # the figures now come from the files, and are the same
    assert known_report(client, tmp_path) == before
    assert known_report(client, None)["groups"] == []
    # events both archived and still in Redis come once
    seconds, _ = client.time()
    now = seconds * 1000
    both = list(read_events(client, TENANT, now - 3_600_000, now + 3_600_000, tmp_path))
    assert [e["id"] for e in both] == recent


def test_rerun_is_idempotent_and_appends_what_is_new(client: redis.Redis, tmp_path: Path) -> None:
    load_known(client)
    add_recent(client, 1)
    Archiver(client, TENANT, tmp_path).run()
    snapshot = files(tmp_path)

    again = Archiver(client, TENANT, tmp_path).run()

    assert (again.archived, again.trimmed, again.files) == (0, 0, ())
    assert files(tmp_path) == snapshot
    newer = add_recent(client, 3)
    third = Archiver(client, TENANT, tmp_path).run()
    assert third.archived == 3 and third.last_id == newer[-1]
    assert archived_ids(tmp_path)[-4:][1:] == newer
    today = tmp_path / TENANT / third.files[0]
    assert today.read_bytes().count(b"\x1f\x8b\x08") == 2  # one gzip member per run


def test_keep_hours_zero_trims_everything_archived(client: redis.Redis, tmp_path: Path) -> None:
    load_known(client)
    add_recent(client, 2)
    result = Archiver(client, TENANT, tmp_path, keep_hours=0).run()
    assert result.trimmed == len(EVENTS) + 3 and client.xlen(KEY) == 0
    assert known_report(client, tmp_path)["groups"][0]["total"] == SALES_TOTAL
    assert Archiver(client, TENANT, tmp_path, keep_hours=0).run().archived == 0


def test_crash_before_recording_is_repaired(
    client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = load_known(client)
    batch = 10
    batches = -(-len(ids) // batch)
    saves = 0
    save = Archiver._save_state

    def dies_on_the_last_batch(self: Archiver, state: object) -> None:
        nonlocal saves
        saves += 1
        if saves == batches:
            raise OSError("power cut")
        save(self, state)  # type: ignore[arg-type]

    monkeypatch.setattr(Archiver, "_save_state", dies_on_the_last_batch)
    with pytest.raises(OSError, match="power cut"):
        Archiver(client, TENANT, tmp_path, batch=batch).run()
    monkeypatch.undo()
    assert client.xlen(KEY) == len(ids)  # nothing trimmed
    assert (tmp_path / TENANT / NEXT_DAY_FILE).exists()  # written, not recorded
    day = tmp_path / TENANT / DAY_FILE
    with day.open("ab") as f:
        f.write(gzip.compress(b'{"id": "1-0"}\n')[:20])  # and a member cut short
    assert archived_ids(tmp_path) == ids  # readable up to the damage meanwhile

    result = Archiver(client, TENANT, tmp_path, batch=7).run()

    assert archived_ids(tmp_path) == ids  # every event once, in order
    assert result.trimmed == len(ids)
    assert known_report(client, tmp_path)["groups"][0]["total"] == SALES_TOTAL


def test_reader_stops_at_a_damaged_tail(tmp_path: Path) -> None:
    path = tmp_path / DAY_FILE
    path.write_bytes(
        gzip.compress(b'{"id": "1-0", "ts": "1"}\n')
        + gzip.compress(b'{"id": "2-0", "ts": "2"}\n')
        + gzip.compress(b'{"id": "3-0", "ts": "3"}\n')[:15]
    )
    assert [e["id"] for e in read_archive_file(path)] == ["1-0", "2-0"]


def test_events_dropped_by_maxlen_are_counted(client: redis.Redis, tmp_path: Path) -> None:
    def add(first: int, n: int) -> None:
        for i in range(first, first + n):
            client.xadd(KEY, {"type": "expired", "ts": str(i)}, id=f"{i}-0")

    add(1000, 10)
    client.xtrim(KEY, maxlen=4, approximate=False)  # 6 gone before the first archive
    first = Archiver(client, TENANT, tmp_path, keep_hours=0).run()
    assert (first.archived, first.lost) == (4, 6)
    add(2000, 5)
    assert Archiver(client, TENANT, tmp_path, keep_hours=0).run().lost == 0
    add(3000, 10)
    client.xtrim(KEY, maxlen=3, approximate=False)
    third = Archiver(client, TENANT, tmp_path, keep_hours=0).run()
    assert (third.archived, third.lost) == (3, 7)
    add(4000, 5)
    client.xtrim(KEY, maxlen=0, approximate=False)  # all of them, none archived
    assert Archiver(client, TENANT, tmp_path).run().lost == 5
    assert Archiver(client, TENANT, tmp_path).run().lost == 0  # told once
    # within the retention window nothing newer than the archive can have been dropped
    add(5000, 3)
    Archiver(client, TENANT, tmp_path, keep_hours=48).run()
    add(6000, 3)
    assert Archiver(client, TENANT, tmp_path, keep_hours=48).run().lost == 0


def test_files_without_state_are_refused(client: redis.Redis, tmp_path: Path) -> None:
    load_known(client)
    Archiver(client, TENANT, tmp_path).run()
    (tmp_path / TENANT / STATE_FILE).unlink()
    with pytest.raises(ArchiveError, match=r"no state\.json"):
        Archiver(client, TENANT, tmp_path).run()


def test_one_archiver_at_a_time(client: redis.Redis, tmp_path: Path) -> None:
    import fcntl

    folder = tmp_path / TENANT
    folder.mkdir()
    with (folder / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ArchiveError, match="another archiver is running"):
            Archiver(client, TENANT, tmp_path).run()
    assert Archiver(client, TENANT, tmp_path).run().archived == 0


def test_nothing_to_archive(client: redis.Redis, tmp_path: Path) -> None:
    result = Archiver(client, TENANT, tmp_path).run()
    assert (result.archived, result.last_id, result.trimmed, result.lost) == (0, None, 0, 0)


def test_bad_arguments(client: redis.Redis, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_hours"):
        Archiver(client, TENANT, tmp_path, keep_hours=-1)
    with pytest.raises(ValueError, match="batch"):
        Archiver(client, TENANT, tmp_path, batch=0)
    with pytest.raises(ValueError, match="tenant"):
        Archiver(client, "bad tenant", tmp_path)
