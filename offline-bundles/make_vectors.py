"""Generate the bundle and audit test vectors in offline-bundles/vectors/ deterministically.

    .venv/bin/python offline-bundles/make_vectors.py [OUT_DIR]

Keys come from fixed seeds and Ed25519 signatures are deterministic, so running
this twice produces byte-identical files (tests/vectors checks that). Broken
vectors are built with the raw framing helpers so each fails exactly one check.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost_server.audit.chain import GENESIS_HASH, make_entry
from outpost_server.bundles import cbor
from outpost_server.bundles import format as fmt
from outpost_server.bundles.signing import build_signed, public_bytes
from outpost_server.bundles.trust import SignerKey, TrustStore

APPLIANCE = "outpost-vec-01"
NOW = 1_750_000_000  # 2025-06-15T15:06:40Z
DAY = 86400
LAST_SEQ = {"policy": 4}
SIGNER_KINDS = {
    "A": ["ca-material", "enrolment-keys", "policy", "trust-store"],
    "B": ["ca-material", "enrolment-keys", "policy", "trust-store"],
    "C": ["enrolment-keys"],
}
THRESHOLDS = {"ca-material": 2, "enrolment-keys": 1, "policy": 2, "trust-store": 2}
POLICY = (
    b'{\n  // vector policy\n  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],\n}\n'
)


def seed(name: str) -> bytes:
    return hashlib.sha256(f"outpost-vector-signer-{name}".encode()).digest()


KEYS = {n: Ed25519PrivateKey.from_private_bytes(seed(n)) for n in "ABCD"}  # D is not trusted


def kid(name: str) -> str:
    return fmt.key_id_for(public_bytes(KEYS[name]))


def trust_store() -> TrustStore:
    signers = {
        kid(n): SignerKey(kid(n), public_bytes(KEYS[n]), frozenset(k), f"vector signer {n}")
        for n, k in SIGNER_KINDS.items()
    }
    return TrustStore(signers, dict(THRESHOLDS))


def bundle(
    kind: str,
    seq: int,
    payloads: dict[str, bytes],
    *signers: str,
    appliance: str = APPLIANCE,
    created: int = NOW - DAY,
    expires: int = NOW + 7 * DAY,
) -> bytes:
    m = fmt.manifest_for(kind, appliance, seq, created, expires, payloads)
    return build_signed(m, payloads, *(KEYS[s] for s in signers))


def signed_raw(manifest_bytes: bytes, *signers: str, bodies: tuple[bytes, ...] = ()) -> bytes:
    """Frame arbitrary manifest bytes with valid signatures, to reach the checks after them."""
    sigs = [
        fmt.Signature(kid(s), KEYS[s].sign(fmt.signed_message(manifest_bytes))) for s in signers
    ]
    return fmt.assemble(manifest_bytes, fmt.encode_signatures(sigs), bodies)


def manifest_map(**override: Any) -> dict[str, Any]:
    body = POLICY
    m: dict[str, Any] = {
        "kind": "policy",
        "appliance": APPLIANCE,
        "seq": 5,
        "created": NOW - DAY,
        "expires": NOW + 7 * DAY,
        "payloads": [
            {"name": "policy.hujson", "size": len(body), "sha256": hashlib.sha256(body).digest()}
        ],
    }
    m.update(override)
    return m


def vectors() -> list[tuple[str, bytes, str | None, str | None]]:
    """(file stem, bytes, expected check or None for valid, expected message)."""
    good = bundle("policy", 5, {"policy.hujson": POLICY}, "A", "B")
    frame = fmt.parse_frame(good)
    new_store = trust_store().to_json()
    new_store["signers"] = [s for s in new_store["signers"] if s["key_id"] != kid("C")]
    new_store["signers"].append(
        {
            "key_id": kid("D"),
            "public_key": public_bytes(KEYS["D"]).hex(),
            "kinds": ["enrolment-keys"],
            "label": "vector signer D",
        }
    )
    new_store["retired"] = [kid("C")]
    ts_payload = (json.dumps(new_store, indent=2) + "\n").encode()
    sig_a = fmt.decode_signatures(frame.signature_bytes)
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    one_sig_bad = [
        fmt.Signature(s.key_id, bytes([s.signature[0] ^ 1]) + s.signature[1:]) for s in sig_a
    ]
    deep = b"\x81" * 100 + b"\x00"
    # canonical order is shorter-key-first ("seq" < "kind"); this puts "kind" first
    unsorted = (
        bytes([0xA2])
        + cbor.encode("kind")
        + cbor.encode("policy")
        + cbor.encode("seq")
        + cbor.encode(1)
    )
    missing = dict(manifest_map())
    del missing["expires"]
    P = {"policy.hujson": POLICY}
    return [
        ("valid-policy", good, None, None),
        (
            "valid-enrolment-keys",
            bundle(
                "enrolment-keys",
                1,
                {"keys.json": b'{"keys": []}\n', "README.txt": b"two payloads\n"},
                "C",
            ),
            None,
            None,
        ),
        (
            "valid-trust-store",
            bundle("trust-store", 1, {"trust-store.json": ts_payload}, "A", "B"),
            None,
            None,
        ),
        ("valid-ca-material", bundle("ca-material", 1, {}, "A", "B"), None, None),
        ("truncated-header", good[:10], "truncated", "header needs 17 bytes, file has 10"),
        ("bad-magic", b"\x89OPX" + good[4:], "bad-magic", "not an Outpost bundle"),
        (
            "unsupported-version",
            good[:8] + b"\x02" + good[9:],
            "unsupported-version",
            "format version 2, expected 1",
        ),
        (
            "too-large-manifest",
            fmt.HEADER.pack(fmt.MAGIC, 1, fmt.MAX_MANIFEST_BYTES + 1, 0),
            "too-large",
            f"manifest is {fmt.MAX_MANIFEST_BYTES + 1} bytes, limit {fmt.MAX_MANIFEST_BYTES}",
        ),
        (
            "truncated-manifest",
            good[: fmt.HEADER_BYTES + 20],
            "truncated",
            "file ends inside the manifest or signature block",
        ),
        (
            "signature-block-duplicate",
            fmt.assemble(
                frame.manifest_bytes,
                cbor.encode([[bytes.fromhex(sig_a[0].key_id), sig_a[0].signature]] * 2),
                [POLICY],
            ),
            "invalid-signature-block",
            f"key {sig_a[0].key_id} signs twice",
        ),
        ("unsigned", bundle("policy", 5, P), "unsigned", "bundle carries no signatures"),
        (
            "unknown-signer",
            bundle("policy", 5, P, "A", "D"),
            "unknown-signer",
            f"key {kid('D')} is not in the trust store",
        ),
        (
            "bad-signature",
            fmt.assemble(frame.manifest_bytes, fmt.encode_signatures(one_sig_bad), [POLICY]),
            "bad-signature",
            f"signature by key {one_sig_bad[0].key_id} does not verify",
        ),
        (
            "cbor-indefinite-length",
            signed_raw(b"\xbf\xff", "A", "B"),
            "malformed-cbor",
            "indefinite-length items are not allowed",
        ),
        (
            "cbor-deep-nesting",
            signed_raw(deep, "A", "B"),
            "malformed-cbor",
            "nesting deeper than 3",
        ),
        (
            "cbor-huge-length",
            signed_raw(b"\x5b" + struct.pack(">Q", 2**62), "A", "B"),
            "malformed-cbor",
            f"declared length {2**62} exceeds the 0 bytes that remain",
        ),
        (
            "cbor-non-canonical",
            signed_raw(unsorted, "A", "B"),
            "malformed-cbor",
            "non-canonical: map keys not in sorted order",
        ),
        (
            "manifest-missing-field",
            signed_raw(cbor.encode(missing), "A", "B", bodies=(POLICY,)),
            "invalid-manifest",
            "manifest keys wrong (missing ['expires'], unknown [])",
        ),
        (
            "kind-not-accepted",
            bundle("audit-export", 1, {"audit.cbor": b"\xa0"}, "A", "B"),
            "kind-not-accepted",
            "kind audit-export is not accepted here",
        ),
        (
            "not-authorised",
            bundle("policy", 5, P, "A", "C"),
            "not-authorised",
            f"key {kid('C')} may not sign policy",
        ),
        (
            "below-threshold",
            bundle("policy", 5, P, "A"),
            "below-threshold",
            "1 of 2 required signatures for policy",
        ),
        (
            "wrong-appliance",
            bundle("policy", 5, P, "A", "B", appliance="outpost-other"),
            "wrong-appliance",
            "bundle is for appliance outpost-other",
        ),
        (
            "not-yet-valid",
            bundle("policy", 5, P, "A", "B", created=NOW + 3600, expires=NOW + 7200),
            "not-yet-valid",
            f"created {NOW + 3600}, now {NOW}",
        ),
        (
            "expired",
            bundle("policy", 5, P, "A", "B", created=NOW - 7 * DAY, expires=NOW - DAY),
            "expired",
            f"expired {NOW - DAY}, now {NOW}",
        ),
        (
            "replayed",
            bundle("policy", 4, P, "A", "B"),
            "replayed",
            "sequence 4 for policy, already accepted 4",
        ),
        (
            "truncated-payload",
            good[:-3],
            "truncated",
            f"payloads declare {len(POLICY)} bytes, file has {len(POLICY) - 3}",
        ),
        ("trailing-bytes", good + b"\x00\x00", "trailing-bytes", "2 bytes after the last payload"),
        (
            "digest-mismatch",
            bytes(flipped),
            "digest-mismatch",
            "payload policy.hujson does not match its sha256",
        ),
    ]


def audit_vector() -> dict[str, Any]:
    e = make_entry(
        1, NOW, "alice", "node.delete", {"before": {"name": "laptop"}, "after": None}, GENESIS_HASH
    )
    body = cbor.encode(e.body())
    return {
        "entry": {
            "seq": 1,
            "time": NOW,
            "actor": "alice",
            "action": "node.delete",
            "details": {"before": {"name": "laptop"}, "after": None},
            "prev_hash": GENESIS_HASH.hex(),
        },
        "canonical_cbor": body.hex(),
        "hash": e.hash.hex(),
    }


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ts = trust_store()
    (out / "trust-store.json").write_bytes(ts.dumps())
    index: dict[str, Any] = {
        "appliance": APPLIANCE,
        "now": NOW,
        "last_seq": LAST_SEQ,
        "trust_store": "trust-store.json",
        "keys": {
            n: {
                "seed": seed(n).hex(),
                "public_key": public_bytes(k).hex(),
                "key_id": kid(n),
                "trusted": n in SIGNER_KINDS,
            }
            for n, k in KEYS.items()
        },
        "vectors": [],
    }
    for stem, data, check, message in vectors():
        (out / f"{stem}.opb").write_bytes(data)
        entry: dict[str, Any] = {"file": f"{stem}.opb", "sha256": hashlib.sha256(data).hexdigest()}
        if check is None:
            entry["expect"] = "ok"
        else:
            entry.update(expect="reject", check=check, error=f"{check}: {message}")
        index["vectors"].append(entry)
    (out / "bundles.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "audit-entry.json").write_text(json.dumps(audit_vector(), indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "vectors")
