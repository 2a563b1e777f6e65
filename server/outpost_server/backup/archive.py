"""Writing and reading backup files: the I/O around format.py.

A backup is written to a hidden temporary name in the target directory
(`.NAME.tmp`), fsynced, renamed into place and the directory fsynced; only then
does it exist under a name that `list_backups` shows. A process killed at any
point leaves at most a `.tmp` file, which listing ignores and the next run
removes. After the rename the file is read back and verified.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..durable import fsync_dir
from .format import (
    FILE_KEY_BYTES,
    PREFIX_BYTES,
    STREAM_HEADER_BYTES,
    TRAILER_FIXED_BYTES,
    BackupCorrupt,
    BackupError,
    FileEntry,
    Manifest,
    PassphraseKek,
    StreamOpener,
    StreamSealer,
    check_prefix,
    encode_trailer,
    parse_trailer,
    prefix,
    seal_file_key,
    sign_manifest,
    verify_signature,
)

BACKUP_SUFFIX = ".opbk"
READ_CHUNK_BYTES = 1 << 20
ZSTD_LEVEL = 6  # state compresses well; higher levels cost CPU the server needs
TAR_MTIME = 0  # member times carry nothing a restore needs; fixed so archives differ only by content

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def _no_progress(_stage: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class BackupIdentity:
    appliance: str
    site: str
    software: str
    schema: str
    signing_key: Ed25519PrivateKey
    counts: dict[str, int]


def backup_name(site: str, created: int, backup_id: str) -> str:
    import time  # noqa: PLC0415 - formatting only

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in site)[:32] or "outpost"
    return f"{safe}-{stamp}-{backup_id[:8]}{BACKUP_SUFFIX}"


class _SealingWriter(io.RawIOBase):
    """File-like sink for tarfile: compress, encrypt, write, and hash what is written."""

    def __init__(self, out: Any, sealer: StreamSealer, digest: Any, progress: Progress, total: int) -> None:
        self._out = out
        self._sealer = sealer
        self._digest = digest
        self._z = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        self.plain = 0
        self.written = 0
        self._progress = progress
        self._total = total

    def writable(self) -> bool:
        return True

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._digest.update(data)
            self.written += len(data)

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.plain += len(data)
        self._emit(self._sealer.push(self._z.compress(data)))
        self._progress("encrypting", min(self.plain, self._total), self._total)
        return len(data)

    def finish(self) -> None:
        self._emit(self._sealer.push(self._z.flush()))
        self._emit(self._sealer.finish())


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def write_backup(
    source: Path,
    dest_dir: Path,
    identity: BackupIdentity,
    recipients: list[bytes],
    kek: PassphraseKek | None,
    now: int,
    *,
    label: str = "",
    progress: Progress = _no_progress,
    failpoint: Callable[[str], None] = lambda _name: None,
) -> tuple[Path, Manifest]:
    """Archive the snapshot directory `source` into a new backup file in `dest_dir`."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    entries = tuple(
        FileEntry(p.relative_to(source).as_posix(), p.stat().st_size, _digest_file(p)) for p in files
    )
    total = sum(e.size for e in entries)
    backup_id = secrets.token_hex(16)
    file_key = secrets.token_bytes(FILE_KEY_BYTES)
    keys = seal_file_key(file_key, recipients, kek)  # refuses before any file is created
    sealer = StreamSealer(file_key, backup_id.encode())
    dest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = backup_name(identity.site, now, backup_id)
    final = dest_dir / name
    tmp = dest_dir / f".{name}.tmp"
    digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            head = prefix(sealer.header)
            out.write(head)
            digest.update(head)
            writer = _SealingWriter(out, sealer, digest, progress, total)
            with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for path, entry in zip(files, entries, strict=True):
                    info = tarfile.TarInfo(entry.path)
                    info.size = entry.size
                    info.mode = 0o600
                    info.mtime = TAR_MTIME
                    with path.open("rb") as f:
                        tar.addfile(info, f)
                    failpoint("backup.archiving")
            writer.finish()
            manifest = Manifest(
                id=backup_id,
                appliance=identity.appliance,
                site=identity.site,
                created=now,
                software=identity.software,
                schema=identity.schema,
                files=entries,
                plain_bytes=writer.plain,
                body_bytes=len(head) + writer.written,
                body_sha256=digest.hexdigest(),
                keys=tuple(keys),
                signer=identity.signing_key.public_key().public_bytes_raw(),
                counts=identity.counts,
                label=label,
            )
            mb = manifest.to_cbor()
            out.write(encode_trailer(mb, sign_manifest(identity.signing_key, mb)))
            failpoint("backup.before-fsync")
            out.flush()
            os.fsync(out.fileno())
        failpoint("backup.before-rename")
        os.rename(tmp, final)
        fsync_dir(dest_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    progress("verifying", 0, manifest.body_bytes)
    verify_file(final, identity.signing_key.public_key().public_bytes_raw())  # read back what was written
    return final, manifest


# ------------------------------------------------------------------ reading
@dataclass(frozen=True, slots=True)
class OpenedBackup:
    path: Path
    manifest: Manifest
    stream_header: bytes
    size: int


def read_manifest(path: Path, expected_signer: bytes | None = None) -> OpenedBackup:
    """Trailer, prefix and signature only (no body hash): cheap enough for listings."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(PREFIX_BYTES + STREAM_HEADER_BYTES)
            stream_header = check_prefix(head)
            f.seek(max(0, size - TRAILER_FIXED_BYTES))
            start, mlen = parse_trailer(size, f.read(TRAILER_FIXED_BYTES))
            f.seek(start)
            mb = f.read(mlen)
            sig = f.read(64)
    except OSError as exc:
        raise BackupError(f"{path}: {exc.strerror or exc}") from None
    manifest = verify_signature(mb, sig, expected_signer)
    if manifest.body_bytes != start:
        raise BackupCorrupt(
            f"body is {start} bytes but the manifest says {manifest.body_bytes}: truncated or spliced"
        )
    return OpenedBackup(path, manifest, stream_header, size)


def verify_file(path: Path, expected_signer: bytes | None = None, progress: Progress = _no_progress) -> OpenedBackup:
    """Everything that can be checked without a key: signature, lengths, body digest."""
    ob = read_manifest(path, expected_signer)
    h = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        remaining = ob.manifest.body_bytes
        while remaining > 0:
            chunk = f.read(min(READ_CHUNK_BYTES, remaining))
            if not chunk:
                break
            h.update(chunk)
            remaining -= len(chunk)
            done += len(chunk)
            progress("verifying", done, ob.manifest.body_bytes)
    if h.hexdigest() != ob.manifest.body_sha256:
        raise BackupCorrupt("body digest does not match the signed manifest: the encrypted data was altered")
    return ob


class _OpeningReader(io.RawIOBase):
    """File-like source for tarfile: read body, authenticate and decrypt, decompress; bounded."""

    def __init__(self, f: Any, ob: OpenedBackup, file_key: bytes, progress: Progress) -> None:
        self._f = f
        self._remaining = ob.manifest.body_bytes - PREFIX_BYTES - STREAM_HEADER_BYTES
        self._opener = StreamOpener(file_key, ob.stream_header, ob.manifest.id.encode())
        self._z = zstandard.ZstdDecompressor().decompressobj()
        self._buf = bytearray()
        self._limit = ob.manifest.plain_bytes
        self._out = 0
        self._progress = progress
        self._body = ob.manifest.body_bytes
        f.seek(PREFIX_BYTES + STREAM_HEADER_BYTES)

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        if self._remaining <= 0:
            return False
        chunk = self._f.read(min(READ_CHUNK_BYTES, self._remaining))
        if not chunk:
            raise BackupCorrupt("file ended inside the body: truncated")
        self._remaining -= len(chunk)
        plain = self._opener.feed(chunk)
        if self._remaining <= 0:
            self._opener.close()
        try:
            data = self._z.decompress(plain)
        except zstandard.ZstdError as exc:
            raise BackupCorrupt(f"archive does not decompress: {exc}") from None
        self._out += len(data)
        if self._out > self._limit:
            raise BackupCorrupt(f"archive expands beyond the {self._limit} bytes the manifest declares")
        self._buf += data
        self._progress("decrypting", self._body - self._remaining, self._body)
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf and self._fill():
            pass
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        del self._buf[:n]
        return n


def _safe_member(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BackupCorrupt(f"archive member {name!r} escapes the restore directory")
    return p


def extract(ob: OpenedBackup, file_key: bytes, dest: Path, progress: Progress = _no_progress) -> list[Path]:
    """Decrypt and unpack into the empty directory `dest`; every file checked against the manifest.

    The body digest is checked first (verify_file), so a tampered body is refused before
    any byte is decrypted; authentication of each frame then guards the key-holder's view.
    """
    verify_file(ob.path, ob.manifest.signer)
    want = {f.path: f for f in ob.manifest.files}
    seen: set[str] = set()
    dest.mkdir(mode=0o700, parents=True, exist_ok=False)
    written: list[Path] = []
    with ob.path.open("rb") as f:
        reader = io.BufferedReader(_OpeningReader(f, ob, file_key, progress), READ_CHUNK_BYTES)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for member in _members(tar):
                    rel = _safe_member(member.name)
                    entry = want.get(rel.as_posix())
                    if entry is None or not member.isfile() or rel.as_posix() in seen:
                        raise BackupCorrupt(f"archive member {member.name!r} is not in the manifest")
                    seen.add(rel.as_posix())
                    target = dest / rel
                    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    if src is None:
                        raise BackupCorrupt(f"archive member {member.name!r} has no data")
                    h = hashlib.sha256()
                    size = 0
                    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                        while chunk := src.read(READ_CHUNK_BYTES):
                            h.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
                    if size != entry.size or h.hexdigest() != entry.sha256:
                        raise BackupCorrupt(f"{entry.path} does not match its digest in the manifest")
                    written.append(target)
        except tarfile.TarError as exc:
            raise BackupCorrupt(f"archive is malformed: {exc}") from None
    missing = sorted(set(want) - seen)
    if missing:
        raise BackupCorrupt(f"archive lacks files the manifest lists: {', '.join(missing[:5])}")
    return written


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (m := tar.next()) is not None:
        yield m


def list_backups(directory: Path) -> list[tuple[Path, OpenedBackup | BackupError]]:
    """Backup files in a directory, newest name last, each with its manifest or why it is unreadable.

    Hidden `.tmp` files (a backup being written, or one a crash left) are never listed.
    """
    if not directory.is_dir():
        return []
    out: list[tuple[Path, OpenedBackup | BackupError]] = []
    for p in sorted(directory.iterdir(), key=lambda x: x.name):
        if p.name.startswith(".") or not p.name.endswith(BACKUP_SUFFIX) or not p.is_file():
            continue
        try:
            out.append((p, read_manifest(p)))
        except BackupError as exc:
            out.append((p, exc))
    return out


def remove_stale_temporaries(directory: Path) -> list[Path]:
    gone = []
    if directory.is_dir():
        for p in directory.iterdir():
            if p.name.startswith(".") and p.name.endswith(BACKUP_SUFFIX + ".tmp"):
                p.unlink(missing_ok=True)
                gone.append(p)
    return gone
