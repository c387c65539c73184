"""JSON, CSV and PNG renderings of the known report."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest
import queued_calls
from known_calls import END_MS, EVENTS, SALES_0900, SALES_TOTAL, START_MS, utc_iso

from dispatcher.reports import render
from dispatcher.reports.figures import AGENT_FIELDS, GROUP_FIELDS, Period, compute

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT = compute(EVENTS, Period(START_MS, END_MS, "hour"), tenant="acme")
QUEUED = compute(queued_calls.EVENTS, Period(START_MS, END_MS, "hour"), tenant="acme")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG (its IHDR chunk)."""
    assert data.startswith(PNG_MAGIC)
    return int.from_bytes(data[16:20]), int.from_bytes(data[20:24])


def test_json_is_the_report_dict() -> None:
    data = orjson.loads(render.to_json(REPORT))
    assert data == orjson.loads(orjson.dumps(REPORT.as_dict()))
    assert data["tenant"] == "acme"
    assert [g["group"] for g in data["groups"]] == ["sales", "support"]
    assert [len(g["buckets"]) for g in data["groups"]] == [2, 2]
    assert data["groups"][0]["total"] == SALES_TOTAL
    assert data["tenant_total"]["tenant"] == "acme"
    assert [b["start"] for b in data["tenant_total"]["buckets"]] == [
        utc_iso(START_MS),
        utc_iso(START_MS + 3_600_000),
    ]


def test_json_of_the_queue() -> None:
    data = orjson.loads(render.to_json(QUEUED))
    assert data["groups"][1]["total"] == queued_calls.HOTLINE_TOTAL
    assert data["tenant_total"]["total"] == queued_calls.TENANT_TOTAL


def test_csv_rows_per_bucket_then_total() -> None:
    rows = list(csv.DictReader(io.StringIO(render.to_csv(REPORT))))
    header = list(rows[0])
    assert header[:4] == ["scope", "id", "bucket_start", "bucket_end"]
    assert set(GROUP_FIELDS) | set(AGENT_FIELDS) == set(header[4:])
    # 2 groups, the tenant total and 4 agents, each 2 hours + a total
    assert [(r["scope"], r["id"], r["bucket_start"]) for r in rows[:3]] == [
        ("group", "sales", utc_iso(START_MS)),
        ("group", "sales", utc_iso(START_MS + 3_600_000)),
        ("group", "sales", "total"),
    ]
    assert len(rows) == 7 * 3
    assert [(r["scope"], r["id"]) for r in rows[6:9]] == [("tenant", "acme")] * 3
    assert (rows[8]["offered"], rows[8]["queued"], rows[8]["offers"]) == ("10", "0", "")
    first = rows[0]
    assert first["bucket_end"] == utc_iso(START_MS + 3_600_000)
    cells = {k: "" if v is None else str(v) for k, v in SALES_0900.items()}
    assert {k: first[k] for k in SALES_0900} == cells
    assert first["offers"] == ""  # an agent column on a group row
    support_10 = rows[4]
    assert (support_10["offered"], support_10["service_level"]) == ("0", "")
    a1 = next(r for r in rows if r["id"] == "a1" and r["bucket_start"] == "total")
    assert (a1["offers"], a1["missed"], a1["missed_busy"], a1["offered"]) == ("6", "3", "1", "")


def test_csv_of_the_queue() -> None:
    rows = list(csv.DictReader(io.StringIO(render.to_csv(QUEUED))))
    totals = {(r["scope"], r["id"]): r for r in rows if r["bucket_start"] == "total"}
    expected = {
        ("group", "hotline"): queued_calls.HOTLINE_TOTAL,
        ("group", "backup"): queued_calls.BACKUP_TOTAL,
        ("tenant", "acme"): queued_calls.TENANT_TOTAL,
    }
    for key, figures in expected.items():
        cells = {k: "" if v is None else str(v) for k, v in figures.items()}
        assert {k: totals[key][k] for k in figures} == cells
    h1 = totals[("agent", "h1")]
    assert (h1["answered"], h1["queued"], h1["queue_wait_max_s"]) == ("1", "", "")


def test_png_of_groups(tmp_path: Path) -> None:
    out = tmp_path / "r.png"
    render.write_png(REPORT, out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    # two groups and their total, two plots each (no queue: no queue plots)
    assert png_size(data) == (1300, 3 * 320)


def test_png_with_queues_has_a_queue_plot_per_group() -> None:
    buffer = io.BytesIO()
    render.write_png(QUEUED, buffer)
    assert png_size(buffer.getvalue()) == (1900, 3 * 320)
    one = io.BytesIO()
    render.write_png(compute(queued_calls.EVENTS, QUEUED.period, group="backup"), one)
    assert png_size(one.getvalue()) == (1900, 320)  # one group: no total row


def test_png_of_one_agent_and_of_nothing() -> None:
    period = Period(START_MS, END_MS, "hour")
    for report in (
        compute(EVENTS, period, agent="a1"),
        compute([], period),
    ):
        buffer = io.BytesIO()
        render.write_png(report, buffer)
        assert buffer.getvalue().startswith(PNG_MAGIC)


def test_png_refuses_too_many_groups() -> None:
    events = [
        {"type": "arrived", "call": f"c{i}", "group": f"g{i}", "ts": str(START_MS + i),
         "id": f"{START_MS + i}-0"}
        for i in range(render.MAX_PLOTTED + 1)
    ]  # fmt: skip
    report = compute(events, Period(START_MS, END_MS, "hour"))
    with pytest.raises(ValueError, match="--group"):
        render.write_png(report, io.BytesIO())
