"""Voicemail through the API against a real uvicorn and Redis: messages stored the way nodes
store them (`StateStore.voicemail_put`) with real WAV files, listed, served, marked heard,
deleted with their files; a tenant's token never reaches another tenant's messages."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import pytest
from api_support import audit_events, client, demo_doc, make_token, tone, wav

from dispatcher.admin.tokens import ROLES
from dispatcher.run.procs import ApiProcess
from dispatcher.state import StateStore
from dispatcher.state.connect import sync_client
from dispatcher.state.messages import Voicemail

pytestmark = pytest.mark.redis

VM = "/v1/tenants/demo/voicemail"


def redis_now_ms(redis_url: str) -> int:
    with sync_client(redis_url) as r:
        seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def leave_message(
    redis_url: str,
    folder: Path,
    message_id: str,
    group: str,
    started_ms: int,
    *,
    tenant: str = "demo",
    seconds: float = 1.0,
) -> tuple[Voicemail, bytes]:
    """A message as a node records it: its WAV in `folder`, its record in Redis."""
    audio = wav(tone(seconds))
    path = folder / f"{message_id}.wav"
    path.write_bytes(audio)
    message = Voicemail(
        id=message_id,
        group=group,
        caller=f"+49301{message_id[-1]}",
        started_ms=started_ms,
        duration_ms=int(seconds * 1000),
        file=str(path),
        node="node-a",
    )
    with StateStore(redis_url, tenant) as store:
        assert store.voicemail_put(message)
    return message, audio


@pytest.fixture
def messages(admin: httpx.Client, redis_url: str, tmp_path: Path) -> dict[str, Voicemail]:
    """Three messages: m1 (sales, oldest), m2 (support), m3 (sales, newest)."""
    now = redis_now_ms(redis_url)
    out = {}
    for n, (message_id, group) in enumerate([("m1", "sales"), ("m2", "support"), ("m3", "sales")]):
        out[message_id], _ = leave_message(
            redis_url, tmp_path, message_id, group, now - (3 - n) * 60_000
        )
    return out


def test_list_newest_first_with_filters_and_new_counts(
    admin: httpx.Client, messages: dict[str, Voicemail]
) -> None:
    listing = admin.get(VM).json()
    assert [m["id"] for m in listing["messages"]] == ["m3", "m2", "m1"]
    assert listing["total"] == 3
    assert listing["new_by_group"] == {"sales": 2, "support": 1}
    first = listing["messages"][2]
    m1 = messages["m1"]
    assert first == {
        "id": "m1",
        "group": "sales",
        "caller": m1.caller,
        "started_ms": m1.started_ms,
        "started_at": first["started_at"],
        "duration_s": 1.0,
        "heard": False,
        "node": "node-a",
        "audio_url": "/v1/tenants/demo/voicemail/m1/audio",
    }
    started = datetime.fromisoformat(first["started_at"])
    assert started.utcoffset() is not None and started.utcoffset().total_seconds() == 0
    assert int(started.timestamp() * 1000) == m1.started_ms

    sales = admin.get(VM, params={"group": "sales"}).json()
    assert [m["id"] for m in sales["messages"]] == ["m3", "m1"] and sales["total"] == 2
    assert admin.get(VM, params={"limit": 1}).json()["total"] == 3
    assert [m["id"] for m in admin.get(VM, params={"limit": 1}).json()["messages"]] == ["m3"]
    assert admin.get(f"{VM}/m2").json()["group"] == "support"
    assert admin.get(f"{VM}/nothing").status_code == 404

    assert admin.post(f"{VM}/m3/heard", json={"heard": True}).status_code == 200
    new = admin.get(VM, params={"heard": "false"}).json()
    assert [m["id"] for m in new["messages"]] == ["m2", "m1"]
    assert new["new_by_group"] == {"sales": 1, "support": 1}
    heard = admin.get(VM, params={"heard": "true"}).json()
    assert [m["id"] for m in heard["messages"]] == ["m3"] and heard["messages"][0]["heard"]
    assert admin.get("/v1/tenants/nobody/voicemail").status_code == 404


def test_audio_is_the_recorded_file_and_410_when_it_is_not_here(
    admin: httpx.Client, messages: dict[str, Voicemail], redis_url: str, tmp_path: Path
) -> None:
    reply = admin.get(f"{VM}/m1/audio")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "audio/wav"
    assert reply.content == Path(messages["m1"].file).read_bytes()
    # the URL the listing gives works as it is
    url = admin.get(f"{VM}/m2").json()["audio_url"]
    assert admin.get(url).content == Path(messages["m2"].file).read_bytes()

    Path(messages["m1"].file).unlink()
    reply = admin.get(f"{VM}/m1/audio")
    assert reply.status_code == 410
    assert "not here" in reply.json()["detail"] and "node-a" in reply.json()["detail"]
    assert admin.get(f"{VM}/nothing/audio").status_code == 404

    # a record naming no WAV file is never served
    with StateStore(redis_url, "demo") as store:
        odd = Voicemail("m9", "sales", "", 1, 1000, str(tmp_path / "m9.txt"), "node-a")
        (tmp_path / "m9.txt").write_text("not audio")
        assert store.voicemail_put(odd)
    assert admin.get(f"{VM}/m9/audio").status_code == 410


def test_marking_heard_and_new_again(
    admin: httpx.Client, messages: dict[str, Voicemail], redis_url: str
) -> None:
    reply = admin.post(f"{VM}/m2/heard", json={"heard": True})
    assert reply.status_code == 200 and reply.json()["heard"] is True
    assert admin.get(f"{VM}/m2").json()["heard"] is True
    with StateStore(redis_url, "demo") as store:
        record = store.voicemail("m2")
        assert record is not None and record.heard and record.file == messages["m2"].file
    # the same again changes nothing, and leaves no audit
    before = len(audit_events(redis_url))
    assert admin.post(f"{VM}/m2/heard", json={"heard": True}).json()["heard"] is True
    assert len(audit_events(redis_url)) == before
    assert admin.post(f"{VM}/m2/heard", json={"heard": False}).json()["heard"] is False
    trail = [(e["action"], e["object"], e.get("detail")) for e in audit_events(redis_url)]
    assert trail[-2:] == [
        ("voicemail.heard", "voicemail:m2", "support"),
        ("voicemail.new", "voicemail:m2", "support"),
    ]
    assert admin.post(f"{VM}/nothing/heard", json={"heard": True}).status_code == 404
    assert admin.post(f"{VM}/m2/heard", json={"heard": "maybe"}).status_code == 422
    assert admin.post(f"{VM}/m2/heard", json={}).status_code == 422


def test_delete_removes_the_record_then_the_file(
    admin: httpx.Client, messages: dict[str, Voicemail], redis_url: str
) -> None:
    path = Path(messages["m1"].file)
    assert admin.delete(f"{VM}/m1").status_code == 204
    assert admin.get(f"{VM}/m1").status_code == 404
    assert not path.exists()
    assert [m["id"] for m in admin.get(VM).json()["messages"]] == ["m3", "m2"]
    assert admin.delete(f"{VM}/m1").status_code == 404
    # a file already gone is no error
    Path(messages["m2"].file).unlink()
    assert admin.delete(f"{VM}/m2").status_code == 204
    with StateStore(redis_url, "demo") as store:
        assert [m.id for m in store.voicemails()] == ["m3"]
    last = audit_events(redis_url)[-1]
    assert (last["action"], last["object"], last["actor"]) == (
        "voicemail.delete",
        "voicemail:m2",
        "bootstrap",
    )


def test_roles(admin: httpx.Client, messages: dict[str, Voicemail], api_server: ApiProcess) -> None:
    reader = make_token(admin, "demo", "read-only")
    writer = make_token(admin, "demo", "admin")
    with client(api_server, token=reader) as http:
        assert http.get(VM).status_code == 200
        assert http.get(f"{VM}/m1").status_code == 200
        assert http.get(f"{VM}/m1/audio").status_code == 200
        assert http.post(f"{VM}/m1/heard", json={"heard": True}).status_code == 403
        assert http.delete(f"{VM}/m1").status_code == 403
    with client(api_server, token=writer) as http:
        assert http.post(f"{VM}/m1/heard", json={"heard": True}).status_code == 200
        assert http.delete(f"{VM}/m1").status_code == 204
    with client(api_server, token=None) as http:
        assert http.get(VM).status_code == 401
        assert http.get(f"{VM}/m2/audio").status_code == 401


@pytest.mark.skipif(
    "supervisor" not in ROLES, reason="dispatcher.admin.tokens has no supervisor role yet"
)
def test_a_supervisor_marks_but_does_not_delete(
    admin: httpx.Client, messages: dict[str, Voicemail], api_server: ApiProcess
) -> None:
    supervisor = make_token(admin, "demo", "supervisor")
    with client(api_server, token=supervisor) as http:
        assert http.post(f"{VM}/m1/heard", json={"heard": True}).status_code == 200
        assert http.delete(f"{VM}/m1").status_code == 403
        assert http.put("/v1/tenants/demo/prompts/x", content=b"").status_code == 403


def test_a_tenant_never_reads_another_tenants_messages(
    admin: httpx.Client,
    messages: dict[str, Voicemail],
    api_server: ApiProcess,
    redis_url: str,
    tmp_path: Path,
) -> None:
    assert admin.post("/v1/tenants", json=demo_doc("other")).status_code == 201
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    theirs, _ = leave_message(
        redis_url, other_dir, "x1", "sales", redis_now_ms(redis_url), tenant="other"
    )
    for role in ("admin", "read-only"):
        token = make_token(admin, "other", role)
        with client(api_server, token=token) as http:
            # their own box holds only their message
            own = http.get("/v1/tenants/other/voicemail").json()
            assert [m["id"] for m in own["messages"]] == ["x1"]
            # demo's messages, by any path, are refused
            assert http.get(VM).status_code == 403
            for message_id in ("m1", "x1"):
                assert http.get(f"{VM}/{message_id}").status_code == 403
                assert http.get(f"{VM}/{message_id}/audio").status_code == 403
                assert (
                    http.post(f"{VM}/{message_id}/heard", json={"heard": True}).status_code == 403
                )
                assert http.delete(f"{VM}/{message_id}").status_code == 403
            # ... and demo's message ids do not resolve in their own box
            assert http.get("/v1/tenants/other/voicemail/m1").status_code == 404
            assert http.get("/v1/tenants/other/voicemail/m1/audio").status_code == 404
    # and the other way round
    demo_reader = make_token(admin, "demo", "read-only")
    with client(api_server, token=demo_reader) as http:
        assert http.get("/v1/tenants/other/voicemail").status_code == 403
        assert http.get("/v1/tenants/other/voicemail/x1/audio").status_code == 403
        assert http.get(f"{VM}/x1").status_code == 404
    assert Path(theirs.file).exists() and all(Path(m.file).exists() for m in messages.values())
    assert admin.get(VM).json()["total"] == 3
