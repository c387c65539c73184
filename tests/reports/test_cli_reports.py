"""`dispatcher report` and `dispatcher archive` on the known calls in a real Redis."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
import queued_calls
import redis
from known_calls import END_MS, EVENTS, SALES_TOTAL, START_MS, day_of, utc_iso

from dispatcher.__main__ import main
from dispatcher.state.connect import sync_client
from dispatcher.state.keys import TenantKeys

pytestmark = pytest.mark.redis

KEYS = TenantKeys("acme")
WINDOW = ["--from", utc_iso(START_MS)[:16], "--to", utc_iso(END_MS)[:16]]
DAY = day_of(START_MS)  # the known calls' (UTC) day
BERLIN = ZoneInfo("Europe/Berlin")


def berlin_midnight(day: date) -> str:
    return datetime.combine(day, time(0), tzinfo=BERLIN).isoformat()


def load(client: redis.Redis, events: list[dict[str, str]]) -> None:
    """The events into the tenant's stream, with their own ids."""
    for event in events:
        fields = {k: v for k, v in event.items() if k != "id"}
        client.xadd(KEYS.events, fields, id=event["id"])  # type: ignore[arg-type]


@pytest.fixture
def empty(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("DISPATCHER_ARCHIVE_DIR", raising=False)
    with sync_client(redis_url, decode_responses=True) as plain:
        yield plain


@pytest.fixture
def client(empty: redis.Redis) -> redis.Redis:
    load(empty, EVENTS)
    return empty


def report_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["report", "--tenant", "acme", *args]) == 0, capsys.readouterr().err
    return orjson.loads(capsys.readouterr().out)


def test_json_report_of_a_window(client: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    data = report_json(capsys, *WINDOW, "--bucket", "hour")
    assert data["timezone"] == "UTC"  # no tenant config: UTC
    assert data["from"] == utc_iso(START_MS)
    assert data["groups"][0]["total"] == SALES_TOTAL
    assert len(data["groups"][0]["buckets"]) == 2


def test_queue_figures_in_json_and_csv(
    empty: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load(empty, queued_calls.EVENTS)
    data = report_json(capsys, *WINDOW, "--bucket", "hour")
    assert [g["group"] for g in data["groups"]] == ["backup", "hotline"]
    assert data["groups"][1]["total"] == queued_calls.HOTLINE_TOTAL
    assert data["tenant_total"]["total"] == queued_calls.TENANT_TOTAL
    out = tmp_path / "q.csv"
    assert main(["report", "--tenant", "acme", *WINDOW, "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    tenant = next(r for r in rows if r["scope"] == "tenant" and r["bucket_start"] == "total")
    assert (tenant["queued"], tenant["overflowed_lost"], tenant["ewt_mae_s"]) == ("9", "1", "3.75")


def test_days_are_the_tenants_and_to_is_included(
    client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    client.hset(KEYS.config, "doc", orjson.dumps({"id": "acme", "timezone": "Europe/Berlin"}))
    before = DAY - timedelta(days=1)
    data = report_json(capsys, "--from", str(before), "--to", str(DAY), "--group", "sales")
    assert (data["from"], data["to"]) == (
        berlin_midnight(before),
        berlin_midnight(DAY + timedelta(days=1)),
    )
    assert [b["start"][:10] for b in data["groups"][0]["buckets"]] == [str(before), str(DAY)]
    # the whole day: c10 (08:59:59) and c11 (11:00) count as well
    assert data["groups"][0]["total"]["offered"] == SALES_TOTAL["offered"] + 2
    assert data["agents"] and all(a["agent"] != "a4" for a in data["agents"])
    utc = report_json(capsys, *WINDOW, "--tz", "UTC", "--agent", "a4")
    assert utc["groups"] == [] and [a["agent"] for a in utc["agents"]] == ["a4"]


def test_csv_and_png_to_files(
    client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.csv"
    assert main(["report", "--tenant", "acme", *WINDOW, "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    total = next(r for r in rows if r["id"] == "sales" and r["bucket_start"] == "total")
    assert total["offered"] == "9" and total["service_level"] == "0.375"
    png = tmp_path / "r.png"
    argv = ["report", "--tenant", "acme", *WINDOW, "--bucket", "hour", "--format", "png"]
    assert main([*argv, "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_archive_then_report_from_the_files(
    client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["archive", "--tenant", "acme", "--dir", str(tmp_path), "--keep-hours", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{len(EVENTS)} events archived" in out and f"{len(EVENTS)} trimmed" in out
    assert client.xlen(KEYS.events) == 0
    data = report_json(capsys, *WINDOW, "--archive-dir", str(tmp_path))
    assert data["groups"][0]["total"] == SALES_TOTAL
    assert main(argv) == 0
    assert "0 events archived" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", str(DAY), "--to", str(DAY - timedelta(days=1))], "is not after --from"),
        (["--from", "yesterday", "--to", str(DAY)], "--from 'yesterday': expected"),
        ([*WINDOW, "--tz", "Mars/Base"], "unknown time zone 'Mars/Base'"),
        ([*WINDOW, "--format", "png"], "--format png needs --out"),
        ([*WINDOW, "--archive-dir", "/nonexistent/dir"], "does not exist"),
    ],
)
def test_bad_report_arguments(
    client: redis.Redis, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["report", "--tenant", "acme", *args]) == 1
    assert message in capsys.readouterr().err


def test_redis_errors_are_clear(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["archive", "--tenant", "acme", "--dir", str(tmp_path)]) == 1
    assert "REDIS_URL is not set" in capsys.readouterr().err
    monkeypatch.setenv("REDIS_URL", "redis://:secret@127.0.0.1:1")
    assert main(["report", "--tenant", "acme", *WINDOW]) == 1
    err = capsys.readouterr().err
    assert "Redis at redis://:***@127.0.0.1:1 unavailable" in err and "secret" not in err


def test_bad_ids_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--tenant", "bad tenant", *WINDOW])
    assert exit_.value.code == 2
    assert "invalid tenant" in capsys.readouterr().err
