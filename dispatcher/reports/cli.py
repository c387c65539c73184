"""The report and archive commands of `python -m dispatcher` (hooked in by `register`).

report --tenant T --from DAY --to DAY [--group G] [--agent A] [--bucket day|hour]
       [--sl-seconds 20] [--abandon-grace 5] [--tz ZONE] [--archive-dir DIR]
       [--format json|csv|png] [--out FILE]
                         figures per group (calls, service level, queue, overflows,
                         voicemails), of all groups together, and per agent
                         (dispatcher/reports/figures.py); every format has them all
archive --tenant T --dir DIR [--keep-hours 48]
                         move events older than the retention window into daily files

Both read REDIS_URL. --from/--to are days (YYYY-MM-DD, --to included) or ISO date-times
(--to excluded) in --tz, by default the tenant's time zone (UTC without one).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import redis
from redis.exceptions import RedisClusterException

from dispatcher.redis_address import redacted
from dispatcher.reports import figures, render
from dispatcher.reports.archive import DEFAULT_KEEP_HOURS, ArchiveError, Archiver
from dispatcher.reports.events import FOLLOW_MS, read_events
from dispatcher.settings import Settings, SettingsError
from dispatcher.state.connect import SyncClient, sync_client
from dispatcher.state.keys import TenantKeys, validate_id

# Reports and archiving read many entries per call: a slow reply is not an outage here.
REDIS_TIMEOUT_S = 30


class CommandError(Exception):
    """A problem the user can fix; printed as `error: ...`, exit code 1."""


def register(sub: Any) -> None:
    """Add the `report` and `archive` commands to the CLI's subparsers."""
    p = sub.add_parser("report", help="call and queue figures per group and agent over a period")
    p.add_argument("--tenant", required=True, type=_id("tenant"))
    p.add_argument("--from", dest="start", required=True, metavar="DAY", help="first day")
    p.add_argument("--to", dest="end", required=True, metavar="DAY", help="last day")
    p.add_argument("--group", type=_id("group id"), help="only this group")
    p.add_argument("--agent", type=_id("agent id"), help="only this agent's figures")
    p.add_argument("--bucket", choices=figures.BUCKETS, default="day")
    p.add_argument(
        "--sl-seconds",
        type=_non_negative,
        default=figures.DEFAULT_SL_SECONDS,
        help="service level threshold (answered within)",
    )
    p.add_argument(
        "--abandon-grace",
        type=_non_negative,
        default=figures.DEFAULT_ABANDON_GRACE_SECONDS,
        help="abandons within this many seconds do not count against the service level",
    )
    p.add_argument("--tz", help="time zone of days and buckets (default: the tenant's)")
    p.add_argument(
        "--archive-dir",
        type=Path,
        default=os.environ.get("DISPATCHER_ARCHIVE_DIR") or None,
        help="archived events (default $DISPATCHER_ARCHIVE_DIR); without it the stream only",
    )
    p.add_argument("--format", choices=("json", "csv", "png"), default="json")
    p.add_argument("--out", help="output file (default stdout; required for png)")
    p.set_defaults(func=_guarded(_report))

    p = sub.add_parser("archive", help="archive old events to files, trim the stream")
    p.add_argument("--tenant", required=True, type=_id("tenant"))
    p.add_argument("--dir", required=True, type=Path, help="archive directory")
    p.add_argument(
        "--keep-hours",
        type=_non_negative,
        default=DEFAULT_KEEP_HOURS,
        help=f"hours of events kept in Redis (default {DEFAULT_KEEP_HOURS})",
    )
    p.set_defaults(func=_guarded(_archive))


def _report(args: argparse.Namespace) -> int:
    if args.format == "png" and not args.out:
        raise CommandError("--format png needs --out FILE")
    client = _client()
    tz = args.tz or _tenant_timezone(client, args.tenant)
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise CommandError(f"unknown time zone {tz!r}") from None
    start_ms = _instant(args.start, zone, "--from", end=False)
    end_ms = _instant(args.end, zone, "--to", end=True)
    if end_ms <= start_ms:
        raise CommandError(f"--to {args.end} is not after --from {args.start}")
    if args.archive_dir is not None and not args.archive_dir.is_dir():
        raise CommandError(f"archive directory {args.archive_dir} does not exist")
    period = figures.Period(start_ms, end_ms, args.bucket, tz)
    events = read_events(client, args.tenant, start_ms, end_ms + FOLLOW_MS, args.archive_dir)
    report = figures.compute(
        events,
        period,
        tenant=args.tenant,
        sl_seconds=args.sl_seconds,
        abandon_grace_seconds=args.abandon_grace,
        group=args.group,
        agent=args.agent,
    )
    if args.format == "png":
        render.write_png(report, Path(args.out))
        return 0
    data = render.to_json(report) if args.format == "json" else render.to_csv(report).encode()
    if args.out and args.out != "-":
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _archive(args: argparse.Namespace) -> int:
    result = Archiver(_client(), args.tenant, args.dir, keep_hours=args.keep_hours).run()
    folder = args.dir / args.tenant
    if result.lost:
        print(
            f"warning: the stream dropped {result.lost} events before they could be "
            "archived: archive more often, or raise the tenant's events_maxlen",
            file=sys.stderr,
        )
    files = f" ({', '.join(result.files)})" if result.files else ""
    print(
        f"tenant {args.tenant!r}: {result.archived} events archived into {folder}{files}, "
        f"last id {result.last_id or 'none'}; {result.trimmed} trimmed from the stream "
        f"(keeping {args.keep_hours:g} h)"
    )
    return 0


# -- helpers ---------------------------------------------------------------------------


def _guarded(command: Any) -> Any:
    """The command with its expected failures turned into `error: ...` and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(command(args))
        except (CommandError, SettingsError, ArchiveError) as exc:
            message = str(exc)
        except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as exc:
            message = f"Redis at {_where()} unavailable: {exc}"
        except redis.RedisError as exc:
            message = f"Redis at {_where()}: {exc}"
        except OSError as exc:
            message = str(exc)
        except ValueError as exc:  # figures that cannot be drawn, a period figures refuses
            message = str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 1

    return run


def _client() -> SyncClient:
    url = Settings.from_env().redis_url
    if url is None:
        raise SettingsError("REDIS_URL is not set: which Redis holds the events?")
    return sync_client(url, REDIS_TIMEOUT_S, REDIS_TIMEOUT_S)


def _where() -> str:
    """The Redis address of the settings (never its password)."""
    try:
        url = Settings.from_env().redis_url
    except SettingsError:
        url = None
    return redacted(url) if url else "REDIS_URL"


def _tenant_timezone(client: SyncClient, tenant: str) -> str:
    doc = client.hget(TenantKeys(tenant).config, "doc")
    try:
        zone = orjson.loads(doc).get("timezone") if doc else None
    except (orjson.JSONDecodeError, AttributeError):
        zone = None
    return zone if isinstance(zone, str) and zone else "UTC"


def _instant(text: str, zone: ZoneInfo, option: str, *, end: bool) -> int:
    """A day's start (its end for --to) or a date-time, in `zone`, as epoch ms."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            moment = datetime(day.year, day.month, day.day, tzinfo=zone)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
    except ValueError:
        raise CommandError(f"{option} {text!r}: expected YYYY-MM-DD or an ISO date-time") from None
    return int(moment.timestamp() * 1000)


def _id(field: str) -> Any:
    def check(value: str) -> str:
        try:
            return validate_id(value, field)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value
