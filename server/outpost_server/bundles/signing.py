"""Adding signatures to a bundle (the `outpost-sign sign` step and the appliance's exports)."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import InvalidInput
from .format import (
    Manifest,
    Signature,
    assemble,
    build,
    decode_manifest,
    decode_signatures,
    encode_signatures,
    key_id_for,
    parse_frame,
    signed_message,
)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def add_signature(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """`data` with one more signature; the manifest must decode and the key must not have signed."""
    frame = parse_frame(data)
    decode_manifest(frame.manifest_bytes)  # never sign something a verifier would reject
    sigs = list(decode_signatures(frame.signature_bytes))
    kid = key_id_for(public_bytes(key))
    if any(s.key_id == kid for s in sigs):
        raise InvalidInput(f"key {kid} has already signed this bundle")
    sigs.append(Signature(kid, key.sign(signed_message(frame.manifest_bytes))))
    return assemble(frame.manifest_bytes, encode_signatures(sigs), [data[frame.payload_offset :]])


def build_signed(
    manifest: Manifest, payloads: Mapping[str, bytes], *keys: Ed25519PrivateKey
) -> bytes:
    data = build(manifest, payloads)
    for key in keys:
        data = add_signature(data, key)
    return data
