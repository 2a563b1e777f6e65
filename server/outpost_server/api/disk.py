"""Disk use of the data directory, for /v1/status (one statvfs: cheap enough for every poll)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def disk_brief(data_dir: Path | None) -> dict[str, Any] | None:
    if data_dir is None:
        return None
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return {"error": exc.strerror or str(exc)}
    return {"path": str(data_dir), "total": usage.total, "used": usage.used, "free": usage.free}
