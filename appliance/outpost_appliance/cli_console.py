"""`outpost console`: the Textual console (tty1 on the appliance).

It is a client of the admin API like every other subcommand: the main CLI
resolves the socket (--admin-socket, OUTPOST_ADMIN_SOCKET, or DATA_DIR/admin.sock)
and hands over its `AdminClient`; the console opens its own async client on
that path. The console passphrase file sits in the socket's directory (the
data directory) unless --lock-dir says otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_commands(subparsers: Any) -> None:
    sp = subparsers.add_parser("console", help="run the full-screen admin console (tty1)")
    sp.add_argument(
        "--lock-dir",
        help="directory of the console passphrase file (default: the admin socket's directory)",
    )
    sp.add_argument(
        "--idle-lock",
        type=float,
        default=None,
        help="lock after this many idle seconds (default 600, env OUTPOST_CONSOLE_IDLE_LOCK_S)",
    )
    sp.add_argument(
        "--no-lock",
        action="store_true",
        help="no console passphrase (development only; never on the appliance)",
    )
    sp.set_defaults(func=run)


def run(args: argparse.Namespace, client: Any) -> int:
    from outpost_tui.run import run_console  # noqa: PLC0415 - keep the CLI light

    return run_console(
        Path(client.socket_path),
        lock=not args.no_lock,
        lock_dir=Path(args.lock_dir) if args.lock_dir else None,
        idle_lock_s=args.idle_lock,
    )
