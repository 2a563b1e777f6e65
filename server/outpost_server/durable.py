"""Making a rename survive a power cut: fsync the directory that holds it.

A file written to a temporary name, fsynced and renamed is only durable once the
directory entry is, too. Every atomic write in Outpost (CA material, backups,
restores, exports, system updates) ends with this.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a reader, a crash or a power cut
    leaves either the old content or the new, complete and on disk: written
    to a temporary name beside it, fsynced, renamed, and the directory fsynced.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
