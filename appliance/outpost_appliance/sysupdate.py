"""Install a software update into the inactive root slot (see slots.py).

An update arrives as a signed `system-update` bundle (offline-bundles/SPEC.md)
whose one payload, `system-update.json`, names the new root filesystem,
kernel and initrd by size and SHA-256. The files themselves sit beside the
bundle on the medium: a root image is hundreds of MiB, over the bundle
format's 64 MiB limit, and the signed digests bind them just as well.

`install()` runs only after the bundle verified, and after `check_medium()`
found every file with its signed size and digest (so a refusal writes
nothing). Order matters, so that a power cut at any point leaves the running
system booting as before:

0. remove the inactive slot's old loader entry (fsync): the slot is about to
   be overwritten, so nothing may point at it while it is half written;
1. stream the root image onto the inactive slot's partition, hashing as it
   goes; read it back and hash again (the flash must hold what was written);
2. copy kernel and initrd to the slot's directory on the ESP (temp + rename),
   checking their digests;
3. write the new entry `...+3.conf` (temp + fsync + rename): only this last
   step makes the update bootable.

The running slot's partition, kernel and entry are never touched. A re-run
after an interruption starts again at step 0 and completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from outpost_server.durable import fsync_dir
from outpost_server.errors import InvalidInput

from . import slots

UPDATE_FORMAT = "outpost-system-update-v1"
UPDATE_PAYLOAD = "system-update.json"
MAX_UPDATE_JSON_BYTES = 4096  # three file records and a version
MAX_BOOT_FILE_BYTES = 128 * 1024 * 1024  # a kernel or initrd; ours are ~8 and ~36 MiB
COPY_CHUNK_BYTES = 4 * 1024 * 1024
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
FILE_ROLES = ("root", "kernel", "initrd")


class UpdateError(InvalidInput):
    """The update cannot be installed; the running system is unchanged."""


@dataclass(frozen=True, slots=True)
class UpdateFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class SystemUpdate:
    version: int
    root: UpdateFile
    kernel: UpdateFile
    initrd: UpdateFile


def parse_update(payload: bytes) -> SystemUpdate:
    """The `system-update.json` payload, validated field by field."""
    if len(payload) > MAX_UPDATE_JSON_BYTES:
        raise UpdateError(
            f"{UPDATE_PAYLOAD} is {len(payload)} bytes, limit {MAX_UPDATE_JSON_BYTES}"
        )
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UpdateError(f"{UPDATE_PAYLOAD} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "version", "files"}:
        raise UpdateError(f"{UPDATE_PAYLOAD} must have exactly format, version, files")
    if doc["format"] != UPDATE_FORMAT:
        raise UpdateError(f"unknown update format {doc['format']!r}")
    version = doc["version"]
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or not 0 < version <= slots.MAX_VERSION
    ):
        raise UpdateError(f"version must be an integer in 1..{slots.MAX_VERSION}")
    files = doc["files"]
    if not isinstance(files, dict) or set(files) != set(FILE_ROLES):
        raise UpdateError(f"files must name exactly {', '.join(FILE_ROLES)}")
    limits = {
        "root": slots.ROOT_A.size_mib * 1024 * 1024,
        "kernel": MAX_BOOT_FILE_BYTES,
        "initrd": MAX_BOOT_FILE_BYTES,
    }
    parsed = {role: _parse_file(role, files[role], limits[role]) for role in FILE_ROLES}
    return SystemUpdate(version, parsed["root"], parsed["kernel"], parsed["initrd"])


def _parse_file(role: str, entry: Any, limit: int) -> UpdateFile:
    if not isinstance(entry, dict) or set(entry) != {"name", "size", "sha256"}:
        raise UpdateError(f"files.{role} must have exactly name, size, sha256")
    name, size, digest = entry["name"], entry["size"], entry["sha256"]
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UpdateError(f"files.{role}.name must match {_NAME_RE.pattern}")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= limit:
        raise UpdateError(f"files.{role}.size must be 1..{limit} bytes")
    if not isinstance(digest, str) or not _SHA256_RE.fullmatch(digest):
        raise UpdateError(f"files.{role}.sha256 must be 64 lowercase hex digits")
    return UpdateFile(name, size, digest)


def by_partuuid(part: slots.Partition) -> Path:
    return Path(f"/dev/disk/by-partuuid/{part.partuuid}")


def _write_bytes(data: bytes, out: BinaryIO) -> str:
    out.write(data)
    return hashlib.sha256(data).hexdigest()


def _copy_to(src: BinaryIO, size: int, dst: BinaryIO) -> str:
    return _copy_hashing(src, dst, size)


def _copy_hashing(src: BinaryIO, dst: BinaryIO, size: int) -> str:
    h = hashlib.sha256()
    left = size
    while left:
        chunk = src.read(min(COPY_CHUNK_BYTES, left))
        if not chunk:
            raise UpdateError(f"source ended {left} bytes early")
        dst.write(chunk)
        h.update(chunk)
        left -= len(chunk)
    if src.read(1):
        raise UpdateError("source is longer than the update declares")
    return h.hexdigest()


def _hash_prefix(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left:
            chunk = f.read(min(COPY_CHUNK_BYTES, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def _open_medium_file(medium: Path, f: UpdateFile) -> BinaryIO:
    fd = os.open(medium / f.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return os.fdopen(fd, "rb")


def _write_atomically(path: Path, write: Callable[[BinaryIO], str]) -> str:
    """Write through `write` (returns the SHA-256 of what it wrote) to a temp file,
    fsync, rename over `path`, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        digest = write(out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)
    return digest


def medium_file(medium: Path, f: UpdateFile) -> Path:
    return medium / f.name


def check_medium(update: SystemUpdate, medium: Path) -> None:
    """Every file the update names is on `medium`: a regular file (no symlink) of its
    signed size and SHA-256. Reads them all once; writes nothing."""
    for role, f in (("root", update.root), ("kernel", update.kernel), ("initrd", update.initrd)):
        path = medium_file(medium, f)
        try:
            src = _open_medium_file(medium, f)
        except FileNotFoundError:
            raise UpdateError(f"{path}: missing (the update's {role} file)") from None
        except OSError as exc:
            raise UpdateError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        with src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UpdateError(f"{path}: not a regular file")
            if st.st_size != f.size:
                raise UpdateError(
                    f"{path}: {st.st_size} bytes, the signed update says {f.size}"
                )
            h = hashlib.sha256()
            while chunk := src.read(COPY_CHUNK_BYTES):
                h.update(chunk)
        if h.hexdigest() != f.sha256:
            raise UpdateError(
                f"{path}: does not match its signed sha256 (damaged or tampered with)"
            )


def partition_size(path: Path) -> int:
    """Bytes a block device (or, in tests, a file) holds."""
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)


def install(
    update: SystemUpdate,
    medium: Path,
    esp: Path,
    booted: str,
    partition_path: Callable[[slots.Partition], Path] | None = None,
) -> slots.UpdatePlan:
    """Write `update` (files on `medium`) into the slot not `booted`; return the plan.

    `partition_path` maps a partition to its block device (tests: a file).
    """
    if partition_path is None:
        partition_path = by_partuuid
    entries_dir = esp / "loader" / "entries"
    existing = sorted(p.name for p in entries_dir.iterdir()) if entries_dir.is_dir() else []
    plan = slots.plan_update(existing, booted, update.version)
    target = slots.ROOT_OF_SLOT[plan.target_slot]

    # 0. the slot about to be overwritten loses its entry first
    if plan.remove:
        for name in plan.remove:
            (entries_dir / name).unlink(missing_ok=True)
        fsync_dir(entries_dir)

    # 1. root filesystem onto the inactive partition, verified twice
    device = partition_path(target)
    with _open_medium_file(medium, update.root) as src, open(device, "r+b") as dst:
        written = _copy_hashing(src, dst, update.root.size)
        dst.flush()
        os.fsync(dst.fileno())
    if written != update.root.sha256:
        raise UpdateError(f"{update.root.name} does not match its signed sha256")
    if _hash_prefix(device, update.root.size) != update.root.sha256:
        raise UpdateError(f"slot {plan.target_slot} does not read back what was written")

    # 2. kernel and initrd to the ESP
    kdir = esp / slots.kernel_dir(plan.target_slot)
    kdir.mkdir(parents=True, exist_ok=True)
    for f, dest in ((update.kernel, "vmlinuz"), (update.initrd, "initrd.img")):
        with _open_medium_file(medium, f) as src:
            digest = _write_atomically(kdir / dest, partial(_copy_to, src, f.size))
        if digest != f.sha256:
            (kdir / dest).unlink(missing_ok=True)
            raise UpdateError(f"{f.name} does not match its signed sha256")

    # 3. the entry, last: from here on the next boot tries the new slot
    entries_dir.mkdir(parents=True, exist_ok=True)
    text = slots.entry_text(plan.target_slot, update.version).encode()
    _write_atomically(entries_dir / plan.new_entry.filename, partial(_write_bytes, text))
    return plan
