"""`outpost bundles ...`: signed offline bundles on the appliance, through the admin API.

    outpost bundles list [--status S]         staged, applied, rejected, expired
    outpost bundles show ID                   details and what approving would change
    outpost bundles approve ID [--yes]        re-verify and apply atomically (a system-update
                                              is only approved for `outpost system update`)
    outpost bundles reject ID --reason TEXT
    outpost bundles import PATH               a .opb file, a folder, or a block device
    outpost bundles trust show
    outpost bundles trust init FILE           first trust store (only while none is installed)
    outpost bundles watch                     the USB watcher service (runs as root)

Who mounts: this process (root under systemd for `watch`, an admin with sudo
for `import DEVICE`) mounts the medium read-only, or reads FAT in user space,
with the bounded walk of outpost_server.bundles.intake, and sends the files'
bytes to the server; the server never walks removable media and need not run
as root. The server verifies, stages and audits; nothing is applied until an
administrator approves.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from outpost_server.bundles.intake import IntakeReport, load_bundles, read_bounded
from outpost_server.bundles.media import MediaError
from outpost_server.bundles.removable import MediumFiles, is_block_device, probe, read_medium
from outpost_server.bundles.watcher import MediaInserted, UsbWatcher

from .apiclient import AdminClient, ApiError

COLUMNS = [
    ("id", "ID"),
    ("status", "STATUS"),
    ("kind", "KIND"),
    ("seq", "SEQ"),
    ("file", "FILE"),
    ("medium_label", "MEDIUM"),
    ("staged_at", "SEEN"),
    ("reason", "REASON"),
]


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"

    def cell(v: Any) -> str:
        if v is None or v == "":
            return "-"
        return str(v)[:60]

    cells = [[cell(r.get(k)) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(COLUMNS)]
    lines = ["  ".join(h.ljust(w) for (_, h), w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


def _confirm(args: argparse.Namespace, what: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"outpost: {what} Re-run with --yes to confirm.", file=sys.stderr)
        return False
    return input(f"{what} Type 'yes' to continue: ").strip().lower() == "yes"


# ----------------------------------------------------------------- reading
def describe(b: dict[str, Any]) -> str:
    lines = [
        f"bundle {b['id']}: {b['status']}",
        f"  kind        {b.get('kind') or '-'}  (sequence {b.get('seq')})",
        f"  file        {b['file']}  on {b.get('medium_label') or '-'} "
        f"(serial {b.get('medium_serial') or '-'})",
        f"  size        {b['size']} bytes, sha256 {b['sha256']}",
        f"  signed by   {', '.join(b.get('signers') or []) or '-'}",
        f"  valid       {b.get('created')} .. {b.get('expires')} (unix seconds)",
        f"  seen        {b['staged_at']} by {b['staged_by']}",
    ]
    if b.get("decided_by"):
        lines.append(f"  decided     {b['decided_at']} by {b['decided_by']}")
    if b.get("reason"):
        lines.append(f"  reason      {b['reason']}")
    if b.get("result"):
        lines.append(f"  result      {json.dumps(b['result'])}")
    p = b.get("preview") or {}
    for item in p.get("payloads", []):
        lines.append(f"  payload     {item['name']}  {item['size']} bytes")
    if "policy_diff" in p:
        lines += ["", "Policy change if approved:", p["policy_diff"] or "(identical policy)"]
    for k in p.get("keys", []):
        owner = k.get("user") or ",".join(k.get("tags") or [])
        flags = ",".join(f for f in ("reusable", "ephemeral") if k.get(f)) or "single use"
        lines.append(f"  new key     {k['prefix']}  {owner}  {flags}  expires {k.get('expires')}")
    if "trust" in p:
        t = p["trust"]
        lines.append(f"  new signers {', '.join(t['signers'])}")
        lines.append(f"  thresholds  {json.dumps(t['thresholds'])}; retired {t['retired'] or '-'}")
    if "system_update" in p:
        u = p["system_update"]
        lines.append(f"  update to   version {u['version']}")
        for f in u["files"]:
            lines.append(f"  file        {f['name']}  {f['size']} bytes  sha256 {f['sha256']}")
    if "ca_material" in p:
        m = p["ca_material"]
        lines.append(f"  issuing CA  {m['subject']}  serial {m['serial']}")
        lines.append(f"  valid       {m['not_before']} to {m['not_after']}")
        if "key_source" in m:
            lines.append(f"  key         {m['key_source']}; replaces {m['replaces']}")
            lines.append(f"  constraints {m['name_constraints']}")
    if "problem" in p:
        lines.append(f"  ! approval will be refused: {p['problem']}")
    return "\n".join(lines)


def _list(args: argparse.Namespace, c: AdminClient) -> int:
    q = f"?status={args.status}" if args.status else ""
    rows = c.get(f"/v1/bundles{q}")
    _out(args, rows, _table(rows))
    return 0


def _show(args: argparse.Namespace, c: AdminClient) -> int:
    b = c.get(f"/v1/bundles/{args.id}")
    _out(args, b, describe(b))
    return 0


def _approve(args: argparse.Namespace, c: AdminClient) -> int:
    b = c.get(f"/v1/bundles/{args.id}")
    if b["status"] != "staged":
        print(f"outpost: bundle {args.id} is {b['status']}, not staged", file=sys.stderr)
        return 1
    if not args.yes:
        print(describe(b))
    if not _confirm(args, f"Apply {b['kind']} bundle {args.id} (sequence {b['seq']}) now?"):
        return 1
    r = c.post(f"/v1/bundles/{args.id}/approve", {})
    if "approved_for_install" in r:  # system-update: the server authorises, root installs
        v = r["approved_for_install"].get("version")
        _out(args, r, f"approved bundle {args.id} for install: version {v}. Nothing is "
             "installed yet: with the medium inserted, run as root "
             "`outpost system update DEVICE_OR_FOLDER`")  # fmt: skip
        return 0
    a = r["applied"]
    done = []
    if a.get("policy_version"):
        done.append(f"policy version {a['policy_version']} in force")
    if a.get("enrolment_keys"):
        done.append(f"{len(a['enrolment_keys'])} enrolment key(s) created")
    if a.get("trust_version"):
        done.append(f"trust store version {a['trust_version']} installed")
    _out(args, r, f"applied bundle {args.id}: {'; '.join(done) or 'done'}")
    return 0


def _reject(args: argparse.Namespace, c: AdminClient) -> int:
    r = c.post(f"/v1/bundles/{args.id}/reject", {"reason": args.reason})
    _out(args, r, f"rejected bundle {args.id}: {r['reason']}")
    return 0


# ------------------------------------------------------------------ intake
def upload(c: AdminClient, medium: MediumFiles, label: str, serial: str, device: str) -> Any:
    body = {
        "label": label,
        "serial": serial,
        "device": device,
        "files": [{"name": n, "data": base64.b64encode(d).decode()} for n, d in medium.files],
        "ignored": [{"name": r.name, "reason": r.reason} for r in medium.ignored],
    }
    return c.post("/v1/bundles/intake", body)


def report_text(r: dict[str, Any]) -> str:
    lines = [f"staged    #{b['id']} {b['file']} ({b['kind']} seq {b['seq']})" for b in r["staged"]]
    lines += [f"REJECTED  #{b['id']} {b['file']}: {b['reason']}" for b in r["rejected"]]
    lines += [f"ignored   {i['name']}: {i['reason']}" for i in r["ignored"]]
    summary = (
        f"{len(r['staged'])} staged, {len(r['rejected'])} rejected, {len(r['ignored'])} ignored"
    )
    if r["staged"]:
        summary += "; nothing is applied until approved (outpost bundles approve ID)"
    return "\n".join([*lines, summary])


def read_path(path: str) -> tuple[MediumFiles, str, str]:
    """(files, label, serial) from a bundle file, a folder, or a block device."""
    if is_block_device(path):
        return read_medium(path), probe(path, "LABEL"), probe(path, "UUID")
    p = Path(path)
    if p.is_dir():
        report = IntakeReport()
        files = load_bundles(p, report)
        return MediumFiles(files, report.ignored + report.rejected, "directory"), p.name, ""
    try:
        return MediumFiles([(p.name, read_bounded(p))], [], "file"), "", ""
    except OSError as exc:
        raise MediaError(f"{path}: {exc.strerror or exc}") from None


def _import(args: argparse.Namespace, c: AdminClient) -> int:
    try:
        medium, label, serial = read_path(args.path)
    except (MediaError, OSError) as exc:
        print(f"outpost: {exc}", file=sys.stderr)
        return 2
    r = upload(c, medium, args.label or label, serial, args.path)
    _out(args, r, report_text(r))
    return 0 if not r["rejected"] else 1


# ------------------------------------------------------------------- trust
def _trust_show(args: argparse.Namespace, c: AdminClient) -> int:
    t = c.get("/v1/bundles/trust")
    if not t["installed"]:
        _out(
            args,
            t,
            f"appliance {t['appliance']}: no trust store installed "
            "(outpost bundles trust init FILE)",
        )
        return 0
    s = t["store"]
    lines = [f"appliance {t['appliance']}, trust store version {t['history'][-1]['version']}"]
    for k in s["signers"]:
        lines.append(f"  {k['key_id']}  {k.get('label') or '-':<20} {', '.join(k['kinds'])}")
    lines.append(f"  thresholds  {json.dumps(s['thresholds'])}")
    lines.append(f"  retired     {', '.join(s['retired']) or '-'}")
    lines.append(f"  last seq    {json.dumps(t['last_seq'])}")
    for h in t["history"]:
        lines.append(f"  v{h['version']} {h['created']} {h['source']} by {h['actor']}")
    _out(args, t, "\n".join(lines))
    return 0


def _trust_init(args: argparse.Namespace, c: AdminClient) -> int:
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"outpost: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    if not _confirm(args, f"Install {args.file} as this appliance's first trust store?"):
        return 1
    r = c.post("/v1/bundles/trust/init", {"document": text})
    n = len(r["store"]["signers"])
    _out(
        args,
        r,
        f"trust store installed: {n} signer(s), thresholds {json.dumps(r['store']['thresholds'])}",
    )
    return 0


# ------------------------------------------------------------------- watch
def intake_handler(
    c: AdminClient, say: Callable[[str], None] = print
) -> Callable[[MediaInserted], None]:
    """What the watcher does with one inserted medium: read it, upload, say what happened."""

    def on_insert(event: MediaInserted) -> None:
        say(f"medium {event.device} ({event.fstype}, label {event.label or '-'}) inserted")
        try:
            medium = read_medium(event.device, event.fstype, userspace=True)  # never mounts
            r = upload(c, medium, event.label, event.serial, event.device)
        except (MediaError, ApiError, OSError) as exc:
            say(f"medium {event.device}: not read: {exc}")
            return
        except Exception as exc:  # one bad stick must not stop the watcher service
            say(f"medium {event.device}: not read ({type(exc).__name__}): {exc}")
            return
        say(report_text(r))

    return on_insert


def _watch(args: argparse.Namespace, c: AdminClient) -> int:
    import threading  # noqa: PLC0415

    from .media_agent import MediaAgent  # noqa: PLC0415

    def say(s: str) -> None:
        print(s, flush=True)

    agent = MediaAgent(c, say)  # exports the console asked for; first-trust files
    intake = intake_handler(c, say)

    def on_insert(event: MediaInserted) -> None:
        agent.inserted(event)
        with agent.io_lock:
            intake(event)

    watcher = UsbWatcher(on_insert, usb_only=not args.any_bus, on_remove=agent.removed)
    from outpost_server.sdnotify import Notifier  # noqa: PLC0415

    notifier = Notifier()
    notifier.watchdog_thread()  # udev events can be hours apart; the process being alive is the signal
    stop = threading.Event()
    threading.Thread(target=agent.run, args=(stop,), name="media-desk", daemon=True).start()

    def listening() -> None:
        print("watching for removable media (Ctrl-C to stop)", flush=True)
        notifier.ready("watching for removable media")

    try:
        watcher.run(listening)
    finally:
        stop.set()
    return 0


def _export(args: argparse.Namespace, c: AdminClient) -> int:
    """Ask the server for a signed outbound bundle, write it to the medium, read it back, verify."""
    from .media_export import readback_check, write_and_verify  # noqa: PLC0415

    if args.what == "inventory":
        kind, r = "node-inventory", c.post("/v1/bundles/export/inventory", {})
    else:
        body: dict[str, Any] = {"clients": args.client, "tags": args.tags or [], "expires_in": args.expires}
        if args.user:
            body["user"] = args.user
        kind, r = "client-enrolment", c.post("/v1/bundles/export/client-enrolment", body)
    check = readback_check(kind, r["appliance_key"], r.get("appliance", ""))
    try:
        done = write_and_verify(args.to, r["name"], base64.b64decode(r["data"]), check)
    except (MediaError, OSError) as exc:
        print(f"outpost: export not written to {args.to}: {exc}", file=sys.stderr)
        return 2
    c.post("/v1/audit/export/written", {"sha256": r["sha256"], "path": done.path, "device": args.to,
                                        "verified": not done.problem})  # fmt: skip
    if done.problem:
        print(f"outpost: EXPORT FAILED at {done.path}: {done.problem}", file=sys.stderr)
        return 1
    out = {"path": done.path, "sha256": r["sha256"], "kind": kind, "appliance_key": r["appliance_key"]}
    note = "\nit carries usable enrolment keys: keep the medium with the devices it is for"
    _out(args, out, f"wrote {kind} bundle {done.path}, read back and verified\nsha256 {r['sha256']}"
         + (note if kind == "client-enrolment" else ""))  # fmt: skip
    return 0


def add_commands(sub: Any) -> None:
    b = sub.add_parser("bundles", help="signed offline bundles (USB intake)")
    bs = b.add_subparsers(dest="action", required=True)

    def js(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = js(bs.add_parser("list", help="bundles seen by intake"))
    sp.add_argument(
        "--status", choices=["staged", "applied", "approved", "installed", "rejected", "expired"]
    )
    sp.set_defaults(func=_list)
    sp = js(bs.add_parser("show", help="one bundle, and what approving it would change"))
    sp.add_argument("id", type=int)
    sp.set_defaults(func=_show)
    sp = js(bs.add_parser("approve", help="re-verify and apply a staged bundle"))
    sp.add_argument("id", type=int)
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sp.set_defaults(func=_approve)
    sp = js(bs.add_parser("reject", help="refuse a staged bundle"))
    sp.add_argument("id", type=int)
    sp.add_argument("--reason", required=True)
    sp.set_defaults(func=_reject)
    sp = js(bs.add_parser("import", help="stage bundles from a file, folder or block device"))
    sp.add_argument("path")
    sp.add_argument("--label", default="", help="medium label for the record")
    sp.set_defaults(func=_import)
    sp = js(bs.add_parser("watch", help="watch udev for USB media and stage their bundles"))
    sp.add_argument("--any-bus", action="store_true", help="not only USB devices (testing)")
    sp.set_defaults(func=_watch)
    ex = bs.add_parser("export", help="write a signed outbound bundle to a device or folder").add_subparsers(
        dest="what", required=True
    )
    sp = js(ex.add_parser("inventory", help="node inventory (nodes.json)"))
    sp.add_argument("--to", required=True, metavar="DEVICE_OR_DIR")
    sp.set_defaults(func=_export)
    sp = js(ex.add_parser("enrolment", help="client enrolment package: login URL, CA root, a key per client"))
    sp.add_argument("--client", action="append", required=True, help="a device to enrol (repeat)")
    sp.add_argument("--user", help="owner of the new keys (or use --tags)")
    sp.add_argument("--tags", action="append", help="tag:... for the new keys (repeat)")
    sp.add_argument("--expires", default="7d", help="key lifetime (default %(default)s)")
    sp.add_argument("--to", required=True, metavar="DEVICE_OR_DIR")
    sp.set_defaults(func=_export)
    trust = bs.add_parser("trust", help="the signer trust store").add_subparsers(
        dest="trust_action", required=True
    )
    sp = js(trust.add_parser("show", help="signers, thresholds, history"))
    sp.set_defaults(func=_trust_show)
    sp = js(trust.add_parser("init", help="install the first trust store (provisioning)"))
    sp.add_argument("file")
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sp.set_defaults(func=_trust_init)
