"""Key names and id rules (no Redis needed)."""

from __future__ import annotations

import pytest

from dispatcher.state import TenantKeys, validate_call_id, validate_id
from dispatcher.state.keys import AGENT_COLUMNS, QUEUE_KEYS


def test_every_key_has_the_tenant_hash_tag() -> None:
    keys = TenantKeys("acme")
    names = [
        *keys.base,
        keys.group("g1"),
        keys.call("abc@host"),
        keys.ended("abc@host"),
        keys.sticky("g1", "20240131"),
    ]
    assert all(name.startswith("{t:acme}:") for name in names)
    assert keys.config == "{t:acme}:config"
    assert keys.events == "{t:acme}:events"
    assert keys.resv == "{t:acme}:resv"
    assert keys.live == "{t:acme}:live"
    assert keys.group("sales") == "{t:acme}:g:sales"
    assert keys.call("x@y") == "{t:acme}:call:x@y"
    assert keys.ended("x@y") == "{t:acme}:ended:x@y"
    assert keys.sticky("sales", "20240131") == "{t:acme}:sticky:sales:20240131"


def test_base_order_is_what_the_library_reads() -> None:
    keys = TenantKeys("t1")
    assert keys.base[:4] == (keys.config, keys.events, keys.resv, keys.live)
    assert keys.base[4:14] == tuple(f"{{t:t1}}:a:{column}" for column in AGENT_COLUMNS)
    assert keys.base[14:20] == tuple(f"{{t:t1}}:{name}" for name in QUEUE_KEYS)
    assert keys.base[20:] == (keys.lnode, keys.counts)
    assert len(keys.base) == 22


@pytest.mark.parametrize("value", ["a", "A9", "agent_1.x-y", "x" * 64])
def test_valid_ids(value: str) -> None:
    assert validate_id(value, "agent id") == value


@pytest.mark.parametrize("value", ["", "_a", "-a", ".a", "a b", "a,b", "a:b", "x" * 65, "a\n"])
def test_invalid_ids_name_the_field(value: str) -> None:
    with pytest.raises(ValueError, match="agent id"):
        validate_id(value, "agent id")


def test_tenant_and_group_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="tenant"):
        TenantKeys("bad tenant")
    with pytest.raises(ValueError, match="group id"):
        TenantKeys("t").group("g}1")


@pytest.mark.parametrize(
    "value",
    ["", "a\x1fb", "x" * 257, "é" * 129],
    ids=["empty", "separator", "257-bytes", "258-utf8-bytes"],
)
def test_invalid_call_ids(value: str) -> None:
    with pytest.raises(ValueError, match="call_id"):
        validate_call_id(value)


def test_call_id_limit_counts_bytes() -> None:
    assert validate_call_id("x" * 256)
    assert validate_call_id("é" * 128)
    assert validate_call_id("a84b4c76e66710@pc33.atlanta.example.com")


@pytest.mark.parametrize("day", ["2024131", "2024-01-31", "", "abcdefgh"])
def test_sticky_day_format(day: str) -> None:
    with pytest.raises(ValueError, match="sticky day"):
        TenantKeys("t").sticky("g1", day)
