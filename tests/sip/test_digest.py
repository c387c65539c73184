"""Digest authentication's pure functions: RFC 2617's worked example, RFC 8760's SHA-256,
stateless nonces, and malformed headers."""

from __future__ import annotations

import pytest

from dispatcher.sip.digest import (
    Credentials,
    Verdict,
    challenges,
    ha1,
    nonce,
    parse_credentials,
    response,
    verify,
)

SECRET = b"s" * 32
NOW = 1_800_000_000


def test_rfc2617_example_response() -> None:
    creds = Credentials(
        username="Mufasa",
        realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="/dir/index.html",
        response="",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    user_ha1 = ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5")
    assert response(creds, "GET", user_ha1) == "6629fae49393a05397450978507c4ef1"


def test_challenges_offer_sha256_then_md5_with_one_nonce() -> None:
    sha, md5 = challenges(SECRET, "acme", NOW)
    assert "algorithm=SHA-256" in sha and "algorithm=MD5" in md5
    assert sha.split("nonce=")[1].split(",")[0] == md5.split("nonce=")[1].split(",")[0]
    assert "stale=true" in challenges(SECRET, "acme", NOW, stale=True)[0]


def answer(algorithm: str, password: str, method: str = "REGISTER", at: int = NOW) -> str:
    value = nonce(SECRET, "acme", at)
    creds = Credentials("alice", "acme", value, "sip:acme", "", algorithm, "auth", "00000001", "c1")
    digest = response(creds, method, ha1("alice", "acme", password, algorithm))
    return (
        f'Digest username="alice", realm="acme", nonce="{value}", uri="sip:acme", '
        f'response="{digest}", algorithm={algorithm}, qop=auth, nc=00000001, cnonce="c1"'
    )


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_the_right_password_passes_and_a_wrong_one_does_not(algorithm: str) -> None:
    creds = parse_credentials(answer(algorithm, "secret"))
    assert creds is not None and creds.algorithm == algorithm
    stored = ha1("alice", "acme", "secret", algorithm)
    assert verify(creds, "REGISTER", "acme", stored, SECRET, NOW + 5) == Verdict.OK
    assert verify(creds, "INVITE", "acme", stored, SECRET, NOW + 5) == Verdict.BAD
    wrong = parse_credentials(answer(algorithm, "guess"))
    assert wrong is not None
    assert verify(wrong, "REGISTER", "acme", stored, SECRET, NOW + 5) == Verdict.BAD


def test_nonces_expire_and_cannot_be_forged_or_moved_to_another_realm() -> None:
    stored = ha1("alice", "acme", "secret", "MD5")
    creds = parse_credentials(answer("MD5", "secret", at=NOW))
    assert creds is not None
    assert verify(creds, "REGISTER", "acme", stored, SECRET, NOW + 301) == Verdict.STALE
    assert verify(creds, "REGISTER", "acme", stored, b"x" * 32, NOW) == Verdict.BAD
    assert verify(creds, "REGISTER", "beta", stored, SECRET, NOW) == Verdict.BAD


@pytest.mark.parametrize(
    "header",
    [
        "Basic YWxpY2U6c2VjcmV0",
        'Digest username="alice"',
        'Digest username="alice", realm="acme", nonce="n", uri="u", response="r", algorithm=SHA-1',
        'Digest username="alice", realm="acme", nonce="n", uri="u", response="r", qop=auth',
        'Digest username="alice" realm="acme"',
        "",
    ],
)
def test_malformed_or_unsupported_headers_are_none(header: str) -> None:
    assert parse_credentials(header) is None
