"""Signed offline bundles: the only way data crosses the air gap (SPEC: offline-bundles/SPEC.md)."""

from .errors import BundleRejected, CBORError, Check
from .format import INBOUND_KINDS, OUTBOUND_KINDS, Manifest, PayloadEntry
from .trust import SignerKey, TrustStore, TrustStoreError
from .verify import VerifiedBundle, verify

__all__ = [
    "INBOUND_KINDS",
    "OUTBOUND_KINDS",
    "BundleRejected",
    "CBORError",
    "Check",
    "Manifest",
    "PayloadEntry",
    "SignerKey",
    "TrustStore",
    "TrustStoreError",
    "VerifiedBundle",
    "verify",
]
