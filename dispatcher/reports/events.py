"""A tenant's events over a period: its archive files first, then the live stream.

Archive layout (written by `dispatcher.reports.archive`): `<dir>/<tenant>/YYYY-MM-DD.jsonl.gz`,
one file per UTC day of the entries' stream ids, one JSON object per line (the entry's fields,
all strings, plus its stream `id`), in stream order; each archiver batch appends one gzip
member, which gzip readers see as one stream.

Events come out in stream order, each once: the archive and the stream overlap (the archiver
keeps a retention window in Redis), so an id at or below the last one given is skipped.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import orjson

from dispatcher.state.connect import SyncClient
from dispatcher.state.keys import TenantKeys, validate_id

Event = dict[str, str]
StreamId = tuple[int, int]

ARCHIVE_SUFFIX = ".jsonl.gz"
# A call's events are read this long after the period ends, so a call that arrives just
# before the end is still followed to its answer and hangup (a call set lives as long).
FOLLOW_MS = 86_400_000
# Stream ids are Redis' clock at XADD, like `ts`, but never go backwards: files and ranges
# are picked by id with this margin, events by `ts`.
ID_MARGIN_MS = 60_000
STREAM_BATCH = 10_000


def parse_id(entry_id: str) -> StreamId:
    """'<ms>-<seq>' as a comparable pair; ValueError for anything else."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(sid: StreamId) -> str:
    """Inverse of `parse_id`."""
    return f"{sid[0]}-{sid[1]}"


def utc_day(ms: int) -> date:
    """The UTC day of an epoch ms (an archive file's day)."""
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def tenant_dir(directory: Path, tenant: str) -> Path:
    """The tenant's folder of an archive directory (ValueError for an invalid tenant id)."""
    return Path(directory) / validate_id(tenant, "tenant")


def day_file(directory: Path, tenant: str, day: date) -> Path:
    """The archive file of one UTC day."""
    return tenant_dir(directory, tenant) / f"{day.isoformat()}{ARCHIVE_SUFFIX}"


def archive_days(directory: Path, tenant: str) -> list[tuple[date, Path]]:
    """(day, file) of every archive file of the tenant, oldest first."""
    found = []
    folder = tenant_dir(directory, tenant)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.endswith(ARCHIVE_SUFFIX):
                try:
                    found.append((date.fromisoformat(path.name[: -len(ARCHIVE_SUFFIX)]), path))
                except ValueError:
                    continue  # not ours
    return sorted(found)


def read_archive_file(path: Path) -> Iterator[Event]:
    """The events of one archive file, in order.

    Stops quietly at a damaged tail: the archiver died while appending, and the events of
    that batch are still in the stream (it trims only what it has recorded as archived).
    """
    with gzip.open(path, "rb") as f:
        try:
            for line in f:
                if not line.endswith(b"\n"):
                    return
                yield cast("Event", orjson.loads(line))
        except (EOFError, gzip.BadGzipFile, zlib.error, orjson.JSONDecodeError):
            return


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_stream(
    client: SyncClient, tenant: str, start: str, end: str = "+", batch: int = STREAM_BATCH
) -> Iterator[Event]:
    """Entries of the tenant's stream from `start` to `end` (XRANGE ids; '(' = exclusive).

    1 round trip per `batch` entries.
    """
    key = TenantKeys(tenant).events
    while True:
        entries = cast("list[tuple[Any, dict[Any, Any]]]", client.xrange(key, start, end, batch))
        for entry_id, fields in entries:
            event = {_text(k): _text(v) for k, v in fields.items()}
            event["id"] = _text(entry_id)
            yield event
        if len(entries) < batch:
            return
        start = "(" + event["id"]


def read_events(
    client: SyncClient | None,
    tenant: str,
    start_ms: int,
    end_ms: int,
    archive_dir: Path | None = None,
) -> Iterator[Event]:
    """Events with start_ms <= ts < end_ms, in stream order, each once.

    From the archive files of the days that can hold them (when `archive_dir`), then from
    the stream (when `client`) after the last archived one. O(events read) time; memory for
    one batch of the stream (1 round trip per STREAM_BATCH entries).
    """
    low: StreamId = (start_ms - ID_MARGIN_MS, 0)
    high = end_ms + ID_MARGIN_MS
    last: StreamId | None = None

    def fresh(event: Event) -> bool:
        nonlocal last
        sid = parse_id(event["id"])
        if sid < low or sid[0] > high or (last is not None and sid <= last):
            return False
        last = sid
        ts = event.get("ts", "")
        return ts.isdigit() and start_ms <= int(ts) < end_ms

    if archive_dir is not None:
        first, final = utc_day(low[0]), utc_day(high)
        for day, path in archive_days(archive_dir, tenant):
            if first <= day <= final:
                yield from filter(fresh, read_archive_file(path))
    if client is not None:
        start = "(" + format_id(last) if last is not None else str(low[0])
        yield from filter(fresh, read_stream(client, tenant, start, str(high)))
