"""A bundle service on a temporary database, with fixed signer keys and a fixed clock.

Shared by the service unit tests, the crash test's child process and the
integration tests, so every layer uses the same keys and trust store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost_server.bundles import format as fmt
from outpost_server.bundles import payloads as pl
from outpost_server.bundles.service import BundleService
from outpost_server.bundles.signing import build_signed, public_bytes
from outpost_server.bundles.trust import TrustStore
from outpost_server.control.policystate import PolicyState
from outpost_server.db.engine import open_database, sqlite_url
from outpost_server.state.bundles import BundleLedger
from outpost_server.state.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = "outpost-site-7"
NOW = 1_800_000_000
KEYS = {
    n: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"svc-" + n.encode()).digest())
    for n in "ABCDE"  # A, B, C trusted; D never trusted; E joins by rotation in some tests
}
KID = {n: fmt.key_id_for(public_bytes(k)) for n, k in KEYS.items()}
POLICY = b'{\n  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],\n}\n'
ALL_IN = ["ca-material", "enrolment-keys", "policy", "trust-store"]


def signer(name: str, kinds: list[str]) -> dict[str, Any]:
    return {
        "key_id": KID[name],
        "public_key": public_bytes(KEYS[name]).hex(),
        "kinds": kinds,
        "label": f"signer {name}",
    }


def trust_doc(
    signers: dict[str, list[str]] | None = None,
    thresholds: dict[str, int] | None = None,
    retired: list[str] | None = None,
) -> dict[str, Any]:
    """Default: A and B sign everything (policy and trust-store need both), C signs keys alone."""
    signers = signers or {"A": ALL_IN, "B": ALL_IN, "C": ["enrolment-keys"]}
    return {
        "format": "outpost-trust-store-v1",
        "signers": [signer(n, k) for n, k in signers.items()],
        "thresholds": thresholds
        or {"ca-material": 2, "enrolment-keys": 1, "policy": 2, "trust-store": 2},
        "retired": [KID[r] for r in retired or []],
    }


def bundle(
    kind: str,
    seq: int,
    payloads: dict[str, bytes],
    *signers: str,
    appliance: str = APP,
    created: int = NOW - 60,
    expires: int = NOW + 86400,
) -> bytes:
    m = fmt.manifest_for(kind, appliance, seq, created, expires, payloads)
    return build_signed(m, payloads, *(KEYS[s] for s in signers))


def policy_bundle(seq: int, *signers: str, text: bytes = POLICY, **kw: Any) -> bytes:
    return bundle("policy", seq, {"policy.hujson": text}, *signers, **kw)


def keys_payload(*entries: dict[str, Any]) -> dict[str, bytes]:
    doc = {"format": pl.KEYS_FORMAT, "keys": list(entries)}
    return {"keys.json": json.dumps(doc).encode()}


def key_entry(prefix: str, secret: str, **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "prefix": prefix,
        "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "user": None,
        "tags": ["tag:sensor"],
        "reusable": False,
        "ephemeral": False,
        "expires": NOW + 7 * 86400,
    }
    e.update(kw)
    return e


def trust_bundle(seq: int, doc: dict[str, Any], *signers: str) -> bytes:
    return bundle("trust-store", seq, {"trust-store.json": json.dumps(doc).encode()}, *signers)


@dataclass
class Env:
    store: Store
    ledger: BundleLedger
    service: BundleService
    policy: PolicyState
    audit: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    now: list[int] = field(default_factory=lambda: [NOW])

    def snapshot(self) -> dict[str, Any]:
        """Everything a bundle could change; equal snapshots mean nothing was applied."""
        return {
            "policies": [(p.id, p.text) for p in self.store.policy_history()],
            "live_policy": self.policy.policy,
            "keys": sorted(k.prefix for k in self.store.enrolment_keys().values()),
            "trust": [(t.id, t.document) for t in self.ledger.trust_history()],
            "seqs": self.ledger.last_seqs(),
            "applied": [b.id for b in self.ledger.bundles() if b.status == "applied"],
        }

    def actions(self) -> list[str]:
        return [a for _, a, _ in self.audit]


def make_env(tmp: Path, *, trust: dict[str, Any] | None = None, install: bool = True) -> Env:
    store = Store(open_database(sqlite_url(tmp / "outpost.db")))
    ledger = BundleLedger(store)
    policy = PolicyState(store)
    audit: list[tuple[str, str, dict[str, Any]]] = []
    now = [NOW]
    service = BundleService(
        store, ledger, APP, policy, lambda a, act, d: audit.append((a, act, d)), lambda: now[0]
    )
    env = Env(store, ledger, service, policy, audit, now)
    if install:
        service.init_trust(json.dumps(trust or trust_doc()).encode(), "console:root")
    return env


def trust_of(env: Env) -> TrustStore:
    t = env.service.trust()
    assert t is not None
    return t
