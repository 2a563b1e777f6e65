"""Making a rename survive a power cut: fsync the directory that holds it.

A file written to a temporary name, fsynced and renamed is only durable once the
directory entry is, too. Every atomic write in Outpost (CA material, backups,
restores, exports, system updates) ends with this.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
