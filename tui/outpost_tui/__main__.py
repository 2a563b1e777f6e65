"""`python -m outpost_tui --admin-socket PATH`: the console without the main CLI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .run import run_console


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="outpost-console")
    p.add_argument("--admin-socket", default="./data/admin.sock")
    p.add_argument("--no-lock", action="store_true", help="no passphrase (development only)")
    args = p.parse_args(argv)
    return run_console(Path(args.admin_socket), lock=not args.no_lock)


if __name__ == "__main__":
    sys.exit(main())
