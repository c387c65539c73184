"""Prompt uploads through the API against a real uvicorn and Redis: checked and converted to
the playback format, listed, served, deleted; a failed upload replaces nothing, a prompt a
group names cannot be deleted, every change is audited."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

import httpx
import pytest
from api_support import audit_events, client, demo_doc, make_token, tone, wav

from dispatcher.media.audio import MAX_UPLOAD_BYTES, inspect_audio
from dispatcher.run.procs import ApiProcess
from dispatcher.state.messages import MAX_PROMPT_BYTES

pytestmark = pytest.mark.redis

PROMPTS = "/v1/tenants/demo/prompts"


def upload(http: httpx.Client, prompt_id: str, body: bytes | Iterator[bytes]) -> httpx.Response:
    return http.put(f"{PROMPTS}/{prompt_id}", content=body, headers={"Content-Type": "audio/wav"})


def g711_wav(samples: bytes, tag: int = 6) -> bytes:
    """A WAV of 8-bit G.711 bytes (tag 6 A-law, 7 µ-law), which the stdlib cannot write."""
    fmt = struct.pack("<HHIIHH", tag, 1, 8000, 8000, 1, 8)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(samples))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(samples))
        + samples
    )


def stored(http: httpx.Client, prompt_id: str) -> tuple[str, bytes]:
    """(digest from the listing, audio served) of a prompt."""
    listing = {p["id"]: p for p in http.get(PROMPTS).json()["prompts"]}
    reply = http.get(f"{PROMPTS}/{prompt_id}")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "audio/wav"
    return listing[prompt_id]["digest"], reply.content


def test_upload_list_download_replace(admin: httpx.Client, redis_url: str) -> None:
    assert admin.get(PROMPTS).json() == {"prompts": []}
    first = wav(tone(1.5))
    reply = upload(admin, "welcome", first)
    assert reply.status_code == 201, reply.text
    info = reply.json()
    # 8000 Hz PCM is the playback format already: stored as it came
    assert info == {
        "id": "welcome",
        "digest": hashlib.sha256(first).hexdigest(),
        "bytes": len(first),
        "duration_s": 1.5,
    }
    assert admin.get(PROMPTS).json() == {"prompts": [info]}
    digest, audio = stored(admin, "welcome")
    assert digest == info["digest"] and audio == first
    assert admin.get(f"{PROMPTS}/welcome").headers["etag"] == f'"{digest}"'

    # a 16 kHz upload is resampled to 8000 Hz by sox; replacing answers 200
    second = wav(tone(2.0, 16000), rate=16000)
    reply = upload(admin, "welcome", second)
    assert reply.status_code == 200, reply.text
    assert reply.json()["digest"] != info["digest"]
    digest, audio = stored(admin, "welcome")
    assert digest == reply.json()["digest"] == hashlib.sha256(audio).hexdigest()
    played = inspect_audio(audio)
    assert (played.encoding, played.sample_rate, played.channels) == ("pcm_s16le", 8000, 1)
    assert played.seconds == pytest.approx(2.0, abs=0.01)
    assert reply.json()["duration_s"] == pytest.approx(2.0, abs=0.01)

    # G.711 A-law is decoded
    reply = upload(admin, "hold", g711_wav(bytes([0xD5, 0x55] * 4000)))
    assert reply.status_code == 201, reply.text
    assert reply.json()["duration_s"] == 1.0
    assert [p["id"] for p in admin.get(PROMPTS).json()["prompts"]] == ["hold", "welcome"]

    audits = [(e["action"], e["object"], e["actor"]) for e in audit_events(redis_url)]
    assert audits[-3:] == [
        ("prompt.put", "prompt:welcome", "bootstrap"),
        ("prompt.put", "prompt:welcome", "bootstrap"),
        ("prompt.put", "prompt:hold", "bootstrap"),
    ]


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"ID3\x04\x00" + bytes(500), "not_wav", "MP3"),
        (b"", "empty", "empty"),
        (wav(tone(0.5) * 2, channels=2), "channels", "mono"),
        (wav(tone(0.5, 22050), rate=22050), "sample_rate", "22050"),
        (wav(bytes(800), width=1), "encoding", "8-bit"),
        (wav(tone(1.0))[:30], "truncated", "truncated"),
        (wav(tone(1.0))[:40] + b"\x00\x00\xff\xff" + bytes(100), "truncated", "truncated"),
    ],
    ids=["mp3", "empty", "stereo", "rate", "pcm8", "cut-header", "cut-data"],
)
def test_an_unplayable_upload_is_422_and_replaces_nothing(
    admin: httpx.Client, body: bytes, code: str, words: str
) -> None:
    good = wav(tone(1.0))
    assert upload(admin, "welcome", good).status_code == 201
    before = stored(admin, "welcome")
    reply = upload(admin, "welcome", body)
    assert reply.status_code == 422, reply.text
    (problem,) = reply.json()["detail"]
    assert problem["type"] == code and problem["loc"] == ["body"]
    assert words in problem["msg"]
    assert stored(admin, "welcome") == before
    assert [p["id"] for p in admin.get(PROMPTS).json()["prompts"]] == ["welcome"]


def test_size_limits(admin: httpx.Client, api_server: ApiProcess) -> None:
    good = wav(tone(1.0))
    assert upload(admin, "welcome", good).status_code == 201
    before = stored(admin, "welcome")

    # over the upload limit: refused on Content-Length, and on the bytes of a chunked body
    too_big = bytes(MAX_UPLOAD_BYTES + 1)
    reply = upload(admin, "welcome", too_big)
    assert reply.status_code == 413 and str(MAX_UPLOAD_BYTES) in reply.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield good[:44]
        for _ in range(MAX_UPLOAD_BYTES // 65536 + 1):
            yield bytes(65536)

    with client(api_server) as http:
        reply = upload(http, "welcome", chunks())
    assert reply.status_code == 413

    # longer than any prompt may be (600 s): refused before anything is stored; what is
    # stored (8000 Hz 16-bit) therefore always fits MAX_PROMPT_BYTES
    long_one = wav(bytes(601 * 16000))
    assert len(long_one) < MAX_UPLOAD_BYTES
    reply = upload(admin, "welcome", long_one)
    assert reply.status_code == 422, reply.text
    (problem,) = reply.json()["detail"]
    assert problem["type"] == "too_long" and "600" in problem["msg"]
    assert stored(admin, "welcome") == before
    assert MAX_PROMPT_BYTES == 600 * 16000 + 44

    # a 16 kHz upload is stored at 8 kHz: half its size
    wide = wav(bytes(70 * 32000), rate=16000)
    reply = upload(admin, "welcome", wide)
    assert reply.status_code == 200, reply.text
    assert reply.json()["bytes"] <= len(wide) // 2 + 44
    assert reply.json()["duration_s"] == pytest.approx(70, abs=0.01)


def test_prompt_ids_default_and_none_are_reserved(admin: httpx.Client) -> None:
    for reserved in ("default", "none"):
        reply = upload(admin, reserved, wav(tone(0.5)))
        assert reply.status_code == 422
        assert reply.json()["detail"][0]["loc"] == ["path", "prompt_id"]
    assert upload(admin, "bad id!", wav(tone(0.5))).status_code in (404, 422)
    assert admin.get(PROMPTS).json() == {"prompts": []}


def test_delete_is_refused_while_a_group_names_the_prompt(
    admin: httpx.Client, redis_url: str
) -> None:
    for prompt in ("hold", "hello"):
        assert upload(admin, prompt, wav(tone(0.5))).status_code == 201
    sales = next(g for g in demo_doc()["groups"] if g["id"] == "sales")
    queued = {**sales, "queue": {"music": "hold", "greeting": "hello"}}
    assert admin.put("/v1/tenants/demo/groups/sales", json=queued).status_code == 200
    support = next(g for g in demo_doc()["groups"] if g["id"] == "support")
    boxed = {**support, "voicemail": {"greeting": "hello"}}
    assert admin.put("/v1/tenants/demo/groups/support", json=boxed).status_code == 200

    reply = admin.delete(f"{PROMPTS}/hold")
    assert reply.status_code == 409
    assert "groups[0].queue.music (group 'sales')" in reply.json()["detail"]
    reply = admin.delete(f"{PROMPTS}/hello")
    assert reply.status_code == 409
    detail = reply.json()["detail"]
    assert "queue.greeting (group 'sales')" in detail
    assert "voicemail.greeting (group 'support')" in detail
    assert admin.get(f"{PROMPTS}/hold").status_code == 200  # still there

    assert admin.put("/v1/tenants/demo/groups/sales", json=sales).status_code == 200
    assert admin.delete(f"{PROMPTS}/hold").status_code == 204
    assert admin.get(f"{PROMPTS}/hold").status_code == 404
    assert admin.delete(f"{PROMPTS}/hold").status_code == 404
    assert [p["id"] for p in admin.get(PROMPTS).json()["prompts"]] == ["hello"]
    assert audit_events(redis_url)[-1]["action"] == "prompt.delete"
    assert audit_events(redis_url)[-1]["object"] == "prompt:hold"


def test_who_may_upload_read_and_delete(admin: httpx.Client, api_server: ApiProcess) -> None:
    assert admin.post("/v1/tenants", json=demo_doc("other")).status_code == 201
    reader = make_token(admin, "demo", "read-only")
    writer = make_token(admin, "demo", "admin")
    stranger = make_token(admin, "other", "admin")
    audio = wav(tone(0.5))
    with client(api_server, token=writer) as http:
        reply = upload(http, "welcome", audio)
        assert reply.status_code == 201
    with client(api_server, token=reader) as http:
        assert upload(http, "welcome", audio).status_code == 403
        assert http.delete(f"{PROMPTS}/welcome").status_code == 403
        assert http.get(PROMPTS).status_code == 200
        assert http.get(f"{PROMPTS}/welcome").content == audio
    with client(api_server, token=stranger) as http:
        assert http.get(PROMPTS).status_code == 403
        assert http.get(f"{PROMPTS}/welcome").status_code == 403
        assert upload(http, "welcome", audio).status_code == 403
        assert http.get("/v1/tenants/other/prompts").json() == {"prompts": []}
    with client(api_server, token=None) as http:
        assert http.get(PROMPTS).status_code == 401
    assert upload(admin, "welcome", audio).status_code == 200
    assert admin.put("/v1/tenants/nobody/prompts/welcome", content=audio).status_code == 404
