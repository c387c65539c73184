"""The admin commands: the API's operations on Redis, with clear errors for bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.__main__ import main
from dispatcher.state import StateStore

pytestmark = pytest.mark.redis

DEMO = Path(__file__).resolve().parents[2] / "dispatcher" / "demo" / "demo.yaml"


@pytest.fixture
def demo(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> StateStore:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DISPATCHER_TENANT", "demo")
    assert main(["import", str(DEMO)]) == 0
    capsys.readouterr()
    return StateStore(redis_url, "demo")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_group_list_show_set_delete(
    demo: StateStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "group", "list")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["sales", "600", "ring_all"]
    code, out, _ = run(capsys, "group", "show", "sales", "-t", "demo")
    assert code == 0 and "strategy: ring_all" in out and "timezone: Europe/Berlin" in out
    night = tmp_path / "night.yaml"
    night.write_text(
        "id: night\nextension: '690'\nname: Night\nstrategy: sequential\n"
        "members: [{agent: bob}, {agent: alice}]\n"
    )
    code, out, _ = run(capsys, "group", "set", str(night))
    assert (code, out) == (0, "tenant 'demo': config version 2\n")
    assert demo.live().doc is not None and b'"night"' in demo.live().doc
    code, out, _ = run(capsys, "group", "delete", "night")
    assert code == 0 and "config version 3" in out
    events = [e for e in demo.events(100) if e["type"] == "audit"]
    assert [(e["action"], e["object"]) for e in events][-2:] == [
        ("group.put", "group:night"),
        ("group.delete", "group:night"),
    ]
    assert events[-1]["actor"].startswith("cli")


def test_bad_input_is_reported_with_its_location(
    demo: StateStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nextension: '600'\nname: X\nstrategy: loudest\nring_timeout: 0\n")
    code, _, err = run(capsys, "group", "set", str(bad))
    assert code == 1
    assert f"{bad}: strategy: " in err and f"{bad}: ring_timeout: " in err
    bad.write_text("id: x\nextension: '600'\nname: X\nstrategy: ring_all\n")
    code, _, err = run(capsys, "group", "set", str(bad))
    assert code == 1 and "extension: already the extension of group 'sales'" in err
    code, _, err = run(capsys, "group", "show", "ghost")
    assert (code, err) == (1, "error: group 'ghost' does not exist\n")
    code, _, err = run(capsys, "group", "delete", "sales")
    assert code == 1 and "still referenced by inbound[1].target" in err
    code, _, err = run(capsys, "member", "add", "sales", "dave", "--weight", "0")
    assert code == 1 and "weight: " in err
    code, _, err = run(capsys, "agent", "login", "ghost")
    assert code == 1 and "ghost" in err
    code, _, err = run(capsys, "group", "list", "-t", "nobody")
    assert code == 1 and "tenant 'nobody' has no config" in err
    assert demo.config_version() == 1
    with pytest.raises(SystemExit) as usage:
        main(["member", "add", "sales"])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as usage:
        main(["token", "create", "--role", "root"])
    assert usage.value.code == 2


def test_agent_state_and_membership(demo: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "agent", "pause", "alice", "--reason", "lunch")[0] == 0
    counters = demo.agent_counters("alice")
    assert (counters["status"], counters["reason"]) == (1, "lunch")
    code, out, _ = run(capsys, "agent", "list")
    assert code == 0 and any(line.split()[:2] == ["alice", "paused"] for line in out.splitlines())
    assert run(capsys, "agent", "unpause", "alice")[0] == 0
    code, _, err = run(capsys, "agent", "unpause", "alice")
    assert code == 1 and "not paused" in err
    assert run(capsys, "agent", "logout", "alice")[0] == 0
    assert demo.agent_counters("alice")["status"] == 2
    code, out, _ = run(capsys, "agent", "show", "alice")
    assert code == 0 and "name: Alice Adler" in out and "activity: logged_out" in out
    assert run(capsys, "member", "add", "sales", "dave", "--tier", "2")[0] == 0
    live = demo.live()
    assert live.version == 2
    assert run(capsys, "member", "remove", "sales", "dave")[0] == 0
    code, _, err = run(capsys, "member", "remove", "sales", "dave")
    assert code == 1 and "not a member" in err
    actions = [e["action"] for e in demo.events(200) if e["type"] == "audit"]
    assert actions[-5:] == [
        "agent.pause",
        "agent.unpause",
        "agent.logout",
        "member.put",
        "member.delete",
    ]


def test_tokens(demo: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "token", "create", "--role", "read-only", "--label", "wallboard")
    assert code == 0
    token = out.splitlines()[-1]
    assert token.startswith("dsp_demo.")
    token_id = token.split(".")[1]
    code, out, _ = run(capsys, "token", "list")
    assert out.split() == [token_id, "read-only", "wallboard"]
    assert run(capsys, "token", "revoke", token_id)[0] == 0
    assert run(capsys, "token", "revoke", token_id)[0] == 1
    assert demo.tokens() == {}


def test_inbound_and_tenant_list(
    demo: StateStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "inbound", "show")
    assert code == 0 and out.count("did: '+493012345600'") == 3
    rules = tmp_path / "rules.json"
    rules.write_text('[{"did": "+4930999", "target": {"kind": "group", "group": "ghost"}}]')
    code, _, err = run(capsys, "inbound", "set", str(rules))
    assert code == 1 and "[0].target.group: unknown group 'ghost'" in err
    rules.write_text('[{"did": "+4930999", "target": {"kind": "group", "group": "sales"}}]')
    assert run(capsys, "inbound", "set", str(rules))[0] == 0
    code, out, _ = run(capsys, "tenant", "list")
    assert (code, out) == (0, "demo  config version 2\n")


def test_status_once(demo: StateStore, capsys: pytest.CaptureFixture[str]) -> None:
    demo.claim("call-1", "sales", "", ["alice"], 30_000)
    demo.answered("call-1", "sales", "alice")
    demo.set_state("bob", 1, "coffee")
    code, out, _ = run(capsys, "status", "--once")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("tenant demo  config v1  agents 8:")
    sales = lines.index(next(line for line in lines if "Sales (sales, ring_all)" in line))
    assert "live calls 1" in lines[sales]
    assert lines[sales + 1].split()[:3] == ["alice", "on", "call"]
    assert "bob" in lines[sales + 2] and "paused (coffee)" in lines[sales + 2]
    assert run(capsys, "status", "--once", "-t", "nobody")[0] == 1


def test_status_refreshes_until_ctrl_c(demo: StateStore, redis_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "status", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "REDIS_URL": redis_url, "DISPATCHER_TENANT": "demo"},
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.count(b"\x1b[H\x1b[2J") >= 2  # redrawn, not appended
    assert b"Sales (sales, ring_all)" in out


def test_credentials_set_list_remove(
    demo: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse battery\n"))
    code, out, _ = run(capsys, "credential", "set", "alice")
    assert code == 0 and "SIP password of alice set" in out
    assert "correct horse" not in out
    assert run(capsys, "credential", "list") == (0, "alice\n", "")
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    code, _, err = run(capsys, "credential", "set", "bob")
    assert code == 1 and "8..128" in err
    assert run(capsys, "credential", "remove", "alice")[0] == 0
    code, _, err = run(capsys, "credential", "remove", "alice")
    assert code == 1 and "has no password" in err
