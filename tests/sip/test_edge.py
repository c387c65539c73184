"""dispatcher.sip.edge without Kamailio: the defines REQINIT reads, the trusted networks, the
scanner User-Agents of kamailio.cfg, and the failed-authentication counting on a fake htable
that behaves as Kamailio 5.6's does (test_edge_kamailio.py runs the same on the real one)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dispatcher.sip import edge
from dispatcher.sip.edge import (
    AUTH_FAILURE_CODES,
    AUTH_TABLE,
    AuthLimits,
    EdgeRules,
    auth_blocked,
    auth_failed,
    define,
    parse_networks,
    scanner_pattern,
)

KAMAILIO_CFG = Path(__file__).resolve().parents[2] / "kamailio" / "kamailio.cfg"


def cfg_default(name: str) -> str:
    """The value kamailio.cfg gives `name` when no -A sets it, as written (quotes and all)."""
    found = re.search(rf"^#!define {name} (.+)$", KAMAILIO_CFG.read_text(), re.MULTILINE)
    assert found, f"kamailio.cfg has no #!define {name}"
    return found.group(1).strip()


class Clock:
    """Whole seconds, as htable's time(NULL); tests move it."""

    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        return self.now


class FakeHtable:
    """The htable KEMI functions edge.py calls, as Kamailio 5.6 behaves (observed):

    a missing item reads as the table's initval; sht_inc creates an item from initval and,
    like every write, sets its expiry to the table's autoexpire; sht_setex / sht_setxi give
    an item its own expiry; an item whose expiry is past reads as missing (htable checks on
    read: expired when expire < now, in whole seconds).
    """

    def __init__(self, clock: Clock, autoexpire: int = 86_400, initval: int = 0) -> None:
        self.clock = clock
        self.autoexpire = autoexpire
        self.initval = initval
        self.items: dict[tuple[str, str], tuple[int, int]] = {}  # -> (value, expire)

    def _live(self, table: str, key: str) -> tuple[int, int] | None:
        item = self.items.get((table, key))
        if item is not None and item[1] < self.clock():
            del self.items[(table, key)]
            return None
        return item

    def sht_get(self, table: str, key: str) -> int:
        item = self._live(table, key)
        return self.initval if item is None else item[0]

    def sht_inc(self, table: str, key: str) -> int:
        item = self._live(table, key)
        value = (self.initval if item is None else item[0]) + 1
        self.items[(table, key)] = (value, self.clock() + self.autoexpire)
        return value

    def sht_setxi(self, table: str, key: str, value: int, expire_s: int) -> int:
        self.items[(table, key)] = (value, self.clock() + expire_s)
        return 0

    def sht_setex(self, table: str, key: str, expire_s: int) -> int:
        item = self._live(table, key)
        if item is not None:
            self.items[(table, key)] = (item[0], self.clock() + expire_s)
        return 1

    def sht_rm(self, table: str, key: str) -> int:
        self.items.pop((table, key), None)
        return 1


class FakePv:
    def __init__(self, defines: dict[str, str]) -> None:
        self.defines = defines

    def get(self, name: str) -> Any:
        found = re.fullmatch(r"\$def\((\w+)\)", name)
        assert found, f"only $def is faked, not {name}"
        return self.defines.get(found.group(1))


class FakeKsr:
    def __init__(self, defines: dict[str, str] | None = None) -> None:
        self.clock = Clock()
        self.htable = FakeHtable(self.clock)
        self.pv = FakePv(defines or {})


LIMITS = AuthLimits(source=5, user=3, window_s=60, ban_s=30)


# -- defines and REQINIT's rules ------------------------------------------------------------


def test_define_strips_the_quotes_of_a_string_define() -> None:
    ksr = FakeKsr({"PIKE_TRUSTED": '"127.0.0.0/8"', "IPBAN_S": "300"})

    assert define(ksr, "PIKE_TRUSTED") == "127.0.0.0/8"
    assert define(ksr, "IPBAN_S") == "300"
    with pytest.raises(KeyError, match="NOPE"):
        define(ksr, "NOPE")


EDGE_DEFINES = (
    "PIKE_TRUSTED", "IPBAN_S", "SCANNER_UA", "MAX_MSG_SIZE", "DMQ_PORT", "DMQ_PEERS", "SIP_PORT",
)  # fmt: skip


def test_edge_rules_from_the_cfg_defaults() -> None:
    rules = EdgeRules.from_defines(FakeKsr({name: cfg_default(name) for name in EDGE_DEFINES}))

    assert rules.ipban_s == 300
    assert rules.max_msg_size == 8192
    assert rules.trusted == parse_networks("127.0.0.0/8")
    # every test runs on 127.0.0.0/8: none of their traffic is rate-limited by default
    assert rules.is_trusted("127.0.0.1") and rules.is_trusted("127.201.3.4")
    assert not rules.is_trusted("192.0.2.10") and not rules.is_trusted("::1")
    # KDMQ (replicated registrations) only on the DMQ port and from the peers' networks
    assert rules.dmq_port == 5062
    assert rules.is_dmq_peer(5062, "127.0.0.2")
    assert not rules.is_dmq_peer(5060, "127.0.0.2")
    assert not rules.is_dmq_peer(5062, "192.0.2.10")


def test_a_dmq_port_that_is_the_sip_port_is_refused() -> None:
    defines = {name: cfg_default(name) for name in EDGE_DEFINES} | {"DMQ_PORT": "5060"}

    with pytest.raises(ValueError, match="DMQ_PORT 5060 is SIP_PORT"):
        EdgeRules.from_defines(FakeKsr(defines))


def test_auth_limits_from_the_cfg_defaults() -> None:
    names = ("AUTH_FAIL_LIMIT_SRC", "AUTH_FAIL_LIMIT_USER", "AUTH_FAIL_WINDOW_S", "AUTH_BAN_S")
    limits = AuthLimits.from_defines(FakeKsr({name: cfg_default(name) for name in names}))

    assert limits == AuthLimits(source=20, user=5, window_s=600, ban_s=600)


def test_parse_networks() -> None:
    networks = parse_networks(" 192.0.2.7, 10.0.0.0/8,2001:db8::/32 ,")

    assert [str(n) for n in networks] == ["192.0.2.7/32", "10.0.0.0/8", "2001:db8::/32"]
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match=re.escape("'10.0.0.300'")):
        parse_networks("127.0.0.1, 10.0.0.300")


def test_is_trusted_ipv6_and_an_empty_list() -> None:
    rules = EdgeRules(parse_networks("2001:db8::/32"), 300, None, 8192)

    assert rules.is_trusted("2001:db8::1")
    assert not rules.is_trusted("2001:db9::1") and not rules.is_trusted("127.0.0.1")
    assert not EdgeRules((), 300, None, 8192).is_trusted("127.0.0.1")


def test_a_flood_from_many_sources_keeps_the_address_cache_bounded() -> None:
    rules = EdgeRules(parse_networks("10.0.0.0/8"), 300, None, 8192)
    count = edge.ADDRESS_CACHE + 1000

    trusted = [
        rules.is_trusted(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}") for i in range(count)
    ]

    assert all(trusted)
    assert edge._address.cache_info().currsize <= edge.ADDRESS_CACHE
    # what the cache holds is the answer, also for one it has seen and one that is no address
    assert rules.is_trusted("10.0.0.1") and rules.is_trusted("10.0.0.1")
    assert not rules.is_trusted("nonsense") and not rules.is_trusted("nonsense")


SCANNERS = [
    "friendly-scanner",
    "Friendly-Scanner 1.0",
    "sipvicious 0.3.3",
    "sipcli/v1.8",
    "sip-scan",
    "VaxSIPUserAgent/3.1",
    "iWar",
    "SIPBomber 1.0",
    "friendly-request",
]
NOT_SCANNERS = [
    None,
    "",
    "SIPp register",
    "Linphone/5.2.0 (belle-sip/5.2.0)",
    "Yealink SIP-T46S 66.86.0.15",
    "Asterisk PBX 20.5.0",
    "dispatcher",
]


@pytest.mark.parametrize("user_agent", SCANNERS)
def test_the_cfg_scanner_regex_knows_the_scanners(user_agent: str) -> None:
    rules = EdgeRules((), 300, scanner_pattern(cfg_default("SCANNER_UA").strip('"')), 8192)

    assert rules.is_scanner(user_agent)


@pytest.mark.parametrize("user_agent", NOT_SCANNERS)
def test_the_cfg_scanner_regex_leaves_phones_alone(user_agent: str | None) -> None:
    rules = EdgeRules((), 300, scanner_pattern(cfg_default("SCANNER_UA").strip('"')), 8192)

    assert not rules.is_scanner(user_agent)


def test_a_scanner_varying_its_user_agent_is_still_found_and_the_cache_stays_bounded() -> None:
    rules = EdgeRules((), 300, scanner_pattern(cfg_default("SCANNER_UA").strip('"')), 8192)
    count = edge.USER_AGENT_CACHE + 500

    assert all(rules.is_scanner(f"friendly-scanner {i}") for i in range(count))
    assert not rules.is_scanner("SIPp register") and not rules.is_scanner("SIPp register")
    assert edge._is_scanner.cache_info().currsize <= edge.USER_AGENT_CACHE


def test_an_empty_scanner_regex_turns_the_check_off() -> None:
    assert scanner_pattern("") is None
    assert not EdgeRules((), 300, None, 8192).is_scanner("friendly-scanner")


# -- failed authentications -----------------------------------------------------------------


def test_the_failure_codes_are_those_of_wrong_credentials() -> None:
    # auth module (api.h): -2 invalid password, -3 unknown user, -8 auth user mismatch;
    # not -4 stale nonce, -5 no credentials (the challenge), -6 nonce reused
    assert sorted(AUTH_FAILURE_CODES) == [-8, -3, -2]


def test_a_user_is_blocked_at_its_limit_and_only_that_user() -> None:
    ksr = FakeKsr()

    assert [auth_failed(ksr, "192.0.2.1", "alice", LIMITS) for _ in range(3)] == [
        False,
        False,
        True,
    ]

    assert auth_blocked(ksr, "192.0.2.99", "alice")  # from anywhere
    assert not auth_blocked(ksr, "192.0.2.1", "bob")  # the source is below its limit of 5


def test_a_source_is_blocked_at_its_limit_whatever_the_users() -> None:
    ksr = FakeKsr()
    for user in ("u1", "u2", "u3", "u4"):
        assert not auth_failed(ksr, "192.0.2.1", user, LIMITS)

    assert auth_failed(ksr, "192.0.2.1", "u5", LIMITS)

    assert auth_blocked(ksr, "192.0.2.1", "anyone")
    assert auth_blocked(ksr, "192.0.2.1", None)
    assert not auth_blocked(ksr, "192.0.2.2", "u1")


def test_a_ban_ends_after_ban_s_and_the_count_starts_again() -> None:
    ksr = FakeKsr()
    for _ in range(3):
        auth_failed(ksr, "192.0.2.1", "alice", LIMITS)

    ksr.clock.now += LIMITS.ban_s
    assert auth_blocked(ksr, None, "alice")  # htable: expired only once expire < now
    ksr.clock.now += 1
    assert not auth_blocked(ksr, None, "alice")
    # the full allowance again: two more failures do not block alice (from another source:
    # 192.0.2.1's own count, 3 of 5, is still within its window)
    assert not auth_failed(ksr, "192.0.2.2", "alice", LIMITS)
    assert not auth_failed(ksr, "192.0.2.2", "alice", LIMITS)
    assert not auth_blocked(ksr, "192.0.2.2", "alice")


def test_failures_further_apart_than_the_window_never_add_up() -> None:
    ksr = FakeKsr()
    for _ in range(10):
        assert not auth_failed(ksr, "192.0.2.1", "alice", LIMITS)
        ksr.clock.now += LIMITS.window_s + 1

    assert not auth_blocked(ksr, "192.0.2.1", "alice")


def test_each_failure_restarts_the_window() -> None:
    """sht_inc resets an item's expiry to the table's autoexpire: auth_failed sets the
    window again after it, so counts live window_s after their last failure, not a day."""
    ksr = FakeKsr()
    auth_failed(ksr, "192.0.2.1", "alice", LIMITS)
    ksr.clock.now += LIMITS.window_s
    auth_failed(ksr, "192.0.2.1", "alice", LIMITS)  # within the window of the first

    ksr.clock.now += LIMITS.window_s
    assert auth_failed(ksr, "192.0.2.1", "alice", LIMITS)  # within the window of the second

    ksr.clock.now += LIMITS.ban_s + 1
    auth_failed(ksr, "192.0.2.1", "bob", LIMITS)
    ksr.clock.now += LIMITS.window_s + 1
    assert ksr.htable.sht_get(AUTH_TABLE, "fail:user:bob") == 0


def test_no_source_counts_the_user_alone() -> None:
    """A trusted SBC's address stands for many users: the auth code passes source_ip=None."""
    ksr = FakeKsr()
    for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
        auth_failed(ksr, None, user, LIMITS)

    assert not auth_blocked(ksr, "192.0.2.1", "u7")
    assert all(key.startswith("fail:user:") for _, key in ksr.htable.items)


def test_limits_default_to_the_defines() -> None:
    ksr = FakeKsr(
        {
            "AUTH_FAIL_LIMIT_SRC": "9",
            "AUTH_FAIL_LIMIT_USER": "1",
            "AUTH_FAIL_WINDOW_S": "60",
            "AUTH_BAN_S": "5",
        }
    )

    assert auth_failed(ksr, "192.0.2.1", "alice")
    assert auth_blocked(ksr, "192.0.2.1", "alice")
    ksr.clock.now += 6
    assert not auth_blocked(ksr, "192.0.2.1", "alice")
