"""Redis key names of one tenant, and the id rules that keep them unambiguous.

Every key carries the hash tag ``{t:<tenant>}``, so one tenant's keys live in one Redis Cluster
slot and a FUNCTION may touch all of them. Agent data is stored column-wise (one hash per
attribute, field = agent id) so a function receives a fixed, small set of KEYS however many
agents a tenant has.
"""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Reservation members and live-call fields are "<call>\x1f<agent>": the separator must not
# occur in a call-id, and agent ids cannot contain it by ID_PATTERN.
FIELD_SEPARATOR = "\x1f"
MAX_CALL_ID_BYTES = 256
DAY_PATTERN = re.compile(r"[0-9]{8}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
# The set of tenant ids that have (had) a config: the admin API's tenant list and the metrics
# scrape start from it. Outside every tenant's hash slot, so only plain commands touch it,
# never a library function (those keep to one tenant's slot).
TENANTS_KEY = "dispatcher:tenants"
# The carrier-wide index from a request to its tenant: SIP domain -> tenant, DID -> tenant.
# One hash tag of their own, so disp_names_put changes both atomically (in one slot).
DOMAINS_KEY = "{dispatcher}:domains"
DIDS_KEY = "{dispatcher}:dids"
# The same index the other way round, tenant -> the names it holds: a put changes a tenant's
# own names without a walk over every tenant's (the same slot as the two above).
TENANT_NAMES_KEY = "{dispatcher}:tenant_names"
# A counter disp_names_put increments whenever a name changes hands: a worker caches names
# until it moves (dispatcher.sip.tenants), one GET a second instead of one per name.
NAMES_VERSION_KEY = "{dispatcher}:names_version"
# The key of the digest nonces every node shares (dispatcher.sip.authn), set once (SET NX).
AUTH_SECRET_KEY = "{dispatcher}:auth_secret"
# Every node's heartbeat (zset node -> last beat, Redis' ms): a node silent past the bound is
# dead, and the others release the calls it held (dispatcher.sip.keeper).
NODES_KEY = "{dispatcher}:nodes"

# Order of the agent columns inside TenantKeys.base; library.lua reads KEYS[5..14] in this order.
AGENT_COLUMNS = (
    "status",
    "reason",
    "live",
    "resv",
    "max",
    "wrapup",
    "wrapuntil",
    "idle",
    "missed",
    "autopause",
)


# The queues' keys inside TenantKeys.base (KEYS[15..20]): every group's waiting callers (zset),
# their entries, their leases, how many wait per group, each queued group's config, and its
# recent handle times (library.lua's header says what each holds).
QUEUE_KEYS = ("q", "qe", "qlease", "qn", "qcfg", "ht")


def validate_id(value: str, field: str) -> str:
    """Return `value` if it is a valid tenant, group or agent id; ValueError naming `field`."""
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise ValueError(f"invalid {field} {value!r}: must match ^{ID_PATTERN.pattern}$")
    return value


def validate_call_id(value: str, field: str = "call_id") -> str:
    """Return `value` if usable as a call-id: not empty, at most 256 UTF-8 bytes, no \\x1f."""
    # the common case first (a call's decision, answer and release check it 9 times):
    # a short ASCII id needs no encoding to be measured
    short_ascii = type(value) is str and 0 < len(value) <= 64 and value.isascii()
    if short_ascii and FIELD_SEPARATOR not in value:
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"invalid {field} {value!r}: must be a non-empty string")
    if FIELD_SEPARATOR in value:
        raise ValueError(f"invalid {field} {value!r}: must not contain \\x1f")
    if len(value.encode()) > MAX_CALL_ID_BYTES:
        raise ValueError(f"invalid {field}: longer than {MAX_CALL_ID_BYTES} bytes")
    return value


class TenantKeys:
    """All key names of one tenant.

    `base` is the tuple every library function receives first (KEYS[1..22]): config, events,
    reservations, live calls, the agent columns in `AGENT_COLUMNS` order, then the queues'
    keys in `QUEUE_KEYS` order, then the node of each answered call (`lnode`) and the event
    counts (`counts`).
    """

    __slots__ = (
        "agent",
        "base",
        "config",
        "counts",
        "credentials",
        "events",
        "live",
        "lnode",
        "prefix",
        "prompt_data",
        "prompts",
        "queue",
        "registrations",
        "resv",
        "tenant",
        "tokens",
        "voicemail",
        "voicemail_index",
    )

    def __init__(self, tenant: str) -> None:
        self.tenant = validate_id(tenant, "tenant")
        self.prefix = f"{{t:{tenant}}}"
        self.config = f"{self.prefix}:config"
        self.events = f"{self.prefix}:events"
        self.resv = f"{self.prefix}:resv"
        self.live = f"{self.prefix}:live"
        self.credentials = f"{self.prefix}:cred"  # SIP user -> HA1 record (state.credentials)
        self.tokens = f"{self.prefix}:tokens"  # admin API token id -> record (digest, role)
        # voicemail and uploaded prompts (state.messages says what each holds)
        # agent id -> when its newest phone registration lapses (epoch ms, the node's clock)
        self.registrations = f"{self.prefix}:reg"
        self.voicemail = f"{self.prefix}:vm"
        self.voicemail_index = f"{self.prefix}:vmi"
        self.prompts = f"{self.prefix}:prompts"
        self.prompt_data = f"{self.prefix}:promptdata"
        self.agent = {column: f"{self.prefix}:a:{column}" for column in AGENT_COLUMNS}
        self.queue = {name: f"{self.prefix}:{name}" for name in QUEUE_KEYS}
        self.lnode = f"{self.prefix}:lnode"  # answered call -> the node holding it
        self.counts = f"{self.prefix}:counts"  # events counted by kind (library.lua count_event)
        self.base = (
            self.config,
            self.events,
            self.resv,
            self.live,
            *(self.agent[column] for column in AGENT_COLUMNS),
            *(self.queue[name] for name in QUEUE_KEYS),
            self.lnode,
            self.counts,
        )

    def group(self, gid: str) -> str:
        """Hash of group `gid`: members (comma list, canonical order) and rr."""
        return f"{self.prefix}:g:{validate_id(gid, 'group id')}"

    def call(self, call_id: str) -> str:
        """Set of the agents offered on `call_id`."""
        return f"{self.prefix}:call:{validate_call_id(call_id)}"

    def ended(self, call_id: str) -> str:
        """Marker that `call_id`'s ended event was emitted (disp_release), for a day."""
        return f"{self.prefix}:ended:{validate_call_id(call_id)}"

    def sticky(self, gid: str, day: str) -> str:
        """Hash caller -> agent of group `gid` on local day `day` (yyyymmdd)."""
        if not isinstance(day, str) or DAY_PATTERN.fullmatch(day) is None:
            raise ValueError(f"invalid sticky day {day!r}: must be yyyymmdd")
        return f"{self.prefix}:sticky:{validate_id(gid, 'group id')}:{day}"

    def ticket(self, ticket_digest: str) -> str:
        """String holding one admin API event-stream ticket (by its SHA-256 hex digest) until
        it is redeemed or expires."""
        if not isinstance(ticket_digest, str) or _HEX_DIGEST.fullmatch(ticket_digest) is None:
            raise ValueError(f"invalid ticket digest {ticket_digest!r}: must be SHA-256 hex")
        return f"{self.prefix}:ticket:{ticket_digest}"

    def __repr__(self) -> str:
        return f"TenantKeys({self.tenant!r})"
