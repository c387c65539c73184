"""Fixtures for the SIP tests: Kamailio instances and SIPp phones on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.run.sipprocs import KamailioProcess, SippProcess, sipp_uas

SCENARIOS = Path(__file__).parent / "scenarios"


@pytest.fixture
def start_kamailio(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., KamailioProcess]]:
    """Start Kamailio instances (KamailioProcess arguments); all stop after the test.

    Each gets a short folder of its own (mktemp("kam")): its Unix sockets must stay
    within the 107-byte sun_path limit. The nodes of a test on one Redis form one cluster:
    each later one joins the first one's DMQ bus (registrations), and start returns once
    the two know each other.
    """
    started: list[KamailioProcess] = []

    def start(**options: Any) -> KamailioProcess:
        options.setdefault("children", 2)
        first = next(
            (
                k
                for k in started
                if k.shared_registrations
                and options.get("shared_registrations", True)
                and k.redis_url == options.get("redis_url")
                and k.env.get("REDIS_SENTINELS") == options.get("env", {}).get("REDIS_SENTINELS")
            ),
            None,
        )
        if first is not None:
            options.setdefault("dmq_seed", first.dmq_address)
        kamailio = KamailioProcess(tmp_path_factory.mktemp("kam"), **options)
        started.append(kamailio)
        kamailio.start()
        if first is not None:
            kamailio.wait_for_dmq_peers(first)
        return kamailio

    yield start
    for kamailio in started:
        kamailio.stop()


@pytest.fixture
def kamailio(start_kamailio: Callable[..., KamailioProcess]) -> KamailioProcess:
    """One Kamailio with the project's cfg and KEMI script, tenant "sip-test"."""
    return start_kamailio(tenant="sip-test")


@pytest.fixture
def start_phone(tmp_path: Path) -> Iterator[Callable[..., SippProcess]]:
    """Start SIPp UAS phones: start_phone("uas_answer.xml", **SippProcess options)."""
    phones: list[SippProcess] = []

    def start(scenario: str, **options: Any) -> SippProcess:
        phone = sipp_uas(tmp_path, SCENARIOS / scenario, **options)
        phones.append(phone)
        return phone

    yield start
    for phone in phones:
        if phone.proc is not None and phone.proc.returncode is None:
            phone.stop()
