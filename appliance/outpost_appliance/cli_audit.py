"""`outpost audit show | verify`: the appliance's audit chain via the admin API."""

from __future__ import annotations

import argparse
import json
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


def add_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit log").add_subparsers(dest="action", required=True)
    sp = audit.add_parser("show", help="list audit entries (newest last)")
    sp.add_argument("--start", type=int, default=0, help="first entry (default: the last --limit entries)")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_show)
    sp = audit.add_parser("verify", help="check the hash chain and signed checkpoints")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_verify)
