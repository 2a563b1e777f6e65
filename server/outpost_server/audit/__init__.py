"""Tamper-evident audit log: hash chain, signed checkpoints, crash-safe file, signed exports."""

from .chain import GENESIS_HASH, AuditCorrupt, AuditEntry, verify_chain
from .checkpoint import Checkpoint
from .export import ExportReport, check_export
from .log import AuditLog, ExportSigning, VerifyReport

__all__ = [
    "GENESIS_HASH",
    "AuditCorrupt",
    "AuditEntry",
    "AuditLog",
    "Checkpoint",
    "ExportReport",
    "ExportSigning",
    "VerifyReport",
    "check_export",
    "verify_chain",
]
