"""`outpost audit show | verify | export`: the appliance's audit chain via the admin API.

`export --from N --to DEVICE_OR_DIR` asks the server for a signed audit-export
bundle, writes it to the directory or the device (mounted nosuid,nodev,noexec,
or FAT in user space), fsyncs it, reads it back from the medium and checks it
as `outpost-audit-verify` would, then reports the path and SHA-256 (and tells
the server, for the audit log, where it went and whether it read back intact).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any


def _show(args: argparse.Namespace, client: Any) -> int:
    q = f"/v1/audit?limit={args.limit}" + (f"&start={args.start}" if args.start else "")
    data = client.get(q)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for e in data["entries"]:
        details = ", ".join(f"{k}={v}" for k, v in e["details"].items())
        print(f"{e['seq']:>6}  {e['time']}  {e['actor']:<16} {e['action']:<24} {details}")
    print(f"({len(data['entries'])} shown, {data['last_seq']} entries in the chain)")
    return 0


def _verify(args: argparse.Namespace, client: Any) -> int:
    r = client.post("/v1/audit/verify", {})
    if args.json:
        print(json.dumps(r, indent=2))
    elif r["ok"]:
        print(f"audit chain intact: {r['entries']} entries, {r['checkpoints']} signed checkpoints, head {r['head'][:16]}")
    else:
        print(f"AUDIT CHAIN BROKEN at entry {r['first_bad_seq']}: {r['error']}")
    return 0 if r["ok"] else 1


def _export(args: argparse.Namespace, client: Any) -> int:
    from outpost_server.audit import check_export  # noqa: PLC0415
    from outpost_server.bundles.media import MediaError  # noqa: PLC0415

    from .media_export import write_and_verify  # noqa: PLC0415

    r = client.post("/v1/audit/export", {"from": args.from_seq, "to": args.until})
    data = base64.b64decode(r["data"])
    key = bytes.fromhex(r["audit_key"])
    try:
        done = write_and_verify(args.to, r["name"], data, lambda back: check_export(back, key, r["appliance"]))
    except (MediaError, OSError) as exc:
        print(f"outpost: export not written to {args.to}: {exc}", file=sys.stderr)
        return 2
    client.post(
        "/v1/audit/export/written",
        {"sha256": r["sha256"], "path": done.path, "device": args.to, "verified": not done.problem},
    )
    if done.problem:
        print(f"outpost: EXPORT FAILED at {done.path}: {done.problem}", file=sys.stderr)
        return 1
    out = {"path": done.path, "sha256": r["sha256"], "size": len(data), "verified": True,
           "audit_key": r["audit_key"], "how": done.how}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"wrote {done.path} ({len(data)} bytes), read back and verified\n"
            f"sha256     {r['sha256']}\n"
            f"audit key  {r['audit_key']}  (give it to the auditor with the file)\n"
            f"check it anywhere with: outpost-audit-verify FILE --key {r['audit_key']}"
        )
    return 0


def add_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(dest="action", required=True)
    sp = audit.add_parser("show", help="list audit entries (newest last)")
    sp.add_argument("--start", type=int, default=0, help="first entry (default: the last --limit entries)")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_show)
    sp = audit.add_parser("export", help="write a signed range of the log to a device or folder")
    sp.add_argument("--from", dest="from_seq", type=int, required=True, help="first entry")
    sp.add_argument("--until", type=int, help="last entry (default: the newest)")
    sp.add_argument("--to", required=True, metavar="DEVICE_OR_DIR",
                    help="block device (e.g. /dev/sdb1) or directory to write the bundle to")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_export)
    sp = audit.add_parser("verify", help="check the hash chain and signed checkpoints")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_verify)
