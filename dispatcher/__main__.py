"""Command line: `python -m dispatcher <command>` (also installed as `dispatcher`).

validate FILE            check a tenant file, print every problem with its location
import FILE              validate and load a tenant file into Redis (REDIS_URL)
export TENANT [--format json|yaml]
                         print the tenant's config as stored in Redis
tenant, group, agent, member, inbound, token, status
                         the admin API's operations on Redis (see dispatcher.admin.cli)

Exit status: 0 done, 1 a reported error (`error: ...` on stderr), 2 a malformed command line.
"""

from __future__ import annotations

import argparse
import sys

from dispatcher.admin import cli as admin_cli
from dispatcher.admin.config_sync import import_tenant
from dispatcher.config.model import ConfigError
from dispatcher.config.tenant_file import dump_tenant, load_tenant, parse_tenant
from dispatcher.reports import cli as cli_reports
from dispatcher.settings import SettingsError
from dispatcher.state.store import StateStore


def _store(tenant: str) -> StateStore:
    return admin_cli.store_for(tenant)


def _validate(args: argparse.Namespace) -> int:
    tenant = load_tenant(args.file)
    counts = f"{len(tenant.groups)} groups, {len(tenant.agents)} agents"
    print(f"{args.file}: tenant {tenant.id!r}, {counts}: ok")
    return 0


def _import(args: argparse.Namespace) -> int:
    tenant = load_tenant(args.file)
    audit = {
        "actor": admin_cli.actor(),
        "action": "tenant.replace",
        "object": f"tenant:{tenant.id}",
    }
    version = import_tenant(_store(tenant.id), tenant, audit=audit)
    print(f"tenant {tenant.id!r} imported: config version {version}")
    return 0


def _export(args: argparse.Namespace) -> int:
    _, doc = _store(args.tenant).config()
    if doc is None:
        print(f"tenant {args.tenant!r} has no config in Redis", file=sys.stderr)
        return 1
    sys.stdout.write(dump_tenant(parse_tenant(doc, "json"), args.format))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; exit code 1 on a reported error."""
    parser = argparse.ArgumentParser(prog="dispatcher", description="call-group dispatcher")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a tenant file")
    p.add_argument("file")
    p.set_defaults(func=_validate)
    p = sub.add_parser("import", help="load a tenant file into Redis")
    p.add_argument("file")
    p.set_defaults(func=_import)
    p = sub.add_parser("export", help="print a tenant's config")
    p.add_argument("tenant")
    p.add_argument("--format", choices=("json", "yaml"), default="yaml")
    p.set_defaults(func=_export)
    cli_reports.register(sub)  # report, archive
    admin_cli.add_commands(sub)  # tenant, group, agent, member, inbound, token, status
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, SettingsError, *admin_cli.REPORTED) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
