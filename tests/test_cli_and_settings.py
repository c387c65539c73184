"""The command line and the environment knobs: clear errors for bad input, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.__main__ import main
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
    ],
)
def test_bad_knob_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env()


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "SIP_PORT", "API_PORT", "DISPATCHER_TENANT", "REDIS_TIMEOUT_MS"):
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
