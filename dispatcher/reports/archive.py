"""Archiving a tenant's event stream to daily files, then trimming the stream.

One `Archiver.run`:

1. recovery: a run that died after appending but before recording leaves bytes past the
   recorded sizes (and maybe files of later days): they are cut off, because their events
   are still in the stream and get archived again;
2. archive: the entries after the last recorded id, up to the stream's last entry at the
   start of the run, in batches; each batch appends one gzip member to the file of each UTC
   day it touches (`reports.events` describes the layout) and fsyncs it;
3. record: after each batch, `state.json` beside the files (written to a temporary file,
   fsynced, renamed) takes the batch's last id and the sizes of the files it wrote;
4. trim: XTRIM MINID drops the entries that are both archived and older than the
   retention window (`keep_hours`, default 48), so recent events stay in Redis for
   monitoring and reports read them from there.

So a crash at any point loses nothing and duplicates nothing, and running it again archives
only what is new. The state lives beside the files (not in Redis) because it describes them:
the files and their state move, and are backed up, together. One archiver per tenant and
directory at a time (a lock file refuses a second), run often enough that the stream's MAXLEN
(`events_maxlen`) never drops events it has not archived. When it has, the run counts them
(`ArchiveResult.lost`): a complete run records the stream's entries-added counter with its
last id; trimming only ever removes the oldest entries, so when the next run finds the
stream's first entry past that id, the entries added since, less those still there, were
dropped unarchived.
"""

from __future__ import annotations

import fcntl
import gzip
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import redis

from dispatcher.state.connect import SyncClient
from dispatcher.state.keys import TenantKeys

from .events import (
    ARCHIVE_SUFFIX,
    Event,
    archive_days,
    day_file,
    format_id,
    parse_id,
    read_stream,
    tenant_dir,
    utc_day,
)

DEFAULT_KEEP_HOURS = 48
ARCHIVE_BATCH = 10_000
STATE_FILE = "state.json"
LOCK_FILE = ".lock"


class ArchiveError(RuntimeError):
    """The archive directory is not in a state the archiver can continue from."""


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """What one run did: events archived, the last archived id, entries trimmed, files
    written (names), and `lost`: events the stream dropped (MAXLEN) before they could be
    archived (0 too when that cannot be told: after a run that died half-way)."""

    archived: int
    last_id: str | None
    trimmed: int
    files: tuple[str, ...]
    lost: int


@dataclass(frozen=True, slots=True)
class _State:
    last_id: str | None
    files: dict[str, int]  # name -> size, as recorded after the last batch
    added: int | None  # the stream's entries-added up to last_id (None: not known)


class Archiver:
    """Archives the events of `tenant` from `client` into `directory`/<tenant>/."""

    def __init__(
        self,
        client: SyncClient,
        tenant: str,
        directory: Path,
        keep_hours: float = DEFAULT_KEEP_HOURS,
        batch: int = ARCHIVE_BATCH,
    ) -> None:
        if keep_hours < 0:
            raise ValueError(f"keep_hours must be >= 0, got {keep_hours}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.client = client
        self.tenant = tenant
        self.directory = Path(directory)
        self.folder = tenant_dir(self.directory, tenant)
        self.keep_ms = int(keep_hours * 3_600_000)
        self.batch = batch
        self.key = TenantKeys(tenant).events

    def run(self) -> ArchiveResult:
        """Archive, record, trim (see the module). Cost: 3 round trips + 1 per batch
        (XRANGE) + the XTRIM; O(new events) disk writes."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / LOCK_FILE).open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on close
            except BlockingIOError:
                raise ArchiveError(f"another archiver is running on {self.folder}") from None
            return self._run()

    def _run(self) -> ArchiveResult:
        state = self._recover()
        lost, newest, added = self._inspect(state)
        archived = 0
        written: set[str] = set()
        if newest is not None:
            start = "(" + state.last_id if state.last_id else "-"
            pending: list[Event] = []
            for event in read_stream(self.client, self.tenant, start, newest, self.batch):
                pending.append(event)
                if len(pending) == self.batch:
                    state = self._append(pending, written, None)
                    archived += len(pending)
                    pending = []
            if pending:
                state = self._append(pending, written, added)
                archived += len(pending)
        if state.added != added:
            # everything up to `newest` is archived now: the counter goes with the last id
            # (after a full last batch, or when nothing new was left but some were lost)
            state = _State(state.last_id, state.files, added)
            self._save_state(state)
        return ArchiveResult(
            archived=archived,
            last_id=state.last_id,
            trimmed=self._trim(state.last_id),
            files=tuple(sorted(written)),
            lost=lost,
        )

    # -- steps ----------------------------------------------------------------------------

    def _recover(self) -> _State:
        state = self._load_state()
        days = archive_days(self.directory, self.tenant)
        if state is None:
            if days:
                raise ArchiveError(
                    f"{self.folder} holds archive files but no {STATE_FILE}: restore it, "
                    "or move the files away, before archiving into it again"
                )
            return _State(None, {}, 0)
        newest = max(state.files, default="")
        for _, path in days:
            size = state.files.get(path.name)
            if size is not None and path.stat().st_size > size:
                with path.open("r+b") as f:
                    f.truncate(size)
                    os.fsync(f.fileno())
            elif size is None and path.name > newest:
                path.unlink()  # only a run that never recorded it wrote this day
        return state

    def _inspect(self, state: _State) -> tuple[int, str | None, int]:
        """(events lost, newest entry id or None, entries-added) of the stream (1 XINFO)."""
        try:
            info = cast("dict[Any, Any]", self.client.xinfo_stream(self.key))
        except redis.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0, None, state.added or 0
            raise
        info = {_text(k): v for k, v in info.items()}
        added, length = int(info["entries-added"]), int(info["length"])
        before = state.added
        if before is not None and added < before:
            before = 0  # a new stream (Redis lost the old one): count from its start
        first = info.get("first-entry")
        lost = 0
        if before is not None and (
            first is None
            or state.last_id is None
            or parse_id(_text(first[0])) > parse_id(state.last_id)
        ):
            lost = max(0, added - before - length)
        newest = None if length == 0 else _text(info["last-generated-id"])
        return lost, newest, added

    def _append(self, events: Sequence[Event], written: set[str], added: int | None) -> _State:
        by_day: dict[Path, list[bytes]] = defaultdict(list)
        for event in events:
            path = day_file(self.directory, self.tenant, utc_day(parse_id(event["id"])[0]))
            by_day[path].append(orjson.dumps(event) + b"\n")
        sizes = {}
        for path, lines in by_day.items():
            with path.open("ab") as f:
                # one member per batch: gzip readers chain members, and an append never
                # rewrites what earlier runs recorded
                f.write(gzip.compress(b"".join(lines), mtime=0))
                f.flush()
                os.fsync(f.fileno())
                sizes[path.name] = f.tell()
            written.add(path.name)
        self._fsync_dir()
        new = _State(events[-1]["id"], sizes, added)
        self._save_state(new)
        return new

    def _trim(self, last_id: str | None) -> int:
        """XTRIM MINID: below both the next id after the archive and now - keep_ms."""
        if last_id is None:
            return 0
        seconds, micros = cast("tuple[int, int]", self.client.time())
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        after_archive = parse_id(last_id)
        threshold = min((after_archive[0], after_archive[1] + 1), (now_ms - self.keep_ms, 0))
        trimmed = self.client.xtrim(self.key, minid=format_id(threshold), approximate=False)
        return int(cast("int", trimmed))

    # -- state file ---------------------------------------------------------------------

    def _load_state(self) -> _State | None:
        path = self.folder / STATE_FILE
        try:
            raw = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(f"{path} is not valid JSON: {exc}") from exc
        files = raw.get("files", {})
        if not all(n.endswith(ARCHIVE_SUFFIX) and isinstance(s, int) for n, s in files.items()):
            raise ArchiveError(f"{path}: 'files' must map archive file names to sizes")
        added = raw.get("added")
        return _State(raw.get("last_id"), dict(files), added if isinstance(added, int) else None)

    def _save_state(self, state: _State) -> None:
        path = self.folder / STATE_FILE
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            record = {"last_id": state.last_id, "files": state.files, "added": state.added}
            f.write(orjson.dumps(record))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = ["DEFAULT_KEEP_HOURS", "ArchiveError", "ArchiveResult", "Archiver"]
