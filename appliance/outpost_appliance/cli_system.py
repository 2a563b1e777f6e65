"""`outpost system ...`: the root-run half of a software update, and the slots' state.

    outpost system status                      booted slot, versions, tries left, blessed?
    outpost system update MEDIUM_OR_DIR [--yes]
                                               write an approved system-update into the
                                               inactive slot

Who does what (docs/image.md, "Updates"): the server records and authorises,
this root-run tool writes. A `system-update` bundle is staged like any other
(USB watcher, `outpost bundles import`); `outpost bundles approve ID`
re-verifies it and, in one transaction, marks it approved for install and
consumes its sequence. The server writes no slot: it runs unprivileged under
ProtectSystem=strict and never touches block devices.

`outpost system update` then, with nothing written until every check passed:

1. finds on the medium (a folder, or a block device it mounts read-only) the
   bundle file the server holds as approved (by SHA-256);
2. verifies the bundle bytes again against the server's *current* trust store
   (GET /v1/bundles/trust) and this appliance's id; its sequence must be the
   latest accepted for system-update (the approval consumed it, so a copy
   cannot be approved again, and an older approved update cannot be installed
   after a newer one was approved);
3. refuses a version not newer than the running one, and checks every file
   beside the bundle against its signed size and SHA-256;
4. reports `started` to the server's audit log, runs `sysupdate.install()`
   into the inactive slot, and reports `installed` (version, slot, digests)
   or `failed` (the reason).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outpost_server.bundles.errors import BundleRejected
from outpost_server.bundles.intake import IntakeReport, load_bundles
from outpost_server.bundles.media import MediaError, mounted_readonly, probe_fstype
from outpost_server.bundles.removable import is_block_device, kernel_has
from outpost_server.bundles.trust import TrustStore, TrustStoreError
from outpost_server.bundles.verify import verify
from outpost_server.errors import OutpostError

from . import slots, sysupdate
from .apiclient import AdminClient, ApiError

KIND = "system-update"
DEFAULT_ESP = Path("/efi")  # fstab: PARTLABEL=esp on /efi (automount)
DEFAULT_DEVICES = Path("/dev/disk/by-partuuid")
DEFAULT_CMDLINE = Path("/proc/cmdline")


class Refused(Exception):
    """The update is not installed; nothing was written. The message says what and where."""


@dataclass(frozen=True, slots=True)
class Candidate:
    record: dict[str, Any]  # the server's view of the approved bundle
    rel: str  # the bundle file's path on the medium
    data: bytes


@dataclass(frozen=True, slots=True)
class Machine:
    """Where this appliance's disk is; tests point these at a folder and image files."""

    esp: Path
    devices: Path
    cmdline: Path

    def partition(self, part: slots.Partition) -> Path:
        return self.devices / part.partuuid

    def entries(self) -> list[str]:
        d = self.esp / "loader" / "entries"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def booted(self) -> str | None:
        try:
            return slots.booted_slot(self.cmdline.read_text())
        except OSError:
            return None


def _machine(args: argparse.Namespace) -> Machine:
    return Machine(Path(args.esp), Path(args.devices), Path(args.cmdline))


# ------------------------------------------------------------------ status
def slot_status(m: Machine) -> dict[str, Any]:
    names = m.entries()
    booted = m.booted()
    report = slots.assess(names, booted)
    parsed = [e for e in (slots.LoaderEntry.parse(n) for n in names) if e is not None]
    per_slot: dict[str, Any] = {}
    for slot in slots.SLOTS:
        mine = [e for e in parsed if e.slot == slot]
        newest = max(mine, key=lambda e: e.version, default=None)
        per_slot[slot] = (
            None
            if newest is None
            else {
                "version": newest.version,
                "entry": newest.filename,
                "tries_left": newest.tries_left,
                "bad": newest.bad,
                "in_trial": newest.in_trial,
            }
        )
    running = per_slot.get(booted) if booted else None
    return {
        "booted": booted,
        "slots": per_slot,
        "next_boot": report.default.filename if report.default else None,
        # the running entry has no counter left: systemd-bless-boot marked it good
        # (or it is the factory entry, which never counted)
        "blessed": None if running is None else running["tries_left"] is None,
        "fell_back_from": report.fell_back_from.filename if report.fell_back_from else None,
    }


def status_text(st: dict[str, Any]) -> str:
    lines = [
        f"booted slot     {st['booted'] or 'unknown (no outpost.slot= on the kernel command line)'}"
    ]
    for slot, info in st["slots"].items():
        if info is None:
            lines.append(f"slot {slot}          empty (no boot entry)")
            continue
        if info["bad"]:
            state = "BAD: ran out of boot tries, abandoned"
        elif info["in_trial"]:
            state = f"on trial, {info['tries_left']} boot tries left"
        else:
            state = "good"
        lines.append(f"slot {slot}          version {info['version']}  {state}  ({info['entry']})")
    if st["blessed"] is not None:
        lines.append(
            "this boot       "
            + (
                "blessed (marked good)"
                if st["blessed"]
                else "NOT yet blessed: waiting for the server to be ready"
            )
        )
    lines.append(f"next boot       {st['next_boot'] or '-'}")
    if st["fell_back_from"]:
        lines.append(
            f"fallback        {st['fell_back_from']} failed to become ready on every try; "
            "the previous slot boots instead"
        )
    return "\n".join(lines)


def _status(args: argparse.Namespace, c: AdminClient) -> int:
    st = slot_status(_machine(args))
    print(json.dumps(st, indent=2) if args.json else status_text(st))
    return 0


# ------------------------------------------------------------------ update
@contextlib.contextmanager
def opened_medium(path: str) -> Iterator[Path]:
    """A folder as it is; a block device mounted read-only (private temp dir) for the duration."""
    if is_block_device(path):
        fs = probe_fstype(path)
        if not kernel_has(fs):
            raise Refused(
                f"{path}: the kernel has no {fs or 'unknown'} driver; an update's root image "
                "cannot be streamed without mounting (copy the files to a folder instead)"
            )
        with mounted_readonly(path, fs) as root:
            yield root
        return
    p = Path(path)
    if not p.is_dir():
        raise Refused(f"{path}: not a folder or a block device")
    yield p


def _server_records(c: AdminClient) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for status in ("approved", "installed", "staged"):
        rows += [r for r in c.get(f"/v1/bundles?status={status}") if r.get("kind") == KIND]
    return rows


def find_candidate(root: Path, records: list[dict[str, Any]], bundle_id: int | None) -> Candidate:
    """The bundle file on the medium that the server holds as approved (matched by SHA-256)."""
    import hashlib  # noqa: PLC0415

    report = IntakeReport()
    files = load_bundles(root, report)
    by_digest = {r["sha256"]: r for r in records}
    found: list[Candidate] = []
    waiting: list[str] = []
    for rel, data in files:
        rec = by_digest.get(hashlib.sha256(data).hexdigest())
        if rec is None:
            continue
        if rec["status"] == "staged":
            waiting.append(f"{rel} (bundle {rec['id']})")
        elif bundle_id is None or rec["id"] == bundle_id:
            found.append(Candidate(rec, rel, data))
    if bundle_id is not None and not found:
        raise Refused(f"bundle {bundle_id} is not on {root} as an approved system-update bundle")
    if not found:
        if waiting:
            raise Refused(
                f"system-update bundle(s) on the medium are staged but not approved: "
                f"{', '.join(waiting)}; approve first with `outpost bundles approve ID`"
            )
        raise Refused(
            f"no approved system-update bundle on {root} ({len(files)} bundle file(s) found); "
            "stage it (`outpost bundles import` or insert the stick) and approve it first"
        )
    if len(found) > 1:
        ids = ", ".join(f"{c.rel} (bundle {c.record['id']})" for c in found)
        raise Refused(
            f"more than one approved system-update on the medium: {ids}; choose with --bundle ID"
        )
    return found[0]


def verify_again(c: AdminClient, cand: Candidate, now: int) -> sysupdate.SystemUpdate:
    """Verify the bundle bytes against the server's current trust store; parse its payload."""
    t = c.get("/v1/bundles/trust")
    if not t.get("installed"):
        raise Refused("the server has no trust store installed; nothing can be verified")
    try:
        trust = TrustStore.from_json(t["store"])
    except TrustStoreError as exc:
        raise Refused(f"the server's trust store does not load: {exc}") from None
    seqs = {k: int(v) for k, v in t["last_seq"].items()}
    accepted = seqs.pop(KIND, None)  # the approval consumed this bundle's sequence
    try:
        vb = verify(cand.data, trust, t["appliance"], now, seqs, accept_kinds={KIND})
    except BundleRejected as exc:
        raise Refused(
            f"{cand.rel} (bundle {cand.record['id']}) does not verify now: {exc}"
        ) from None
    if vb.seq != cand.record["seq"] or accepted != vb.seq:
        raise Refused(
            f"{cand.rel} (bundle {cand.record['id']}, system-update sequence {vb.seq}) is not "
            f"the latest approved system-update (the server has accepted sequence {accepted}); "
            "install that one"
        )
    try:
        return sysupdate.parse_update(vb.payloads.get(sysupdate.UPDATE_PAYLOAD, b""))
    except OutpostError as exc:
        raise Refused(f"{cand.rel}: {exc}") from None


def preflight(
    m: Machine, update: sysupdate.SystemUpdate, medium: Path
) -> tuple[str, slots.UpdatePlan]:
    """Every check that needs no write: slot, version, target partition, files on the medium."""
    booted = m.booted()
    if booted is None:
        raise Refused(
            f"{m.cmdline} names no outpost.slot=: this system was not booted from an Outpost slot"
        )
    if not (m.esp / "loader").is_dir():
        raise Refused(f"no boot loader at {m.esp} (loader/ is missing): is the ESP mounted?")
    try:
        plan = slots.plan_update(m.entries(), booted, update.version)
    except OutpostError as exc:
        raise Refused(
            f"refusing a downgrade or reinstall: {exc} (slot {booted} is running)"
        ) from None
    device = m.partition(slots.ROOT_OF_SLOT[plan.target_slot])
    if not device.exists():
        raise Refused(f"slot {plan.target_slot}'s partition {device} does not exist")
    if not os.access(device, os.W_OK):
        raise Refused(f"cannot write slot {plan.target_slot}'s partition {device}: run as root")
    size = sysupdate.partition_size(device)
    if size < update.root.size:
        raise Refused(
            f"{update.root.name} is {update.root.size} bytes; slot {plan.target_slot}'s "
            f"partition {device} holds {size}"
        )
    try:
        sysupdate.check_medium(update, medium)
    except OutpostError as exc:
        raise Refused(str(exc)) from None
    return booted, plan


def _report(c: AdminClient, bundle_id: int, body: dict[str, Any]) -> None:
    c.post(f"/v1/bundles/{bundle_id}/install", body)


def _update(args: argparse.Namespace, c: AdminClient) -> int:
    m = _machine(args)
    try:
        with opened_medium(args.medium) as root:
            cand = find_candidate(root, _server_records(c), args.bundle)
            update = verify_again(c, cand, int(time.time()))
            medium_dir = (root / cand.rel).parent
            print(f"checking {update.root.name}, {update.kernel.name}, {update.initrd.name} "
                  f"on {args.medium} against the signed digests ...", flush=True)  # fmt: skip
            booted, plan = preflight(m, update, medium_dir)
            running = slot_status(m)["slots"][booted]
            what = (
                f"Write version {update.version} (bundle {cand.record['id']}) into slot "
                f"{plan.target_slot}, replacing {', '.join(plan.remove) or 'nothing'}?"
            )
            if not _confirm(args, what):
                return 1
            bid = cand.record["id"]
            started = {"slot": plan.target_slot, "version": update.version, "medium": args.medium}
            _report(c, bid, {"phase": "started", **started})
            try:
                sysupdate.install(update, medium_dir, m.esp, booted, m.partition)
            except (OutpostError, OSError) as exc:
                reason = str(exc)
                _report(c, bid, {"phase": "failed", "slot": plan.target_slot,
                                 "version": update.version, "reason": reason[:500]})  # fmt: skip
                print(
                    f"outpost: UPDATE FAILED writing slot {plan.target_slot}: {reason}\n"
                    f"slot {booted} (running) is untouched and still boots; slot "
                    f"{plan.target_slot} has no boot entry. Re-run to try again.",
                    file=sys.stderr,
                )
                return 1
    except Refused as exc:
        print(f"outpost: update refused, nothing written: {exc}", file=sys.stderr)
        return 2
    except (MediaError, ApiError) as exc:
        print(f"outpost: update refused, nothing written: {exc}", file=sys.stderr)
        return 2
    entry = plan.new_entry.filename
    _report(c, bid, {
        "phase": "installed", "slot": plan.target_slot, "version": update.version, "entry": entry,
        "previous_version": running["version"] if running else 0,
        "root_sha256": update.root.sha256, "kernel_sha256": update.kernel.sha256,
        "initrd_sha256": update.initrd.sha256, "medium": args.medium,
    })  # fmt: skip
    out = {"bundle": bid, "version": update.version, "slot": plan.target_slot, "entry": entry,
           "fallback_slot": booted}  # fmt: skip
    text = (
        f"installed version {update.version} into slot {plan.target_slot} ({entry}).\n"
        f"Reboot to try version {update.version}; if it fails to become ready "
        f"{slots.BOOT_TRIES} times the box falls back to slot {booted}"
        + (f" (version {running['version']})" if running else "")
        + " by itself."
    )
    print(json.dumps(out, indent=2) if args.json else text)
    return 0


def _confirm(args: argparse.Namespace, what: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"outpost: {what} Re-run with --yes to confirm.", file=sys.stderr)
        return False
    return input(f"{what} Type 'yes' to continue: ").strip().lower() == "yes"


def add_commands(sub: Any) -> None:
    s = sub.add_parser("system", help="A/B slots: status, software updates (root)")
    ss = s.add_subparsers(dest="action", required=True)

    def machine(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.add_argument(
            "--esp", default=str(DEFAULT_ESP), help="the mounted ESP (default %(default)s)"
        )
        sp.add_argument("--devices", default=str(DEFAULT_DEVICES),
                        help="folder of partitions by PARTUUID (default %(default)s)")  # fmt: skip
        sp.add_argument("--cmdline", default=str(DEFAULT_CMDLINE),
                        help="kernel command line naming the booted slot")  # fmt: skip
        return sp

    sp = machine(ss.add_parser("status", help="booted slot, versions, boot tries, blessing"))
    sp.set_defaults(func=_status)
    sp = machine(
        ss.add_parser("update", help="install an approved system-update into the inactive slot")
    )
    sp.add_argument(
        "medium", metavar="MEDIUM_OR_DIR", help="block device (mounted read-only) or folder"
    )
    sp.add_argument(
        "--bundle", type=int, help="the approved bundle's id, if the medium holds several"
    )
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sp.set_defaults(func=_update)
