"""Inbound rules: matching a dialled number by schedule and caller prefix, and the checks
across rules (duplicates, rules that never match, a DID that is also an extension)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from model_helpers import locations, problems

from dispatcher.config.model import (
    ConfigError,
    InboundRule,
    Overflow,
    Reply,
    Tenant,
    TimeWindow,
    Voicemail,
    validate_tenant,
)
from dispatcher.config.tenant_file import dump_tenant, parse_tenant
from dispatcher.sip.inbound import local_time, match_inbound, window_contains

Data = dict[str, Any]

BERLIN = ZoneInfo("Europe/Berlin")
DID = "+493012345600"
WEEKEND_DID = "+493012345698"
NIGHT_DID = "+493012345699"
FALLBACK_DID = "+493012345697"
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def group(gid: str, extension: str) -> Data:
    return {"id": gid, "extension": extension, "name": gid, "strategy": "ring_all"}


TENANT = validate_tenant(
    {
        "id": "acme",
        "name": "Acme",
        "timezone": "Europe/Berlin",
        "groups": [group("sales", "600"), group("keyaccount", "601"), group("oncall", "602")],
        "inbound": [
            {
                "did": DID,
                "caller_prefixes": ["+4940123", "004940123"],
                "target": {"kind": "group", "group": "keyaccount"},
            },
            {
                "did": DID,
                "schedule": [{"days": WEEKDAYS, "start": "08:00", "end": "18:00"}],
                "target": {"kind": "group", "group": "sales"},
            },
            {"did": DID, "target": {"kind": "voicemail"}},
            {
                "did": NIGHT_DID,
                "schedule": [{"days": ["fri"], "start": "18:00", "end": "08:00"}],
                "target": {"kind": "group", "group": "oncall"},
            },
            {
                "did": WEEKEND_DID,
                "schedule": [{"days": ["sat", "sun"], "start": "08:00", "end": "18:00"}],
                "target": {"kind": "reply", "code": 480, "reason": "Weekend"},
            },
            {
                "did": FALLBACK_DID,
                "schedule": [
                    {"days": ["sun"], "start": "02:00", "end": "03:00"},
                    {"days": ["sat"], "start": "00:00", "end": "24:00"},
                ],
                "target": {"kind": "forward", "uri": "sip:+4930999@pstn.example.net"},
            },
        ],
    }
)
VIP, SALES, VOICEMAIL, NIGHT, WEEKEND, FALLBACK = TENANT.inbound


def berlin(text: str) -> int:
    """Unix ms of a local Europe/Berlin time "2026-12-02 10:00" (not on a DST change)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp() * 1000)


def utc(text: str) -> int:
    """Unix ms of a UTC time "2026-03-29 06:00"."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def match(did: str, now_ms: int, caller: str = "+4930555") -> InboundRule | None:
    return match_inbound(TENANT, did, caller, now_ms)


# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "rule"),
    [
        ("2026-12-02 10:00", SALES),  # Wednesday
        ("2026-12-02 08:00", SALES),  # start is inclusive
        ("2026-12-02 17:59:59", SALES),
        ("2026-12-02 18:00", VOICEMAIL),  # end is exclusive
        ("2026-12-02 07:59", VOICEMAIL),
        ("2026-12-02 23:30", VOICEMAIL),
        ("2026-12-04 12:00", SALES),  # Friday
        ("2026-12-05 12:00", VOICEMAIL),  # Saturday
        ("2026-12-06 12:00", VOICEMAIL),  # Sunday
        ("2026-12-07 08:00", SALES),  # Monday
    ],
)
def test_business_hours_and_after_hours(when: str, rule: InboundRule) -> None:
    assert match(DID, berlin(when)) is rule


@pytest.mark.parametrize(
    ("instant", "rule"),
    [
        # Friday before the spring change (CET, UTC+1) and Monday after it (CEST, UTC+2):
        # 08:30 local is a different UTC hour, the rule follows local time.
        ("2026-03-27 07:30", SALES),  # 08:30 CET
        ("2026-03-27 06:30", VOICEMAIL),  # 07:30 CET
        ("2026-03-30 06:30", SALES),  # 08:30 CEST
        ("2026-03-30 05:30", VOICEMAIL),  # 07:30 CEST
        ("2026-03-30 16:30", VOICEMAIL),  # 18:30 CEST (still business hours at UTC+1)
        # Friday before the autumn change and Monday after it
        ("2026-10-23 15:59", SALES),  # 17:59 CEST
        ("2026-10-23 16:00", VOICEMAIL),  # 18:00 CEST
        ("2026-10-26 16:59", SALES),  # 17:59 CET
        ("2026-10-26 17:00", VOICEMAIL),  # 18:00 CET
    ],
)
def test_business_hours_follow_daylight_saving_time(instant: str, rule: InboundRule) -> None:
    assert match(DID, utc(instant)) is rule


@pytest.mark.parametrize(
    ("instant", "matches"),
    [
        # Sunday 2026-03-29, the spring change: 02:00 CET jumps to 03:00 CEST.
        ("2026-03-29 05:59", False),  # 07:59 CEST
        ("2026-03-29 06:00", True),  # 08:00 CEST (07:00 if the zone had not moved)
        ("2026-03-29 15:59", True),  # 17:59 CEST
        ("2026-03-29 16:00", False),  # 18:00 CEST
        # Sunday 2026-10-25, the autumn change: 03:00 CEST falls back to 02:00 CET.
        ("2026-10-25 06:59", False),  # 07:59 CET
        ("2026-10-25 07:00", True),  # 08:00 CET
        ("2026-10-25 16:59", True),  # 17:59 CET
        ("2026-10-25 17:00", False),  # 18:00 CET
    ],
)
def test_weekend_hours_on_the_dst_change_days(instant: str, matches: bool) -> None:
    assert (match(WEEKEND_DID, utc(instant)) is WEEKEND) is matches


@pytest.mark.parametrize(
    ("instant", "matches"),
    [
        ("2026-10-25 00:30", True),  # 02:30 CEST
        ("2026-10-25 01:30", True),  # 02:30 CET: the hour that happens twice matches twice
        ("2026-10-25 02:00", False),  # 03:00 CET
        ("2026-03-29 00:59", False),  # 01:59 CET
        ("2026-03-29 01:00", False),  # 03:00 CEST: 02:00-03:00 does not exist that night
    ],
)
def test_a_window_in_the_hour_dst_moves(instant: str, matches: bool) -> None:
    assert (match(FALLBACK_DID, utc(instant)) is FALLBACK) is matches


@pytest.mark.parametrize(
    ("when", "matches"),
    [
        ("2026-12-04 18:00", True),  # Friday evening: opens at start, inclusive
        ("2026-12-04 23:59", True),
        ("2026-12-05 00:00", True),  # past midnight: Saturday morning belongs to Friday
        ("2026-12-05 07:59", True),
        ("2026-12-05 08:00", False),  # closes at end, exclusive
        ("2026-12-04 17:59", False),
        ("2026-12-04 07:00", False),  # Friday morning is Thursday night's, and thu is not listed
        ("2026-12-03 20:00", False),  # Thursday evening
        ("2026-12-05 20:00", False),  # Saturday evening
    ],
)
def test_overnight_window(when: str, matches: bool) -> None:
    assert (match(NIGHT_DID, berlin(when)) is NIGHT) is matches


def test_a_window_to_24_00_covers_the_whole_day() -> None:
    assert match(FALLBACK_DID, berlin("2026-12-05 00:00")) is FALLBACK
    assert match(FALLBACK_DID, berlin("2026-12-05 23:59:59")) is FALLBACK
    assert match(FALLBACK_DID, berlin("2026-12-06 00:00")) is None  # Sunday, outside 02-03


def test_window_contains_wraps_the_week() -> None:
    sunday_night = TimeWindow(days=("sun",), start="22:00", end="06:00")
    assert window_contains(sunday_night, 6, 23 * 60)  # Sunday 23:00
    assert window_contains(sunday_night, 0, 5 * 60)  # Monday 05:00
    assert not window_contains(sunday_night, 0, 23 * 60)  # Monday 23:00


def test_local_time() -> None:
    assert local_time(utc("2026-03-29 01:00"), "Europe/Berlin") == (6, 3 * 60)
    assert local_time(utc("2026-03-29 00:59"), "Europe/Berlin") == (6, 60 + 59)
    assert local_time(utc("2026-03-29 01:00"), "UTC") == (6, 60)


# --- caller prefixes and order -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "rule"),
    [
        ("+4940123555", VIP),
        ("004940123555", VIP),  # the other listed form
        ("+4940123", VIP),  # the prefix itself
        ("+4940124555", SALES),
        ("04940123555", SALES),
        ("+494012", SALES),  # shorter than the prefix
        ("", SALES),  # anonymous: no prefix matches
        ("anonymous", SALES),
    ],
)
def test_vip_prefix_listed_first_beats_business_hours(caller: str, rule: InboundRule) -> None:
    assert match(DID, berlin("2026-12-02 10:00"), caller) is rule


def test_vip_prefix_applies_after_hours_too() -> None:
    assert match(DID, berlin("2026-12-05 22:00"), "+4940123555") is VIP


def test_file_order_decides_not_specificity() -> None:
    tenant = TENANT.model_copy(update={"inbound": (SALES, VIP, VOICEMAIL)})
    tenant = validate_tenant(tenant.model_dump())
    assert match_inbound(tenant, DID, "+4940123555", berlin("2026-12-02 10:00")) == SALES
    assert match_inbound(tenant, DID, "+4940123555", berlin("2026-12-02 20:00")) == VIP


def test_no_match_is_none() -> None:
    assert match("+4930000", berlin("2026-12-02 10:00")) is None  # no rule for the number
    assert match("600", berlin("2026-12-02 10:00")) is None  # an extension is no DID
    assert match("493012345600", berlin("2026-12-02 10:00")) is None  # exact: + counts
    assert match(NIGHT_DID, berlin("2026-12-02 10:00")) is None  # rules, none matching
    empty = validate_tenant({"id": "e", "name": "E"})
    assert match_inbound(empty, DID, "+4940123", 0) is None


# --- the model ---------------------------------------------------------------------------------


def test_demo_inbound_rules(demo: Data) -> None:
    tenant = validate_tenant(demo)
    rules = tenant.inbound_rules(DID)
    assert rules == tenant.inbound and len(rules) == 3
    assert [rule.target for rule in rules] == [
        Overflow(group="escalation"),
        Overflow(group="sales"),
        Voicemail(mailbox=DID),
    ]
    assert tenant.inbound_rules("600") == ()
    monday_10 = berlin("2026-12-07 10:00")
    assert match_inbound(tenant, DID, "+4930555", monday_10) is rules[1]
    assert match_inbound(tenant, DID, "+4940123555", monday_10) is rules[0]
    assert match_inbound(tenant, DID, "+4930555", berlin("2026-12-06 10:00")) is rules[2]


def test_voicemail_mailbox_defaults_to_the_did() -> None:
    assert InboundRule(did=DID, target=Voicemail()).target == Voicemail(mailbox=DID)
    rule = InboundRule.model_validate({"did": DID, "target": {"kind": "voicemail"}})
    assert rule.target == Voicemail(mailbox=DID)
    kept = InboundRule.model_validate({"did": DID, "target": {"kind": "voicemail", "mailbox": "x"}})
    assert kept.target == Voicemail(mailbox="x")
    reply = InboundRule.model_validate({"did": DID, "target": {"kind": "reply", "code": 486}})
    assert reply.target == Reply(code=486, reason="Busy Here")


def test_round_trip_keeps_inbound_rules(demo: Data) -> None:
    tenant = validate_tenant(demo)
    for fmt in ("json", "yaml"):
        again = parse_tenant(dump_tenant(tenant, fmt), fmt)
        assert again == tenant
        assert again.inbound_rules(DID) == tenant.inbound


def test_duplicate_rule_never_matches(demo: Data) -> None:
    # same did and prefixes (in another order) as inbound[0], another target
    demo["inbound"].insert(
        1,
        {
            "did": DID,
            "caller_prefixes": ["004940123", "+4940123"],
            "target": {"kind": "group", "group": "sales"},
        },
    )
    assert problems(demo) == [
        ("inbound[1]", "never matches: same did, caller_prefixes and schedule as inbound[0]")
    ]


def test_duplicate_schedule_with_days_in_another_order(demo: Data) -> None:
    demo["inbound"].insert(
        2,
        {
            "did": DID,
            "schedule": [
                {"days": ["fri", "thu", "wed", "tue", "mon"], "start": "08:00", "end": "18:00"}
            ],
            "target": {"kind": "reply", "code": 480},
        },
    )
    assert locations(demo) == ["inbound[2]"]


def test_rule_after_a_catch_all_never_matches(demo: Data) -> None:
    demo["inbound"].append(
        {
            "did": DID,
            "schedule": [{"days": ["sat"], "start": "10:00", "end": "14:00"}],
            "target": {"kind": "group", "group": "support"},
        }
    )
    assert problems(demo) == [
        ("inbound[3]", "never matches: inbound[2] takes every call to '+493012345600'")
    ]


def test_rules_that_differ_are_valid(demo: Data) -> None:
    demo["inbound"] += [
        # another DID after the first DID's catch-all
        {"did": "+493012345601", "target": {"kind": "group", "group": "support"}},
        # one DID, two different schedules
        {
            "did": "+493012345602",
            "schedule": [{"days": ["sat"], "start": "10:00", "end": "14:00"}],
            "target": {"kind": "group", "group": "support"},
        },
        {
            "did": "+493012345602",
            "schedule": [{"days": ["sat"], "start": "10:00", "end": "15:00"}],
            "target": {"kind": "group", "group": "orders"},
        },
    ]
    assert len(validate_tenant(demo).inbound) == 6


def test_did_that_is_also_an_extension_is_ambiguous(demo: Data) -> None:
    demo["inbound"][2]["did"] = "603"
    assert problems(demo) == [
        (
            "inbound[2].did",
            "ambiguous: '603' is also the extension of group 'escalation' (groups[3])",
        )
    ]


def test_inbound_problems_are_reported_with_the_others_in_file_order(demo: Data) -> None:
    demo["groups"][1]["ring_timeout"] = 900  # field error
    demo["inbound"][0]["target"]["group"] = "nobody"  # unknown group
    demo["inbound"][1]["schedule"][0]["start"] = "25:00"  # field error
    demo["inbound"][2]["did"] = "600"  # ambiguous
    demo["agents"][0]["wrapup"] = -1  # field error
    assert locations(demo) == [
        "agents[0].wrapup",
        "groups[1].ring_timeout",
        "inbound[0].target.group",
        "inbound[1].schedule[0].start",
        "inbound[2].did",
    ]


def test_unquoted_yaml_times_and_numbers_get_a_hint() -> None:
    text = """
id: t
name: T
groups: [{id: sales, extension: "600", name: Sales, strategy: ring_all}]
inbound:
  - did: +493012345600
    caller_prefixes: [0030]
    schedule: [{days: [mon], start: 08:00, end: 18:00}]
    target: {kind: group, group: sales}
"""
    with pytest.raises(ConfigError) as info:
        parse_tenant(text, "yaml", source="t.yaml")
    hint = (
        "must be a string of digits with an optional leading +; quote it in YAML, which drops "
        "an unquoted leading + and reads a leading 0 as octal"
    )
    assert str(info.value).splitlines() == [
        f"t.yaml: inbound[0].did: {hint} (got the number 493012345600)",
        f"t.yaml: inbound[0].caller_prefixes[0]: {hint} (got the number 24)",
        "t.yaml: inbound[0].schedule[0].end: must be a string 'HH:MM'; quote it in YAML: '18:00'",
    ]


def test_tenant_lookup_is_by_exact_did() -> None:
    assert isinstance(TENANT, Tenant)
    assert TENANT.inbound_rules(DID) == (VIP, SALES, VOICEMAIL)
    assert TENANT.inbound_rules(NIGHT_DID) == (NIGHT,)
    assert TENANT.inbound_rules("+49") == ()
