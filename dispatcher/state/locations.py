"""usrloc's location table in Redis (db_redis, kamailio.cfg), mended before a node loads it.

A starting Kamailio loads every row of the table (usrloc's preload, in its first SIP
worker). Debian's db_redis 5.6 reads the rows of a full table scan in batches of 1000 and
never reads the last batch when the table holds a multiple of 1000 rows above 1000 (its
`max` for the last key is `count % 1000`, 0 there): 2000 rows load as 1000. The phones of
the rows it skipped stay unreachable from that node until they register again (up to
registrar's max_expires), and their next REGISTER adds a second row for the same contact,
because usrloc did not hold the first. At the node's next start both rows load, and a call
to the agent forks twice to the same phone (a SIPp phone aborts such a call; a real one
answers one INVITE and refuses the other as merged).

`mend` runs in the main process before the fork (kamailio/kemi.py mod_init): it deletes
each row that a newer row of the same AOR and contact replaces, then adds or removes one
padding row (an expired contact, which usrloc loads and its next timer run deletes) so the
table never holds such a multiple. A row written by another node between `mend` and the
load can still make one: the window is the start's own second.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass

import redis
from redis.client import Pipeline

# db_redis' key layout of the location table (kamailio.cfg's db_redis "keys" param)
ENTRY = "location:entry::"
USRDOM = "location:usrdom::"
TIMER = "location:timer::"
USRDOM_INDEX = "location::index::usrdom"
TIMER_INDEX = "location::index::timer"
# db_redis 5.6 reads a full table scan's rows in batches of this many
BATCH = 1000
PAD_RUID = "dispatcher-preload-pad"
# RFC 6761's reserved domain: no phone is ever registered there
PAD_USER, PAD_DOMAIN = "preload-pad", "invalid"
# epoch seconds (usrloc expires_type 1): long past, so usrloc drops it at its next timer run
PAD_EXPIRES = 1
SCAN_COUNT = 1000
# a row's delete starts again when another node changed its AOR's or expiry's set meanwhile
DELETE_ATTEMPTS = 10


@dataclass(frozen=True)
class Mended:
    """What `mend` did: rows deleted as replaced, the rows left (pad included), and
    whether the pad row was added (+1), removed (-1) or left as it was (0)."""

    replaced: int
    rows: int
    pad: int


def pad_change(rows: int, has_pad: bool) -> int:
    """+1 to add the pad row, -1 to remove it, 0 to leave the table: after the change the
    count of rows is never a multiple of BATCH above BATCH (the count db_redis loses the
    last batch of). `rows` counts the pad row when there is one."""
    if rows <= BATCH or rows % BATCH:
        return 0
    return -1 if has_pad else 1


def replaced_rows(rows: dict[str, dict[str, str]]) -> list[str]:
    """The ruids of rows another row of the same AOR (username, domain) and contact
    replaces: all but the one last modified (the highest ruid on a tie, so the choice is
    the same on every node)."""
    by_binding: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)
    for ruid, row in rows.items():
        if ruid == PAD_RUID:
            continue
        binding = (row.get("username", ""), row.get("domain", ""), row.get("contact", ""))
        by_binding[binding].append((_int(row.get("last_modified")), ruid))
    out: list[str] = []
    for found in by_binding.values():
        if len(found) > 1:
            out += [ruid for _, ruid in sorted(found)[:-1]]
    return sorted(out)


def mend(client: redis.Redis) -> Mended:
    """Delete replaced rows and set the pad row (module docstring). Raises redis' errors."""
    rows = _read_rows(client)
    gone = replaced_rows(rows)
    for ruid in gone:
        _delete_row(client, ruid, rows.pop(ruid))
    change = pad_change(len(rows), PAD_RUID in rows)
    if change > 0:
        _write_pad(client)
    elif change < 0:
        _delete_row(client, PAD_RUID, rows[PAD_RUID])
    return Mended(replaced=len(gone), rows=len(rows) + change, pad=change)


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def _read_rows(client: redis.Redis) -> dict[str, dict[str, str]]:
    keys = [key.decode() for key in client.scan_iter(match=ENTRY + "*", count=SCAN_COUNT)]
    rows: dict[str, dict[str, str]] = {}
    for start in range(0, len(keys), SCAN_COUNT):
        part = keys[start : start + SCAN_COUNT]
        with client.pipeline(transaction=False) as pipe:
            for key in part:
                pipe.hgetall(key)
            replies = pipe.execute()
        for key, reply in zip(part, replies, strict=True):
            if reply:  # deleted since the scan
                rows[key[len(ENTRY) :]] = {
                    k.decode(): v.decode(errors="replace") for k, v in reply.items()
                }
    return rows


def _delete_row(client: redis.Redis, ruid: str, row: dict[str, str]) -> None:
    """What db_redis does for a delete by ruid: the row, and its key in the AOR's and the
    expiry's sets (each set and its index entry go with its last member). One transaction
    that watches both sets: a row another node adds to the AOR meanwhile (a phone
    registering) makes it start again, so a set that keeps a member keeps its index entry."""
    entry = ENTRY + ruid
    usrdom = f"{USRDOM}{row.get('username', '')}:{row.get('domain', '')}"
    timer = f"{TIMER}{row.get('expires', '')}"
    sets = ((usrdom, USRDOM_INDEX), (timer, TIMER_INDEX))
    with client.pipeline(transaction=True) as pipe:
        for _ in range(DELETE_ATTEMPTS - 1):
            with suppress(redis.WatchError):
                _delete_watched(pipe, entry, sets)
                return
        _delete_watched(pipe, entry, sets)  # the last attempt's WatchError is raised


def _delete_watched(pipe: Pipeline, entry: str, sets: tuple[tuple[str, str], ...]) -> None:
    pipe.watch(*(key for key, _ in sets))
    # a set whose only member is this row goes with it, and so does its index entry
    emptied = []
    for key, index in sets:
        size = pipe.scard(key)
        if size == 0 or (size == 1 and pipe.sismember(key, entry)):
            emptied.append((key, index))
    pipe.multi()
    pipe.delete(entry)
    for key, _ in sets:
        pipe.srem(key, entry)
    for key, index in emptied:
        pipe.srem(index, key)
    pipe.execute()


def _write_pad(client: redis.Redis) -> None:
    write_row(
        client,
        PAD_RUID,
        username=PAD_USER,
        domain=PAD_DOMAIN,
        contact=f"sip:{PAD_USER}@{PAD_DOMAIN}",
        expires=PAD_EXPIRES,
        last_modified=PAD_EXPIRES,
    )


def write_row(
    client: redis.Redis,
    ruid: str,
    *,
    username: str,
    domain: str,
    contact: str,
    expires: int,
    last_modified: int,
) -> None:
    """A row as db_redis writes one for usrloc (with its AOR's and expiry's set entries):
    the pad row, and the tables the tests stage for a node to load."""
    entry = ENTRY + ruid
    usrdom = f"{USRDOM}{username}:{domain}"
    timer = f"{TIMER}{expires}"
    row: dict[str, str | int] = {
        "username": username,
        "domain": domain,
        "contact": contact,
        "expires": expires,
        "q": "-1.000000",
        "callid": ruid,
        "cseq": 1,
        "flags": 0,
        "cflags": 0,
        "user_agent": "dispatcher",
        "last_modified": last_modified,
        "ruid": ruid,
        "reg_id": 0,
        "server_id": 0,
        "connection_id": -1,
        "keepalive": 0,
        "partition": 0,
    }
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(entry, items=[part for field in row.items() for part in field])
        pipe.sadd(usrdom, entry)
        pipe.sadd(USRDOM_INDEX, usrdom)
        pipe.sadd(timer, entry)
        pipe.sadd(TIMER_INDEX, timer)
        pipe.execute()
