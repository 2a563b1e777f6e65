"""The trust store: which Ed25519 keys may sign which bundle kinds, and how many must.

Rotation rules (SPEC.md §7 "Trust model") are enforced by `apply_update`:
a `trust-store` bundle carries the complete new store as `trust-store.json`; it
has already passed `verify()` against the *current* store, so the current
trust-store quorum approved it. The new store must additionally

  1. keep every key id the current store retired (retirement is permanent),
  2. not re-admit a retired key id,
  3. name every signer it drops in `retired` (keys leave only by retirement),
  4. be satisfiable: each threshold between 1 and the number of its signers,
     and a `trust-store` threshold must exist (no store may lock itself out).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import InvalidInput
from .format import ALL_KINDS, ED25519_PUBLIC_BYTES, key_id_for

TRUST_STORE_FORMAT = "outpost-trust-store-v1"
TRUST_STORE_PAYLOAD = "trust-store.json"  # the one payload a trust-store bundle carries
MAX_TRUST_STORE_BYTES = 64 * 1024  # a few dozen signers; JSON is parsed only after verification
MAX_SIGNERS = 64  # more keys than any quorum needs; bounds verification work
MAX_LABEL_CHARS = 64  # a person's or token's name for humans, never trusted


class TrustStoreError(InvalidInput):
    """A trust store (file or trust-store bundle payload) breaks the rules."""


@dataclass(frozen=True, slots=True)
class SignerKey:
    key_id: str
    public_key: bytes
    kinds: frozenset[str]
    label: str = ""

    def verifies(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class TrustStore:
    signers: Mapping[str, SignerKey]
    thresholds: Mapping[str, int]
    retired: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if len(self.signers) > MAX_SIGNERS:
            raise TrustStoreError(f"more than {MAX_SIGNERS} signers")
        for kid, key in self.signers.items():
            if kid != key.key_id or key_id_for(key.public_key) != kid:
                raise TrustStoreError(f"key id {kid} does not match its public key")
            if len(key.public_key) != ED25519_PUBLIC_BYTES:
                raise TrustStoreError(f"key {kid}: public key must be {ED25519_PUBLIC_BYTES} bytes")
            if not key.kinds or not key.kinds <= ALL_KINDS:
                raise TrustStoreError(
                    f"key {kid}: kinds must be a non-empty subset of the known kinds"
                )
            if kid in self.retired:
                raise TrustStoreError(f"key {kid} is retired and cannot be a signer")
            for kind in key.kinds:
                if kind not in self.thresholds:
                    raise TrustStoreError(f"key {kid} may sign {kind} but {kind} has no threshold")
        for kind, t in sorted(self.thresholds.items()):
            if kind not in ALL_KINDS:
                raise TrustStoreError(f"threshold for unknown kind {kind}")
            n = len(self.signers_for(kind))
            if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= n:
                raise TrustStoreError(f"threshold for {kind} must be 1..{n} (its signers), got {t}")

    def signers_for(self, kind: str) -> list[SignerKey]:
        return [k for k in self.signers.values() if kind in k.kinds]

    def threshold(self, kind: str) -> int | None:
        return self.thresholds.get(kind)

    # -- JSON form (the file operators edit and the trust-store bundle payload) --

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TRUST_STORE_FORMAT,
            "signers": [
                {
                    "key_id": k.key_id,
                    "public_key": k.public_key.hex(),
                    "kinds": sorted(k.kinds),
                    "label": k.label,
                }
                for k in sorted(self.signers.values(), key=lambda k: k.key_id)
            ],
            "thresholds": dict(sorted(self.thresholds.items())),
            "retired": sorted(self.retired),
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2) + "\n").encode()

    @classmethod
    def loads(cls, raw: bytes) -> TrustStore:
        if len(raw) > MAX_TRUST_STORE_BYTES:
            raise TrustStoreError(f"trust store larger than {MAX_TRUST_STORE_BYTES} bytes")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise TrustStoreError("trust store is not JSON") from None
        return cls.from_json(doc)

    @classmethod
    def from_json(cls, doc: object) -> TrustStore:
        if not isinstance(doc, dict) or doc.get("format") != TRUST_STORE_FORMAT:
            raise TrustStoreError(
                f"trust store must be an object with format {TRUST_STORE_FORMAT!r}"
            )
        if set(doc) - {"format", "signers", "thresholds", "retired"}:
            raise TrustStoreError("trust store has unknown fields")
        signers: dict[str, SignerKey] = {}
        for s in _list(doc.get("signers", [])):
            if not isinstance(s, dict) or set(s) - {"key_id", "public_key", "kinds", "label"}:
                raise TrustStoreError(
                    "signer must be an object of key_id, public_key, kinds, label"
                )
            try:
                pub = bytes.fromhex(str(s["public_key"]))
                kid = str(s.get("key_id") or key_id_for(pub))
                kinds = frozenset(str(k) for k in _list(s["kinds"]))
            except (KeyError, ValueError):
                raise TrustStoreError("signer needs hex public_key and kinds") from None
            label = str(s.get("label", ""))[:MAX_LABEL_CHARS]
            if kid in signers:
                raise TrustStoreError(f"key {kid} listed twice")
            signers[kid] = SignerKey(kid, pub, kinds, label)
        thresholds = doc.get("thresholds", {})
        if not isinstance(thresholds, dict):
            raise TrustStoreError("thresholds must be an object")
        retired = frozenset(str(r) for r in _list(doc.get("retired", [])))
        return cls(signers, dict(thresholds), retired)


def _list(v: object) -> list[Any]:
    if not isinstance(v, list):
        raise TrustStoreError("expected a list")
    return v


def check_update(current: TrustStore, new: TrustStore) -> None:
    """Rules 1-4 of the module docstring; `new` already passed its own validation."""
    lost = current.retired - new.retired
    if lost:
        raise TrustStoreError(f"retired keys cannot be un-retired: {sorted(lost)}")
    dropped = set(current.signers) - set(new.signers) - new.retired
    if dropped:
        raise TrustStoreError(f"signers removed without being retired: {sorted(dropped)}")
    if new.threshold("trust-store") is None:
        raise TrustStoreError(
            "new trust store has no trust-store threshold (it would lock itself out)"
        )


def apply_update(current: TrustStore, payloads: Mapping[str, bytes]) -> TrustStore:
    """The new store from a *verified* trust-store bundle's payloads, or TrustStoreError."""
    if set(payloads) != {TRUST_STORE_PAYLOAD}:
        raise TrustStoreError(
            f"a trust-store bundle carries exactly one payload, {TRUST_STORE_PAYLOAD}"
        )
    new = TrustStore.loads(payloads[TRUST_STORE_PAYLOAD])
    check_update(current, new)
    return new
