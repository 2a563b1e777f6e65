"""Audit entries and the hash chain that links them (sans-IO).

An entry's hash is SHA-256 over the canonical CBOR map of
{seq, time, actor, action, details, prev_hash} — every field except `hash`.
`prev_hash` of entry 1 is 32 zero bytes (GENESIS_HASH); of entry n it is the
hash of entry n-1. Editing, deleting, reordering or cutting entries therefore
breaks the chain at a specific entry, which `verify_chain` names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..bundles import cbor
from ..errors import InvalidInput, ProtocolError

GENESIS_HASH = bytes(32)  # prev_hash of the first entry ever written
HASH_BYTES = 32
MAX_ACTOR_CHARS = 128  # a user name, "console", "intake:<device>"
MAX_ACTION_CHARS = 64  # dotted verbs such as "node.delete"
MAX_DETAILS_BYTES = 16 * 1024  # before/after of one object; whole policies are referenced by digest
MAX_DETAILS_DEPTH = 4  # details map > before/after map > list > map
ENTRY_MAX_DEPTH = 1 + MAX_DETAILS_DEPTH  # the entry map around details
_ENTRY_KEYS = frozenset({"seq", "time", "actor", "action", "details", "prev_hash", "hash"})


class AuditCorrupt(ProtocolError):
    """The audit chain is broken; `seq` is the first entry that fails (None: not entry-specific)."""

    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(f"entry {seq}: {reason}" if seq is not None else reason)
        self.seq = seq
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    time: int
    actor: str
    action: str
    details: Mapping[str, Any]
    prev_hash: bytes
    hash: bytes

    def body(self) -> dict[str, Any]:
        return body(self.seq, self.time, self.actor, self.action, self.details, self.prev_hash)

    def computed_hash(self) -> bytes:
        return hashlib.sha256(cbor.encode(self.body())).digest()

    def to_cbor_map(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    @classmethod
    def from_cbor_map(cls, m: object) -> AuditEntry:
        """Shape checks only; whether the hash is right is `verify_chain`'s job."""
        if not isinstance(m, dict) or set(m) != _ENTRY_KEYS:
            raise AuditCorrupt(None, "record is not an audit entry map")
        seq, time, actor, action = m["seq"], m["time"], m["actor"], m["action"]
        details, prev, h = m["details"], m["prev_hash"], m["hash"]
        if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1):
            raise AuditCorrupt(None, "entry seq is not a positive integer")
        if not (isinstance(time, int) and not isinstance(time, bool) and time >= 0):
            raise AuditCorrupt(seq, "time is not a non-negative integer")
        if (
            not isinstance(actor, str)
            or not isinstance(action, str)
            or not isinstance(details, dict)
        ):
            raise AuditCorrupt(seq, "actor/action/details have the wrong types")
        if not (
            isinstance(prev, bytes) and isinstance(h, bytes) and len(prev) == len(h) == HASH_BYTES
        ):
            raise AuditCorrupt(seq, "prev_hash/hash are not 32 bytes")
        return cls(seq, time, actor, action, details, prev, h)


def body(  # noqa: PLR0917 - one argument per field
    seq: int, time: int, actor: str, action: str, details: Mapping[str, Any], prev_hash: bytes
) -> dict[str, Any]:
    return {
        "seq": seq,
        "time": time,
        "actor": actor,
        "action": action,
        "details": dict(details),
        "prev_hash": prev_hash,
    }


def make_entry(  # noqa: PLR0917 - one argument per field
    seq: int, time: int, actor: str, action: str, details: Mapping[str, Any], prev_hash: bytes
) -> AuditEntry:
    """A new entry; refuses inputs that would make an unverifiable or unbounded record."""
    if not actor or len(actor) > MAX_ACTOR_CHARS:
        raise InvalidInput(f"actor must be 1..{MAX_ACTOR_CHARS} characters")
    if not action or len(action) > MAX_ACTION_CHARS:
        raise InvalidInput(f"action must be 1..{MAX_ACTION_CHARS} characters")
    if time < 0:
        raise InvalidInput("time must be non-negative")
    b = body(seq, time, actor, action, details, prev_hash)
    try:
        raw_details = cbor.encode(b["details"])
        cbor.decode(raw_details, max_depth=MAX_DETAILS_DEPTH)  # same bounds a verifier applies
    except Exception as exc:  # encode: unsupported type; decode: too deep
        raise InvalidInput(f"details must be text/int/bytes/bool/null/lists/maps, {exc}") from None
    if len(raw_details) > MAX_DETAILS_BYTES:
        raise InvalidInput(f"details larger than {MAX_DETAILS_BYTES} bytes")
    return AuditEntry(
        seq, time, actor, action, dict(details), prev_hash, hashlib.sha256(cbor.encode(b)).digest()
    )


def verify_chain(entries: Sequence[AuditEntry], first_seq: int, anchor: bytes | None) -> None:
    """Check that `entries` are seq first_seq, first_seq+1, ... each hashing right and linking to
    the one before (the first to `anchor`, unless None). Raise AuditCorrupt at the first failure.

    The failure names the entry a reader should look at: a hash that does not
    match names the edited entry; a missing seq names the deleted one; a seq that
    appears later than expected names where the order broke.
    """
    present = {e.seq for e in entries}
    prev = anchor
    for i, e in enumerate(entries):
        expected = first_seq + i
        if e.seq != expected:
            if expected in present:
                raise AuditCorrupt(expected, f"out of order (found entry {e.seq} in its place)")
            raise AuditCorrupt(expected, "missing (deleted)")
        if e.computed_hash() != e.hash:
            raise AuditCorrupt(e.seq, "hash does not match contents (edited)")
        if prev is not None and e.prev_hash != prev:
            raise AuditCorrupt(e.seq, "prev_hash does not match the previous entry (chain broken)")
        prev = e.hash
