"""Admin API tokens: per tenant, role admin, supervisor (reads, marks voicemail heard) or
read-only, stored hashed.

A tenant token reads `dsp_<tenant>.<id>.<secret>`: the tenant and the token id say where its
record is (`{t:<tenant>}:tokens`, field id, written only by disp_token_set), the secret is 32
random bytes (`secrets.token_urlsafe`), shown once when the token is created. The record
holds the SHA-256 of the whole token, the role, a label and the creation time.

SHA-256 and not a slow password hash (scrypt, PBKDF2): those exist to make guessing
low-entropy passwords expensive, while a 256-bit random secret cannot be guessed at any
speed, so a fast hash protects a leaked record just as well and keeps each request's check at
microseconds. No salt either, for the same reason (no dictionary to precompute). Digests are
compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Literal

import orjson

from dispatcher.state.keys import ID_PATTERN

Role = Literal["admin", "supervisor", "read-only"]
ROLES: tuple[Role, ...] = ("admin", "supervisor", "read-only")
TOKEN_PREFIX = "dsp_"


def digest(token: str) -> str:
    """SHA-256 of the token, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(tenant: str) -> tuple[str, str]:
    """(token id, token) for a new token of `tenant`; the token is shown once."""
    token_id = secrets.token_hex(8)
    return token_id, f"{TOKEN_PREFIX}{tenant}.{token_id}.{secrets.token_urlsafe(32)}"


def token_record(token: str, role: Role, label: str) -> bytes:
    """What is stored for a token: its digest, role, label and creation time."""
    return orjson.dumps(
        {
            "digest": digest(token),
            "role": role,
            "label": label,
            "created_ms": time.time_ns() // 1_000_000,
        }
    )


def read_record(raw: bytes) -> tuple[str, Role, str, int]:
    """(digest, role, label, created_ms) of a stored record; an unknown role reads as
    read-only, the safe side."""
    record = orjson.loads(raw)
    role = record.get("role")
    return (
        str(record.get("digest") or ""),
        role if role in ROLES else "read-only",
        str(record.get("label") or ""),
        int(record.get("created_ms") or 0),
    )


def parse_token(token: str) -> tuple[str, str] | None:
    """(tenant, token id) of a tenant token, None if it does not look like one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    parts = token[len(TOKEN_PREFIX) :].rsplit(".", 2)
    if len(parts) != 3 or not all(parts):
        return None
    tenant, token_id, _ = parts
    if ID_PATTERN.fullmatch(tenant) is None or ID_PATTERN.fullmatch(token_id) is None:
        return None
    return tenant, token_id
