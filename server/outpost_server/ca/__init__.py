"""The offline certificate authority (see docs/ca.md and authority.py)."""

from .authority import (
    REVOCATION_REASONS,
    CAError,
    CAEvent,
    CAStatus,
    IssuedLeaf,
    OfflineCA,
    TLSFiles,
    parse_serial,
)
from .keystore import WrongPassphrase
from .local import ensure_tls

__all__ = [
    "REVOCATION_REASONS",
    "CAError",
    "CAEvent",
    "CAStatus",
    "IssuedLeaf",
    "OfflineCA",
    "TLSFiles",
    "WrongPassphrase",
    "ensure_tls",
    "parse_serial",
]
