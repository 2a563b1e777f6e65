"""Writing one file to removable media (or a folder) and proving what landed there.

Shared by every export command (audit ranges, inventories, enrolment packages,
backups): write through the bundle intake's media code (a read-write mount
with nosuid,nodev,noexec, or mtools for FAT without a kernel driver), fsync,
read the file back from the medium, compare it byte for byte, and run the
kind's own verification on what was read back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from outpost_server.errors import OutpostError


@dataclass(frozen=True, slots=True)
class Exported:
    path: str  # where it is, as the operator would find it ("/dev/sdb1:/name" for devices)
    sha256: str
    problem: str  # empty when the read-back copy is identical and verifies
    how: str  # "directory", "mount" or "mtools"


def write_and_verify(to: str, name: str, data: bytes, check: Callable[[bytes], object]) -> Exported:
    """Raises MediaError/OSError if nothing could be written; otherwise says what was read back."""
    from outpost_server.bundles.removable import write_export  # noqa: PLC0415 - needs root tools

    digest = hashlib.sha256(data).hexdigest()
    written = write_export(to, name, data)
    problem = ""
    if hashlib.sha256(written.readback).hexdigest() != digest:
        problem = "the bytes read back from the medium differ from the bytes written"
    else:
        try:
            check(written.readback)
        except OutpostError as exc:
            problem = f"the read-back copy does not verify: {exc}"
    return Exported(written.path, digest, problem, written.how)
