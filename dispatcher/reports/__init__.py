"""Reports per group and per agent from the tenant's event stream, and its archive.

`events` reads a period's events (archive files, then the live stream), `figures` turns them
into figures (pure functions: the admin API calls them too), `render` writes JSON, CSV and
PNG, `archive` moves old events from Redis into daily files; `cli` is `dispatcher report` and
`dispatcher archive`. `live_summary` is the live view of agents and groups that the API, the
dashboard and `dispatcher status` show.

Imports config/ and state/; the API and the CLI import it.
"""

from .figures import Period, Report, Row, compute

__all__ = ["Period", "Report", "Row", "compute"]
