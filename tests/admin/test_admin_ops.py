"""Admin operations as pure functions on the tenant model (no Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.admin import ops as admin_ops
from dispatcher.admin.config_sync import CONFLICT_BACKOFF_S, UPDATE_ATTEMPTS, conflict_backoff
from dispatcher.admin.ops import MemberSettings, NotFound, StillReferenced
from dispatcher.config.model import Agent, ConfigError, Group, InboundRule, Overflow
from dispatcher.config.tenant_file import load_tenant

DEMO = load_tenant(Path(__file__).resolve().parents[2] / "dispatcher" / "demo" / "demo.yaml")


def group(**fields: object) -> Group:
    base = {"id": "night", "extension": "690", "name": "Night", "strategy": "ring_all"}
    return Group.model_validate({**base, **fields})


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[tuple[str, str]]:
    return exc.value.problems


def test_upsert_appends_a_new_group_with_the_tenants_zone() -> None:
    tenant = admin_ops.upsert_group(DEMO, group(members=[{"agent": "bob"}]))
    assert [g.id for g in tenant.groups][-1] == "night"
    assert tenant.group("night").timezone == "Europe/Berlin"
    assert DEMO.group("night") is None  # the input is untouched


def test_upsert_replaces_in_place() -> None:
    sales = DEMO.group("sales").model_copy(update={"name": "Sales Team", "ring_timeout": 9})
    tenant = admin_ops.upsert_group(DEMO, sales)
    assert [g.id for g in tenant.groups] == [g.id for g in DEMO.groups]
    assert tenant.group("sales").name == "Sales Team"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"extension": "601"}, ("extension", "already the extension of group 'support'")),
        (
            {"extension": "600", "id": "sales2"},
            ("extension", "already the extension of group 'sales'"),
        ),
        ({"members": [{"agent": "ghost"}]}, ("members[0].agent", "unknown agent 'ghost'")),
        (
            {"no_answer": {"kind": "group", "group": "ghost"}},
            ("no_answer.group", "unknown group 'ghost'"),
        ),
    ],
)
def test_upsert_reports_problems_relative_to_the_group(
    fields: dict[str, object], expected: tuple[str, str]
) -> None:
    with pytest.raises(ConfigError) as exc:
        admin_ops.upsert_group(DEMO, group(**fields))
    assert expected in problems(exc)


def test_extension_that_is_a_did_is_refused() -> None:
    rules = (InboundRule.model_validate({"did": "690", "target": {"kind": "voicemail"}}),)
    tenant = admin_ops.set_inbound(DEMO, rules)
    with pytest.raises(ConfigError) as exc:
        admin_ops.upsert_group(tenant, group())
    assert problems(exc) == [("extension", "already a DID of an inbound rule (inbound[0])")]


def test_an_overflow_cycle_is_reported_on_the_group_that_closes_it() -> None:
    tenant = admin_ops.upsert_group(DEMO, group(no_answer={"kind": "group", "group": "sales"}))
    sales = tenant.group("sales").model_copy(update={"no_answer": Overflow(group="night")})
    with pytest.raises(ConfigError) as exc:
        admin_ops.upsert_group(tenant, sales)
    assert problems(exc) == [("no_answer.group", "overflow cycle sales -> night -> sales")]


def test_a_problem_at_another_item_is_reported_on_the_input_with_its_location() -> None:
    tenant = admin_ops.upsert_group(DEMO, group())
    sales = tenant.group("sales").model_copy(update={"no_answer": Overflow(group="night")})
    tenant = admin_ops.upsert_group(tenant, sales)
    night = tenant.group("night").model_copy(update={"no_answer": Overflow(group="sales")})
    with pytest.raises(ConfigError) as exc:
        admin_ops.upsert_group(tenant, night)
    assert problems(exc) == [
        ("", "groups[0].no_answer.group: overflow cycle sales -> night -> sales")
    ]


def test_remove_group() -> None:
    with pytest.raises(StillReferenced, match=r"inbound\[1\]\.target"):
        admin_ops.remove_group(DEMO, "sales")
    tenant = admin_ops.upsert_group(DEMO, group(no_answer={"kind": "group", "group": "partners"}))
    with pytest.raises(StillReferenced, match=r"groups\[8\]\.no_answer \(group 'night'\)"):
        admin_ops.remove_group(tenant, "partners")
    assert admin_ops.remove_group(tenant, "night").group("night") is None
    with pytest.raises(NotFound):
        admin_ops.remove_group(DEMO, "ghost")


def test_agents() -> None:
    zoe = Agent.model_validate({"id": "zoe", "name": "Zoe", "targets": {"aor": "zoe"}})
    tenant = admin_ops.upsert_agent(DEMO, zoe)
    assert tenant.agent("zoe") == zoe
    tenant = admin_ops.remove_agent(DEMO, "alice")
    assert tenant.agent("alice") is None
    assert all(m.agent != "alice" for g in tenant.groups for m in g.members)
    with pytest.raises(NotFound):
        admin_ops.remove_agent(DEMO, "ghost")


def test_members() -> None:
    tenant = admin_ops.set_member(DEMO, "sales", "dave", MemberSettings(tier=0, weight=3))
    dave = next(m for m in tenant.group("sales").members if m.agent == "dave")
    assert (dave.tier, dave.position, dave.weight) == (0, 0, 3)
    tenant = admin_ops.set_member(tenant, "sales", "dave", MemberSettings(tier=2))
    assert [m.agent for m in tenant.group("sales").members].count("dave") == 1
    tenant = admin_ops.remove_member(tenant, "sales", "dave")
    assert tenant.group("sales") == DEMO.group("sales")
    for call in (
        lambda: admin_ops.set_member(DEMO, "ghost", "dave", MemberSettings()),
        lambda: admin_ops.set_member(DEMO, "sales", "ghost", MemberSettings()),
        lambda: admin_ops.remove_member(DEMO, "sales", "dave"),
    ):
        with pytest.raises(NotFound):
            call()


def test_inbound_problems_are_relative_to_the_list() -> None:
    rules = [
        InboundRule.model_validate(
            {"did": "+4930999", "target": {"kind": "group", "group": "ghost"}}
        )
    ]
    with pytest.raises(ConfigError) as exc:
        admin_ops.set_inbound(DEMO, rules)
    assert problems(exc) == [("[0].target.group", "unknown group 'ghost'")]


def test_conflict_backoff_is_random_and_doubles_its_bound_per_round() -> None:
    for attempt in range(1, UPDATE_ATTEMPTS):
        waits = {conflict_backoff(attempt) for _ in range(200)}
        assert all(0 <= w <= CONFLICT_BACKOFF_S * 2**attempt for w in waits)
        assert len(waits) > 100  # writers that collided do not wait alike
    # the whole retry loop waits well under the API's request timeout
    assert sum(CONFLICT_BACKOFF_S * 2**n for n in range(1, UPDATE_ATTEMPTS)) < 2
