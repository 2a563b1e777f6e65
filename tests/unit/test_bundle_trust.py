"""Trust store validation and rotation rules (SPEC.md §7)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from outpost_server.bundles import BundleRejected, SignerKey, TrustStore, TrustStoreError, verify
from outpost_server.bundles import format as fmt
from outpost_server.bundles.signing import build_signed, public_bytes
from outpost_server.bundles.trust import TRUST_STORE_PAYLOAD, apply_update

APP = "outpost-test"
NOW = 1_800_000_000
KEYS = {
    n: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"t" + n.encode()).digest())
    for n in "ABCD"
}
KID = {n: fmt.key_id_for(public_bytes(k)) for n, k in KEYS.items()}
ALL_IN = {"policy", "trust-store", "enrolment-keys", "ca-material"}


def signer(n: str, kinds: set[str] = ALL_IN) -> SignerKey:
    return SignerKey(KID[n], public_bytes(KEYS[n]), frozenset(kinds), n)


def store(names: str = "ABC", t: int = 2, retired: frozenset[str] = frozenset()) -> TrustStore:
    return TrustStore({KID[n]: signer(n) for n in names}, {k: t for k in ALL_IN}, retired)


def rotation_bundle(new: TrustStore, *signers: str, seq: int = 1) -> bytes:
    p = {TRUST_STORE_PAYLOAD: new.dumps()}
    return build_signed(
        fmt.manifest_for("trust-store", APP, seq, NOW, NOW + 60, p), p, *(KEYS[s] for s in signers)
    )


def test_lost_signer_is_retired_by_the_remaining_quorum() -> None:
    current = store("ABC")
    new = store("AB", retired=frozenset({KID["C"]}))
    vb = verify(rotation_bundle(new, "A", "B"), current, APP, NOW, {})
    assert apply_update(current, vb.payloads) == new


def test_rotation_signed_below_the_current_trust_store_threshold_is_refused() -> None:
    new = store("ABD")
    with pytest.raises(
        BundleRejected, match="below-threshold: 1 of 2 required signatures for trust-store"
    ):
        verify(rotation_bundle(new, "A"), store("ABC"), APP, NOW, {})


def test_new_keys_cannot_sign_their_own_admission() -> None:
    new = store("ABCD")
    with pytest.raises(BundleRejected, match=f"unknown-signer: key {KID['D']}"):
        verify(rotation_bundle(new, "A", "D"), store("ABC"), APP, NOW, {})


def test_dropping_a_signer_without_retiring_it_is_refused() -> None:
    with pytest.raises(TrustStoreError, match="removed without being retired"):
        apply_update(store("ABC"), {TRUST_STORE_PAYLOAD: store("AB").dumps()})


def test_retired_key_cannot_be_readmitted() -> None:
    current = store("AB", retired=frozenset({KID["C"]}))
    doc: dict[str, Any] = json.loads(store("ABC").dumps())
    doc["retired"] = [KID["C"]]
    with pytest.raises(TrustStoreError, match="is retired and cannot be a signer"):
        apply_update(current, {TRUST_STORE_PAYLOAD: json.dumps(doc).encode()})


def test_retirement_is_permanent() -> None:
    current = store("AB", retired=frozenset({KID["C"]}))
    with pytest.raises(TrustStoreError, match="cannot be un-retired"):
        apply_update(current, {TRUST_STORE_PAYLOAD: store("AB").dumps()})


def test_threshold_above_the_number_of_signers_is_refused() -> None:
    with pytest.raises(TrustStoreError, match=r"threshold for ca-material must be 1\.\.2"):
        store("AB", t=3)


def test_store_without_trust_store_threshold_cannot_be_installed() -> None:
    new = TrustStore(
        {KID[n]: signer(n, {"policy"}) for n in "AB"}, {"policy": 1}, frozenset({KID["C"]})
    )
    with pytest.raises(TrustStoreError, match="lock itself out"):
        apply_update(store("ABC"), {TRUST_STORE_PAYLOAD: new.dumps()})


def test_key_id_must_match_public_key() -> None:
    doc: dict[str, Any] = json.loads(store("AB").dumps())
    doc["signers"][0]["key_id"] = "00" * 8
    with pytest.raises(TrustStoreError, match="does not match its public key"):
        TrustStore.loads(json.dumps(doc).encode())


def test_trust_store_bundle_with_extra_payload_is_refused() -> None:
    with pytest.raises(TrustStoreError, match="exactly one payload"):
        apply_update(store(), {TRUST_STORE_PAYLOAD: store().dumps(), "x": b""})


def test_trust_store_that_is_not_json_is_refused() -> None:
    with pytest.raises(TrustStoreError, match="not JSON"):
        TrustStore.loads(b"\xff{")
