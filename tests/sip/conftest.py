"""Fixtures for the SIP tests: Kamailio instances and SIPp phones on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.run.sipprocs import KamailioProcess, SippProcess, free_sip_port, sipp_uas

SCENARIOS = Path(__file__).parent / "scenarios"


@pytest.fixture
def start_kamailio(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., KamailioProcess]]:
    """Start Kamailio instances (KamailioProcess arguments); all stop after the test.

    Each gets a short folder of its own (mktemp("kam")): its Unix sockets must stay
    within the 107-byte sun_path limit. The nodes of a test on one Redis form one cluster:
    each is seeded with the DMQ bus of the first (the first with the address the second
    will have, reserved up front), so they share registrations; start returns once a later
    node and the first know each other.
    """
    started: list[KamailioProcess] = []
    first_of: dict[tuple[object, object], KamailioProcess] = {}  # each cluster's first node
    next_port: dict[tuple[object, object], int] = {}

    def start(**options: Any) -> KamailioProcess:
        options.setdefault("children", 2)
        cluster = (options.get("redis_url"), options.get("env", {}).get("REDIS_SENTINELS"))
        first = None
        if options.get("shared_registrations", True) and any(cluster):
            first = first_of.get(cluster)
            reserved = next_port.pop(cluster, None)
            next_port[cluster] = free_sip_port()
            options.setdefault("dmq_port", reserved)
            seed = first.dmq_address if first else f"127.0.0.1:{next_port[cluster]}"
            options.setdefault("dmq_seed", seed)
        kamailio = KamailioProcess(tmp_path_factory.mktemp("kam"), **options)
        if kamailio.dmq_seed:
            first_of.setdefault(cluster, kamailio)
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
