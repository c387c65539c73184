"""SIP credentials of a tenant's users (agents' phones): only their HA1 digests are kept.

`{t:T}:cred` maps a SIP user (the name its phone authenticates with, an agent's AOR) to a
record `{"realm", "md5", "sha256"}`: HA1 = H(user ":" realm ":" password) for MD5 and for
SHA-256 (RFC 8760), so phones of either kind authenticate. The realm is the tenant's id,
which no domain change moves (a realm change would void every stored HA1). Nothing here or
in the API ever returns an HA1; a password is never stored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import orjson

USER_PATTERN = re.compile(r"[A-Za-z0-9_.+-]{1,64}")  # as an agent's AOR
MIN_PASSWORD = 8
MAX_PASSWORD = 128
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def ha1(username: str, realm: str, password: str, algorithm: str) -> str:
    """HA1 of a user's password for `algorithm` ("MD5" or "SHA-256"), lower-case hex."""
    return _HASHES[algorithm](f"{username}:{realm}:{password}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredCredential:
    """A user's stored HA1s and the realm they were made for."""

    realm: str
    md5: str
    sha256: str

    def ha1(self, algorithm: str) -> str:
        """The HA1 for the algorithm a client answered with."""
        return self.sha256 if algorithm == "SHA-256" else self.md5


def validate_user(user: str) -> str:
    """`user` if it can be a SIP user name here; ValueError naming the rule."""
    if not isinstance(user, str) or USER_PATTERN.fullmatch(user) is None:
        raise ValueError(f"invalid SIP user {user!r}: must match ^{USER_PATTERN.pattern}$")
    return user


def credential_record(user: str, realm: str, password: str) -> bytes:
    """The record to store for `user`'s new password; ValueError for a password too short,
    too long or with characters a phone's keypad menu cannot enter (control characters)."""
    validate_user(user)
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"password must be {MIN_PASSWORD}..{MAX_PASSWORD} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise ValueError("password must not contain control characters")
    return orjson.dumps(
        {
            "realm": realm,
            "md5": ha1(user, realm, password, "MD5"),
            "sha256": ha1(user, realm, password, "SHA-256"),
        }
    )


def parse_credential(raw: bytes | None) -> StoredCredential | None:
    """A stored record, None when there is none (or it is unreadable: no login then)."""
    if not raw:
        return None
    try:
        doc = orjson.loads(raw)
        return StoredCredential(str(doc["realm"]), str(doc["md5"]), str(doc["sha256"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
