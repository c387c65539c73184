"""Admin commands of the command line: the admin API's operations, straight on Redis.

    dispatcher tenant list, tenant delete ID [--force]
    dispatcher group list|show ID|set FILE|delete ID            [-t TENANT]
    dispatcher agent list|show ID|set FILE|delete ID
    dispatcher agent login|logout|unpause ID, agent pause ID [--reason TEXT]
    dispatcher member add GROUP AGENT [--tier N] [--position N] [--weight N]
    dispatcher member remove GROUP AGENT
    dispatcher inbound show|set FILE
    dispatcher token create --role admin|supervisor|read-only [--label TEXT]
    dispatcher token list, token revoke ID
    dispatcher credential set USER (password on stdin), credential remove USER, list
    dispatcher status [--once] [--interval SECONDS]

The tenant is `-t/--tenant`, else DISPATCHER_TENANT (default demo); Redis is REDIS_URL. FILE
is JSON or YAML (by its extension; `-` reads standard input) holding one group or agent as in
a tenant file, or the list of inbound rules. Changes go through `dispatcher.admin.ops` and
`config_sync.update_tenant`, exactly like the API's: atomic, live, with an audit event whose
actor is `cli:<user>`. Exit status 1 for a reported error (invalid input with its location,
unknown group or agent, Redis unavailable), 2 for a malformed command line.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dispatcher.admin import ops as admin_ops
from dispatcher.admin.config_sync import update_tenant
from dispatcher.admin.ops import MemberSettings, NotFound
from dispatcher.admin.tokens import ROLES, new_token, read_record, token_record
from dispatcher.config.model import (
    Agent,
    ConfigError,
    Group,
    InboundRule,
    Tenant,
    problems_from_validation_error,
)
from dispatcher.config.tenant_file import load_document, parse_tenant
from dispatcher.core import AVAILABLE, LOGGED_OUT, PAUSED
from dispatcher.reports.live_summary import LiveView, render, summarize
from dispatcher.settings import Settings, SettingsError
from dispatcher.state.credentials import credential_record
from dispatcher.state.errors import StateChanged, StateError, TenantBusy, UnknownAgent
from dispatcher.state.store import StateStore

_STATES = {"login": AVAILABLE, "logout": LOGGED_OUT, "pause": PAUSED, "unpause": AVAILABLE}


class CommandError(Exception):
    """A command that cannot be done as asked; printed as `error: ...`, exit status 1."""


def store_for(tenant: str | None) -> StateStore:
    """The store of `tenant` (else DISPATCHER_TENANT) on REDIS_URL."""
    settings = Settings.from_env()
    if settings.redis_url is None:
        raise SettingsError("REDIS_URL is not set: which Redis holds the state?")
    return StateStore(settings.redis_url, tenant or settings.tenant)


def actor() -> str:
    """How audit events name a command-line user: `cli:<login name>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "cli"


def _audit(action: str, obj: str, detail: str = "") -> dict[str, str]:
    return {"actor": actor(), "action": action, "object": obj, "detail": detail}


def _no_config(store: StateStore) -> NotFound:
    return NotFound(f"tenant {store.tenant!r} has no config in Redis")


def _current(store: StateStore) -> tuple[int, Tenant]:
    version, doc = store.config()
    if doc is None:
        raise _no_config(store)
    return version, parse_tenant(doc, "json")


_M = TypeVar("_M", bound=BaseModel)


def _model(cls: type[_M], path: str) -> _M:
    data = load_document(path)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        source = "<stdin>" if path == "-" else path
        raise ConfigError(problems_from_validation_error(exc), source) from None


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def _show(item: BaseModel | None, what: str) -> None:
    """Print `item` as YAML; NotFound when it is None (`what`: how the message names it)."""
    if item is None:
        raise NotFound(f"{what} does not exist")
    sys.stdout.write(_yaml(item.model_dump(mode="json")))


def _change(
    args: argparse.Namespace,
    op: Callable[[Tenant], Tenant],
    action: str,
    obj: str,
    detail: str = "",
) -> int:
    """Apply `op` to the config of the command's tenant, with an audit event of `action` on
    `obj`; prints the new version. The command's exit status (0)."""
    store = store_for(args.tenant)
    version, _ = update_tenant(store, op, _audit(action, obj, detail))
    print(f"tenant {store.tenant!r}: config version {version}")
    return 0


_Item = TypeVar("_Item", Group, Agent)


def _set_command(
    cls: type[_Item], upsert: Callable[[Tenant, _Item], Tenant], kind: str
) -> Callable[[argparse.Namespace], int]:
    """`<kind> set FILE`: create or replace the group or agent in FILE."""

    def command(args: argparse.Namespace) -> int:
        item = _model(cls, args.file)
        return _change(args, lambda t: upsert(t, item), f"{kind}.put", f"{kind}:{item.id}")

    return command


def _delete_command(
    remove: Callable[[Tenant, str], Tenant], kind: str
) -> Callable[[argparse.Namespace], int]:
    """`<kind> delete ID`: delete the group or agent ID."""

    def command(args: argparse.Namespace) -> int:
        return _change(args, lambda t: remove(t, args.id), f"{kind}.delete", f"{kind}:{args.id}")

    return command


# --- commands ----------------------------------------------------------------------------


def _tenant_delete(args: argparse.Namespace) -> int:
    store = store_for(args.id)
    _current(store)
    try:
        deleted = store.delete_tenant(force=args.force)
    except TenantBusy as exc:
        raise CommandError(str(exc).removeprefix("BUSY ")) from None
    print(f"tenant {args.id} deleted ({deleted} keys)")
    return 0


def _tenant_list(args: argparse.Namespace) -> int:
    store = store_for(args.tenant)
    for tenant in store.registered_tenants():
        with StateStore(store.url, tenant) as other:
            print(f"{tenant}  config version {other.config_version()}")
    return 0


def _group_list(args: argparse.Namespace) -> int:
    _, tenant = _current(store_for(args.tenant))
    for g in tenant.groups:
        print(
            f"{g.id:<20} {g.extension:>8}  {g.strategy:<16} {len(g.members):>3} members  {g.name}"
        )
    return 0


def _group_show(args: argparse.Namespace) -> int:
    _, tenant = _current(store_for(args.tenant))
    _show(tenant.group(args.id), f"group {args.id!r}")
    return 0


_group_set = _set_command(Group, admin_ops.upsert_group, "group")
_group_delete = _delete_command(admin_ops.remove_group, "group")


def _agent_list(args: argparse.Namespace) -> int:
    store = store_for(args.tenant)
    _, tenant = _current(store)
    live = store.live()
    for a in tenant.agents:
        state = live.agents[a.id].activity(live.now_ms) if a.id in live.agents else "-"
        print(f"{a.id:<20} {state:<12} max {a.max_calls:<3} {a.name}")
    return 0


def _summary(store: StateStore) -> LiveView:
    """The live summary with the queues (one atomic read)."""
    board = store.board()
    return summarize(store.tenant, board.live, queues=board.queues)


def _agent_show(args: argparse.Namespace) -> int:
    store = store_for(args.tenant)
    _, tenant = _current(store)
    _show(tenant.agent(args.id), f"agent {args.id!r}")
    view = summarize(store.tenant, store.live(), tenant)
    live = next(a for a in view.agents if a.agent == args.id)
    sys.stdout.write(_yaml({"live": live.model_dump(exclude={"agent", "name"})}))
    return 0


_agent_set = _set_command(Agent, admin_ops.upsert_agent, "agent")
_agent_delete = _delete_command(admin_ops.remove_agent, "agent")


def _agent_state(args: argparse.Namespace) -> int:
    store = store_for(args.tenant)
    reason = getattr(args, "reason", None) or ""
    try:
        store.set_state(
            args.id,
            _STATES[args.action],
            reason,
            _audit(f"agent.{args.action}", f"agent:{args.id}", reason),
            admin_ops.EXPECTED_STATUS.get(args.action, ()),
        )
    except UnknownAgent:
        raise NotFound(f"agent {args.id!r} does not exist") from None
    except StateChanged as exc:
        raise CommandError(str(exc).removeprefix("STATE ")) from None
    print(f"agent {args.id!r}: {args.action} done")
    return 0


def _member_add(args: argparse.Namespace) -> int:
    try:
        settings = MemberSettings(tier=args.tier, position=args.position, weight=args.weight)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation_error(exc)) from None
    return _change(
        args,
        lambda t: admin_ops.set_member(t, args.group, args.agent, settings),
        "member.put",
        f"member:{args.group}/{args.agent}",
    )


def _member_remove(args: argparse.Namespace) -> int:
    return _change(
        args,
        lambda t: admin_ops.remove_member(t, args.group, args.agent),
        "member.delete",
        f"member:{args.group}/{args.agent}",
    )


def _inbound_show(args: argparse.Namespace) -> int:
    _, tenant = _current(store_for(args.tenant))
    sys.stdout.write(_yaml([rule.model_dump(mode="json") for rule in tenant.inbound]))
    return 0


def _inbound_set(args: argparse.Namespace) -> int:
    data = load_document(args.file)
    if not isinstance(data, list):
        raise ConfigError([("", "expected a list of inbound rules")], args.file)
    rules = []
    problems: list[tuple[str, str]] = []
    for index, item in enumerate(data):
        try:
            rules.append(InboundRule.model_validate(item))
        except ValidationError as exc:
            problems += [
                (f"[{index}]" + (f".{loc}" if loc else ""), message)
                for loc, message in problems_from_validation_error(exc)
            ]
    if problems:
        raise ConfigError(problems, args.file)
    return _change(
        args,
        lambda t: admin_ops.set_inbound(t, rules),
        "inbound.put",
        "inbound",
        f"{len(rules)} rules",
    )


def _token_create(args: argparse.Namespace) -> int:
    store = store_for(args.tenant)
    _current(store)
    token_id, token = new_token(store.tenant)
    store.set_token(
        token_id,
        token_record(token, args.role, args.label or ""),
        _audit("token.create", f"token:{token_id}", args.role),
    )
    print(f"token {token_id} ({args.role}) of tenant {store.tenant!r}; shown only now:")
    print(token)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    for token_id, raw in sorted(store_for(args.tenant).tokens().items()):
        _, role, label, _ = read_record(raw)
        print(f"{token_id}  {role:<10} {label}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    store = store_for(args.tenant)
    if not store.set_token(args.id, None, _audit("token.revoke", f"token:{args.id}")):
        raise NotFound(f"token {args.id!r} does not exist")
    print(f"token {args.id} revoked")
    return 0


def _credential_set(args: argparse.Namespace) -> int:
    """A SIP user's password: typed twice at a terminal, else the first line of stdin (never
    an argument: command lines are readable by every local user)."""
    store = store_for(args.tenant)
    _current(store)
    if sys.stdin.isatty():
        password = getpass.getpass(f"SIP password of {args.user}: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        record = credential_record(args.user, store.tenant, password)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    store.credential_put(args.user, record, _audit("credential.set", args.user))
    print(f"SIP password of {args.user} set (tenant {store.tenant!r}, realm {store.tenant!r})")
    return 0


def _credential_remove(args: argparse.Namespace) -> int:
    store = store_for(args.tenant)
    if not store.credential_put(args.user, None, _audit("credential.remove", args.user)):
        raise NotFound(f"SIP user {args.user!r} has no password")
    print(f"SIP password of {args.user} removed")
    return 0


def _credential_list(args: argparse.Namespace) -> int:
    for user in store_for(args.tenant).credential_users():
        print(user)
    return 0


def _status(args: argparse.Namespace) -> int:
    """Print the live summary; with --once a single time, else every --interval seconds
    until Ctrl-C (a Redis outage shows as a line and the display goes on)."""
    store = store_for(args.tenant)
    if args.once:
        board = store.board()
        if board.live.doc is None:
            raise _no_config(store)
        sys.stdout.write(render(_summary(store)))
        return 0
    try:
        while True:
            try:
                text = render(_summary(store))
            except StateError as exc:
                text = f"tenant {store.tenant}: {exc}\n"
            clock = time.strftime("%H:%M:%S")
            # Clear the screen and home the cursor (ANSI), then the new summary.
            sys.stdout.write(
                f"\x1b[H\x1b[2J{text}\n{clock}  refreshing every {args.interval}s, Ctrl-C ends\n"
            )
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print()
        return 0


# --- parser ------------------------------------------------------------------------------


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0.1 and 3600 seconds")
    return value


def add_commands(sub: Any) -> None:
    """Add the admin commands to the `dispatcher` command's subparsers."""
    tenant = argparse.ArgumentParser(add_help=False)
    tenant.add_argument("-t", "--tenant", help="tenant id (default: DISPATCHER_TENANT, else demo)")

    def command(parent: Any, name: str, func: Callable[..., int], help: str) -> Any:
        p = parent.add_parser(name, parents=[tenant], help=help)
        p.set_defaults(func=func)
        return p

    def group_of(name: str, help: str) -> Any:
        p = sub.add_parser(name, help=help)
        return p.add_subparsers(dest=f"{name}_command", required=True)

    tenants = group_of("tenant", "tenants in Redis")
    command(tenants, "list", _tenant_list, "every tenant with its config version")
    p = command(tenants, "delete", _tenant_delete, "delete a tenant: config, tokens, state")
    p.add_argument("id")
    p.add_argument("--force", action="store_true", help="even with live calls")

    groups = group_of("group", "call groups")
    command(groups, "list", _group_list, "the tenant's groups")
    command(groups, "show", _group_show, "one group as YAML").add_argument("id")
    command(groups, "set", _group_set, "create or replace a group from FILE").add_argument("file")
    command(groups, "delete", _group_delete, "delete a group").add_argument("id")

    agents = group_of("agent", "agents and their state")
    command(agents, "list", _agent_list, "the tenant's agents with their activity")
    command(agents, "show", _agent_show, "one agent's config and live state").add_argument("id")
    command(agents, "set", _agent_set, "create or replace an agent from FILE").add_argument("file")
    command(agents, "delete", _agent_delete, "delete an agent (leaves its groups)").add_argument(
        "id"
    )
    for action, help in (
        ("login", "make the agent available"),
        ("logout", "log the agent out"),
        ("pause", "pause the agent"),
        ("unpause", "make a paused agent available again"),
    ):
        p = command(agents, action, _agent_state, help)
        p.add_argument("id")
        p.set_defaults(action=action)
        if action == "pause":
            p.add_argument("--reason", help="why (shown to supervisors)")

    members = group_of("member", "group memberships")
    p = command(members, "add", _member_add, "make an agent a member (or change its settings)")
    p.add_argument("group")
    p.add_argument("agent")
    p.add_argument("--tier", type=int, default=1, help="priority tier, lower rings first")
    p.add_argument("--position", type=int, default=0, help="order within the group")
    p.add_argument("--weight", type=int, default=1, help="share for weighted_random")
    p = command(members, "remove", _member_remove, "remove an agent from a group")
    p.add_argument("group")
    p.add_argument("agent")

    inbound = group_of("inbound", "inbound rules (DIDs)")
    command(inbound, "show", _inbound_show, "the rules as YAML")
    command(inbound, "set", _inbound_set, "replace the rules with the list in FILE").add_argument(
        "file"
    )

    tokens = group_of("token", "admin API tokens")
    p = command(tokens, "create", _token_create, "create a token (printed once)")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--label", help="what the token is for")
    command(tokens, "list", _token_list, "token ids, roles and labels")
    command(tokens, "revoke", _token_revoke, "revoke a token").add_argument("id")

    credentials = group_of("credential", "SIP passwords of the tenant's phones (HA1 only)")
    command(credentials, "set", _credential_set, "set USER's password (stdin)").add_argument("user")
    command(credentials, "remove", _credential_remove, "remove USER's password").add_argument(
        "user"
    )
    command(credentials, "list", _credential_list, "the SIP users that have a password")

    p = command(sub, "status", _status, "live summary: groups, agents, calls")
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--interval", type=_interval, default=1.0, help="seconds between refreshes")


# Errors the command line reports as `error: ...` with exit status 1.
REPORTED = (CommandError, NotFound, admin_ops.StillReferenced, StateError)
