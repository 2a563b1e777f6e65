"""The verifier: each check refuses with its exact message; nothing else ever escapes."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from outpost_server.bundles import BundleRejected, Check, SignerKey, TrustStore, cbor, verify
from outpost_server.bundles import format as fmt
from outpost_server.bundles.signing import add_signature, build_signed, public_bytes
from outpost_server.errors import InvalidInput

APP = "outpost-test"
NOW = 1_800_000_000
KEYS = {
    n: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(n.encode()).digest()) for n in "ABCX"
}
KID = {n: fmt.key_id_for(public_bytes(k)) for n, k in KEYS.items()}
POLICY = b'{"acls": []}'


def trust() -> TrustStore:
    kinds = {
        "A": {"policy", "trust-store"},
        "B": {"policy", "trust-store"},
        "C": {"enrolment-keys"},
    }
    return TrustStore(
        {KID[n]: SignerKey(KID[n], public_bytes(KEYS[n]), frozenset(k)) for n, k in kinds.items()},
        {"policy": 2, "trust-store": 2, "enrolment-keys": 1},
    )


def make(
    *signers: str,
    kind: str = "policy",
    seq: int = 7,
    appliance: str = APP,
    created: int = NOW - 60,
    expires: int = NOW + 3600,
    payloads: dict[str, bytes] | None = None,
) -> bytes:
    p = {"policy.hujson": POLICY} if payloads is None else payloads
    m = fmt.manifest_for(kind, appliance, seq, created, expires, p)
    return build_signed(m, p, *(KEYS[s] for s in signers))


def rejected(data: bytes, last_seq: dict[str, int] | None = None, now: int = NOW) -> str:
    with pytest.raises(BundleRejected) as exc:
        verify(data, trust(), APP, now, last_seq or {})
    return str(exc.value)


def test_valid_two_of_two_policy_bundle_verifies_with_its_payload_and_signers() -> None:
    vb = verify(make("A", "B"), trust(), APP, NOW, {"policy": 6})
    assert vb.kind == "policy" and vb.seq == 7 and vb.signer_set == "policy"
    assert vb.payloads == {"policy.hujson": POLICY}
    assert vb.signers == {KID["A"], KID["B"]}


def test_bundle_over_the_size_limit_is_too_large() -> None:
    data = b"\x00" * (fmt.MAX_BUNDLE_BYTES + 1)
    assert rejected(data) == f"too-large: bundle is {len(data)} bytes, limit {fmt.MAX_BUNDLE_BYTES}"


def test_short_header_is_truncated() -> None:
    assert rejected(make("A", "B")[:5]) == "truncated: header needs 17 bytes, file has 5"


def test_wrong_magic_is_bad_magic() -> None:
    assert rejected(b"PK\x03\x04" + make("A", "B")[4:]) == "bad-magic: not an Outpost bundle"


def test_other_format_version_is_unsupported() -> None:
    data = make("A", "B")
    assert (
        rejected(data[:8] + b"\x07" + data[9:])
        == "unsupported-version: format version 7, expected 1"
    )


def test_oversized_signature_block_length_is_too_large_before_reading_it() -> None:
    head = fmt.HEADER.pack(fmt.MAGIC, 1, 10, fmt.MAX_SIGNATURE_BLOCK_BYTES + 1)
    assert rejected(head) == "too-large: signature block is 2049 bytes, limit 2048"


def test_file_ending_inside_the_manifest_is_truncated() -> None:
    assert (
        rejected(make("A", "B")[:30])
        == "truncated: file ends inside the manifest or signature block"
    )


def test_no_signatures_is_unsigned() -> None:
    assert rejected(make()) == "unsigned: bundle carries no signatures"


def test_signature_by_a_key_outside_the_trust_store_is_unknown_signer() -> None:
    assert rejected(make("A", "X")) == f"unknown-signer: key {KID['X']} is not in the trust store"


def test_forged_signature_is_bad_signature() -> None:
    data = make("A", "B")
    frame = fmt.parse_frame(data)
    sigs = fmt.decode_signatures(frame.signature_bytes)
    forged = [fmt.Signature(s.key_id, bytes(64)) if i == 1 else s for i, s in enumerate(sigs)]
    bad = fmt.assemble(frame.manifest_bytes, fmt.encode_signatures(forged), [POLICY])
    assert rejected(bad) == f"bad-signature: signature by key {sigs[1].key_id} does not verify"


def test_signature_over_a_different_manifest_is_bad_signature() -> None:
    other = fmt.parse_frame(make("A", seq=8)).signature_bytes
    frame = fmt.parse_frame(make("A"))
    bad = fmt.assemble(frame.manifest_bytes, other, [POLICY])
    assert rejected(bad) == f"bad-signature: signature by key {KID['A']} does not verify"


def test_duplicate_signature_entries_are_refused_not_counted_twice() -> None:
    frame = fmt.parse_frame(make("A"))
    (sig,) = fmt.decode_signatures(frame.signature_bytes)
    dup = cbor.encode([[bytes.fromhex(sig.key_id), sig.signature]] * 2)
    bad = fmt.assemble(frame.manifest_bytes, dup, [POLICY])
    assert rejected(bad) == f"invalid-signature-block: key {KID['A']} signs twice"


def test_outbound_kind_is_not_accepted_for_intake() -> None:
    data = make("A", "B", kind="node-inventory", payloads={})
    assert rejected(data) == "kind-not-accepted: kind node-inventory is not accepted here"


def test_key_not_authorised_for_the_kind_is_refused_even_with_a_quorum() -> None:
    assert rejected(make("A", "B", "C")) == f"not-authorised: key {KID['C']} may not sign policy"


def test_one_of_two_signatures_is_below_threshold() -> None:
    assert rejected(make("A")) == "below-threshold: 1 of 2 required signatures for policy"


def test_signer_without_rights_for_a_kind_is_not_authorised_for_it() -> None:
    t = trust()
    with pytest.raises(BundleRejected) as exc:
        verify(make("A", kind="ca-material", payloads={}), t, APP, NOW, {})
    assert str(exc.value) == f"not-authorised: key {KID['A']} may not sign ca-material"


def test_bundle_for_another_appliance_is_refused() -> None:
    assert (
        rejected(make("A", "B", appliance="elsewhere"))
        == "wrong-appliance: bundle is for appliance elsewhere"
    )


def test_bundle_created_beyond_the_clock_skew_is_not_yet_valid() -> None:
    data = make("A", "B", created=NOW + 301, expires=NOW + 9999)
    assert rejected(data) == f"not-yet-valid: created {NOW + 301}, now {NOW}"


def test_bundle_created_within_the_clock_skew_is_accepted() -> None:
    verify(make("A", "B", created=NOW + 300, expires=NOW + 9999), trust(), APP, NOW, {})


def test_bundle_at_its_expiry_second_is_expired() -> None:
    assert rejected(make("A", "B", expires=NOW)) == f"expired: expired {NOW}, now {NOW}"


def test_sequence_not_above_the_last_accepted_is_replayed() -> None:
    assert (
        rejected(make("A", "B", seq=7), {"policy": 7})
        == "replayed: sequence 7 for policy, already accepted 7"
    )


def test_sequences_are_per_signer_set() -> None:
    verify(make("A", "B", seq=1), trust(), APP, NOW, {"enrolment-keys": 50})


def test_missing_payload_bytes_are_truncated() -> None:
    assert (
        rejected(make("A", "B")[:-1])
        == f"truncated: payloads declare {len(POLICY)} bytes, file has 11"
    )


def test_bytes_after_the_last_payload_are_trailing() -> None:
    assert rejected(make("A", "B") + b"x") == "trailing-bytes: 1 bytes after the last payload"


def test_changed_payload_byte_is_a_digest_mismatch() -> None:
    data = bytearray(make("A", "B"))
    data[-2] ^= 0x20
    assert (
        rejected(bytes(data)) == "digest-mismatch: payload policy.hujson does not match its sha256"
    )


def test_malformed_manifest_is_only_decoded_after_signatures_check() -> None:
    raw = cbor.encode({"kind": "policy"})
    sigs = [fmt.Signature(KID["A"], KEYS["A"].sign(fmt.signed_message(raw)))]
    data = fmt.assemble(raw, fmt.encode_signatures(sigs), [])
    msg = rejected(data)
    assert msg.startswith("invalid-manifest: manifest keys wrong (missing ['appliance', 'created'")
    unsigned = fmt.assemble(b"\xbf\xff", fmt.encode_signatures([]), [])
    assert rejected(unsigned) == "unsigned: bundle carries no signatures"


def test_signing_twice_with_one_key_is_refused() -> None:
    with pytest.raises(InvalidInput, match="already signed"):
        add_signature(make("A"), KEYS["A"])


def test_signature_order_does_not_depend_on_signing_order() -> None:
    assert make("A", "B") == make("B", "A")


def test_manifest_builder_refuses_what_the_verifier_would_reject() -> None:
    with pytest.raises(BundleRejected, match="invalid-manifest: expires must be after created"):
        fmt.manifest_for("policy", APP, 1, NOW, NOW, {})
    with pytest.raises(BundleRejected, match="invalid-manifest: appliance must match"):
        fmt.manifest_for("policy", "../etc", 1, NOW, NOW + 1, {})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_verify_and_raise_only_bundle_rejected(data: bytes) -> None:
    with pytest.raises(BundleRejected):
        verify(fmt.MAGIC + b"\x01" + data, trust(), APP, NOW, {})


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_any_single_byte_change_to_a_valid_bundle_is_rejected(pos: int, xor: int) -> None:
    data = bytearray(make("A", "B"))
    data[pos % len(data)] ^= xor
    with pytest.raises(BundleRejected):
        verify(bytes(data), trust(), APP, NOW, {})


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000))
def test_any_truncation_of_a_valid_bundle_is_rejected(cut: int) -> None:
    data = make("A", "B")
    with pytest.raises(BundleRejected):
        verify(data[: cut % len(data)], trust(), APP, NOW, {})


def test_trust_store_json_round_trips() -> None:
    t = trust()
    assert TrustStore.loads(t.dumps()) == t
    assert json.loads(t.dumps())["format"] == "outpost-trust-store-v1"


def test_check_enum_names_every_message_prefix() -> None:
    assert {c.value for c in Check} >= {"unsigned", "unknown-signer", "below-threshold", "replayed"}
