"""USB intake core: find bundle files under a mounted medium, verify each, stage the results.

Pure policy over a directory tree: mounting is media.py's job, applying the
staged bundles is the caller's. The walk is bounded (depth, entries visited,
bundles, bytes per file), never follows a symlink (lstat, O_NOFOLLOW), skips
anything that is not a regular file, and ignores the junk desktop OSes leave on
removable media. Nothing is applied here; `accepted` is ordered so that
trust-store updates come first and sequences ascend within a signer set.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleRejected
from .format import MAX_BUNDLE_BYTES, decode_manifest, parse_frame
from .trust import TrustStore, TrustStoreError, apply_update
from .verify import VerifiedBundle, verify

BUNDLE_SUFFIX = ".opb"  # compared case-insensitively: FAT may upper-case names
MAX_SCAN_DEPTH = 3  # root, and up to two folders below (e.g. /outpost/2024-06/)
MAX_SCAN_ENTRIES = 4096  # directory entries examined; a medium full of junk cannot stall intake
MAX_BUNDLES = 32  # bundle files verified per insertion
MAX_TOTAL_BYTES = 256 * 1024 * 1024  # read across all bundles of one medium
JUNK_NAMES = frozenset(
    {
        "System Volume Information",
        "$RECYCLE.BIN",
        ".Trashes",
        ".Spotlight-V100",
        ".fseventsd",
        "lost+found",
    }
)


@dataclass(frozen=True, slots=True)
class Rejected:
    name: str  # path relative to the medium root
    reason: str


@dataclass(slots=True)
class IntakeReport:
    accepted: list[tuple[str, VerifiedBundle]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored: list[Rejected] = field(default_factory=list)  # not bundles, or over the scan bounds
    staged_trust: TrustStore | None = None  # the store after accepted trust-store bundles, if any


def find_bundles(root: Path, report: IntakeReport) -> list[Path]:
    """Regular files named *.opb under `root`, breadth-first, within the scan bounds."""
    found: list[Path] = []
    visited = 0
    queue: list[tuple[Path, int]] = [(root, 0)]
    while queue:
        directory, depth = queue.pop(0)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            report.ignored.append(
                Rejected(_rel(root, directory), f"unreadable directory: {exc.strerror}")
            )
            continue
        for entry in entries:
            visited += 1
            rel = _rel(root, Path(entry.path))
            if visited > MAX_SCAN_ENTRIES:
                report.ignored.append(
                    Rejected(rel, f"scan stopped after {MAX_SCAN_ENTRIES} entries")
                )
                return found
            if entry.name in JUNK_NAMES or entry.name.startswith("."):
                continue  # hidden files, AppleDouble "._x.opb" shadows, OS folders
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                report.ignored.append(Rejected(rel, "symlink (not followed)"))
            elif stat.S_ISDIR(st.st_mode):
                if depth + 1 < MAX_SCAN_DEPTH:
                    queue.append((Path(entry.path), depth + 1))
            elif not entry.name.lower().endswith(BUNDLE_SUFFIX):
                continue
            elif not stat.S_ISREG(st.st_mode):
                report.ignored.append(Rejected(rel, "not a regular file"))
            elif len(found) >= MAX_BUNDLES:
                report.ignored.append(
                    Rejected(rel, f"more than {MAX_BUNDLES} bundles on the medium")
                )
            else:
                found.append(Path(entry.path))
    return found


def read_bounded(path: Path) -> bytes:
    """The file's bytes, refusing symlinks (O_NOFOLLOW), non-regular files and oversize files."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > MAX_BUNDLE_BYTES:  # read one byte past the limit so verify() says too-large
                chunks.append(chunk[: MAX_BUNDLE_BYTES + 1 - (total - len(chunk))])
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def intake(
    root: Path, trust: TrustStore, appliance_id: str, now: int, last_seq: Mapping[str, int]
) -> IntakeReport:
    """Verify every bundle on a mounted medium; apply nothing (see `verify_loaded`)."""
    report = IntakeReport()
    loaded = load_bundles(root, report)
    return verify_loaded(loaded, trust, appliance_id, now, last_seq, report=report)


def load_bundles(root: Path, report: IntakeReport) -> list[tuple[str, bytes]]:
    """The bytes of every bundle file under `root`, within the scan and byte budgets."""
    loaded: list[tuple[str, bytes]] = []
    budget = MAX_TOTAL_BYTES
    for path in find_bundles(root, report):
        rel = _rel(root, path)
        try:
            data = read_bounded(path)
        except OSError as exc:
            report.rejected.append(Rejected(rel, f"unreadable: {exc.strerror or exc}"))
            continue
        budget -= len(data)
        if budget < 0:
            report.ignored.append(
                Rejected(rel, f"medium carries more than {MAX_TOTAL_BYTES} bytes of bundles")
            )
            continue
        loaded.append((rel, data))
    return loaded


def verify_loaded(
    loaded: Sequence[tuple[str, bytes]],
    trust: TrustStore,
    appliance_id: str,
    now: int,
    last_seq: Mapping[str, int],
    *,
    report: IntakeReport | None = None,
) -> IntakeReport:
    """Verify bundles already read from a medium (name, bytes); apply nothing.

    Trust-store bundles are verified first, and each one accepted becomes the
    store the remaining bundles are verified against, so one medium can carry a
    key rotation and bundles signed by the new keys. Sequences seen on this
    medium count as seen, so a duplicate on one stick is rejected as a replay.
    """
    report = IntakeReport() if report is None else report
    seen = dict(last_seq)
    current = trust
    for rel, data in sorted(loaded, key=_apply_order):
        try:
            vb = verify(data, current, appliance_id, now, seen)
        except BundleRejected as exc:
            report.rejected.append(Rejected(rel, str(exc)))
            continue
        if vb.kind == "trust-store":
            try:
                current = apply_update(current, vb.payloads)
            except TrustStoreError as exc:
                report.rejected.append(Rejected(rel, f"trust-store update refused: {exc}"))
                continue
            report.staged_trust = current
        seen[vb.signer_set] = vb.seq
        report.accepted.append((rel, vb))
    return report


def _apply_order(item: tuple[str, bytes]) -> tuple[int, str, int, str]:
    """Trust-store bundles first, then by kind and ascending sequence. Peeks at the *unverified*
    manifest for ordering only; every trust decision is verify()'s."""
    rel, data = item
    try:
        m = decode_manifest(parse_frame(data).manifest_bytes)
    except BundleRejected:
        return (2, "", 0, rel)
    return (0 if m.kind == "trust-store" else 1, m.kind, m.seq, rel)


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)
