"""JSON, CSV and PNG renderings of the known report."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest
from known_calls import END_MS, EVENTS, SALES_0900, SALES_TOTAL, START_MS, utc_iso

from dispatcher.reports import render
from dispatcher.reports.figures import AGENT_FIELDS, GROUP_FIELDS, Period, compute

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT = compute(EVENTS, Period(START_MS, END_MS, "hour"), tenant="acme")


def test_json_is_the_report_dict() -> None:
    data = orjson.loads(render.to_json(REPORT))
    assert data == orjson.loads(orjson.dumps(REPORT.as_dict()))
    assert data["tenant"] == "acme"
    assert [g["group"] for g in data["groups"]] == ["sales", "support"]
    assert [len(g["buckets"]) for g in data["groups"]] == [2, 2]
    assert data["groups"][0]["total"] == SALES_TOTAL


def test_csv_rows_per_bucket_then_total() -> None:
    rows = list(csv.DictReader(io.StringIO(render.to_csv(REPORT))))
    header = list(rows[0])
    assert header[:4] == ["scope", "id", "bucket_start", "bucket_end"]
    assert set(GROUP_FIELDS) | set(AGENT_FIELDS) == set(header[4:])
    # 2 groups and 4 agents, each 2 hours + a total
    assert [(r["scope"], r["id"], r["bucket_start"]) for r in rows[:3]] == [
        ("group", "sales", utc_iso(START_MS)),
        ("group", "sales", utc_iso(START_MS + 3_600_000)),
        ("group", "sales", "total"),
    ]
    assert len(rows) == 6 * 3
    first = rows[0]
    assert first["bucket_end"] == utc_iso(START_MS + 3_600_000)
    assert {k: first[k] for k in SALES_0900} == {k: str(v) for k, v in SALES_0900.items()}
    assert first["offers"] == ""  # an agent column on a group row
    support_10 = rows[4]
    assert (support_10["offered"], support_10["service_level"]) == ("0", "")
    a1 = next(r for r in rows if r["id"] == "a1" and r["bucket_start"] == "total")
    assert (a1["offers"], a1["missed"], a1["missed_busy"], a1["offered"]) == ("6", "3", "1", "")


def test_png_of_groups(tmp_path: Path) -> None:
    out = tmp_path / "r.png"
    render.write_png(REPORT, out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


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
