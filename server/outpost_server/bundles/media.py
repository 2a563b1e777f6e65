"""Mount a removable block device read-only (intake) or read-write (exports), safely.

Options: `nosuid,nodev,noexec` always, `ro` for intake; `noload` for ext3/ext4 because a
plain `ro` mount still replays the journal (writes the medium); vfat/exfat get
root ownership and umask 077 so nothing on the stick is readable to other
local users while mounted. Only the filesystems in ALLOWED_FSTYPES are mounted:
the kernel's less-travelled filesystem drivers are attack surface.
The command runner is injectable so the option logic is testable without root.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import InvalidInput, OutpostError

ALLOWED_FSTYPES = frozenset({"vfat", "exfat", "ext2", "ext3", "ext4"})
MOUNT_TIMEOUT_SECONDS = 30  # a dying stick can hang mount; intake must not hang with it
BASE_OPTIONS = ("ro", "nosuid", "nodev", "noexec", "noatime")
WRITABLE_OPTIONS = ("rw", "nosuid", "nodev", "noexec", "noatime")
FSTYPE_OPTIONS: dict[str, tuple[str, ...]] = {
    "ext3": ("noload",),
    "ext4": ("noload",),
    "vfat": ("uid=0", "gid=0", "umask=077"),
    "exfat": ("uid=0", "gid=0", "umask=077"),
}

Runner = Callable[[Sequence[str]], str]


class MediaError(OutpostError):
    """The medium could not be identified, mounted or unmounted."""


def run_command(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=MOUNT_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MediaError(f"{argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise MediaError(f"{argv[0]} failed: {done.stderr.strip()[:200]}")
    return done.stdout


def probe_fstype(device: str, run: Runner = run_command) -> str:
    return run(["blkid", "-p", "-o", "value", "-s", "TYPE", device]).strip()


def mount_options(fstype: str, *, writable: bool = False) -> str:
    if fstype not in ALLOWED_FSTYPES:
        raise InvalidInput(f"filesystem {fstype or 'unknown'} is not accepted for intake")
    if writable:  # journal replay is fine (and needed) on a medium we write to
        extra = tuple(o for o in FSTYPE_OPTIONS.get(fstype, ()) if o != "noload")
        return ",".join(WRITABLE_OPTIONS + extra)
    return ",".join(BASE_OPTIONS + FSTYPE_OPTIONS.get(fstype, ()))


@contextmanager
def mounted_readonly(
    device: str, fstype: str | None = None, run: Runner = run_command
) -> Iterator[Path]:
    """Mount `device` read-only into a fresh private temp dir; always unmount and remove it."""
    with _mounted(device, fstype, run, writable=False) as root:
        yield root


@contextmanager
def mounted_writable(
    device: str, fstype: str | None = None, run: Runner = run_command
) -> Iterator[Path]:
    """Mount `device` read-write (nosuid,nodev,noexec) for writing an export; always unmount.

    Unmounting flushes the filesystem; callers that must know the bytes reached
    the medium fsync what they wrote and read it back after a fresh mount.
    """
    with _mounted(device, fstype, run, writable=True) as root:
        yield root


@contextmanager
def _mounted(device: str, fstype: str | None, run: Runner, *, writable: bool) -> Iterator[Path]:
    fs = fstype or probe_fstype(device, run)
    options = mount_options(fs, writable=writable)
    mountpoint = Path(tempfile.mkdtemp(prefix="outpost-media-"))
    mountpoint.chmod(0o700)
    try:
        run(["mount", "-t", fs, "-o", options, device, str(mountpoint)])
        try:
            yield mountpoint
        finally:
            try:
                run(["umount", str(mountpoint)])
            except MediaError:
                run(["umount", "-l", str(mountpoint)])  # busy: detach now, kernel finishes later
    finally:
        with suppress(OSError):
            mountpoint.rmdir()
