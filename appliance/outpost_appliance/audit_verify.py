"""`outpost-audit-verify BUNDLE --key PUB`: check an exported audit range, anywhere, no database.

Prints the first entry that fails (edited, deleted, reordered, truncated) and
exits 1; otherwise prints a summary and exits 0. Exit 2: usage or file error.
PUB is the appliance's audit public key: 64 hex digits, or a file holding them
(or the JSON `.pub` object `outpost-sign keygen` writes). The key printed in
the export itself is never trusted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from outpost_server.audit import AuditCorrupt, check_export

PUBLIC_KEY_HEX_DIGITS = 64


def load_public_key(text: str) -> bytes:
    candidate = text.strip()
    if len(candidate) != PUBLIC_KEY_HEX_DIGITS:
        raw = Path(candidate).read_text().strip()
        if raw.startswith("{"):
            raw = str(json.loads(raw)["public_key"])
        candidate = raw
    key = bytes.fromhex(candidate)
    if len(key) != PUBLIC_KEY_HEX_DIGITS // 2:
        raise ValueError("public key must be 32 bytes")
    return key


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="outpost-audit-verify", description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--key", required=True, help="audit public key (hex, or a file containing it)")
    p.add_argument("--appliance", help="also require the export to come from this appliance")
    args = p.parse_args(argv)
    try:
        key = load_public_key(args.key)
        data = Path(args.bundle).read_bytes()
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        r = check_export(data, key, args.appliance)
    except AuditCorrupt as exc:
        print(f"FAIL {exc}")
        return 1
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.created))
    print(
        f"OK appliance {r.appliance}: entries {r.from_seq}..{r.to_seq} "
        f"({r.to_seq - r.from_seq + 1}) intact, {r.checkpoints} signed checkpoint(s), "
        f"head {r.head.hex()}, exported {created}, audit key {r.signer}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
