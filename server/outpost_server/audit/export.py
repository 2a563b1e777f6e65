"""`audit-export` bundles: a signed range of the chain that anyone can check without a database.

The bundle has one payload, `audit.cbor`, a canonical CBOR map
{format, appliance, from, to, anchor, entries, checkpoints, audit_key} where
`anchor` is the prev_hash of entry `from` (GENESIS_HASH when from is 1). The
bundle is signed by the appliance's audit key. `check_export` walks the chain
*before* checking digests and signature so that a tampered export is reported
at the first entry that fails, not merely as "digest mismatch".
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..bundles import cbor, format, signing
from ..bundles.errors import BundleRejected
from ..bundles.trust import SignerKey, TrustStore
from ..bundles.verify import verify
from .chain import ENTRY_MAX_DEPTH, GENESIS_HASH, HASH_BYTES, AuditCorrupt, AuditEntry, verify_chain
from .checkpoint import Checkpoint

EXPORT_KIND = "audit-export"
EXPORT_PAYLOAD = "audit.cbor"
EXPORT_FORMAT = "outpost-audit-export-v1"
EXPORT_MAX_DEPTH = 2 + ENTRY_MAX_DEPTH  # export map > entries array > entry
_KEYS = frozenset(
    {"format", "appliance", "from", "to", "anchor", "entries", "checkpoints", "audit_key"}
)


@dataclass(frozen=True, slots=True)
class ExportedRange:
    appliance: str
    from_seq: int
    to_seq: int
    anchor: bytes
    entries: tuple[AuditEntry, ...]
    checkpoints: tuple[Checkpoint, ...]
    audit_key: bytes

    def encode(self) -> bytes:
        return cbor.encode(
            {
                "format": EXPORT_FORMAT,
                "appliance": self.appliance,
                "from": self.from_seq,
                "to": self.to_seq,
                "anchor": self.anchor,
                "entries": [e.to_cbor_map() for e in self.entries],
                "checkpoints": [c.to_cbor_map() for c in self.checkpoints],
                "audit_key": self.audit_key,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> ExportedRange:
        try:
            m = cbor.decode(raw, max_depth=EXPORT_MAX_DEPTH)
        except BundleRejected as exc:
            raise AuditCorrupt(None, f"export payload: {exc}") from None
        if not isinstance(m, dict) or set(m) != _KEYS or m["format"] != EXPORT_FORMAT:
            raise AuditCorrupt(None, "export payload is not an audit export map")
        a, f, t, anchor, key = m["appliance"], m["from"], m["to"], m["anchor"], m["audit_key"]
        ents, cps = m["entries"], m["checkpoints"]
        if not (
            isinstance(a, str)
            and isinstance(f, int)
            and isinstance(t, int)
            and isinstance(anchor, bytes)
            and isinstance(key, bytes)
            and isinstance(ents, list)
            and isinstance(cps, list)
            and len(anchor) == HASH_BYTES
            and 1 <= f <= t
        ):
            raise AuditCorrupt(None, "export header fields have the wrong types")
        return cls(
            a,
            f,
            t,
            anchor,
            tuple(AuditEntry.from_cbor_map(e) for e in ents),
            tuple(Checkpoint.from_cbor_map(c) for c in cps),
            key,
        )


@dataclass(frozen=True, slots=True)
class ExportReport:
    appliance: str
    from_seq: int
    to_seq: int
    head: bytes
    checkpoints: int
    signer: str
    created: int


def build_export(
    key: Ed25519PrivateKey, rng: ExportedRange, seq: int, now: int, validity_seconds: int
) -> bytes:
    payload = rng.encode()
    manifest = format.manifest_for(
        EXPORT_KIND, rng.appliance, seq, now, now + validity_seconds, {EXPORT_PAYLOAD: payload}
    )
    return signing.build_signed(manifest, {EXPORT_PAYLOAD: payload}, key)


def check_range(rng: ExportedRange) -> None:
    """Chain and completeness of an exported range; AuditCorrupt at the first failing entry."""
    if rng.from_seq == 1 and rng.anchor != GENESIS_HASH:
        raise AuditCorrupt(1, "first entry must link to the genesis hash")
    verify_chain(rng.entries, rng.from_seq, rng.anchor)
    expected = rng.to_seq - rng.from_seq + 1
    if len(rng.entries) < expected:
        raise AuditCorrupt(rng.from_seq + len(rng.entries), "missing (export truncated)")
    if len(rng.entries) > expected:
        raise AuditCorrupt(rng.to_seq + 1, "beyond the declared range")


def check_checkpoints(rng: ExportedRange, public_key: bytes) -> None:
    by_seq = {e.seq: e for e in rng.entries}
    for cp in rng.checkpoints:
        entry = by_seq.get(cp.seq)
        if entry is None or cp.hash != entry.hash or cp.appliance != rng.appliance:
            raise AuditCorrupt(
                cp.seq, "signed checkpoint does not match this entry (history rewritten)"
            )
        if not cp.verifies(public_key):
            raise AuditCorrupt(cp.seq, "checkpoint signature does not verify")


def check_export(data: bytes, public_key: bytes, appliance: str | None = None) -> ExportReport:
    """Everything `outpost-audit-verify` checks, in order; AuditCorrupt names the first failure."""
    kid = format.key_id_for(public_key)
    trust = TrustStore(
        {kid: SignerKey(kid, public_key, frozenset({EXPORT_KIND}))}, {EXPORT_KIND: 1}
    )
    try:
        frame = format.parse_frame(data)
        manifest = format.decode_manifest(frame.manifest_bytes)
    except BundleRejected as exc:
        raise AuditCorrupt(None, f"bundle: {exc}") from None
    if manifest.kind != EXPORT_KIND or [p.name for p in manifest.payloads] != [EXPORT_PAYLOAD]:
        raise AuditCorrupt(
            None, f"bundle is not an {EXPORT_KIND} carrying exactly {EXPORT_PAYLOAD}"
        )
    # Walk the chain over whatever bytes follow the header *before* trusting sizes or digests, so an
    # edit (which also changes the payload's length or digest) is reported at its entry.
    try:
        rng = ExportedRange.decode(data[frame.payload_offset :])
    except AuditCorrupt:
        _verify_bundle(data, trust, appliance, manifest.created)  # a precise framing error, if any
        raise
    check_range(rng)
    _verify_bundle(data, trust, appliance, manifest.created)
    check_checkpoints(rng, public_key)
    if manifest.appliance != rng.appliance:
        raise AuditCorrupt(None, "manifest and export name different appliances")
    head = rng.entries[-1].hash
    return ExportReport(
        rng.appliance, rng.from_seq, rng.to_seq, head, len(rng.checkpoints), kid, manifest.created
    )


def _verify_bundle(data: bytes, trust: TrustStore, appliance: str | None, created: int) -> None:
    try:
        # Evidence does not expire: judge time validity at the export's own creation time.
        verify(data, trust, appliance, created, {}, accept_kinds={EXPORT_KIND})
    except BundleRejected as exc:
        raise AuditCorrupt(None, f"bundle: {exc}") from None
