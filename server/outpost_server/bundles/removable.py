"""What the root-run tools do with a removable device: read its bundles, write an export to it.

Theory of operation
-------------------
Reading (`read_medium`): if the running kernel has a driver for the medium's
filesystem, mount it read-only (`mounted_readonly`: ro,nosuid,nodev,noexec,
noload) and walk it with intake.py's bounded, symlink-refusing walk. If the
kernel has no driver (FAT on minimal kernels and containers), read FAT in user
space with mtools instead: `mdir -/ -b` lists paths, `mcopy ... -` streams one
file at a time; the same bounds apply (depth, entries, bundles, bytes per file,
bytes per medium), no filesystem is mounted, and nothing on the stick is
executed or followed. Either way the result is the list of (name, bytes) the
server's intake verifies.

Writing (`write_export`): to a directory, or to a device mounted read-write
(`mounted_writable`) or, for FAT without a kernel driver, through mtools. The
file is fsynced, then read back from the medium (after a fresh read-only mount,
or with the page cache dropped for a directory) and returned so the caller can
verify exactly what an auditor will receive.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..durable import fsync_dir
from .format import MAX_BUNDLE_BYTES
from .intake import (
    BUNDLE_SUFFIX,
    JUNK_NAMES,
    MAX_BUNDLES,
    MAX_SCAN_DEPTH,
    MAX_SCAN_ENTRIES,
    MAX_TOTAL_BYTES,
    IntakeReport,
    Rejected,
    load_bundles,
    read_bounded,
)
from .media import (
    MOUNT_TIMEOUT_SECONDS,
    MediaError,
    mounted_readonly,
    mounted_writable,
    probe_fstype,
    run_command,
)

USERSPACE_FSTYPES = frozenset({"vfat"})  # what mtools reads when the kernel cannot
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0", "LC_ALL": "C"}
MTOOLS_READ_TIMEOUT_SECONDS = 60  # one bundle (<= 64 MiB) from a slow stick


@dataclass(slots=True)
class MediumFiles:
    files: list[tuple[str, bytes]] = field(default_factory=list)
    ignored: list[Rejected] = field(default_factory=list)
    how: str = ""  # "mount" or "mtools", for the operator's log


def kernel_has(fstype: str) -> bool:
    try:
        names = Path("/proc/filesystems").read_text().split()
    except OSError:
        return False
    return fstype in names


def probe(device: str, field_name: str) -> str:
    """A filesystem property blkid reads from the medium (TYPE, LABEL, UUID); '' if unknown."""
    try:
        return run_command(["blkid", "-p", "-o", "value", "-s", field_name, device]).strip()
    except MediaError:
        return ""


def read_medium(device: str, fstype: str | None = None, *, userspace: bool = False) -> MediumFiles:
    """The medium's bundle files. `userspace=True` (the appliance's watcher) never mounts:
    FAT is read with mtools and ext2/3/4 with debugfs, so the watcher needs no mount
    privilege and a hostile filesystem meets a sandboxed user-space parser, not the kernel."""
    fs = fstype or probe_fstype(device)
    if userspace and fs in USERSPACE_EXT_FSTYPES:
        return read_ext(device)
    if userspace and fs in USERSPACE_FSTYPES:
        return read_fat(device)
    if kernel_has(fs):
        report = IntakeReport()
        with mounted_readonly(device, fs) as root:
            files = load_bundles(root, report)
        return MediumFiles(files, report.ignored + report.rejected, "mount")
    if fs in USERSPACE_FSTYPES:
        return read_fat(device)
    raise MediaError(f"{device}: the kernel has no {fs or 'unknown'} driver and no reader")


# --------------------------------------------------------------- FAT via mtools
def _mtools(args: list[str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **MTOOLS_ENV},
        )
    except OSError as exc:
        raise MediaError(f"{args[0]}: {exc} (install mtools to read FAT media)") from None


@contextlib.contextmanager
def _streaming(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = _mtools(args)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=MOUNT_TIMEOUT_SECONDS)
        if proc.stdout is not None:
            proc.stdout.close()


def fat_paths(device: str, ignored: list[Rejected]) -> list[str]:
    """Bundle file paths on a FAT medium, with intake.find_bundles' rules and bounds."""
    found: list[str] = []
    with _streaming(["mdir", "-/", "-b", "-i", device, "::/"]) as proc:
        assert proc.stdout is not None
        for visited, raw in enumerate(proc.stdout, 1):
            rel = raw.decode("utf-8", "replace").rstrip("\r\n").removeprefix("::/")
            if visited > MAX_SCAN_ENTRIES:
                ignored.append(Rejected(rel, f"scan stopped after {MAX_SCAN_ENTRIES} entries"))
                break
            if not rel or rel.endswith("/"):
                continue  # directories: their files follow as full paths
            parts = rel.split("/")
            if any(p in JUNK_NAMES or p.startswith(".") for p in parts):
                continue
            if len(parts) > MAX_SCAN_DEPTH or not parts[-1].lower().endswith(BUNDLE_SUFFIX):
                continue
            if len(found) >= MAX_BUNDLES:
                ignored.append(Rejected(rel, f"more than {MAX_BUNDLES} bundles on the medium"))
                continue
            found.append(rel)
        if proc.wait(timeout=MOUNT_TIMEOUT_SECONDS) not in (0, None) and not found:
            raise MediaError(f"{device}: mdir could not read the FAT filesystem")
    return sorted(found)


def fat_read(device: str, rel: str) -> bytes:
    """One file's bytes, at most MAX_BUNDLE_BYTES + 1 (so the verifier says too-large)."""
    with _streaming(["mcopy", "-n", "-i", device, f"::/{rel}", "-"]) as proc:
        assert proc.stdout is not None
        data = proc.stdout.read(MAX_BUNDLE_BYTES + 1)
        if len(data) <= MAX_BUNDLE_BYTES and proc.wait(timeout=MTOOLS_READ_TIMEOUT_SECONDS) != 0:
            raise MediaError(f"mcopy could not read {rel}")
    return data


def read_fat(device: str) -> MediumFiles:
    return _read_all(device, "mtools", fat_paths, fat_read)


def _read_all(
    device: str,
    how: str,
    paths: Callable[[str, list[Rejected]], list[str]],
    read: Callable[[str, str], bytes],
) -> MediumFiles:
    """Read every bundle a user-space walker found, within the per-medium byte budget."""
    out = MediumFiles(how=how)
    budget = MAX_TOTAL_BYTES
    for rel in paths(device, out.ignored):
        try:
            data = read(device, rel)
        except MediaError as exc:
            out.ignored.append(Rejected(rel, f"unreadable: {exc}"))
            continue
        budget -= len(data)
        if budget < 0:
            out.ignored.append(
                Rejected(rel, f"medium carries more than {MAX_TOTAL_BYTES} bytes of bundles")
            )
            continue
        out.files.append((rel, data))
    return out


# ------------------------------------------------------------ ext2/3/4 via debugfs
USERSPACE_EXT_FSTYPES = frozenset({"ext2", "ext3", "ext4"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-][A-Za-z0-9._+ -]{0,254}$")  # what we pass to debugfs unquoted
_S_IFMT, _S_IFDIR, _S_IFREG, _S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000


def _debugfs(device: str, request: str) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            ["debugfs", "-R", request, device],  # no -w: the device is opened read-only
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C"},
        )
    except OSError as exc:
        raise MediaError(f"debugfs: {exc} (install e2fsprogs to read ext4 media)") from None


def ext_listing(device: str, directory: str) -> list[tuple[str, int]]:
    """(name, mode) of a directory's entries, from `ls -p` (/inode/mode/uid/gid/name/size/)."""
    proc = _debugfs(device, f"ls -p {directory}")
    try:
        out, err = proc.communicate(timeout=MOUNT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise MediaError(f"{device}: debugfs did not list {directory} in time") from None
    problems = [
        line for line in err.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.startswith("debugfs ")  # the version banner
    ]  # fmt: skip
    if problems and not out.strip():
        raise MediaError(f"{device}: debugfs cannot read {directory}: {problems[0][:200]}")
    entries = []
    for line in out.decode("utf-8", "replace").splitlines():
        parts = line.split("/")
        if len(parts) < 7 or parts[0] != "":
            continue
        name = "/".join(parts[5:-2])
        if name in (".", ".."):
            continue
        try:
            entries.append((name, int(parts[2], 8)))
        except ValueError:
            continue
    return entries


def ext_paths(device: str, ignored: list[Rejected]) -> list[str]:
    """Bundle file paths on an ext medium, with intake.find_bundles' rules and bounds."""
    found: list[str] = []
    visited = 0
    queue: list[tuple[str, int]] = [("", 0)]
    while queue:
        rel_dir, depth = queue.pop(0)
        for name, mode in sorted(ext_listing(device, "/" + rel_dir)):
            visited += 1
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if visited > MAX_SCAN_ENTRIES:
                ignored.append(Rejected(rel, f"scan stopped after {MAX_SCAN_ENTRIES} entries"))
                return sorted(found)
            if name in JUNK_NAMES or name.startswith("."):
                continue
            kind = mode & _S_IFMT
            if not _SAFE_NAME.match(name):
                if name.lower().endswith(BUNDLE_SUFFIX) or kind == _S_IFDIR:
                    ignored.append(Rejected(rel, "name has characters the reader does not accept"))
                continue
            if kind == _S_IFLNK:
                ignored.append(Rejected(rel, "symlink (not followed)"))
            elif kind == _S_IFDIR:
                if depth + 1 < MAX_SCAN_DEPTH:
                    queue.append((rel, depth + 1))
            elif not name.lower().endswith(BUNDLE_SUFFIX):
                continue
            elif kind != _S_IFREG:
                ignored.append(Rejected(rel, "not a regular file"))
            elif len(found) >= MAX_BUNDLES:
                ignored.append(Rejected(rel, f"more than {MAX_BUNDLES} bundles on the medium"))
            else:
                found.append(rel)
    return sorted(found)


def ext_read(device: str, rel: str) -> bytes:
    """One file's bytes, at most MAX_BUNDLE_BYTES + 1 (so the verifier says too-large)."""
    with contextlib.ExitStack() as stack:
        proc = _debugfs(device, f"cat /{rel}")
        stack.callback(lambda: proc.kill() if proc.poll() is None else None)
        assert proc.stdout is not None and proc.stderr is not None
        data = proc.stdout.read(MAX_BUNDLE_BYTES + 1)
        proc.stdout.close()
        stack.callback(proc.stderr.close)
        if len(data) <= MAX_BUNDLE_BYTES and proc.wait(timeout=MTOOLS_READ_TIMEOUT_SECONDS) != 0:
            raise MediaError(f"debugfs could not read {rel}")
    return data


def read_ext(device: str) -> MediumFiles:
    return _read_all(device, "debugfs", ext_paths, ext_read)


# ----------------------------------------------------------------------- writing
@dataclass(frozen=True, slots=True)
class Written:
    path: str  # where an auditor finds it: a directory path, or "<device>:/<name>"
    readback: bytes  # the bytes read back from the medium after the write was synced
    how: str


def write_synced(directory: Path, name: str, data: bytes) -> Path:
    """Write `name` atomically (temp file, fsync, rename, fsync the directory)."""
    final = directory / name
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(directory)
    return final


def _read_uncached(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read the disk, not our own write
    finally:
        os.close(fd)
    return read_bounded(path)


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def write_export(dest: str, name: str, data: bytes, *, userspace: bool = False) -> Written:
    """Write one file to a directory or a block device and read it back from the medium.

    `userspace=True` (the appliance's watcher, which may not mount) writes FAT with
    mtools and ext2/3/4 with `debugfs -w`, and reads the copy back the same way."""
    if not is_block_device(dest):
        directory = Path(dest)
        if not directory.is_dir():
            raise MediaError(f"{dest} is neither a directory nor a block device")
        path = write_synced(directory, name, data)
        return Written(str(path), _read_uncached(path), "directory")
    fs = probe_fstype(dest)
    if userspace and fs in USERSPACE_FSTYPES:
        return _write_fat(dest, name, data)
    if userspace and fs in USERSPACE_EXT_FSTYPES:
        return _write_ext(dest, name, data)
    if kernel_has(fs):
        with mounted_writable(dest, fs) as root:
            write_synced(root, name, data)
        with mounted_readonly(dest, fs) as root:  # a fresh mount: what the medium now holds
            back = read_bounded(root / name)
        return Written(f"{dest}:/{name}", back, "mount")
    if fs in USERSPACE_FSTYPES:
        return _write_fat(dest, name, data)
    raise MediaError(f"{dest}: the kernel has no {fs or 'unknown'} driver and no writer")


def _write_fat(device: str, name: str, data: bytes) -> Written:
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)  # it exists and we may open it, before mtools is involved
    try:
        done = subprocess.run(
            ["mcopy", "-o", "-i", device, "-", f"::/{name}"],
            input=data,
            capture_output=True,
            timeout=MTOOLS_READ_TIMEOUT_SECONDS,
            env={**os.environ, **MTOOLS_ENV},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MediaError(f"mcopy: {exc}") from None
    if done.returncode != 0:
        raise MediaError(f"mcopy could not write {name}: {done.stderr.decode()[:200]}")
    _flush_device(device)
    return Written(f"{device}:/{name}", fat_read(device, name), "mtools")


def _flush_device(device: str) -> None:
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # flush the block device's buffers to the medium
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the read-back reads the medium
    finally:
        os.close(fd)


def _write_ext(device: str, name: str, data: bytes) -> Written:
    """Write one file at the top of an unmounted ext2/3/4 medium with debugfs, in user space.

    debugfs refuses nothing on a filesystem whose journal needs recovery, so such a
    medium is refused here: writing past an unreplayed journal can lose the write.
    """
    if not _SAFE_NAME.match(name):
        raise MediaError(f"{name!r}: not a file name debugfs is given unquoted")
    features = _debugfs(device, "features")
    try:
        out, _ = features.communicate(timeout=MOUNT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        features.kill()
        raise MediaError(f"{device}: debugfs did not answer in time") from None
    if b"needs_recovery" in out:
        raise MediaError(f"{device}: the ext filesystem's journal needs recovery; run fsck on it first")
    with tempfile.TemporaryDirectory(prefix="outpost-export-") as tmp:
        src = Path(tmp) / "export"
        src.write_bytes(data)
        src.chmod(0o644)  # debugfs copies the mode: an auditor reads the file without root
        script = Path(tmp) / "commands"
        script.write_text(f"rm /{name}\nwrite {src} /{name}\n")  # rm: a same-named older copy
        try:
            done = subprocess.run(
                ["debugfs", "-w", "-f", str(script), device],
                capture_output=True, timeout=MTOOLS_READ_TIMEOUT_SECONDS,
                env={**os.environ, "LC_ALL": "C"}, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MediaError(f"debugfs: {exc}") from None
    if done.returncode != 0:
        raise MediaError(f"debugfs could not write {name}: {done.stderr.decode()[:200]}")
    _flush_device(device)
    return Written(f"{device}:/{name}", ext_read(device, name), "debugfs")


# ------------------------------------------------------------- top-level small files
def read_top_level(
    device: str, fstype: str, wanted: Callable[[str], bool], limit_bytes: int, max_files: int
) -> tuple[list[tuple[str, bytes]], list[Rejected]]:
    """Small files at the top of a medium whose names `wanted` accepts (first-trust files).

    The same user-space readers as `read_medium(userspace=True)` (mtools, debugfs),
    or a plain directory for tests and development; nothing is mounted, nothing
    below the top level is looked at, and a file over `limit_bytes` is not kept.
    """
    found: list[tuple[str, bytes]] = []
    skipped: list[Rejected] = []
    if not is_block_device(device):
        root = Path(device)
        names = sorted(p.name for p in root.iterdir() if p.is_file() and not p.is_symlink())

        def read(name: str) -> bytes:
            return read_bounded(root / name)
    elif fstype in USERSPACE_FSTYPES:
        names = []
        with _streaming(["mdir", "-b", "-i", device, "::/"]) as proc:
            assert proc.stdout is not None
            for raw in itertools.islice(proc.stdout, MAX_SCAN_ENTRIES):
                rel = raw.decode("utf-8", "replace").rstrip("\r\n").removeprefix("::/")
                if rel and not rel.endswith("/") and "/" not in rel:
                    names.append(rel)

        def read(name: str) -> bytes:
            return fat_read(device, name)
    elif fstype in USERSPACE_EXT_FSTYPES:
        names = [n for n, mode in ext_listing(device, "/")[:MAX_SCAN_ENTRIES]
                 if mode & _S_IFMT == _S_IFREG and _SAFE_NAME.match(n)]  # fmt: skip

        def read(name: str) -> bytes:
            return ext_read(device, name)
    else:
        raise MediaError(f"{device}: no user-space reader for {fstype or 'unknown'}")
    for name in sorted(n for n in names if wanted(n)):
        if len(found) >= max_files:
            skipped.append(Rejected(name, f"more than {max_files} such files"))
            break
        try:
            data = read(name)
        except (MediaError, OSError) as exc:
            skipped.append(Rejected(name, f"unreadable: {exc}"))
            continue
        if len(data) > limit_bytes:
            skipped.append(Rejected(name, f"larger than {limit_bytes} bytes"))
            continue
        found.append((name, data))
    return found, skipped
