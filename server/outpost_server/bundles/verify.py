"""Verify a bundle: bytes in, a `VerifiedBundle` or a `BundleRejected` naming the check.

Sans-IO and side-effect free: the caller supplies the trust store, this
appliance's ID, `now` and the highest sequence already accepted per signer set,
and applies the result (and records its sequence) only on success. The order of
checks is SPEC.md §6 and matters: every signature is checked over the raw
manifest bytes before any CBOR is decoded, and payload bytes are only sliced and
hashed after the manifest is authenticated and judged current.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .errors import BundleRejected, Check
from .format import (
    INBOUND_KINDS,
    Manifest,
    decode_manifest,
    decode_signatures,
    parse_frame,
    signed_message,
    split_payloads,
)
from .trust import TrustStore

CLOCK_SKEW_SECONDS = (
    300  # an air-gapped clock drifts; accept bundles created up to 5 min "in the future"
)


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    manifest: Manifest
    payloads: Mapping[str, bytes]
    signers: frozenset[str]  # key ids whose signatures verified
    sha256: bytes  # of the whole file, for the audit log

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def signer_set(self) -> str:
        return self.manifest.signer_set

    @property
    def seq(self) -> int:
        return self.manifest.seq


def verify(
    data: bytes,
    trust: TrustStore,
    appliance_id: str | None,
    now: int,
    last_seq: Mapping[str, int],
    *,
    accept_kinds: Collection[str] = INBOUND_KINDS,
) -> VerifiedBundle:
    """Run every check of SPEC.md §6 in order.

    `appliance_id` None skips check 15 — only for tools verifying an *outbound*
    bundle whose `appliance` names its producer. `last_seq` maps signer set to
    the highest sequence already accepted; a missing set has accepted none.
    """
    frame = parse_frame(data)  # checks 1-6
    sigs = decode_signatures(frame.signature_bytes)  # check 7
    if not sigs:
        raise BundleRejected(Check.UNSIGNED, "bundle carries no signatures")
    message = signed_message(frame.manifest_bytes)
    for sig in sigs:  # checks 8-9, before the manifest is decoded
        key = trust.signers.get(sig.key_id)
        if key is None:
            raise BundleRejected(
                Check.UNKNOWN_SIGNER, f"key {sig.key_id} is not in the trust store"
            )
        if not key.verifies(sig.signature, message):
            raise BundleRejected(
                Check.BAD_SIGNATURE, f"signature by key {sig.key_id} does not verify"
            )
    manifest = decode_manifest(frame.manifest_bytes)  # checks 10-11
    kind = manifest.kind
    if kind not in accept_kinds:
        raise BundleRejected(Check.KIND_NOT_ACCEPTED, f"kind {kind} is not accepted here")
    signers = frozenset(s.key_id for s in sigs)
    for kid in sorted(signers):
        if kind not in trust.signers[kid].kinds:
            raise BundleRejected(Check.NOT_AUTHORISED, f"key {kid} may not sign {kind}")
    needed = trust.threshold(kind)
    if needed is None or len(signers) < needed:
        raise BundleRejected(
            Check.BELOW_THRESHOLD,
            f"{len(signers)} of {needed or 'unconfigured'} required signatures for {kind}",
        )
    if appliance_id is not None and manifest.appliance != appliance_id:
        raise BundleRejected(Check.WRONG_APPLIANCE, f"bundle is for appliance {manifest.appliance}")
    if now + CLOCK_SKEW_SECONDS < manifest.created:
        raise BundleRejected(Check.NOT_YET_VALID, f"created {manifest.created}, now {now}")
    if now >= manifest.expires:
        raise BundleRejected(Check.EXPIRED, f"expired {manifest.expires}, now {now}")
    highest = last_seq.get(manifest.signer_set)
    if highest is not None and manifest.seq <= highest:
        raise BundleRejected(
            Check.REPLAYED,
            f"sequence {manifest.seq} for {manifest.signer_set}, already accepted {highest}",
        )
    payloads = split_payloads(data, frame, manifest)  # checks 19-20
    for p in manifest.payloads:  # check 21
        if hashlib.sha256(payloads[p.name]).digest() != p.sha256:
            raise BundleRejected(
                Check.DIGEST_MISMATCH, f"payload {p.name} does not match its sha256"
            )
    return VerifiedBundle(manifest, payloads, signers, hashlib.sha256(data).digest())
