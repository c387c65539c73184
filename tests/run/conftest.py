"""Fixtures for the RTPengine tests: instances on free loopback ports, NG clients, RTP
endpoints (tests/support/rtp.py), and prompt files made for the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rtp import Prompts, RtpHub

from dispatcher.media.ng import NgClient
from dispatcher.run.rtpengine import RtpengineProcess


@pytest.fixture(scope="session")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Prompts:
    return Prompts.make(tmp_path_factory.mktemp("prompts"))


@pytest.fixture(scope="session")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtpengineProcess]:
    """One rtpengine for the tests that leave it running (each uses its own call-ids)."""
    with RtpengineProcess(tmp_path_factory.mktemp("rtpengine")) as server:
        yield server


@pytest.fixture
def start_rtpengine(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RtpengineProcess]]:
    """Start rtpengines of this test (RtpengineProcess options): for tests that kill one or
    need other settings. All are stopped after the test."""
    started: list[RtpengineProcess] = []

    def start(**options: Any) -> RtpengineProcess:
        server = RtpengineProcess(tmp_path_factory.mktemp("rtpe"), **options)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def ng(rtpengine: RtpengineProcess) -> Iterator[NgClient]:
    with rtpengine.client() as client:
        yield client


@pytest.fixture
def hub() -> Iterator[RtpHub]:
    with RtpHub() as rtp_hub:
        yield rtp_hub
