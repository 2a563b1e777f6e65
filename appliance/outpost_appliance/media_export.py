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


def write_and_verify(
    to: str, name: str, data: bytes, check: Callable[[bytes], object], *, userspace: bool = False
) -> Exported:
    """Raises MediaError/OSError if nothing could be written; otherwise says what was read back.

    `userspace=True` never mounts (the watcher service may not): mtools for FAT,
    debugfs for ext2/3/4."""
    from outpost_server.bundles.removable import write_export  # noqa: PLC0415 - needs root tools

    digest = hashlib.sha256(data).hexdigest()
    written = write_export(to, name, data, userspace=userspace)
    problem = ""
    if hashlib.sha256(written.readback).hexdigest() != digest:
        problem = "the bytes read back from the medium differ from the bytes written"
    else:
        try:
            check(written.readback)
        except OutpostError as exc:
            problem = f"the read-back copy does not verify: {exc}"
    return Exported(written.path, digest, problem, written.how)


def readback_check(kind: str, public_key_hex: str, appliance: str) -> Callable[[bytes], object]:
    """What the read-back copy of an export must pass, per kind (the auditor's own checks)."""
    from outpost_server.bundles.media import MediaError  # noqa: PLC0415

    if kind == "audit-export":
        from outpost_server.audit import check_export  # noqa: PLC0415

        key = bytes.fromhex(public_key_hex)
        return lambda back: check_export(back, key, appliance or None)
    if kind in ("node-inventory", "client-enrolment"):
        from outpost_server.bundles.format import decode_manifest, key_id_for, parse_frame  # noqa: PLC0415
        from outpost_server.bundles.trust import SignerKey, TrustStore  # noqa: PLC0415
        from outpost_server.bundles.verify import verify  # noqa: PLC0415

        key = bytes.fromhex(public_key_hex)
        kid = key_id_for(key)
        trust = TrustStore({kid: SignerKey(kid, key, frozenset({kind}))}, {kind: 1})

        def check(back: bytes) -> object:  # signed by this appliance's key, judged at its own creation time
            created = decode_manifest(parse_frame(back).manifest_bytes).created
            return verify(back, trust, None, created, {}, accept_kinds={kind})

        return check
    if kind == "root-certificate":
        from cryptography import x509  # noqa: PLC0415

        def check_pem(back: bytes) -> object:
            try:
                return x509.load_pem_x509_certificate(back)
            except ValueError as exc:
                raise MediaError(f"not a PEM certificate: {exc}") from None

        return check_pem
    raise MediaError(f"no read-back check for exports of kind {kind!r}")
