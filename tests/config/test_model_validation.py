"""Validation rules of the configuration model, each with the location its error names."""

from __future__ import annotations

import re
from typing import Any

import pytest
from model_helpers import locations, problems
from pydantic import ValidationError

from dispatcher.config.model import (
    STRATEGY_NAMES,
    Agent,
    AgentTargets,
    ConfigError,
    Forward,
    Group,
    Member,
    Overflow,
    Reply,
    Tenant,
    Voicemail,
    format_location,
    validate_tenant,
)

Data = dict[str, Any]

# Demo indices used below: agents alice=0 ... heidi=7; groups sales=0 (600, ring_all),
# support=1, billing=2 (overflows to support), escalation=3 (voicemail), orders=4,
# reception=5, partners=6, onboarding=7; inbound rules for +493012345600: VIP prefixes=0
# (-> escalation), business hours mon-fri 08:00-18:00=1 (-> sales), catch-all voicemail=2.


_PATH_PART = re.compile(r"(\w+)|\[(\d+)\]")


def put(data: Data, path: str, value: object) -> Data:
    """Set the value at `path` (`groups[1].ring_timeout`) in `data`: an index equal to the
    list's length appends, DELETE removes the key. Returns `data`."""
    parts: list[str | int] = [name or int(index) for name, index in _PATH_PART.findall(path)]
    target: Any = data
    for part in parts[:-1]:
        target = target[part]
    last = parts[-1]
    if value is DELETE:
        del target[last]
    elif isinstance(target, list) and last == len(target):
        target.append(value)
    else:
        target[last] = value
    return data


DELETE = object()


def group(gid: str, extension: str, **fields: Any) -> Data:
    """A minimal valid group as raw data."""
    return {"id": gid, "extension": extension, "name": gid, "strategy": "ring_all", **fields}


# --- the demo ----------------------------------------------------------------------------------


def test_demo_is_valid(demo: Data) -> None:
    tenant = validate_tenant(demo)
    assert tenant.id == "demo"
    assert tenant.timezone == "Europe/Berlin"
    assert [a.id for a in tenant.agents] == [
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
        "frank",
        "grace",
        "heidi",
    ]
    assert all(a.targets.aor == a.id and a.state == "available" for a in tenant.agents)
    assert sorted(a.max_calls for a in tenant.agents) == [1] * 6 + [2, 2]
    assert [a.wrapup for a in tenant.agents].count(5) == 1
    assert [a.auto_pause_after for a in tenant.agents].count(3) == 1
    assert [g.extension for g in tenant.groups] == [str(n) for n in range(600, 608)]
    assert [g.strategy for g in tenant.groups] == list(STRATEGY_NAMES)
    assert tenant.group_by_extension("600").name == "Sales"  # type: ignore[union-attr]
    kinds = [g.no_answer.kind for g in tenant.groups]
    assert sorted(kinds) == [
        "forward",
        "group",
        "reply",
        "reply",
        "reply",
        "reply",
        "reply",
        "voicemail",
    ]
    assert Forward(uri="sip:+4930123456@pstn.example.net") in [g.no_answer for g in tenant.groups]
    assert all(g.timezone == "Europe/Berlin" for g in tenant.groups)


def test_demo_priority_group_has_two_tiers_and_weights_differ(demo: Data) -> None:
    tenant = validate_tenant(demo)
    escalation = tenant.group_by_extension("603")
    partners = tenant.group_by_extension("606")
    assert escalation is not None and partners is not None
    assert {m.tier for m in escalation.members} == {1, 2}
    assert len({m.weight for m in partners.members}) == len(partners.members)


def test_lookup_helpers(demo: Data) -> None:
    tenant = validate_tenant(demo)
    assert tenant.agent("carol") is tenant.agents[2]
    assert tenant.group("billing") is tenant.groups[2]
    assert tenant.group_by_extension("602") is tenant.groups[2]
    assert tenant.agent("nobody") is None
    assert tenant.group("nothing") is None
    assert tenant.group_by_extension("999") is None


def test_models_are_frozen_and_hashable(demo: Data) -> None:
    tenant = validate_tenant(demo)
    with pytest.raises(ValidationError):
        tenant.groups[0].ring_timeout = 5  # type: ignore[misc]
    assert hash(tenant) == hash(validate_tenant(demo))


# --- defaults ----------------------------------------------------------------------------------


def test_defaults() -> None:
    member = Member(agent="a")
    assert (member.tier, member.position, member.weight) == (1, 0, 1)
    g = Group(id="g", extension="10", name="G", strategy="random")
    assert (g.ring_timeout, g.overall_timeout, g.sticky, g.members) == (20, 120, True, ())
    assert g.no_answer == Reply(code=480, reason="Temporarily Unavailable")
    agent = Agent(id="a", name="A", targets=AgentTargets(aor="a"))
    assert (agent.max_calls, agent.wrapup, agent.state, agent.auto_pause_after) == (
        1,
        0,
        "logged_out",
        0,
    )
    tenant = Tenant(id="t", name="T")
    assert (tenant.timezone, tenant.events_maxlen) == ("UTC", 1_000_000)


def test_groups_inherit_the_tenant_timezone_unless_they_set_one(demo: Data) -> None:
    put(demo, "groups[1].timezone", "America/New_York")
    put(demo, "groups[2].timezone", None)  # null means "inherit", like a missing key
    tenant = validate_tenant(demo)
    assert [g.timezone for g in tenant.groups[:3]] == [
        "Europe/Berlin",
        "America/New_York",
        "Europe/Berlin",
    ]


def test_timezone_inheritance_for_groups_built_in_python() -> None:
    inherits = Group(id="a", extension="10", name="A", strategy="random")
    explicit_utc = Group(id="b", extension="11", name="B", strategy="random", timezone="UTC")
    tenant = Tenant(id="t", name="T", timezone="Asia/Tokyo", groups=(inherits, explicit_utc))
    assert [g.timezone for g in tenant.groups] == ["Asia/Tokyo", "UTC"]


def test_voicemail_mailbox_defaults_to_group_id(demo: Data) -> None:
    tenant = validate_tenant(demo)
    assert tenant.group("escalation").no_answer == Voicemail(mailbox="escalation")  # type: ignore[union-attr]
    put(demo, "groups[3].no_answer.mailbox", "4711")
    assert validate_tenant(demo).groups[3].no_answer == Voicemail(mailbox="4711")
    built = Group(id="g", extension="10", name="G", strategy="random", no_answer=Voicemail())
    assert built.no_answer == Voicemail(mailbox="g")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (480, "Temporarily Unavailable"),
        (486, "Busy Here"),
        (603, "Decline"),
        (499, "Request Failure"),
    ],
)
def test_reply_reason_defaults_to_the_codes_phrase(code: int, reason: str) -> None:
    assert Reply(code=code).reason == reason


def test_reply_keeps_an_explicit_reason() -> None:
    assert Reply(code=486, reason="Alle Leitungen belegt").reason == "Alle Leitungen belegt"


def test_canonical_members_order() -> None:
    g = Group(
        id="g",
        extension="10",
        name="G",
        strategy="priority",
        members=(
            Member(agent="c", tier=2),
            Member(agent="b", position=1),
            Member(agent="a", position=1),
            Member(agent="d", position=0),
            Member(agent="e", tier=0, position=9),
        ),
    )
    assert [m.agent for m in g.canonical_members()] == ["e", "d", "a", "b", "c"]
    assert [m.agent for m in g.members] == ["c", "b", "a", "d", "e"]  # file order is kept


# --- one rule at a time: (where to change the demo, new value, part of the message) ------------


def rule(path: str, value: object, message: str, location: str = "", *, id: str = "") -> Any:
    """A parameter set for test_rule; the error is expected at `path` unless `location` says."""
    return pytest.param(path, value, message, location or path, id=id or f"{path}={value!r}")


RULES = [
    # ids
    rule("id", "-demo", "pattern"),
    rule("id", "a" * 65, "pattern", id="id too long"),
    rule("id", "demo\n", "pattern"),
    rule(
        "agents[8]",
        {"id": "bob smith", "name": "B", "targets": {"aor": "b"}},
        "pattern",
        "agents[8].id",
        id="agent id",
    ),
    rule("groups[4].id", "ord/ers", "pattern"),
    rule("groups[0].members[1].agent", "", "pattern"),
    rule("name", "", "at least 1"),
    # members
    rule("groups[3].members[2].tier", -1, "greater than or equal to 0"),
    rule("groups[3].members[0].tier", "high", "valid integer"),
    rule("groups[2].members[0].position", -1, "greater than or equal to 0"),
    rule("groups[6].members[1].weight", 0, "greater than or equal to 1"),
    rule("groups[6].members[1].weight", 1001, "less than or equal to 1000"),
    rule("groups[3].members[2].tier", 2**31, "less than or equal to 2147483647"),
    rule("groups[2].members[0].position", 2**31, "less than or equal to 2147483647"),
    # groups
    rule("groups[0].extension", "6", "pattern"),
    rule("groups[0].extension", "123456789", "pattern"),
    rule("groups[0].extension", "6a0", "pattern"),
    rule("groups[0].extension", 600, "quote it in YAML: '600'"),
    rule("groups[1].name", "", "at least 1"),
    rule("groups[1].name", "x" * 81, "at most 80", id="group name too long"),
    rule("groups[1].name", "Sup\nport", "control characters"),
    rule("groups[1].strategy", "hunt", "'ring_all', 'random'"),
    rule("groups[1].ring_timeout", 0, "greater than or equal to 1"),
    rule("groups[1].ring_timeout", 601, "less than or equal to 600"),
    rule("groups[1].overall_timeout", 0, "greater than or equal to 1"),
    rule("groups[1].overall_timeout", 3601, "less than or equal to 3600"),
    rule("groups[1].overall_timeout", 10, "must be >= ring_timeout (20)"),
    rule("groups[1].sticky", "often", "valid boolean"),
    rule("groups[5].timezone", "Europe/Atlantis", "unknown time zone"),
    rule("groups[5].timezone", "localtime", "unknown time zone"),  # the host's zone, not IANA
    rule("timezone", "CEST", "unknown time zone"),
    rule("groups[0].members", "alice", "valid tuple"),
    # no-answer targets
    rule("groups[0].no_answer", {"uri": "sip:a@b"}, "needs a kind"),
    rule("groups[0].no_answer", {"kind": "hangup"}, "unknown kind 'hangup'"),
    rule("groups[0].no_answer.uri", "tel:+4930123456", "not a SIP URI"),
    rule("groups[0].no_answer.uri", DELETE, "missing"),
    rule("groups[2].no_answer.group", "sup port", "pattern"),
    rule("groups[2].no_answer.group", "nobody", "unknown group 'nobody'"),
    rule("groups[3].no_answer.mailbox", "", "at least 1"),
    rule("groups[1].no_answer.code", 399, "greater than or equal to 400"),
    rule("groups[1].no_answer.code", 700, "less than or equal to 699"),
    rule(
        "groups[1].no_answer",
        {"kind": "reply", "code": "busy"},
        "valid integer",
        "groups[1].no_answer.code",
        id="reply code text, no reason",
    ),
    rule("groups[1].no_answer.reason", "Busy\r\nX-Evil: 1", "control characters"),
    # agents and their targets
    rule("agents[0].targets", {}, "needs an aor or at least one uri"),
    rule("agents[0].targets", {"uris": []}, "needs an aor or at least one uri"),
    rule("agents[0].targets.aor", "alice@example.com", "pattern"),
    rule(
        "agents[0].targets",
        {"uris": ["sip:a@b", "alice"]},
        "not a SIP URI",
        "agents[0].targets.uris[1]",
    ),
    rule(
        "agents[0].targets",
        {"uris": ["sip:a@b", "sip:a@b"]},
        "duplicate uri 'sip:a@b'",
        "agents[0].targets.uris[1]",
    ),
    rule("agents[3].max_calls", 0, "greater than or equal to 1"),
    rule("agents[3].max_calls", 101, "less than or equal to 100"),
    rule("agents[2].wrapup", -1, "greater than or equal to 0"),
    rule("agents[2].wrapup", 3601, "less than or equal to 3600"),
    rule("agents[2].state", "busy", "'available', 'paused' or 'logged_out'"),
    rule("agents[2].pause_reason", "lunch", "only allowed when state is 'paused'"),
    rule("agents[5].auto_pause_after", 101, "less than or equal to 100"),
    rule("agents[4].name", DELETE, "missing"),
    rule("events_maxlen", 0, "greater than or equal to 1"),
    # inbound rules (cross-rule checks: tests/model/test_inbound_matching.py)
    rule("inbound[1].did", "12a", "pattern"),
    rule("inbound[1].did", "+1", "pattern", id="did too short"),
    rule("inbound[1].did", "+" + "1" * 21, "pattern", id="did too long"),
    rule("inbound[1].did", 493012345600, "quote it in YAML"),
    rule("inbound[1].did", "600", "ambiguous: '600' is also the extension of group 'sales'"),
    rule("inbound[1].target.group", "nobody", "unknown group 'nobody'"),
    rule("inbound[1].target.group", "no body", "pattern"),
    rule("inbound[1].target", {"kind": "hangup"}, "unknown kind 'hangup'"),
    rule("inbound[1].target", {"group": "sales"}, "needs a kind"),
    rule(
        "inbound[1].target",
        {"kind": "forward", "uri": "tel:+4930"},
        "not a SIP URI",
        "inbound[1].target.uri",
        id="inbound forward uri",
    ),
    rule("inbound[1].target", DELETE, "missing"),
    rule("inbound[2].target.mailbox", "", "at least 1"),
    rule("inbound[0].caller_prefixes", [], "leave it out for any caller"),
    rule("inbound[0].caller_prefixes[1]", "+4940123", "duplicate prefix '+4940123'"),
    rule("inbound[0].caller_prefixes[0]", 4940123, "quote it in YAML"),
    rule("inbound[0].caller_prefixes[0]", "+49 40", "pattern"),
    rule("inbound[1].schedule", [], "leave it out for always"),
    rule("inbound[1].schedule[0].days", [], "at least one day"),
    rule("inbound[1].schedule[0].days[5]", "tue", "duplicate day 'tue'"),
    rule("inbound[1].schedule[0].days[0]", "monday", "'mon', 'tue', 'wed'"),
    rule("inbound[1].schedule[0].start", "8:00", "pattern"),
    rule("inbound[1].schedule[0].start", "24:00", "pattern"),
    rule("inbound[1].schedule[0].start", 480, "quote it in YAML: '08:00'"),
    rule("inbound[1].schedule[0].end", "18:60", "pattern"),
    rule("inbound[1].schedule[0].end", "24:01", "pattern"),
    rule("inbound[1].schedule[0].end", 1080, "quote it in YAML: '18:00'"),
    rule("inbound[1].schedule[0].end", "08:00", "must differ from start"),
    rule("inbound[1].schedule[0].end", DELETE, "missing"),
    rule("inbound", {"did": "+49"}, "valid tuple"),
    # unknown fields, named by their location
    rule("colour", "red", "unknown field"),
    rule("agents[1].email", "bob@example.com", "unknown field"),
    rule("agents[1].targets.contact", "x", "unknown field"),
    rule("groups[0].members[0].prio", 1, "unknown field"),
    rule("groups[0].no_answer.delay", 1, "unknown field"),
    rule("groups[0].ringtimeout", 30, "unknown field"),
    rule("inbound[1].priority", 1, "unknown field"),
    rule("inbound[1].schedule[0].from", "08:00", "unknown field"),
    rule("inbound[1].target.delay", 1, "unknown field"),
]


@pytest.mark.parametrize(("path", "value", "message", "location"), RULES)
def test_rule(demo: Data, path: str, value: object, message: str, location: str) -> None:
    found = problems(put(demo, path, value))
    assert found == [(location, found[0][1])], found
    assert message in found[0][1]


# --- tenant-wide rules -------------------------------------------------------------------------


def test_pause_reason_allowed_when_paused(demo: Data) -> None:
    put(demo, "agents[2].state", "paused")
    put(demo, "agents[2].pause_reason", "lunch")
    assert validate_tenant(demo).agents[2].pause_reason == "lunch"


def test_duplicate_member_in_a_group(demo: Data) -> None:
    demo["groups"][0]["members"].append({"agent": "alice", "tier": 2})
    assert problems(demo) == [
        ("groups[0].members[3].agent", "agent 'alice' is already a member (members[0])")
    ]


def test_duplicate_agent_id(demo: Data) -> None:
    put(demo, "agents[6].id", "bob")
    found = problems(demo)
    # grace's memberships now point at an agent that no longer exists
    assert found[0] == ("agents[6].id", "duplicate agent id 'bob' (also agents[1])")
    assert {loc for loc, msg in found[1:] if "unknown agent 'grace'" in msg} == {
        "groups[3].members[2].agent",
        "groups[4].members[2].agent",
        "groups[7].members[0].agent",
    }


def test_duplicate_group_id(demo: Data) -> None:
    put(demo, "groups[5].id", "sales")
    assert problems(demo) == [("groups[5].id", "duplicate group id 'sales' (also groups[0])")]


def test_duplicate_extension(demo: Data) -> None:
    put(demo, "groups[7].extension", "601")
    assert problems(demo) == [
        ("groups[7].extension", "duplicate group extension '601' (also groups[1])")
    ]


def test_unknown_member_agent(demo: Data) -> None:
    put(demo, "groups[1].members[0].agent", "x")
    assert problems(demo) == [("groups[1].members[0].agent", "unknown agent 'x'")]


@pytest.mark.parametrize(
    ("overflows", "expected"),
    [
        ({"a": "a"}, [("groups[0].no_answer.group", "overflow cycle a -> a")]),
        ({"a": "b", "b": "a"}, [("groups[0].no_answer.group", "overflow cycle a -> b -> a")]),
        # reported at the cycle's first group in the file, whichever group it was reached from
        (
            {"a": "c", "c": "d", "d": "b", "b": "c"},
            [("groups[1].no_answer.group", "overflow cycle b -> c -> d -> b")],
        ),
        (
            {"a": "b", "b": "a", "c": "d", "d": "c"},
            [
                ("groups[0].no_answer.group", "overflow cycle a -> b -> a"),
                ("groups[2].no_answer.group", "overflow cycle c -> d -> c"),
            ],
        ),
        ({"a": "b", "b": "c", "d": "c"}, []),  # chains that end are fine
    ],
)
def test_overflow_cycles(overflows: dict[str, str], expected: list[tuple[str, str]]) -> None:
    data = {
        "id": "t",
        "name": "T",
        "groups": [
            group(
                gid,
                f"1{n}",
                **(
                    {"no_answer": {"kind": "group", "group": overflows[gid]}}
                    if gid in overflows
                    else {}
                ),
            )
            for n, gid in enumerate("abcd")
        ],
    }
    if expected:
        assert problems(data) == expected
    else:
        validate_tenant(data)


def test_invalid_tenant_timezone_is_reported_once(demo: Data) -> None:
    put(demo, "timezone", "Mars/Olympus")
    assert locations(demo) == ["timezone"]


# --- many problems at once ---------------------------------------------------------------------


def test_all_problems_are_reported_together_in_file_order(demo: Data) -> None:
    put(demo, "groups[1].ring_timeout", 900)  # field error
    put(demo, "groups[1].members[0].agent", "x")  # reference error in the same file
    put(demo, "groups[0].no_answer.uri", "sip:")  # field error in another group
    put(demo, "groups[6].extension", "600")  # duplicate
    put(demo, "agents[4].wrapup", -5)  # agent field error
    put(demo, "agents[7].id", "alice")  # duplicate id
    put(demo, "groups[7].no_answer", {"kind": "group", "group": "onboarding"})  # cycle
    put(demo, "colour", "red")  # unknown top-level field
    found = problems(demo)
    assert [loc for loc, _ in found] == [
        "agents[4].wrapup",
        "agents[7].id",
        "groups[0].no_answer.uri",
        "groups[1].ring_timeout",
        "groups[1].members[0].agent",
        "groups[3].members[3].agent",  # heidi's id is now a second "alice"
        "groups[5].members[2].agent",
        "groups[6].extension",
        "groups[7].members[1].agent",
        "groups[7].no_answer.group",
        "colour",
    ]
    message = str(ConfigError(found))
    assert (
        message.splitlines()[0]
        == "agents[4].wrapup: Input should be greater than or equal to 0 (got -5)"
    )
    assert "groups[1].members[0].agent: unknown agent 'x'" in message.splitlines()
    assert (
        "groups[7].no_answer.group: overflow cycle onboarding -> onboarding" in message.splitlines()
    )


def test_problems_inside_one_agent_are_all_reported(demo: Data) -> None:
    demo["agents"][0] = {
        "id": "alice",
        "name": "",
        "targets": {"aor": "a b"},
        "max_calls": 0,
        "x": 1,
    }
    assert locations(demo) == [
        "agents[0].name",
        "agents[0].targets.aor",
        "agents[0].max_calls",
        "agents[0].x",
    ]


def test_top_level_must_be_a_mapping() -> None:
    assert problems(["not", "a", "tenant"])[0][0] == ""


# --- ConfigError and locations -----------------------------------------------------------------


def test_config_error_str() -> None:
    error = ConfigError([("groups[1].members[0].agent", "unknown agent 'x'"), ("", "whole file")])
    assert str(error) == "groups[1].members[0].agent: unknown agent 'x'\nwhole file"
    assert str(error.with_source("t.yaml")) == (
        "t.yaml: groups[1].members[0].agent: unknown agent 'x'\nt.yaml: whole file"
    )
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("loc", "text"),
    [
        ((), ""),
        (("id",), "id"),
        (("groups", 1, "ring_timeout"), "groups[1].ring_timeout"),
        (("groups", 0, "no_answer", "forward", "uri"), "groups[0].no_answer.uri"),
        (("groups", 0, "no_answer", "group", "group"), "groups[0].no_answer.group"),
        (("agents", 2, "targets", "uris", 3), "agents[2].targets.uris[3]"),
    ],
)
def test_format_location(loc: tuple[str | int, ...], text: str) -> None:
    assert format_location(loc) == text


def test_direct_construction_raises_pydantic_errors_naming_the_problem() -> None:
    with pytest.raises(ValidationError, match="unknown agent 'ghost'"):
        Tenant(
            id="t",
            name="T",
            groups=(
                Group(
                    id="g",
                    extension="10",
                    name="G",
                    strategy="random",
                    members=(Member(agent="ghost"),),
                ),
            ),
        )


# --- SIP URIs ----------------------------------------------------------------------------------

GOOD_URIS = [
    "sip:+4930123456@pstn.example.net",
    "sips:alice@example.com",
    "SIP:alice@Example.COM",
    "sip:example.com",
    "sip:alice@192.0.2.10:5060",
    "sip:alice@[2001:db8::1]:5061",
    "sip:alice:secret@example.com;transport=tcp;lr",
    "sip:alice@example.com?subject=hi",
    "sip:%61lice@example.com",
]
BAD_URIS = [
    "",
    "alice@example.com",
    "tel:+4930123456",
    "http://example.com",
    "sip:",
    "sip:alice@",
    "sip:@example.com",
    "sip:alice@exa mple.com",
    "sip:alice@example.com:0",
    "sip:alice@example.com:70000",
    "sip:alice@-example.com",
    "sip:alice@example..com",
    "sip:alice@[2001:db8::zz]",
    "sip:alice@300.1.1.1",
    "sip:a@b@c",
    "sip:alice@example.com\r\nVia: evil",
    " sip:alice@example.com",
]


@pytest.mark.parametrize("uri", GOOD_URIS)
def test_good_sip_uris(uri: str) -> None:
    assert Forward(uri=uri).uri == uri
    assert AgentTargets(uris=(uri,)).uris == (uri,)


@pytest.mark.parametrize("uri", BAD_URIS)
def test_bad_sip_uris(uri: str) -> None:
    with pytest.raises(ValidationError, match="not a SIP URI"):
        Forward(uri=uri)


def test_overflow_is_a_no_answer_kind() -> None:
    assert Overflow(group="support").kind == "group"


# --- queues ------------------------------------------------------------------------------------


def queued(**queue: Any) -> Data:
    return {
        "id": "t",
        "name": "T",
        "agents": [{"id": "a", "name": "A", "targets": {"aor": "a"}}],
        "groups": [group("q", "10", members=[{"agent": "a"}], queue=queue)],
    }


def test_queue_defaults_and_overflow_falls_back_to_no_answer() -> None:
    tenant = validate_tenant(queued())
    q = tenant.groups[0]
    assert q.queued and q.queue is not None
    assert (q.queue.max_length, q.queue.max_wait, q.queue.language) == (20, 120, "de")
    assert all(q.overflow_target(case) == q.no_answer for case in ("full", "timeout", "no_agents"))
    assert not validate_tenant(queued(enabled=False)).groups[0].queued
    assert not Group(id="g", extension="10", name="g", strategy="ring_all").queued


def test_queue_overflow_voicemail_gets_the_groups_mailbox() -> None:
    tenant = validate_tenant(queued(overflow={"timeout": {"kind": "voicemail"}}))
    assert tenant.groups[0].overflow_target("timeout") == Voicemail(mailbox="q")


@pytest.mark.parametrize(
    ("queue", "location", "message"),
    [
        ({"max_wait": 181}, "groups[0].queue.max_wait", "less than or equal to 180"),
        ({"max_wait": 170}, "groups[0].queue.max_wait", "must be at most 180 s"),
        ({"max_length": 0}, "groups[0].queue.max_length", "greater than or equal to 1"),
        ({"music": "none"}, "groups[0].queue.music", "needs music on hold"),
        ({"greeting": "bad id!"}, "groups[0].queue.greeting", "should match pattern"),
        ({"announce_interval": 5}, "groups[0].queue.announce_interval", "at least 10"),
        ({"language": "fr"}, "groups[0].queue.language", "'de' or 'en'"),
        (
            {
                "priority_callers": [
                    {"prefix": "+49", "priority": 1},
                    {"prefix": "+49", "priority": 2},
                ]
            },
            "groups[0].queue.priority_callers[1].prefix",
            "duplicate prefix '+49'",
        ),
        (
            {"priority_callers": [{"prefix": "+49", "priority": 10}]},
            "groups[0].queue.priority_callers[0].priority",
            "less than or equal to 9",
        ),
        (
            {"overflow": {"full": {"kind": "group", "group": "nope"}}},
            "groups[0].queue.overflow.full.group",
            "unknown group 'nope'",
        ),
        (
            {"overflow": {"later": {"kind": "voicemail"}}},
            "groups[0].queue.overflow.later",
            "unknown field",
        ),
    ],
)
def test_queue_problems_name_the_field(queue: Data, location: str, message: str) -> None:
    found = problems(queued(**queue))
    assert any(loc == location and message in text for loc, text in found), found


def test_a_cycle_through_a_queue_overflow_is_refused() -> None:
    data = {
        "id": "t",
        "name": "T",
        "groups": [
            group("a", "10", queue={"overflow": {"full": {"kind": "group", "group": "b"}}}),
            group("b", "11", no_answer={"kind": "group", "group": "a"}),
        ],
    }
    assert problems(data) == [("groups[0].queue.overflow.full.group", "overflow cycle a -> b -> a")]


def test_priority_is_the_longest_matching_prefix() -> None:
    tenant = validate_tenant(
        queued(
            priority_callers=[{"prefix": "+49", "priority": 1}, {"prefix": "+4930", "priority": 5}]
        )
    )
    queue = tenant.groups[0].queue
    assert queue is not None
    assert [queue.priority_of(c) for c in ("+4930123", "+4989", "+1555", "")] == [5, 1, 0, 0]
