"""Configuration model: a tenant's agents and call groups, validated as a whole.

Every model is frozen and rejects unknown fields. Validating a `Tenant` also resolves the values
that default to something elsewhere in the tenant, so code that reads a validated tenant never
has to look anything up twice:

- a group without a `timezone` (key missing or null) gets the tenant's; a `Group` built on its
  own, outside a tenant, defaults to UTC, so `Group.timezone` is always a zone name;
- a `voicemail` no-answer target without a `mailbox` gets the group's id;
- a `reply` no-answer target without a `reason` gets the RFC 3261 reason phrase of its code.

The resolved values are stored, so a dumped tenant is explicit about them.

`validate_tenant` is the entry point for untrusted data: it turns pydantic's errors into one
`ConfigError` that lists every problem with a path such as `groups[1].ring_timeout`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_validator,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
EXTENSION_PATTERN = r"^[0-9]{2,8}$"
AOR_PATTERN = r"^[A-Za-z0-9_.+-]{1,64}$"

Strategy = Literal[
    "ring_all",
    "random",
    "sequential",
    "priority",
    "least_busy",
    "round_robin",
    "weighted_random",
    "longest_idle",
]
STRATEGY_NAMES: tuple[str, ...] = get_args(Strategy)

AgentState = Literal["available", "paused", "logged_out"]


class ConfigError(ValueError):
    """A configuration is invalid; `problems` lists every `(location, message)` found.

    `str()` gives one line per problem, `location: message`, prefixed with `source` (usually a
    file name) when known. An empty location stands for the document as a whole.
    """

    def __init__(self, problems: Iterable[tuple[str, str]], source: str | None = None) -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = []
        for location, message in self.problems:
            parts = [part for part in (self.source, location) if part]
            lines.append(": ".join([*parts, message]))
        return "\n".join(lines)

    def with_source(self, source: str) -> ConfigError:
        """The same problems, attributed to `source` (a file name)."""
        return ConfigError(self.problems, source)


# --- field types -------------------------------------------------------------------------------

# Control characters are rejected in free text: names and reasons end up in SIP headers and
# reason phrases, where CR/LF would let a config value inject headers (RFC 3261 §25.1 allows no
# CTLs but HTAB there, and a tab in a display name is never intended).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (newlines, tabs, ...)")
    return value


Name = Annotated[
    str, StringConstraints(min_length=1, max_length=80), AfterValidator(_no_control_chars)
]
ReasonText = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(_no_control_chars)
]
Mailbox = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_control_chars)
]
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


def _extension_is_text(value: object) -> object:
    # YAML turns an unquoted 600 into an int and 0600 into the octal 384, so a number here is
    # refused with a hint rather than converted into a possibly different extension.
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"must be a string of digits; quote it in YAML: '{value}'")
    return value


Extension = Annotated[
    str, BeforeValidator(_extension_is_text), StringConstraints(pattern=EXTENSION_PATTERN)
]
Aor = Annotated[str, StringConstraints(pattern=AOR_PATTERN)]


@functools.cache
def _iana_zones() -> frozenset[str]:
    # ZoneInfo() alone would also accept "localtime": on Debian that file links to
    # /etc/localtime, which makes the zone whatever the host says, not a fixed IANA zone.
    return frozenset(available_timezones() - {"localtime"})


def _check_timezone(name: str) -> str:
    if name not in _iana_zones():
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name like 'Europe/Berlin')")
    return name


TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]

_SIP_URI = re.compile(
    r"""
    sips?:
    (?:[^@\s<>"]+@)?                       # user[:password]@
    (?P<host>\[[^\]\s]+\]|[^:;?@\s<>"\[\]]+)
    (?::(?P<port>[0-9]{1,5}))?
    (?:;[^;?\s<>"]+)*                      # ;uri-parameters
    (?:\?[^\s<>"]+)?                       # ?headers
    """,
    re.VERBOSE | re.IGNORECASE,
)
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in host.split("."))


def _check_sip_uri(value: str) -> str:
    match = _SIP_URI.fullmatch(value)
    if (
        match is None
        or not _valid_host(match["host"])
        or (match["port"] is not None and not 1 <= int(match["port"]) <= 65535)
    ):
        raise ValueError(f"not a SIP URI: {value!r} (expected sip:[user@]host[:port][;params])")
    return value


SipUri = Annotated[str, AfterValidator(_check_sip_uri)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- no-answer targets -------------------------------------------------------------------------


class Forward(_Model):
    """Forward the call to a SIP URI (a PSTN number at the carrier's gateway, a mobile, ...)."""

    kind: Literal["forward"] = "forward"
    uri: SipUri


class Overflow(_Model):
    """Offer the call to another group of the same tenant."""

    kind: Literal["group"] = "group"
    group: Id


class Voicemail(_Model):
    """Send the caller to voicemail; `mailbox` defaults to the group's id (set by `Group`)."""

    kind: Literal["voicemail"] = "voicemail"
    mailbox: Mailbox | None = None


# RFC 3261 §21 reason phrases, so that `{kind: reply, code: 486}` does not go out as
# "486 Temporarily Unavailable"; other codes get their class name from §21.4-21.6.
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    410: "Gone",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}
_REASON_CLASSES = {4: "Request Failure", 5: "Server Failure", 6: "Global Failure"}


class Reply(_Model):
    """Answer the caller with a final SIP response; `reason` defaults to the code's phrase."""

    kind: Literal["reply"] = "reply"
    code: int = Field(default=480, ge=400, le=699)
    reason: ReasonText

    @model_validator(mode="before")
    @classmethod
    def _default_reason(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("reason") is not None:
            return data
        try:
            code = int(data.get("code", 480))
        except (TypeError, ValueError):
            code = 0  # reported on `code`; any reason here keeps that the only error
        reason = _REASONS.get(code) or _REASON_CLASSES.get(code // 100, "Unavailable")
        return {**data, "reason": reason}


NoAnswerTarget = Annotated[Forward | Overflow | Voicemail | Reply, Field(discriminator="kind")]
NO_ANSWER_KINDS: tuple[str, ...] = ("forward", "group", "voicemail", "reply")


# --- groups and agents -------------------------------------------------------------------------


# The compiled selection core keeps tiers and positions in C ints.
_C_INT_MAX = 2**31 - 1


class Member(_Model):
    """An agent's membership in a group.

    Lower `tier` rings first (strategy `priority`); `position` orders members within the
    group's position order; `weight` is the share for `weighted_random`.
    """

    agent: Id
    tier: int = Field(default=1, ge=0, le=_C_INT_MAX)
    position: int = Field(default=0, ge=0, le=_C_INT_MAX)
    weight: int = Field(default=1, ge=1, le=1000)


def _member_sort_key(member: Member) -> tuple[int, int, str]:
    return (member.tier, member.position, member.agent)


class Group(_Model):
    """A call group (hunt group) reached by dialling its short `extension`."""

    id: Id
    extension: Extension
    name: Name
    strategy: Strategy
    ring_timeout: int = Field(default=20, ge=1, le=600)
    overall_timeout: int = Field(default=120, ge=1, le=3600)
    sticky: bool = True
    timezone: TimeZoneName = "UTC"
    members: tuple[Member, ...] = ()
    no_answer: NoAnswerTarget = Reply(kind="reply", code=480, reason="Temporarily Unavailable")

    @model_validator(mode="before")
    @classmethod
    def _default_mailbox(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            return data
        target = data.get("no_answer")
        if isinstance(target, Mapping):
            if target.get("kind") == "voicemail" and target.get("mailbox") is None:
                return {**data, "no_answer": {**target, "mailbox": data["id"]}}
        elif isinstance(target, Voicemail) and target.mailbox is None:
            return {**data, "no_answer": target.model_copy(update={"mailbox": data["id"]})}
        return data

    @model_validator(mode="after")
    def _check(self) -> Group:
        problems = []
        if self.overall_timeout < self.ring_timeout:
            problems.append(("overall_timeout", f"must be >= ring_timeout ({self.ring_timeout})"))
        first_seen: dict[str, int] = {}
        for index, member in enumerate(self.members):
            if member.agent in first_seen:
                problems.append(
                    (
                        f"members[{index}].agent",
                        f"agent {member.agent!r} is already a member "
                        f"(members[{first_seen[member.agent]}])",
                    )
                )
            else:
                first_seen[member.agent] = index
        if problems:
            raise ConfigError(problems)
        return self

    def canonical_members(self) -> tuple[Member, ...]:
        """Members sorted by (tier, position, agent): the order the selection core and Redis
        share for a group's member rows. O(n log n)."""
        return tuple(sorted(self.members, key=_member_sort_key))


class AgentTargets(_Model):
    """Where an agent's calls go: the phones registered under `aor` here, and/or static URIs."""

    aor: Aor | None = None
    uris: tuple[SipUri, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> AgentTargets:
        problems = []
        if self.aor is None and not self.uris:
            problems.append(("", "needs an aor or at least one uri"))
        seen: set[str] = set()
        for index, uri in enumerate(self.uris):
            # The same URI twice would fork the call to the same phone twice.
            if uri in seen:
                problems.append((f"uris[{index}]", f"duplicate uri {uri!r}"))
            seen.add(uri)
        if problems:
            raise ConfigError(problems)
        return self


class Agent(_Model):
    """A person who takes calls from the groups they are a member of."""

    id: Id
    name: Name
    targets: AgentTargets
    max_calls: int = Field(default=1, ge=1, le=100)
    wrapup: int = Field(default=0, ge=0, le=3600)
    state: AgentState = "logged_out"
    pause_reason: ReasonText | None = None
    auto_pause_after: int = Field(default=0, ge=0, le=100)

    @model_validator(mode="after")
    def _check(self) -> Agent:
        if self.pause_reason is not None and self.state != "paused":
            raise ConfigError(
                [("pause_reason", f"only allowed when state is 'paused' (state is {self.state!r})")]
            )
        return self


# --- tenant ------------------------------------------------------------------------------------


def _field(item: object, name: str) -> object:
    """`item[name]` or `item.name`; None for anything else. Lets the tenant checks run on raw
    data as well as on models."""
    if isinstance(item, Mapping):
        return item.get(name)
    if isinstance(item, BaseModel):
        return getattr(item, name, None)
    return None


def _items(value: object) -> Sequence[object]:
    return value if isinstance(value, list | tuple) else ()


def _tenant_problems(agents: object, groups: object) -> list[tuple[str, str]]:
    """Cross-reference problems of a tenant: duplicates, unknown references, overflow cycles.

    Works on validated models and on raw (possibly invalid) data alike, skipping values of the
    wrong type, so these problems can be reported together with field errors. O(agents +
    members + groups).
    """
    problems: list[tuple[str, str]] = []

    def first_wins(kind: str, items: Sequence[object], field: str) -> dict[str, int]:
        index_of: dict[str, int] = {}
        for index, item in enumerate(items):
            value = _field(item, field)
            if not isinstance(value, str):
                continue
            if value in index_of:
                problems.append(
                    (
                        f"{kind}s[{index}].{field}",
                        f"duplicate {kind} {field} {value!r} (also {kind}s[{index_of[value]}])",
                    )
                )
            else:
                index_of[value] = index
        return index_of

    agent_index = first_wins("agent", _items(agents), "id")
    group_list = _items(groups)
    group_index = first_wins("group", group_list, "id")
    first_wins("group", group_list, "extension")

    overflow: dict[str, str] = {}
    for g, group in enumerate(group_list):
        for m, member in enumerate(_items(_field(group, "members"))):
            agent = _field(member, "agent")
            if isinstance(agent, str) and agent not in agent_index:
                problems.append((f"groups[{g}].members[{m}].agent", f"unknown agent {agent!r}"))
        target = _field(group, "no_answer")
        if _field(target, "kind") != "group":
            continue
        target_id, group_id = _field(target, "group"), _field(group, "id")
        if not isinstance(target_id, str):
            continue
        if target_id not in group_index:
            problems.append((f"groups[{g}].no_answer.group", f"unknown group {target_id!r}"))
        elif isinstance(group_id, str) and group_index.get(group_id) == g:
            overflow[group_id] = target_id

    # Each group overflows to at most one group, so following the chain from every start finds
    # each cycle; it is reported once, at the group of the cycle that comes first in the file.
    done: set[str] = set()
    for start in overflow:
        chain: dict[str, int] = {}  # group id -> position in the chain
        node: str | None = start
        while node is not None and node not in done and node not in chain:
            chain[node] = len(chain)
            node = overflow.get(node)
        if node is not None and node in chain:
            cycle = list(chain)[chain[node] :]
            first = min(cycle, key=group_index.__getitem__)
            rotated = cycle[cycle.index(first) :] + cycle[: cycle.index(first)]
            problems.append(
                (
                    f"groups[{group_index[first]}].no_answer.group",
                    "overflow cycle " + " -> ".join([*rotated, first]),
                )
            )
        done.update(chain)
    return problems


class Tenant(_Model):
    """One customer: its agents and groups, validated together (ids, references, cycles)."""

    id: Id
    name: Name
    timezone: TimeZoneName = "UTC"
    agents: tuple[Agent, ...] = ()
    groups: tuple[Group, ...] = ()
    events_maxlen: int = Field(default=1_000_000, ge=1, le=2**63 - 1)  # Redis MAXLEN is int64

    _agents: dict[str, Agent] = PrivateAttr(default_factory=dict)
    _groups: dict[str, Group] = PrivateAttr(default_factory=dict)
    _extensions: dict[str, Group] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _inherit_timezone(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        zone = data.get("timezone", "UTC")
        # An invalid tenant zone is reported once, on the tenant, not again on every group.
        if not isinstance(zone, str) or zone not in _iana_zones():
            return data
        groups = data.get("groups")
        if not isinstance(groups, list | tuple):
            return data
        resolved: list[object] = []
        for group in groups:
            if isinstance(group, Mapping) and group.get("timezone") is None:
                group = {**group, "timezone": zone}
            elif isinstance(group, Group) and "timezone" not in group.model_fields_set:
                group = group.model_copy(update={"timezone": zone})
            resolved.append(group)
        return {**data, "groups": resolved}

    @model_validator(mode="after")
    def _check(self) -> Tenant:
        problems = _tenant_problems(self.agents, self.groups)
        if problems:
            raise ConfigError(problems)
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Build the lookup tables behind `agent`, `group` and `group_by_extension`."""
        self._agents = {agent.id: agent for agent in self.agents}
        self._groups = {group.id: group for group in self.groups}
        self._extensions = {group.extension: group for group in self.groups}

    def agent(self, agent_id: str) -> Agent | None:
        """The agent with this id, or None. O(1)."""
        return self._agents.get(agent_id)

    def group(self, group_id: str) -> Group | None:
        """The group with this id, or None. O(1)."""
        return self._groups.get(group_id)

    def group_by_extension(self, extension: str) -> Group | None:
        """The group reached by dialling `extension`, or None. O(1)."""
        return self._extensions.get(extension)


# --- turning pydantic errors into ConfigError --------------------------------------------------

_TAGGED_UNION_FIELDS = frozenset({"no_answer"})


def format_location(loc: Sequence[int | str]) -> str:
    """`("groups", 1, "ring_timeout")` -> `"groups[1].ring_timeout"`.

    The tag pydantic inserts after a discriminated union field (`no_answer.forward.uri`) is
    dropped: users wrote `no_answer: {kind: forward, uri: ...}`, not a `forward` key.
    """
    out = ""
    previous: int | str | None = None
    for part in loc:
        if previous in _TAGGED_UNION_FIELDS and part in NO_ANSWER_KINDS:
            previous = part
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
        previous = part
    return out


def _join(prefix: str, location: str) -> str:
    if not location:
        return prefix
    if not prefix or location.startswith("["):
        return prefix + location
    return f"{prefix}.{location}"


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        return f"unknown kind {ctx['tag']!r} (expected one of {', '.join(NO_ANSWER_KINDS)})"
    if kind == "union_tag_not_found":
        return f"needs a kind (one of {', '.join(NO_ANSWER_KINDS)})"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    message = str(error["msg"])
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        shown = repr(value)
        message += f" (got {shown[:60] + '...' if len(shown) > 60 else shown})"
    return message


def problems_from_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    """Every error in `exc` as `(location, message)`, expanding nested `ConfigError`s."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        location = format_location(error["loc"])
        nested = (error.get("ctx") or {}).get("error")
        if isinstance(nested, ConfigError):
            problems.extend((_join(location, sub), message) for sub, message in nested.problems)
        else:
            problems.append((location, _message(error)))
    return problems


_ENTRY = re.compile(r"([A-Za-z_]\w*)(?:\[(\d+)\])?")


def _document_order(problem: tuple[str, str]) -> tuple[int, int]:
    """Sort key putting problems in file order by top-level entry (`agents[2]`, `groups[0]`);
    the sort is stable, so problems within one entry keep the order they were found in."""
    match = _ENTRY.match(problem[0])
    if match is None:
        return (-1, -1)
    fields = list(Tenant.model_fields)
    name, index = match.groups()
    return (fields.index(name) if name in fields else len(fields), int(index or -1))


def validate_tenant(data: object) -> Tenant:
    """Validate decoded JSON/YAML data as a `Tenant`; raise `ConfigError` listing every problem.

    When fields are invalid pydantic never reaches the tenant-wide checks, so they are run on the
    raw data too: a file with a bad ring_timeout and an unknown member agent reports both.
    """
    try:
        return Tenant.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation_error(exc)
        tenant_checks_ran = any(
            error["loc"] == () and isinstance((error.get("ctx") or {}).get("error"), ConfigError)
            for error in exc.errors(include_url=False)
        )
        if not tenant_checks_ran and isinstance(data, Mapping):
            # A value with a field error (a malformed overflow id) is not also "unknown".
            flagged = {location for location, _ in problems}
            problems += [
                problem
                for problem in _tenant_problems(data.get("agents"), data.get("groups"))
                if problem[0] not in flagged
            ]
        raise ConfigError(sorted(problems, key=_document_order)) from None
