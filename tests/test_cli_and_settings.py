"""The command line and the environment knobs: clear errors for bad input, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.__main__ import main
from dispatcher.redis_address import parse_address, redacted
from dispatcher.settings import Settings, SettingsError

DEMO = Path(__file__).resolve().parents[1] / "dispatcher" / "demo" / "demo.yaml"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SIP_PORT", "sip", "SIP_PORT='sip': expected an integer"),
        ("SIP_PORT", "70000", "SIP_PORT=70000: must be between 1 and 65535"),
        ("API_PORT", "0", "API_PORT=0: must be between 1 and 65535"),
        ("REDIS_TIMEOUT_MS", "5", "REDIS_TIMEOUT_MS=5: must be between 10 and 60000"),
        ("DISPATCHER_TRUSTED", "127.0.0.1, 10.0.0.300", "DISPATCHER_TRUSTED: '10.0.0.300' is no"),
        ("DISPATCHER_AUTH_SECRET", "short", "DISPATCHER_AUTH_SECRET: at least 32 characters"),
        ("DISPATCHER_AUTH_ALGORITHMS", "SHA-1", "SHA-256 and/or MD5, each once"),
        ("DISPATCHER_AUTH_ALGORITHMS", "MD5,MD5", "SHA-256 and/or MD5, each once"),
        ("DISPATCHER_TENANT_CACHE", "0", "DISPATCHER_TENANT_CACHE=0: must be between 1"),
        ("DISPATCHER_NODE", "bad node", "DISPATCHER_NODE='bad node'"),
        ("RTPENGINE_NG", "nohost", "RTPENGINE_NG='nohost': expected host:port"),
        ("REDIS_URL", "http://127.0.0.1:6379", "REDIS_URL='http://127.0.0.1:6379': unknown"),
        ("REDIS_URL", "redis://:secret@h:port", r"REDIS_URL='redis://:\*\*\*@h:port': the port"),
        ("REDIS_URL", "redis+cluster://127.0.0.1:7000/3", "database 0 only"),
        ("REDIS_URL", "redis+cluster://", "REDIS_URL='redis\\+cluster://': .* host:port"),
        ("REDIS_URL", "redis+sentinel://127.0.0.1:26379", "REDIS_URL=.*service name"),
        ("REDIS_SENTINELS", "127.0.0.1", "REDIS_SENTINELS='127.0.0.1': '127.0.0.1' is not host"),
        ("REDIS_SENTINELS", " , ", "REDIS_SENTINELS=' , ': expected host:port"),
        ("REDIS_SENTINEL_MASTER", "mymaster", "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS"),
    ],
)
def test_bad_knob_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env()


def test_sentinels_compose_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """REDIS_SENTINELS names the master's watchers; REDIS_URL then adds only credentials and
    db; the master's name defaults to mymaster (Redis' sample sentinel.conf)."""
    monkeypatch.setenv("REDIS_SENTINELS", "10.0.0.1:26379, 10.0.0.2:26379")
    monkeypatch.delenv("REDIS_SENTINEL_MASTER", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert (
        Settings.from_env().redis_url == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0"
    )
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "calls")
    monkeypatch.setenv("REDIS_URL", "rediss://:s%40cret@/2")
    address = parse_address(Settings.from_env().redis_url or "")
    assert (address.mode, address.service, address.db) == ("sentinel", "calls", 2)
    assert (address.password, address.tls) == ("s@cret", True)
    assert address.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    monkeypatch.setenv("REDIS_URL", "redis://:secret@10.0.0.9:6379/0")  # a host: whose?
    with pytest.raises(SettingsError, match=r"REDIS_URL='redis://:\*\*\*@10.0.0.9:6379/0' with"):
        Settings.from_env()
    monkeypatch.setenv("REDIS_URL", "redis+cluster://10.0.0.9:7000")
    with pytest.raises(SettingsError, match="credentials and db only"):
        Settings.from_env()
    monkeypatch.setenv("REDIS_URL", "redis://")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "bad name")
    with pytest.raises(SettingsError, match="REDIS_SENTINEL_MASTER: 'bad name' is no service"):
        Settings.from_env()


def test_a_cluster_is_named_by_its_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", "redis+cluster://u:pw@10.0.0.1:7000,[::1]:7001")
    address = parse_address(Settings.from_env().redis_url or "")
    assert (address.mode, address.username, address.password) == ("cluster", "u", "pw")
    assert address.hosts == (("10.0.0.1", 7000), ("::1", 7001))
    assert redacted(address.url) == "redis+cluster://u:***@10.0.0.1:7000,[::1]:7001"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    knobs = ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_TIMEOUT_MS")
    for name in (*knobs, "SIP_PORT", "API_PORT", "DISPATCHER_TENANT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    assert (settings.sip_port, settings.api_port, settings.tenant) == (5060, 8080, "demo")
    assert settings.redis_url is None and settings.redis_timeout_ms == 500


def test_validate_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DEMO)]) == 0
    assert "tenant 'demo', 8 groups, 8 agents: ok" in capsys.readouterr().out


def test_validate_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        DEMO.read_text()
        .replace('extension: "600"', 'extension: "6"', 1)
        .replace("{agent: alice}", "{agent: nobody}", 1)
    )
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "groups[0].extension" in err
    assert "unknown agent 'nobody'" in err


def test_import_without_redis_url_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["import", str(DEMO)]) == 1
    assert "REDIS_URL is not set" in capsys.readouterr().err


@pytest.mark.redis
def test_import_then_export_round_trips(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["import", str(DEMO)]) == 0
    assert "config version 1" in capsys.readouterr().out
    assert main(["export", "demo", "--format", "json"]) == 0
    assert '"id":"demo"' in capsys.readouterr().out.replace(" ", "")
    assert main(["export", "other"]) == 1
    assert "has no config" in capsys.readouterr().err
