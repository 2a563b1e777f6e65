"""Start the console for an admin socket (used by `outpost console`)."""

from __future__ import annotations

import os
from pathlib import Path

from .client import AsyncAdminClient
from .lock import ConsoleLock


def run_console(
    socket_path: Path,
    *,
    lock: bool = True,
    lock_dir: Path | None = None,
    idle_lock_s: float | None = None,
) -> int:
    from .app import DEFAULT_IDLE_LOCK_S, OutpostConsole  # noqa: PLC0415 - Textual loads only here

    # The lock file lives beside the socket, i.e. in the data directory.
    console_lock = (
        ConsoleLock.for_data_dir(lock_dir or socket_path.resolve().parent) if lock else None
    )
    idle = (
        idle_lock_s
        if idle_lock_s is not None
        else float(os.environ.get("OUTPOST_CONSOLE_IDLE_LOCK_S") or DEFAULT_IDLE_LOCK_S)
    )
    app = OutpostConsole(AsyncAdminClient(socket_path), console_lock, idle_lock_s=idle)
    app.run()
    return int(app.return_code or 0)
