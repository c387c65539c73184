"""A report as JSON, CSV or a PNG plot.

JSON is `Report.as_dict()`. CSV is one table: a row per group or agent and bucket, then its
row over the whole period (`bucket_start` "total"); after the groups, the tenant total
(scope "tenant", id the tenant) in the same way; group and agent rows share the columns
they have in common (`answered`, the time figures) and leave the others empty, so the queue
columns are empty on agent rows. The PNG has a row of plots per group, led by one for all
groups together when there are several: volume per bucket (offered, answered, abandoned),
service level per bucket and, when any group queued or overflowed callers or got
voicemails, the queue per bucket (queued, answered from the queue, abandoned in it,
overflowed, voicemails) with the period's wait and estimate error in its title; for a
report of agents only, their offers, answers and missed offers.
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
# The figures each bar plot shows per bucket.
_AGENT_SERIES = ("offers", "answered", "missed")
_CALL_SERIES = ("offered", "answered", "abandoned")
_QUEUE_SERIES = ("queued", "queue_answered", "queue_abandoned", "overflowed", "voicemails")


def to_json(report: Report) -> bytes:
    """`Report.as_dict()` as indented JSON."""
    return orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n"


def to_csv(report: Report) -> str:
    """The report as one CSV table (CSV_COLUMNS; see the module)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    data = report.as_dict()
    total = [data["tenant_total"]] if data["tenant_total"] is not None else []
    for scope, rows in (("group", data["groups"]), ("tenant", total), ("agent", data["agents"])):
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
    titled = [(f"agent {r.id}" if agents_only else f"group {r.id}", r) for r in rows]
    if len(rows) > 1 and report.tenant_total is not None:
        titled.insert(0, ("all groups", report.tenant_total))
    queues = not agents_only and any(
        r.total["queued"] or r.total["overflowed"] or r.total["voicemails"] for r in rows
    )
    n = max(1, len(titled))
    columns = 1 if agents_only else 3 if queues else 2
    fig = Figure(figsize=(13 if columns < 3 else 19, 3.2 * n), layout="constrained")
    axes = fig.subplots(n, columns, squeeze=False)
    labels = _labels(report)
    xs = list(range(len(labels)))
    p = report.period
    fig.suptitle(f"{report.tenant}: {p.iso(p.start_ms)} to {p.iso(p.end_ms)}, per {p.bucket}")
    if not rows:
        axes[0][0].set_title("no calls in this period")
    for i, (name, row) in enumerate(titled):
        if agents_only:
            _bars(axes[i][0], xs, labels, row, _AGENT_SERIES, f"{name}: offers")
            continue
        _bars(axes[i][0], xs, labels, row, _CALL_SERIES, f"{name}: calls")
        _service_level(axes[i][1], xs, labels, row, name, report.sl_seconds)
        if queues:
            _bars(axes[i][2], xs, labels, row, _QUEUE_SERIES, _queue_title(name, row))
    fig.savefig(out, format="png", dpi=100)


def _queue_title(name: str, row: Row) -> str:
    t = row.total

    def s(value: Any) -> str:
        return "n/a" if value is None else f"{value:g} s"

    return (
        f"{name}: queue, wait p90 {s(t['queue_wait_p90_s'])}, max {s(t['queue_wait_max_s'])}\n"
        f"announced wait off by {s(t['ewt_mae_s'])} on average ({t['ewt_announcements']} told)"
    )


def _labels(report: Report) -> list[str]:
    fmt = "%m-%d %H:00" if report.period.bucket == "hour" else "%Y-%m-%d"
    zone = ZoneInfo(report.period.tz)
    return [datetime.fromtimestamp(ms / 1000, zone).strftime(fmt) for ms in report.bucket_starts]


def _bars(
    ax: Any, xs: list[int], labels: list[str], row: Row, series: tuple[str, ...], title: str
) -> None:
    from matplotlib.ticker import MaxNLocator

    width = 0.8 / len(series)
    for k, name in enumerate(series):
        values = [b.get(name) or 0 for b in row.buckets]
        offset = (k - (len(series) - 1) / 2) * width  # the series centred on each bucket
        ax.bar([x + offset for x in xs], values, width, label=name)
    ax.set_title(title)
    ax.set_ylabel("calls")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best", fontsize="small")
    _x_axis(ax, xs, labels)


def _service_level(ax: Any, xs: list[int], labels: list[str], row: Row, name: str, sl: int) -> None:
    values = [
        float("nan") if b["service_level"] is None else 100 * float(b["service_level"] or 0)
        for b in row.buckets
    ]
    ax.plot(xs, values, marker="o", color="tab:green")
    total = row.total["service_level"]
    overall = "n/a" if total is None else f"{100 * float(total):.1f} %"
    ax.set_title(f"{name}: service level (answered within {sl} s of arrival), period {overall}")
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    _x_axis(ax, xs, labels)


def _x_axis(ax: Any, xs: list[int], labels: list[str]) -> None:
    step = max(1, len(xs) // 12)  # about a dozen labels, whatever the bucket count
    ax.set_xticks(xs[::step], labels[::step], rotation=30, ha="right", fontsize="small")
    ax.set_xlim(-0.6, len(xs) - 0.4)
    ax.grid(axis="y", alpha=0.3)
