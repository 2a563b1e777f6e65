"""AuditLog: the appliance's append-only, hash-chained, checkpointed record of what was done."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..bundles import cbor
from ..bundles.errors import BundleRejected
from ..bundles.signing import public_bytes
from ..errors import InvalidInput
from .chain import ENTRY_MAX_DEPTH, GENESIS_HASH, AuditCorrupt, AuditEntry, make_entry, verify_chain
from .checkpoint import Checkpoint, make_checkpoint
from .export import ExportedRange, build_export
from .store import RECORD_CHECKPOINT, RECORD_ENTRY, Record, RecordFile

CHECKPOINT_EVERY = (
    256  # entries between automatic signed checkpoints: bounds what a rewrite can hide
)
EXPORT_VALIDITY_SECONDS = (
    30 * 86400
)  # an export is evidence, but stale ones should not sit on media


@dataclass(frozen=True, slots=True)
class ExportSigning:
    """How to sign one export: its bundle sequence (monotonic per appliance) and time."""

    seq: int
    now: int
    validity_seconds: int = EXPORT_VALIDITY_SECONDS


@dataclass(frozen=True, slots=True)
class VerifyReport:
    entries: int
    head: bytes
    checkpoints: int


class AuditLog:
    def __init__(
        self,
        path: Path,
        *,
        appliance_id: str,
        audit_key: Ed25519PrivateKey,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.appliance_id = appliance_id
        self._key = audit_key
        self.public_key = public_bytes(audit_key)
        self._every = checkpoint_every
        self._file = RecordFile(path)
        self._entries: list[Record] = []  # index i holds seq i+1
        self._checkpoints: list[Checkpoint] = []
        self._head = GENESIS_HASH
        for rec in self._file.records:
            if rec.type == RECORD_ENTRY:
                self._entries.append(rec)
            elif rec.type == RECORD_CHECKPOINT:
                self._checkpoints.append(Checkpoint.from_cbor_map(self._decode(rec)))
            else:
                raise AuditCorrupt(None, f"unknown record type {rec.type}")
        if self._entries:
            last = self._entry(len(self._entries))
            if last.seq != len(self._entries):
                raise AuditCorrupt(last.seq, "sequence does not match its position in the file")
            self._head = last.hash

    @property
    def recovered_tail_bytes(self) -> int:
        """Bytes of a torn final record cut off at open; the lead should log an entry if > 0."""
        return self._file.recovered_tail_bytes

    @property
    def last_seq(self) -> int:
        return len(self._entries)

    @property
    def head(self) -> bytes:
        return self._head

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        return self._checkpoints[-1] if self._checkpoints else None

    def close(self) -> None:
        self._file.close()

    def _decode(self, rec: Record) -> Any:
        try:
            return cbor.decode(self._file.read(rec), max_depth=ENTRY_MAX_DEPTH)
        except BundleRejected as exc:
            raise AuditCorrupt(None, f"record at byte {rec.offset}: {exc}") from None

    def _entry(self, seq: int) -> AuditEntry:
        return AuditEntry.from_cbor_map(self._decode(self._entries[seq - 1]))

    def append(self, actor: str, action: str, details: Mapping[str, Any], now: int) -> AuditEntry:
        entry = make_entry(self.last_seq + 1, now, actor, action, details, self._head)
        self._entries.append(self._file.append(RECORD_ENTRY, cbor.encode(entry.to_cbor_map())))
        self._head = entry.hash
        if entry.seq % self._every == 0:
            self.checkpoint(now)
        return entry

    def checkpoint(self, now: int) -> Checkpoint:
        """Sign the current head (e.g. at shutdown, before an export, on a timer)."""
        cp = make_checkpoint(self._key, self.appliance_id, self.last_seq, self._head, now)
        self._file.append(RECORD_CHECKPOINT, cbor.encode(cp.to_cbor_map()))
        self._checkpoints.append(cp)
        return cp

    def entries(self, from_seq: int = 1, to_seq: int | None = None) -> list[AuditEntry]:
        to = self.last_seq if to_seq is None else to_seq
        if from_seq < 1 or to > self.last_seq or from_seq > to + 1:
            raise InvalidInput(f"range {from_seq}..{to} outside 1..{self.last_seq}")
        return [self._entry(s) for s in range(from_seq, to + 1)]

    def verify(self) -> VerifyReport:
        """The whole chain from genesis and every checkpoint; AuditCorrupt at the first failure."""
        all_entries = self.entries()
        verify_chain(all_entries, 1, GENESIS_HASH)
        for cp in self._checkpoints:
            if cp.seq == 0:
                if cp.hash != GENESIS_HASH:
                    raise AuditCorrupt(None, "checkpoint at seq 0 does not name the genesis hash")
            elif cp.seq > self.last_seq or all_entries[cp.seq - 1].hash != cp.hash:
                raise AuditCorrupt(
                    cp.seq, "signed checkpoint does not match this entry (history rewritten)"
                )
            if not cp.verifies(self.public_key) or cp.appliance != self.appliance_id:
                raise AuditCorrupt(cp.seq, "checkpoint signature does not verify")
        return VerifyReport(len(all_entries), self._head, len(self._checkpoints))

    def export(self, from_seq: int, to_seq: int, signing: ExportSigning) -> bytes:
        """An audit-export bundle of entries from_seq..to_seq, signed with the audit key."""
        if not 1 <= from_seq <= to_seq <= self.last_seq:
            raise InvalidInput(f"export range {from_seq}..{to_seq} outside 1..{self.last_seq}")
        entries = self.entries(from_seq, to_seq)
        rng = ExportedRange(
            appliance=self.appliance_id,
            from_seq=from_seq,
            to_seq=to_seq,
            anchor=entries[0].prev_hash,
            entries=tuple(entries),
            checkpoints=tuple(c for c in self._checkpoints if from_seq <= c.seq <= to_seq),
            audit_key=self.public_key,
        )
        try:
            return build_export(self._key, rng, signing.seq, signing.now, signing.validity_seconds)
        except BundleRejected as exc:  # e.g. the range is over the bundle size limit
            raise InvalidInput(
                f"export {from_seq}..{to_seq}: {exc}; export a smaller range"
            ) from None
