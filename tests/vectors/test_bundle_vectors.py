"""Known-answer vectors in offline-bundles/vectors: each file verifies or fails as listed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from outpost_server.audit.chain import make_entry
from outpost_server.bundles import BundleRejected, TrustStore, cbor, verify

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "offline-bundles" / "vectors"
INDEX: dict[str, Any] = json.loads((VECTORS / "bundles.json").read_text())


def _trust() -> TrustStore:
    return TrustStore.loads((VECTORS / INDEX["trust_store"]).read_bytes())


@pytest.mark.parametrize("vector", INDEX["vectors"], ids=lambda v: v["file"])
def test_vector_verifies_or_fails_with_the_listed_error(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == vector["sha256"]
    if vector["expect"] == "ok":
        vb = verify(data, _trust(), INDEX["appliance"], INDEX["now"], INDEX["last_seq"])
        assert vb.manifest.appliance == INDEX["appliance"]
    else:
        with pytest.raises(BundleRejected) as exc:
            verify(data, _trust(), INDEX["appliance"], INDEX["now"], INDEX["last_seq"])
        assert str(exc.value) == vector["error"]
        assert exc.value.check.value == vector["check"]


def test_every_rejection_check_except_file_size_has_a_vector() -> None:
    checks = {v["check"] for v in INDEX["vectors"] if v["expect"] == "reject"}
    assert checks == {
        "truncated",
        "bad-magic",
        "unsupported-version",
        "too-large",
        "invalid-signature-block",
        "unsigned",
        "unknown-signer",
        "bad-signature",
        "malformed-cbor",
        "invalid-manifest",
        "kind-not-accepted",
        "not-authorised",
        "below-threshold",
        "wrong-appliance",
        "not-yet-valid",
        "expired",
        "replayed",
        "trailing-bytes",
        "digest-mismatch",
    }


def test_make_vectors_regenerates_identical_bytes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_vectors", REPO / "offline-bundles" / "make_vectors.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    for f in sorted(VECTORS.iterdir()):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name


def test_vector_keys_derive_from_their_seeds() -> None:
    for k in INDEX["keys"].values():
        pub = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(k["seed"])).public_key()
        raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert raw.hex() == k["public_key"]
        assert hashlib.sha256(raw).digest()[:8].hex() == k["key_id"]


def test_audit_entry_vector_hash_is_sha256_of_its_canonical_cbor() -> None:
    v = json.loads((VECTORS / "audit-entry.json").read_text())
    e = v["entry"]
    body = {**e, "prev_hash": bytes.fromhex(e["prev_hash"])}
    assert cbor.encode(body).hex() == v["canonical_cbor"]
    assert hashlib.sha256(bytes.fromhex(v["canonical_cbor"])).hexdigest() == v["hash"]
    entry = make_entry(
        e["seq"], e["time"], e["actor"], e["action"], e["details"], body["prev_hash"]
    )
    assert entry.hash.hex() == v["hash"]


def test_canonical_cbor_matches_rfc8949_appendix_a_examples() -> None:
    # RFC 8949 Appendix A (the subset Outpost uses)
    cases = [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (100, "1864"),
        (1000, "1903e8"),
        (1000000, "1a000f4240"),
        (2**64 - 1, "1bffffffffffffffff"),
        (-1, "20"),
        (-1000, "3903e7"),
        (False, "f4"),
        (True, "f5"),
        (None, "f6"),
        (b"", "40"),
        (b"\x01\x02\x03\x04", "4401020304"),
        ("IETF", "6449455446"),
        ("\u00fc", "62c3bc"),
        ([1, [2, 3], [4, 5]], "8301820203820405"),
        ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    ]
    for value, hexed in cases:
        assert cbor.encode(value).hex() == hexed
        assert cbor.decode(bytes.fromhex(hexed)) == value
