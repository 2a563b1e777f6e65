"""Why a bundle was refused: one exception type naming the check that failed.

Every refusal carries a `Check` so callers (intake report, audit log, the
`outpost-sign verify` tool) can act on the check without parsing text, and a
message of the form ``"<check>: <detail>"`` whose exact texts are listed in
offline-bundles/SPEC.md. Messages never carry key material or payload bytes.
"""

from __future__ import annotations

from enum import StrEnum

from ..errors import ProtocolError


class Check(StrEnum):
    """The verifier's checks, in the order SPEC.md §6 runs them."""

    TOO_LARGE = "too-large"
    TRUNCATED = "truncated"
    BAD_MAGIC = "bad-magic"
    UNSUPPORTED_VERSION = "unsupported-version"
    MALFORMED_CBOR = "malformed-cbor"
    INVALID_SIGNATURES = "invalid-signature-block"
    UNSIGNED = "unsigned"
    UNKNOWN_SIGNER = "unknown-signer"
    BAD_SIGNATURE = "bad-signature"
    INVALID_MANIFEST = "invalid-manifest"
    KIND_NOT_ACCEPTED = "kind-not-accepted"
    NOT_AUTHORISED = "not-authorised"
    BELOW_THRESHOLD = "below-threshold"
    WRONG_APPLIANCE = "wrong-appliance"
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    TRAILING_BYTES = "trailing-bytes"
    DIGEST_MISMATCH = "digest-mismatch"


class BundleRejected(ProtocolError):
    """A bundle failed one named check; nothing from it may be applied."""

    def __init__(self, check: Check, detail: str) -> None:
        super().__init__(f"{check.value}: {detail}")
        self.check = check
        self.detail = detail


class CBORError(BundleRejected):
    """Bytes that are not strict, canonical, bounded CBOR (SPEC.md §3)."""

    def __init__(self, detail: str) -> None:
        super().__init__(Check.MALFORMED_CBOR, detail)
