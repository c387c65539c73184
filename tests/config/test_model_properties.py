"""Property tests over generated valid tenants: file and Redis round trips, canonical order."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.config.model import (
    AOR_PATTERN,
    CALLER_PREFIX_PATTERN,
    DID_PATTERN,
    END_TIME_PATTERN,
    ID_PATTERN,
    START_TIME_PATTERN,
    STRATEGY_NAMES,
    WEEKDAYS,
    Tenant,
    validate_tenant,
)
from dispatcher.config.tenant_file import dump_tenant, parse_tenant, tenant_doc

ids = st.from_regex(ID_PATTERN.removesuffix("$") + r"\Z", fullmatch=True)
# Any text but control characters (which the model refuses): exercises YAML quoting and
# escaping of odd strings ("null", "0x1F", "- x", emoji, U+FEFF, U+2028, ...).
texts = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=80)
hosts = st.sampled_from(["example.com", "pstn.example.net", "192.0.2.7", "[2001:db8::5]", "h"])
sip_uris = st.builds(
    lambda scheme, user, host, port: f"{scheme}:{user}@{host}{port}",
    st.sampled_from(["sip", "sips"]),
    st.from_regex(r"[A-Za-z0-9+._-]{1,12}", fullmatch=True),
    hosts,
    st.sampled_from(["", ":5060", ":5061;transport=tls"]),
)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])


@st.composite
def agents(draw: st.DrawFn, agent_id: str) -> dict[str, Any]:
    """One valid agent as raw data."""
    targets: dict[str, Any] = {}
    if draw(st.booleans()):
        targets["aor"] = draw(st.from_regex(AOR_PATTERN.removesuffix("$") + r"\Z", fullmatch=True))
    uris = draw(st.lists(sip_uris, unique=True, max_size=2, min_size=0 if targets else 1))
    if uris or draw(st.booleans()):
        targets["uris"] = uris
    state = draw(st.sampled_from(["available", "paused", "logged_out"]))
    agent = {
        "id": agent_id,
        "name": draw(texts),
        "targets": targets,
        "max_calls": draw(st.integers(1, 100)),
        "wrapup": draw(st.integers(0, 3600)),
        "state": state,
        "auto_pause_after": draw(st.integers(0, 100)),
    }
    if state == "paused":
        agent["pause_reason"] = draw(st.none() | texts)
    return agent


def _pattern(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern.removesuffix("$") + r"\Z", fullmatch=True)


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    """One valid schedule window as raw data (overnight ones included)."""
    start = draw(_pattern(START_TIME_PATTERN))
    end = draw(_pattern(END_TIME_PATTERN).filter(lambda end: end != start))
    days = draw(st.lists(st.sampled_from(WEEKDAYS), unique=True, min_size=1))
    return {"days": days, "start": start, "end": end}


@st.composite
def inbound_rules(
    draw: st.DrawFn, group_ids: list[str], extensions: list[str]
) -> list[dict[str, Any]]:
    """Valid inbound rules as raw data: DIDs that are no extension, targets among the groups,
    no rule that repeats an earlier one or follows a catch-all for its DID."""
    dids = draw(
        st.lists(
            _pattern(DID_PATTERN).filter(lambda did: did not in extensions),
            unique=True,
            min_size=1,
            max_size=3,
        )
    )
    targets = [
        st.builds(lambda uri: {"kind": "forward", "uri": uri}, sip_uris),
        st.builds(lambda box: {"kind": "voicemail", "mailbox": box}, st.none() | texts),
        st.builds(
            lambda code, reason: {"kind": "reply", "code": code, "reason": reason},
            st.integers(400, 699),
            st.none() | texts,
        ),
    ]
    if group_ids:
        targets.append(
            st.builds(lambda g: {"kind": "group", "group": g}, st.sampled_from(group_ids))
        )
    rules: list[dict[str, Any]] = []
    seen: set[object] = set()
    catch_all: set[str] = set()
    for _ in range(draw(st.integers(0, 5))):
        did = draw(st.sampled_from(dids))
        prefixes = draw(
            st.none()
            | st.lists(_pattern(CALLER_PREFIX_PATTERN), unique=True, min_size=1, max_size=3)
        )
        schedule = draw(st.none() | st.lists(windows(), min_size=1, max_size=3))
        key = (
            did,
            None if prefixes is None else frozenset(prefixes),
            None
            if schedule is None
            else frozenset((frozenset(w["days"]), w["start"], w["end"]) for w in schedule),
        )
        if key in seen or did in catch_all:
            continue
        seen.add(key)
        if prefixes is None and schedule is None:
            catch_all.add(did)
        rule: dict[str, Any] = {"did": did, "target": draw(st.one_of(targets))}
        if prefixes is not None:
            rule["caller_prefixes"] = prefixes
        if schedule is not None:
            rule["schedule"] = schedule
        rules.append(rule)
    return rules


@st.composite
def tenants(draw: st.DrawFn) -> Tenant:
    """A valid tenant, built as raw data and validated."""
    agent_ids = draw(st.lists(ids, unique=True, max_size=6))
    group_ids = draw(st.lists(ids, unique=True, max_size=5))
    extensions = draw(
        st.lists(
            st.from_regex(r"[0-9]{2,8}\Z", fullmatch=True),
            unique=True,
            min_size=len(group_ids),
            max_size=len(group_ids),
        )
    )
    groups = []
    for index, (group_id, extension) in enumerate(zip(group_ids, extensions, strict=True)):
        member_ids = draw(st.lists(st.sampled_from(agent_ids), unique=True)) if agent_ids else []
        members = [
            {
                "agent": agent,
                "tier": draw(st.integers(0, 3)),
                "position": draw(st.integers(0, 3)),
                "weight": draw(st.integers(1, 1000)),
            }
            for agent in member_ids
        ]
        later_groups = group_ids[index + 1 :]  # overflow only "forward": no cycles
        no_answer = draw(
            st.one_of(
                st.builds(lambda uri: {"kind": "forward", "uri": uri}, sip_uris),
                st.builds(lambda box: {"kind": "voicemail", "mailbox": box}, st.none() | texts),
                st.builds(
                    lambda code, reason: {"kind": "reply", "code": code, "reason": reason},
                    st.integers(400, 699),
                    st.none() | texts,
                ),
                *(
                    [
                        st.builds(
                            lambda g: {"kind": "group", "group": g}, st.sampled_from(later_groups)
                        )
                    ]
                    if later_groups
                    else []
                ),
            )
        )
        ring_timeout = draw(st.integers(1, 600))
        groups.append(
            {
                "id": group_id,
                "extension": extension,
                "name": draw(texts),
                "strategy": draw(st.sampled_from(STRATEGY_NAMES)),
                "ring_timeout": ring_timeout,
                "overall_timeout": draw(st.integers(ring_timeout, 3600)),
                "sticky": draw(st.booleans()),
                "timezone": draw(st.none() | zones),
                "members": members,
                "no_answer": no_answer,
            }
        )
    return validate_tenant(
        {
            "id": draw(ids),
            "name": draw(texts),
            "timezone": draw(zones),
            "agents": [draw(agents(agent_id)) for agent_id in agent_ids],
            "groups": groups,
            "inbound": draw(inbound_rules(group_ids, extensions)),
            "events_maxlen": draw(st.integers(1, 10**9)),
        }
    )


@settings(deadline=None)
@given(tenants())
def test_json_round_trip(tenant: Tenant) -> None:
    assert parse_tenant(dump_tenant(tenant, "json"), "json") == tenant


@settings(deadline=None)
@given(tenants())
def test_yaml_round_trip(tenant: Tenant) -> None:
    assert parse_tenant(dump_tenant(tenant, "yaml"), "yaml") == tenant


@settings(deadline=None)
@given(tenants())
def test_redis_doc_round_trip(tenant: Tenant) -> None:
    doc = tenant_doc(tenant)
    assert parse_tenant(doc, "json") == tenant
    assert tenant_doc(parse_tenant(doc, "json")) == doc


@settings(deadline=None)
@given(tenants())
def test_validated_tenants_are_fully_resolved(tenant: Tenant) -> None:
    for group in tenant.groups:
        assert group.timezone
        if group.no_answer.kind == "voicemail":
            assert group.no_answer.mailbox is not None
        keys = [(m.tier, m.position, m.agent) for m in group.canonical_members()]
        assert keys == sorted(keys)
        assert sorted(group.canonical_members(), key=lambda m: m.agent) == sorted(
            group.members, key=lambda m: m.agent
        )
        assert tenant.group_by_extension(group.extension) is group
        assert tenant.group(group.id) is group
    for rule in tenant.inbound:
        if rule.target.kind == "voicemail":
            assert rule.target.mailbox is not None
        assert rule in tenant.inbound_rules(rule.did)
        assert tenant.group_by_extension(rule.did) is None
