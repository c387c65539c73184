"""A report as JSON, CSV or a PNG plot.

JSON is `Report.as_dict()`. CSV is one table: a row per group or agent and bucket, then its
row over the whole period (`bucket_start` "total"); group and agent rows share the columns
they have in common (`answered`, the time figures) and leave the others empty. The PNG has
a row of two plots per group: volume per bucket (offered, answered, abandoned) and service
level per bucket; for a report of agents only, their offers, answers and missed offers.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import orjson

from .figures import AGENT_FIELDS, GROUP_FIELDS, Report, Row

CSV_COLUMNS = (
    "scope",
    "id",
    "bucket_start",
    "bucket_end",
    *GROUP_FIELDS,
    *(name for name in AGENT_FIELDS if name not in GROUP_FIELDS),
)
# More plot rows than this make an unreadable (and huge) image: ask for one group.
MAX_PLOTTED = 24


def to_json(report: Report) -> bytes:
    """`Report.as_dict()` as indented JSON."""
    return orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n"


def to_csv(report: Report) -> str:
    """The report as one CSV table (CSV_COLUMNS; see the module)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    data = report.as_dict()
    for scope, rows in (("group", data["groups"]), ("agent", data["agents"])):
        for row in rows:
            for bucket in row["buckets"]:
                start, end = bucket.pop("start"), bucket.pop("end")
                writer.writerow(_csv_row(scope, row[scope], start, end, bucket))
            writer.writerow(_csv_row(scope, row[scope], "total", "", row["total"]))
    return out.getvalue()


def _csv_row(scope: str, key: str, start: str, end: str, figures: dict[str, Any]) -> dict:
    cells = {"scope": scope, "id": key, "bucket_start": start, "bucket_end": end}
    cells.update({k: "" if v is None else v for k, v in figures.items()})
    return cells


def write_png(report: Report, out: Path | IO[bytes]) -> None:
    """Plot the report into a PNG file (path or binary file object).

    ValueError when it has more than MAX_PLOTTED groups (or agents) to plot. Imports
    matplotlib (the `admin` extra) on first use; draws on its own Figure (no pyplot state),
    so concurrent calls are safe.
    """
    from matplotlib.figure import Figure

    rows, agents_only = (report.groups, False) if report.groups else (report.agents, True)
    if len(rows) > MAX_PLOTTED:
        what = "agents" if agents_only else "groups"
        raise ValueError(
            f"{len(rows)} {what} to plot, at most {MAX_PLOTTED}: choose one with --group/--agent"
        )
    n = max(1, len(rows))
    fig = Figure(figsize=(13, 3.2 * n), layout="constrained")
    axes = fig.subplots(n, 1 if agents_only else 2, squeeze=False)
    labels = _labels(report)
    xs = list(range(len(labels)))
    p = report.period
    fig.suptitle(f"{report.tenant}: {p.iso(p.start_ms)} to {p.iso(p.end_ms)}, per {p.bucket}")
    if not rows:
        axes[0][0].set_title("no calls in this period")
    for i, row in enumerate(rows):
        if agents_only:
            series = ("offers", "answered", "missed")
            _bars(axes[i][0], xs, labels, row, series, f"agent {row.id}: offers")
        else:
            series = ("offered", "answered", "abandoned")
            _bars(axes[i][0], xs, labels, row, series, f"group {row.id}: calls")
            _service_level(axes[i][1], xs, labels, row, report.sl_seconds)
    fig.savefig(out, format="png", dpi=100)


def _labels(report: Report) -> list[str]:
    fmt = "%m-%d %H:00" if report.period.bucket == "hour" else "%Y-%m-%d"
    zone = ZoneInfo(report.period.tz)
    return [datetime.fromtimestamp(ms / 1000, zone).strftime(fmt) for ms in report.bucket_starts]


def _bars(ax: Any, xs: list[int], labels: list[str], row: Row, series: tuple, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    width = 0.8 / len(series)
    for k, name in enumerate(series):
        values = [b.get(name) or 0 for b in row.buckets]
        ax.bar([x + (k - 1) * width for x in xs], values, width, label=name)
    ax.set_title(title)
    ax.set_ylabel("calls")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize="small")
    _x_axis(ax, xs, labels)


def _service_level(ax: Any, xs: list[int], labels: list[str], row: Row, sl: int) -> None:
    values = [
        float("nan") if b["service_level"] is None else 100 * float(b["service_level"] or 0)
        for b in row.buckets
    ]
    ax.plot(xs, values, marker="o", color="tab:green")
    total = row.total["service_level"]
    overall = "n/a" if total is None else f"{100 * float(total):.1f} %"
    ax.set_title(f"group {row.id}: service level (answered within {sl} s), period {overall}")
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    _x_axis(ax, xs, labels)


def _x_axis(ax: Any, xs: list[int], labels: list[str]) -> None:
    step = max(1, len(xs) // 12)  # about a dozen labels, whatever the bucket count
    ax.set_xticks(xs[::step], labels[::step], rotation=30, ha="right", fontsize="small")
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.grid(axis="y", alpha=0.3)
