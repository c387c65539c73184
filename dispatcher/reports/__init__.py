"""Reports per group and per agent from the tenant's event stream, and its archive.

`events` reads a period's events (archive files, then the live stream), `metrics` turns them
into figures (pure functions: the admin API calls them too), `render` writes JSON, CSV and
PNG, `archive` moves old events from Redis into daily files. The CLI: `dispatcher report`
and `dispatcher archive` (`dispatcher/reports/cli.py`).
"""

from .metrics import Period, Report, Row, compute

__all__ = ["Period", "Report", "Row", "compute"]
