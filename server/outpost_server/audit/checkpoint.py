"""Signed checkpoints: the appliance's audit key vouches for the chain head at a sequence.

Anyone with write access to the log file can recompute every hash after an
edit; only the holder of the audit key can produce checkpoints. A checkpoint
signs SIGNATURE_CONTEXT || canonical CBOR {appliance, seq, hash, time}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..bundles import cbor
from .chain import HASH_BYTES, AuditCorrupt

SIGNATURE_CONTEXT = b"outpost-audit-checkpoint-v1\x00"  # never valid as a bundle signature
_KEYS = frozenset({"appliance", "seq", "hash", "time", "signature"})


@dataclass(frozen=True, slots=True)
class Checkpoint:
    appliance: str
    seq: int
    hash: bytes
    time: int
    signature: bytes

    def signed_bytes(self) -> bytes:
        return SIGNATURE_CONTEXT + cbor.encode(
            {"appliance": self.appliance, "seq": self.seq, "hash": self.hash, "time": self.time}
        )

    def verifies(self, public_key: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                self.signature, self.signed_bytes()
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_cbor_map(self) -> dict[str, Any]:
        return {
            "appliance": self.appliance,
            "seq": self.seq,
            "hash": self.hash,
            "time": self.time,
            "signature": self.signature,
        }

    @classmethod
    def from_cbor_map(cls, m: object) -> Checkpoint:
        if not isinstance(m, dict) or set(m) != _KEYS:
            raise AuditCorrupt(None, "record is not a checkpoint map")
        a, s, h, t, sig = m["appliance"], m["seq"], m["hash"], m["time"], m["signature"]
        if not (
            isinstance(a, str)
            and isinstance(s, int)
            and isinstance(t, int)
            and isinstance(h, bytes)
            and isinstance(sig, bytes)
            and len(h) == HASH_BYTES
            and not isinstance(s, bool)
        ):
            raise AuditCorrupt(None, "checkpoint fields have the wrong types")
        return cls(a, s, h, t, sig)


def make_checkpoint(
    key: Ed25519PrivateKey, appliance: str, seq: int, head: bytes, now: int
) -> Checkpoint:
    unsigned = Checkpoint(appliance, seq, head, now, b"")
    return Checkpoint(appliance, seq, head, now, key.sign(unsigned.signed_bytes()))
