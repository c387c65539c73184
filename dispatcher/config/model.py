"""Configuration model: a tenant's agents and call groups, validated as a whole.

Every model is frozen and rejects unknown fields. Validating a `Tenant` also resolves the values
that default to something elsewhere in the tenant, so code that reads a validated tenant never
has to look anything up twice:

- a group without a `timezone` (key missing or null) gets the tenant's; a `Group` built on its
  own, outside a tenant, defaults to UTC, so `Group.timezone` is always a zone name;
- a `voicemail` no-answer target without a `mailbox` gets the group's id;
- a `reply` no-answer target without a `reason` gets the RFC 3261 reason phrase of its code;
- a `voicemail` inbound target without a `mailbox` gets the rule's DID.

The resolved values are stored, so a dumped tenant is explicit about them.

`validate_tenant` is the entry point for untrusted data: it turns pydantic's errors into one
`ConfigError` that lists every problem with a path such as `groups[1].ring_timeout`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
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
    ValidationInfo,
    field_validator,
    model_validator,
)

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
EXTENSION_PATTERN = r"^[0-9]{2,8}$"
AOR_PATTERN = r"^[A-Za-z0-9_.+-]{1,64}$"
DID_PATTERN = r"^\+?[0-9]{2,20}$"
CALLER_PREFIX_PATTERN = r"^\+?[0-9]{1,20}$"
START_TIME_PATTERN = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
END_TIME_PATTERN = r"^(?:(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"

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

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)  # index = datetime.weekday()


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


def _number_is_text(value: object) -> object:
    # YAML reads +493012345600 as the int 493012345600 (the + is lost) and 0030 as the octal 24.
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            "must be a string of digits with an optional leading +; quote it in YAML, which "
            f"drops an unquoted leading + and reads a leading 0 as octal (got the number {value})"
        )
    return value


def _time_is_text(value: object) -> object:
    # YAML 1.1 reads an unquoted 18:00 as the sexagesimal int 1080 (08:00 stays a string).
    if isinstance(value, int) and not isinstance(value, bool):
        hint = f"'{value // 60:02d}:{value % 60:02d}'" if 0 <= value <= 1440 else "'HH:MM'"
        raise ValueError(f"must be a string 'HH:MM'; quote it in YAML: {hint}")
    return value


Did = Annotated[str, BeforeValidator(_number_is_text), StringConstraints(pattern=DID_PATTERN)]
# A SIP domain a tenant's phones use (their AORs are user@domain): a host name or IPv4
# address, compared in lower case.
DOMAIN_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DOMAIN_PATTERN = rf"^{DOMAIN_LABEL}(?:\.{DOMAIN_LABEL})*$"


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _network(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"not an IP address or network: {value!r}") from None


TrustedNetwork = Annotated[str, BeforeValidator(_network)]
Domain = Annotated[
    str,
    BeforeValidator(_lower),
    StringConstraints(max_length=253, pattern=DOMAIN_PATTERN),
]
CallerPrefix = Annotated[
    str, BeforeValidator(_number_is_text), StringConstraints(pattern=CALLER_PREFIX_PATTERN)
]
StartTime = Annotated[
    str, BeforeValidator(_time_is_text), StringConstraints(pattern=START_TIME_PATTERN)
]
EndTime = Annotated[
    str, BeforeValidator(_time_is_text), StringConstraints(pattern=END_TIME_PATTERN)
]


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


# How a queued caller is held: with early media (183 Session Progress carrying RTPengine's
# SDP, the INVITE transaction kept open), never answered by us, so nothing is billed while it
# waits and the call needs no B2BUA. The price is a ceiling on the time a call may stay
# unanswered: PSTN interconnects drop a call that is not answered within ISUP's T9 (90-180 s,
# ITU-T Q.764) and many SIP carriers and phones apply the same 3 minutes. Queue wait plus one
# ring round must fit in it.
EARLY_MEDIA_LIMIT_S = 180

PromptRef = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Language = Literal["de", "en"]
QUEUE_OVERFLOW_CASES: tuple[str, ...] = ("full", "timeout", "no_agents")


class PriorityCaller(_Model):
    """Callers whose number starts with `prefix` wait ahead of lower priorities (0 = none)."""

    prefix: CallerPrefix
    priority: int = Field(ge=1, le=9)


class QueueOverflow(_Model):
    """Where a caller goes when it cannot wait (any unset case: the group's `no_answer`):
    `full` the queue is at `max_length`, `timeout` it waited `max_wait`, `no_agents` no member
    is logged in (nobody could ever take the call)."""

    full: NoAnswerTarget | None = None
    timeout: NoAnswerTarget | None = None
    no_agents: NoAnswerTarget | None = None


class Queue(_Model):
    """A group's queue: callers wait for the next free agent while they hear the greeting once,
    then music on hold, interrupted every `announce_interval` seconds by their position and
    estimated wait in `language`.

    Prompts are `default` (the generated set), `none` (no such prompt), or the id of a prompt
    uploaded for the tenant. Callers whose number starts with a `priority_callers` prefix wait
    ahead of others (the longest prefix counts); equal priorities go by arrival.
    """

    enabled: bool = True
    max_length: int = Field(default=20, ge=1, le=1000)
    max_wait: int = Field(default=120, ge=5, le=EARLY_MEDIA_LIMIT_S)
    priority_callers: tuple[PriorityCaller, ...] = ()
    greeting: PromptRef = "default"
    music: PromptRef = "default"
    announce_interval: int = Field(default=30, ge=0, le=600)
    announce_position: bool = True
    announce_wait: bool = True
    language: Language = "de"
    overflow: QueueOverflow = QueueOverflow()

    @model_validator(mode="after")
    def _check(self) -> Queue:
        problems = []
        if self.music == "none":
            problems.append(("music", "a queue needs music on hold: 'default' or a prompt id"))
        if 0 < self.announce_interval < 10:
            problems.append(("announce_interval", "must be 0 (never) or at least 10 seconds"))
        seen: dict[str, int] = {}
        for index, entry in enumerate(self.priority_callers):
            if entry.prefix in seen:
                problems.append(
                    (
                        f"priority_callers[{index}].prefix",
                        f"duplicate prefix {entry.prefix!r} "
                        f"(also priority_callers[{seen[entry.prefix]}])",
                    )
                )
            seen.setdefault(entry.prefix, index)
        if problems:
            raise ConfigError(problems)
        return self

    def priority_of(self, caller: str) -> int:
        """The caller's priority: that of the longest matching prefix, 0 without one. O(n)."""
        best, length = 0, -1
        for entry in self.priority_callers:
            if caller.startswith(entry.prefix) and len(entry.prefix) > length:
                best, length = entry.priority, len(entry.prefix)
        return best


class VoicemailBox(_Model):
    """A group's voicemail: what callers hear, how long they may speak, how long messages are
    kept."""

    greeting: PromptRef = "default"
    language: Language = "de"
    max_length: int = Field(default=120, ge=5, le=600)
    retention_days: int = Field(default=30, ge=1, le=3650)


def _member_sort_key(member: Member) -> tuple[int, int, str]:
    return (member.tier, member.position, member.agent)


def _with_mailbox(target: object, mailbox: str) -> object:
    """A voicemail target without a mailbox gets `mailbox` (raw data or a model alike)."""
    if isinstance(target, Mapping):
        if target.get("kind") == "voicemail" and target.get("mailbox") is None:
            return {**target, "mailbox": mailbox}
    elif isinstance(target, Voicemail) and target.mailbox is None:
        return target.model_copy(update={"mailbox": mailbox})
    return target


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
    queue: Queue | None = None
    voicemail: VoicemailBox = VoicemailBox()

    @model_validator(mode="before")
    @classmethod
    def _default_mailbox(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            return data
        mailbox = data["id"]
        data = {**data, "no_answer": _with_mailbox(data.get("no_answer"), mailbox)}
        queue = data.get("queue")
        if isinstance(queue, Mapping) and isinstance(queue.get("overflow"), Mapping):
            overflow = {k: _with_mailbox(v, mailbox) for k, v in queue["overflow"].items()}
            data["queue"] = {**queue, "overflow": overflow}
        if data["no_answer"] is None:
            del data["no_answer"]
        return data

    @model_validator(mode="after")
    def _check(self) -> Group:
        problems = []
        if self.overall_timeout < self.ring_timeout:
            problems.append(("overall_timeout", f"must be >= ring_timeout ({self.ring_timeout})"))
        if self.queue is not None and self.queue.max_wait + self.ring_timeout > EARLY_MEDIA_LIMIT_S:
            problems.append(
                (
                    "queue.max_wait",
                    f"max_wait ({self.queue.max_wait}) + ring_timeout ({self.ring_timeout}) "
                    f"must be at most {EARLY_MEDIA_LIMIT_S} s: queued callers are held with "
                    "early media, unanswered, and carriers drop calls unanswered for longer",
                )
            )
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

    @property
    def queued(self) -> bool:
        """Whether callers wait in this group's queue when every agent is busy."""
        return self.queue is not None and self.queue.enabled

    def overflow_target(self, case: str) -> NoAnswerTarget:
        """Where a caller goes that cannot wait for `case` (QUEUE_OVERFLOW_CASES); the group's
        `no_answer` where the queue names none."""
        target = getattr(self.queue.overflow, case) if self.queue is not None else None
        return target if target is not None else self.no_answer

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


# --- inbound rules -----------------------------------------------------------------------------


class TimeWindow(_Model):
    """Local times on some days of the week, in the tenant's time zone.

    `start` is inclusive, `end` exclusive, both "HH:MM" (`end` may be "24:00", the end of the
    day). With `end` before `start` the window runs overnight: it opens at `start` on each of
    its `days` and closes at `end` on the following day (`fri 18:00-08:00` covers Friday
    evening to Saturday 08:00, not Friday morning). `start == end` is refused; a whole day is
    `00:00`-`24:00`.
    """

    days: tuple[Weekday, ...]
    start: StartTime
    end: EndTime

    @model_validator(mode="after")
    def _check(self) -> TimeWindow:
        # Emptiness is checked here, not with min_length: pydantic would also report an
        # empty list for one whose only item is invalid.
        problems = [] if self.days else [("days", "must name at least one day (mon..sun)")]
        first_seen: dict[str, int] = {}
        for index, day in enumerate(self.days):
            if day in first_seen:
                problems.append((f"days[{index}]", f"duplicate day {day!r}"))
            else:
                first_seen[day] = index
        if self.start == self.end:
            problems.append(
                ("end", "must differ from start (a whole day is start '00:00', end '24:00')")
            )
        if problems:
            raise ConfigError(problems)
        return self


class InboundRule(_Model):
    """Where a call to a dialled number (DID) goes, by caller prefix and schedule.

    `did` is compared with the Request-URI user as it arrives, exactly (a leading + counts).
    `caller_prefixes`: the rule applies when the caller (From user) starts with one of them;
    left out, to every caller. `schedule`: the rule applies within any of its windows (the
    tenant's time zone); left out, at any time. `target` is a no-answer target: `group` offers
    the call to that group, `forward`, `voicemail` (mailbox defaults to the DID) and `reply` as
    for a group nobody answers. The first matching rule in file order wins (see
    `dispatcher.sip.inbound.match_inbound`).
    """

    did: Did
    caller_prefixes: tuple[CallerPrefix, ...] | None = None
    schedule: tuple[TimeWindow, ...] | None = None
    target: NoAnswerTarget

    @model_validator(mode="before")
    @classmethod
    def _default_mailbox(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("did"), str):
            return data
        target = data.get("target")
        if isinstance(target, Mapping):
            if target.get("kind") == "voicemail" and target.get("mailbox") is None:
                return {**data, "target": {**target, "mailbox": data["did"]}}
        elif isinstance(target, Voicemail) and target.mailbox is None:
            return {**data, "target": target.model_copy(update={"mailbox": data["did"]})}
        return data

    @model_validator(mode="after")
    def _check(self) -> InboundRule:
        problems = []
        if self.caller_prefixes == ():
            problems.append(
                ("caller_prefixes", "must list at least one prefix; leave it out for any caller")
            )
        if self.schedule == ():
            problems.append(("schedule", "must list at least one window; leave it out for always"))
        first_seen: dict[str, int] = {}
        for index, prefix in enumerate(self.caller_prefixes or ()):
            if prefix in first_seen:
                problems.append((f"caller_prefixes[{index}]", f"duplicate prefix {prefix!r}"))
            else:
                first_seen[prefix] = index
        if problems:
            raise ConfigError(problems)
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


def _rule_key(rule: object) -> Hashable | None:
    """What an inbound rule matches on (did, caller prefixes, schedule), order-insensitive;
    None when a value has the wrong type (raw data with a field error)."""

    def strings(value: object) -> frozenset[str] | None:
        items = [item for item in _items(value) if isinstance(item, str)]
        return frozenset(items) if len(items) == len(_items(value)) else None

    did = _field(rule, "did")
    prefixes, schedule = _field(rule, "caller_prefixes"), _field(rule, "schedule")
    if not isinstance(did, str):
        return None
    prefix_key = None if prefixes is None else strings(prefixes)
    if prefixes is not None and prefix_key is None:
        return None
    if schedule is None:
        return (did, prefix_key, None)
    windows = []
    for window in _items(schedule):
        days, start, end = (
            strings(_field(window, "days")),
            _field(window, "start"),
            _field(window, "end"),
        )
        if days is None or not isinstance(start, str) or not isinstance(end, str):
            return None
        windows.append((days, start, end))
    return (did, prefix_key, frozenset(windows))


def _inbound_problems(
    inbound: object,
    groups: Sequence[object],
    group_index: Mapping[str, int],
    extension_index: Mapping[str, int],
) -> list[tuple[str, str]]:
    """Problems of the inbound rules: unknown target groups, a DID that is also a group
    extension, rules that can never match (a duplicate of an earlier rule, or after a rule that
    takes every call to its DID). O(rules)."""
    problems: list[tuple[str, str]] = []
    seen: dict[Hashable, int] = {}
    takes_all: dict[str, int] = {}  # did -> first rule without caller prefixes and schedule
    for r, rule in enumerate(_items(inbound)):
        did = _field(rule, "did")
        if isinstance(did, str) and did in extension_index:
            g = extension_index[did]
            problems.append(
                (
                    f"inbound[{r}].did",
                    f"ambiguous: {did!r} is also the extension of group "
                    f"{_field(groups[g], 'id')!r} (groups[{g}])",
                )
            )
        target = _field(rule, "target")
        target_id = _field(target, "group")
        if (
            _field(target, "kind") == "group"
            and isinstance(target_id, str)
            and target_id not in group_index
        ):
            problems.append((f"inbound[{r}].target.group", f"unknown group {target_id!r}"))
        key = _rule_key(rule)
        if key is None or not isinstance(did, str):
            continue
        if key in seen:
            problems.append(
                (
                    f"inbound[{r}]",
                    "never matches: same did, caller_prefixes and schedule as "
                    f"inbound[{seen[key]}]",
                )
            )
            continue
        seen[key] = r
        if did in takes_all:
            problems.append(
                (
                    f"inbound[{r}]",
                    f"never matches: inbound[{takes_all[did]}] takes every call to {did!r}",
                )
            )
        elif _field(rule, "caller_prefixes") is None and _field(rule, "schedule") is None:
            takes_all[did] = r
    return problems


def _cycle_problems(
    edges: Mapping[str, Sequence[tuple[str, str]]], group_index: Mapping[str, int]
) -> list[tuple[str, str]]:
    """Each overflow cycle once, at the edge leaving the cycle's group that comes first in
    the file: "overflow cycle a -> b -> a". Depth-first over every edge: O(groups + edges)
    plus the length of each cycle found."""
    problems: list[tuple[str, str]] = []
    reported: set[tuple[str, ...]] = set()
    done: set[str] = set()
    for start in sorted(edges, key=group_index.__getitem__):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start: 0}
        stack = [iter(edges.get(start, ()))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                node = path.pop()
                del on_path[node]
                done.add(node)
                continue
            _, target = step
            if target in on_path:
                cycle = path[on_path[target] :]
                first = min(cycle, key=group_index.__getitem__)
                rotated = tuple(cycle[cycle.index(first) :] + cycle[: cycle.index(first)])
                if rotated not in reported:
                    reported.add(rotated)
                    after = rotated[1] if len(rotated) > 1 else first
                    field = next(f for f, t in edges[first] if t == after)
                    chain = " -> ".join([*rotated, first])
                    problems.append(
                        (f"groups[{group_index[first]}].{field}.group", f"overflow cycle {chain}")
                    )
            elif target not in done:
                on_path[target] = len(path)
                path.append(target)
                stack.append(iter(edges.get(target, ())))
    return problems


def _tenant_problems(agents: object, groups: object, inbound: object = ()) -> list[tuple[str, str]]:
    """Cross-reference problems of a tenant: duplicates, unknown references, overflow cycles,
    inbound rules that are ambiguous or never match.

    Works on validated models and on raw (possibly invalid) data alike, skipping values of the
    wrong type, so these problems can be reported together with field errors. O(agents +
    members + groups + inbound rules).
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
    extension_index = first_wins("group", group_list, "extension")

    # Overflow edges: a group's no-answer target and its queue's overflow targets.
    edges: dict[str, list[tuple[str, str]]] = {}  # group id -> [(field, target group id)]
    for g, group in enumerate(group_list):
        for m, member in enumerate(_items(_field(group, "members"))):
            agent = _field(member, "agent")
            if isinstance(agent, str) and agent not in agent_index:
                problems.append((f"groups[{g}].members[{m}].agent", f"unknown agent {agent!r}"))
        group_id = _field(group, "id")
        overflow = _field(_field(group, "queue"), "overflow")
        targets = [("no_answer", _field(group, "no_answer"))]
        targets += [
            (f"queue.overflow.{case}", _field(overflow, case)) for case in QUEUE_OVERFLOW_CASES
        ]
        for field, target in targets:
            target_id = _field(target, "group")
            if _field(target, "kind") != "group" or not isinstance(target_id, str):
                continue
            if target_id not in group_index:
                problems.append((f"groups[{g}].{field}.group", f"unknown group {target_id!r}"))
            elif isinstance(group_id, str) and group_index.get(group_id) == g:
                edges.setdefault(group_id, []).append((field, target_id))
    problems += _cycle_problems(edges, group_index)
    problems += _inbound_problems(inbound, group_list, group_index, extension_index)
    return problems


class Tenant(_Model):
    """One customer: its agents and groups, validated together (ids, references, cycles)."""

    id: Id
    name: Name
    timezone: TimeZoneName = "UTC"
    agents: tuple[Agent, ...] = ()
    groups: tuple[Group, ...] = ()
    inbound: tuple[InboundRule, ...] = ()
    # Where its requests come from: the SIP domains of its phones (internal calls and
    # registrations) and the numbers the carrier's trunks deliver to it; each belongs to
    # one tenant at most (the index in Redis refuses a second owner).
    domains: tuple[Domain, ...] = ()
    dids: tuple[Did, ...] = ()
    # The tenant's own trunks and SBCs (IPv4/IPv6 addresses or networks): their requests
    # need no digest authentication (they authenticate their users themselves).
    trusted: tuple[TrustedNetwork, ...] = ()
    events_maxlen: int = Field(default=1_000_000, ge=1, le=2**63 - 1)  # Redis MAXLEN is int64

    _agents: dict[str, Agent] = PrivateAttr(default_factory=dict)
    _groups: dict[str, Group] = PrivateAttr(default_factory=dict)
    _extensions: dict[str, Group] = PrivateAttr(default_factory=dict)
    _inbound: dict[str, tuple[InboundRule, ...]] = PrivateAttr(default_factory=dict)

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

    @field_validator("domains", "dids")
    @classmethod
    def _no_repeats(cls, names: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"{name!r} is listed twice in {info.field_name}")
            seen.add(name)
        return names

    @property
    def all_dids(self) -> tuple[str, ...]:
        """The numbers that lead to this tenant: `dids` and every inbound rule's DID."""
        return tuple(dict.fromkeys((*self.dids, *(rule.did for rule in self.inbound))))

    @model_validator(mode="after")
    def _check(self) -> Tenant:
        problems = _tenant_problems(self.agents, self.groups, self.inbound)
        if problems:
            raise ConfigError(problems)
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Build the lookup tables behind `agent`, `group`, `group_by_extension` and
        `inbound_rules`."""
        self._agents = {agent.id: agent for agent in self.agents}
        self._groups = {group.id: group for group in self.groups}
        self._extensions = {group.extension: group for group in self.groups}
        by_did: dict[str, list[InboundRule]] = {}
        for rule in self.inbound:
            by_did.setdefault(rule.did, []).append(rule)
        self._inbound = {did: tuple(rules) for did, rules in by_did.items()}

    def agent(self, agent_id: str) -> Agent | None:
        """The agent with this id, or None. O(1)."""
        return self._agents.get(agent_id)

    def group(self, group_id: str) -> Group | None:
        """The group with this id, or None. O(1)."""
        return self._groups.get(group_id)

    def group_by_extension(self, extension: str) -> Group | None:
        """The group reached by dialling `extension`, or None. O(1)."""
        return self._extensions.get(extension)

    def inbound_rules(self, did: str) -> tuple[InboundRule, ...]:
        """The inbound rules for dialled number `did`, in file order (empty if none). O(1)."""
        return self._inbound.get(did, ())


# --- turning pydantic errors into ConfigError --------------------------------------------------

_TAGGED_UNION_FIELDS = frozenset({"no_answer", "target"})


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
                for problem in _tenant_problems(
                    data.get("agents"), data.get("groups"), data.get("inbound")
                )
                if problem[0] not in flagged
            ]
        raise ConfigError(sorted(problems, key=_document_order)) from None
