"""dispatcher.state.store.pack_fcall without a server: the bytes of an FCALL whose common keys
were packed once are the bytes hiredis packs whole."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest

from dispatcher.state.keys import TenantKeys
from dispatcher.state.store import bulk_strings, pack_fcall

KEYS = TenantKeys("acme")


def whole(function: str, keys: list[str], args: list[Any]) -> bytes:
    return hiredis.pack_command(("FCALL", function, len(keys), *keys, *args))


@pytest.mark.parametrize(
    ("function", "keys", "args"),
    [
        # the routing's three, as the store sends them
        ("disp_claim", [*KEYS.base, KEYS.group("g1"), KEYS.call("c1")],
         ["c1", "g1", "", 30000, 1, "busy", "", 0, "a1", "", "a2"]),
        ("disp_answered", [*KEYS.base, KEYS.call("c1"), KEYS.ended("c1")],
         ["c1", "g1", "a1", "+4930123", "", "node-1"]),
        ("disp_release", [*KEYS.base], ["c1", "answered"]),
        # non-ASCII text, floats and bytes pack as hiredis packs them
        ("disp_x", [*KEYS.base, "{t:acme}:é"], ["ünï", 2.5, b"\x00\xff", -7]),
        # keys that do not start with the common ones: packed whole
        ("disp_x", [KEYS.config], ["1"]),
        ("disp_x", [*KEYS.base[1:], KEYS.config], []),
        ("disp_x", [*TenantKeys("other").base], []),
        ("disp_x", [], []),
    ],
)  # fmt: skip
def test_packed_like_hiredis(function: str, keys: list[str], args: list[Any]) -> None:
    packed = pack_fcall(function, keys, args, KEYS.base, bulk_strings(KEYS.base))

    assert packed == whole(function, keys, args)


def test_bulk_strings_are_the_arguments_without_the_header() -> None:
    assert bulk_strings(["a", "bc"]) == b"$1\r\na\r\n$2\r\nbc\r\n"
    assert bulk_strings([]) == b""
