"""`outpost backup ...` and `outpost scheduler`: encrypted backups, verification, restores, drills.

Two kinds of command live here:
* through the admin API (the server is running): status, list, create, recipients,
  passphrase, schedule, prune; and `outpost scheduler`, the long-running service
  that triggers scheduled backups;
* offline, on files and the data directory, like `outpost serve` (the server is
  stopped, or the machine is an auditor's or a spare appliance): keygen, verify,
  restore, drill, `list --dir`. These import the server's backup package; they
  never open the live database through it.

Secrets are never taken on the command line: recovery keys come from files,
passphrases from a file or an unechoed prompt.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .apiclient import actor

DEFAULT_DATA_DIR = "./data"
POLL_INTERVAL_S = 0.5


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "data_dir", None) or os.environ.get("OUTPOST_DATA_DIR") or DEFAULT_DATA_DIR).resolve()


def _offline(fn: Callable[[argparse.Namespace, Any], int]) -> Callable[[argparse.Namespace, Any], int]:
    """Offline commands report Outpost's own errors as one line and exit 2."""

    def run(args: argparse.Namespace, client: Any) -> int:
        from outpost_server.errors import OutpostError  # noqa: PLC0415

        try:
            return fn(args, client)
        except OutpostError as exc:
            print(f"outpost backup: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"outpost backup: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
            return 2

    return run


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _progress_printer(quiet: bool) -> Callable[[str, int, int], None]:
    last = [0.0]

    def show(stage: str, done: int, total: int) -> None:
        if quiet or (time.monotonic() - last[0] < 0.5 and done < total):
            return
        last[0] = time.monotonic()
        pct = f"{100 * done // total:3d}%" if total else "    "
        print(f"\r  {stage:<11} {pct} {_size(done)} of {_size(total)}   ", end="", file=sys.stderr, flush=True)

    return show


def _opener(args: argparse.Namespace) -> Any:
    """The key callback for restore/drill/verify: recovery key file or passphrase."""
    from outpost_server.backup import format as fmt  # noqa: PLC0415

    if args.recovery_key:
        private = fmt.parse_recovery_key_file(Path(args.recovery_key).read_text())
        return lambda ob: fmt.open_with_recovery_key(ob.manifest, private)
    if args.passphrase_file:
        phrase = Path(args.passphrase_file).read_text().splitlines()[0] if Path(args.passphrase_file).stat().st_size else ""
    else:
        phrase = getpass.getpass("backup passphrase: ")
    return lambda ob: fmt.open_with_passphrase(ob.manifest, phrase)


def _expected_signer(args: argparse.Namespace) -> bytes | None:
    key = getattr(args, "appliance_key", None)
    if not key:
        return None
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        from outpost_server.backup.format import BackupError  # noqa: PLC0415

        raise BackupError("--appliance-key must be 64 hex characters (the appliance's audit public key)")
    return raw


# ---------------------------------------------------------------------- offline
@_offline
def _keygen(args: argparse.Namespace, _c: Any) -> int:
    from outpost_server.backup import format as fmt  # noqa: PLC0415

    out = Path(args.out)
    private, public = fmt.new_recovery_key()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a key
    with os.fdopen(fd, "w") as f:
        f.write(fmt.recovery_key_file(private))
    print(f"recovery key written to {out} (keep it offline; it opens every backup sealed to it)")
    print(f"key id:     {fmt.key_id(public)}")
    print(f"public key: {fmt.format_public(public)}")
    print("add it on the appliance with:  outpost backup recipients add " + fmt.format_public(public))
    return 0


@_offline
def _verify(args: argparse.Namespace, _c: Any) -> int:
    from outpost_server.backup.archive import verify_file  # noqa: PLC0415
    from outpost_server.backup.restore import drill  # noqa: PLC0415

    path = Path(args.file)
    ob = verify_file(path, _expected_signer(args), _progress_printer(args.json))
    out: dict[str, Any] = {"file": str(path), "ok": True, **ob.manifest.summary()}
    if args.recovery_key or args.passphrase_file:
        out["drill"] = drill(path, _opener(args), progress=_progress_printer(args.json)).to_json()
    if not args.json:
        print("\r", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    m = ob.manifest
    print(f"{path.name}: intact (signature and body digest verify)")
    print(f"  backup {m.id} of appliance {m.appliance} ({m.site}), made {_when(m.created)}")
    print(f"  Outpost {m.software}, schema {m.schema}, {len(m.files)} files, {_size(m.plain_bytes)} archived")
    print(f"  signed by {m.signer.hex()}" + ("" if args.appliance_key else "  (pass --appliance-key to require it)"))
    print("  opens with: " + ", ".join(out["opens_with"]))
    if "drill" in out:
        for c in out["drill"]["checks"]:
            print(f"  ok: {c}")
    return 0


@_offline
def _restore(args: argparse.Namespace, _c: Any) -> int:
    from outpost_server.backup.archive import read_manifest  # noqa: PLC0415
    from outpost_server.backup.failpoint import failpoint  # noqa: PLC0415
    from outpost_server.backup.restore import restore  # noqa: PLC0415

    path, data_dir = Path(args.file), _data_dir(args)
    m = read_manifest(path, _expected_signer(args)).manifest
    print(f"backup {m.id} of appliance {m.appliance} ({m.site}), made {_when(m.created)}, schema {m.schema}")
    print(f"restore into {data_dir}: the state there is replaced (the current state is kept in {data_dir}/.restore/previous)")
    if not args.yes:
        if not sys.stdin.isatty():
            print("outpost backup: refusing to restore without --yes when not run interactively", file=sys.stderr)
            return 2
        if input("type RESTORE to continue: ").strip() != "RESTORE":
            print("not restored")
            return 1
    opener = _opener(args)
    report = restore(
        path, opener, data_dir, _progress_printer(args.json), failpoint=failpoint, expected_signer=_expected_signer(args)
    )
    _record_restore(data_dir, report.to_json(), path.name)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\r", end="", file=sys.stderr)
        for c in report.checks:
            print(f"  ok: {c}")
        print("restored; start the server (systemctl start outpost-server); enrolled clients reconnect by themselves")
    return 0


def _record_restore(data_dir: Path, report: dict[str, Any], name: str) -> None:
    """The restored chain continues with an entry saying it was restored, by whom, from what."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    from outpost_server.audit.log import AuditLog  # noqa: PLC0415

    audit = data_dir / "audit"
    if not (audit / "audit.log").exists():
        return
    key = Ed25519PrivateKey.from_private_bytes((audit / "audit-key.ed25519").read_bytes())
    log = AuditLog(audit / "audit.log", appliance_id=(data_dir / "appliance-id").read_text().strip(), audit_key=key)
    try:
        log.append(
            actor(), "backup.restored",
            {"backup": name, "backup_id": report["backup_id"], "schema_from": report["schema_from"],
             "schema_to": report["schema_to"], "counts": report["counts"]},
            int(time.time()),
        )  # fmt: skip
        log.checkpoint(int(time.time()))
    finally:
        log.close()


@_offline
def _drill(args: argparse.Namespace, _c: Any) -> int:
    from outpost_server.backup.restore import drill  # noqa: PLC0415

    scratch = Path(args.scratch) if args.scratch else None
    report = drill(Path(args.file), _opener(args), scratch, _progress_printer(args.json), _expected_signer(args))
    if args.json:
        print(json.dumps({"ok": True, **report.to_json()}, indent=2))
        return 0
    print("\r", end="", file=sys.stderr)
    print(f"restore drill of {report.backup}: PASSED")
    for c in report.checks:
        print(f"  ok: {c}")
    return 0


@_offline
def _list_dir(args: argparse.Namespace, _c: Any) -> int:
    from outpost_server.backup.archive import list_backups  # noqa: PLC0415
    from outpost_server.backup.format import BackupError  # noqa: PLC0415

    rows = []
    for path, r in list_backups(Path(args.dir)):
        if isinstance(r, BackupError):
            rows.append({"name": path.name, "ok": False, "error": str(r)})
        else:
            rows.append({"name": path.name, "ok": True, "size": r.size, **r.manifest.summary()})
    return _print_list(args, rows)


# ---------------------------------------------------------------------- API
def _print_list(args: argparse.Namespace, rows: list[dict[str, Any]]) -> int:
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("(no backups)")
    for r in rows:
        if r["ok"]:
            label = f"  [{r['label']}]" if r.get("label") else ""
            print(f"{r['name']:<52} {_when(r['created'])}  {_size(r['size']):>10}  schema {r['schema']}{label}")
        else:
            print(f"{r['name']:<52} UNREADABLE: {r['error']}")
    return 0


def _list(args: argparse.Namespace, c: Any) -> int:
    if args.dir:
        return _list_dir(args, c)
    return _print_list(args, c.get("/v1/backup/list"))


def _status(args: argparse.Namespace, c: Any) -> int:
    st = c.get("/v1/backup")
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    s = st["settings"]
    print(f"backups to {st['local_dir']}; schedule: " + (f"daily at {s['schedule']['time']} UTC" if s["schedule"]["enabled"] else "off"))
    r = s["retention"]
    print(f"retention: {r['daily']} daily, {r['weekly']} weekly, {r['monthly']} monthly; CA material {'included' if s['include_ca'] else 'excluded'}")
    print(f"opens with: {', '.join(x['id'] + (' (' + x['label'] + ')' if x['label'] else '') for x in s['recipients']) or 'no recovery key'}"
          + ("; passphrase" if s["passphrase"] else ""))  # fmt: skip
    if not s["ready"]:
        print("NOT READY: add a recovery key (outpost backup keygen on an offline machine, then recipients add)")
    if st["running"]:
        j = st["running"]
        print(f"running: {j['id']} {j['stage']} {j['done']}/{j['total']}")
    for run in st["runs"][-5:]:
        res = "ok" if run["ok"] else f"FAILED: {run['error']}"
        print(f"  {_when(run['started'])}  {'scheduled' if run['scheduled'] else run['actor']:<16} {res}  {run.get('name') or ''}")
    return 0


def wait_for_job(c: Any, job: dict[str, Any], show: Callable[[str, int, int], None]) -> dict[str, Any]:
    while job["finished"] is None:
        show(job["stage"], job["done"], job["total"])
        time.sleep(POLL_INTERVAL_S)
        job = c.get(f"/v1/backup/jobs/{job['id']}")
    return job


def _create(args: argparse.Namespace, c: Any) -> int:
    job = c.post("/v1/backup/run", {"label": args.label or "", "target": args.target or "local"})
    if args.no_wait:
        print(json.dumps(job) if args.json else f"backup job {job['id']} started")
        return 0
    job = wait_for_job(c, job, _progress_printer(args.json))
    if not args.json:
        print("\r", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(job, indent=2))
    elif job["ok"]:
        r = job["result"]
        print(f"backup written and read back: {r['path']} ({_size(r['body_bytes'])}, {r['files']} files)")
    else:
        print(f"backup FAILED: {job['error']}", file=sys.stderr)
    return 0 if job["ok"] else 1


def _recipients(args: argparse.Namespace, c: Any) -> int:
    if args.raction == "add":
        s = c.post("/v1/backup/recipients", {"public": args.public, "label": args.label or ""})
    elif args.raction == "remove":
        s = c.delete(f"/v1/backup/recipients/{args.key_id}")
    else:
        s = c.get("/v1/backup")["settings"]
    if args.json:
        print(json.dumps(s["recipients"], indent=2))
        return 0
    for r in s["recipients"]:
        print(f"{r['id']}  {r['public']}  {r['label']}  added {_when(r['added'])}")
    if not s["recipients"]:
        print("(no recovery keys)")
    return 0


def _passphrase(args: argparse.Namespace, c: Any) -> int:
    if args.paction == "clear":
        c.delete("/v1/backup/passphrase")
        print("passphrase removed; backups open only with recovery keys")
        return 0
    if args.passphrase_file:
        phrase = Path(args.passphrase_file).read_text().splitlines()[0]
    else:
        phrase = getpass.getpass("new backup passphrase: ")
        if getpass.getpass("again: ") != phrase:
            print("outpost backup: the passphrases differ", file=sys.stderr)
            return 2
    c.put("/v1/backup/passphrase", {"passphrase": phrase})
    print("passphrase set: new backups also open with it. Note: the appliance can now read its own backups.")
    return 0


def _schedule(args: argparse.Namespace, c: Any) -> int:
    if args.saction == "set":
        body: dict[str, Any] = {}
        if args.time:
            body["time"] = args.time
        if args.enable or args.disable:
            body["enabled"] = bool(args.enable)
        ret = {k: getattr(args, f"keep_{k}") for k in ("daily", "weekly", "monthly") if getattr(args, f"keep_{k}") is not None}
        if ret:
            body["retention"] = ret
        if args.include_ca is not None:
            body["include_ca"] = args.include_ca
        c.put("/v1/backup/schedule", body)
    return _status(args, c)


def _prune(args: argparse.Namespace, c: Any) -> int:
    preview = c.post("/v1/backup/prune", {"dry_run": True})["pruned"]
    if not preview:
        print("nothing to prune")
        return 0
    print("retention would delete:\n  " + "\n  ".join(preview))
    if args.dry_run:
        return 0
    if not args.yes:
        if not sys.stdin.isatty() or input("delete these backups? [y/N] ").strip().lower() != "y":
            print("nothing deleted")
            return 1
    done = c.post("/v1/backup/prune", {"dry_run": False})["pruned"]
    print(f"deleted {len(done)} backups")
    return 0


@_offline
def _export(args: argparse.Namespace, c: Any) -> int:
    """Copy a backup to removable media (or a folder), read it back from the medium, verify it."""
    import tempfile  # noqa: PLC0415

    from outpost_server.backup.archive import verify_file  # noqa: PLC0415
    from outpost_server.bundles.media import MediaError  # noqa: PLC0415

    from .media_export import write_and_verify  # noqa: PLC0415

    src = Path(args.backup)
    if not src.is_file():
        src = _data_dir(args) / "backups" / args.backup
    if not src.is_file():
        print(f"outpost backup: no backup file {args.backup} (nor in {src.parent})", file=sys.stderr)
        return 2
    verify_file(src)  # never copy a damaged backup as if it were good

    def check(back: bytes) -> object:
        with tempfile.NamedTemporaryFile(suffix=".opbk") as tmp:
            tmp.write(back)
            tmp.flush()
            return verify_file(Path(tmp.name))

    data = src.read_bytes()
    try:
        done = write_and_verify(args.to, src.name, data, check)
    except (MediaError, OSError) as exc:
        print(f"outpost backup: not written to {args.to}: {exc}", file=sys.stderr)
        return 2
    try:
        c.post("/v1/backup/exported", {"name": src.name, "to": args.to, "sha256": done.sha256, "verified": not done.problem})
    except Exception as exc:  # noqa: BLE001 - the copy stands; say the record is missing
        print(f"outpost backup: note: the server did not record the export ({exc})", file=sys.stderr)
    if done.problem:
        print(f"outpost backup: EXPORT FAILED at {done.path}: {done.problem}", file=sys.stderr)
        return 1
    print(f"copied {src.name} to {done.path} ({_size(len(data))}), read back and verified\nsha256 {done.sha256}")
    return 0


def _scheduler(args: argparse.Namespace, c: Any) -> int:
    from .scheduler import run_scheduler  # noqa: PLC0415

    return run_scheduler(c, _data_dir(args) / "scheduler.sqlite")


# ---------------------------------------------------------------------- parser
def add_commands(sub: Any) -> None:
    b = sub.add_parser(
        "backup", help="encrypted backups: create, verify, restore, drill",
        description="Encrypted, signed backups. Keys are created offline with `keygen`; the appliance "
        "keeps only public keys, so it cannot read its own backups (unless a passphrase is set).",
    ).add_subparsers(dest="action", required=True)  # fmt: skip

    def key_args(sp: argparse.ArgumentParser, required: bool) -> None:
        g = sp.add_mutually_exclusive_group(required=required)
        g.add_argument("--recovery-key", metavar="FILE", help="recovery key file from `outpost backup keygen`")
        g.add_argument("--passphrase-file", metavar="FILE", help="file whose first line is the passphrase")
        sp.add_argument("--appliance-key", metavar="HEX", help="require this appliance signing key (audit public key)")

    sp = b.add_parser("keygen", help="create a recovery key pair (run on an offline workstation)")
    sp.add_argument("--out", required=True, help="file for the private key (must not exist)")
    sp.set_defaults(func=_keygen)

    sp = b.add_parser("status", help="settings, schedule and the last runs")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_status)

    sp = b.add_parser("list", help="backups in the local target (or --dir DIR, offline)")
    sp.add_argument("--dir", help="list backup files in this directory without the server")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_list)

    sp = b.add_parser("create", help="make a backup now and read it back")
    sp.add_argument("--label", help="a note stored in the manifest")
    sp.add_argument("--target", help="'local' (default: DATA_DIR/backups) or an absolute directory, e.g. a mounted stick")
    sp.add_argument("--no-wait", action="store_true", help="start it and return")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_create)

    sp = b.add_parser("verify", help="check a backup file's signature and digests (with a key: a full drill)")
    sp.add_argument("file")
    key_args(sp, required=False)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_verify)

    sp = b.add_parser("restore", help="replace this appliance's state with a backup (server stopped)")
    sp.add_argument("file")
    key_args(sp, required=False)
    sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_restore)

    sp = b.add_parser("drill", help="restore into a scratch directory, check it, report; live state untouched")
    sp.add_argument("file")
    key_args(sp, required=False)
    sp.add_argument("--scratch", help="parent directory for the scratch copy (default: system temp)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_drill)

    sp = b.add_parser("export", help="copy a backup to a USB device or folder, read it back and verify it")
    sp.add_argument("backup", help="a backup file, or the name of one in DATA_DIR/backups")
    sp.add_argument("--to", required=True, metavar="DEVICE_OR_DIR", help="block device (e.g. /dev/sdb1) or directory")
    sp.set_defaults(func=_export)

    sp = b.add_parser("prune", help="apply the retention policy to the local backups")
    sp.add_argument("--dry-run", action="store_true")
    sp.add_argument("--yes", action="store_true")
    sp.set_defaults(func=_prune)

    r = b.add_parser("recipients", help="recovery public keys backups are sealed to").add_subparsers(dest="raction", required=True)
    sp = r.add_parser("list")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_recipients)
    sp = r.add_parser("add")
    sp.add_argument("public", help="opr1:… public key printed by keygen")
    sp.add_argument("--label", help="who holds the private key, where it is kept")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_recipients)
    sp = r.add_parser("remove")
    sp.add_argument("key_id")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_recipients)

    pp = b.add_parser("passphrase", help="passphrase mode (the appliance can then read its own backups)").add_subparsers(dest="paction", required=True)
    sp = pp.add_parser("set")
    sp.add_argument("--passphrase-file", metavar="FILE")
    sp.set_defaults(func=_passphrase)
    sp = pp.add_parser("clear")
    sp.set_defaults(func=_passphrase)

    sc = b.add_parser("schedule", help="daily schedule and retention").add_subparsers(dest="saction", required=True)
    sp = sc.add_parser("show")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_schedule)
    sp = sc.add_parser("set")
    sp.add_argument("--time", help="HH:MM, UTC")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--enable", action="store_true")
    g.add_argument("--disable", action="store_true")
    for k in ("daily", "weekly", "monthly"):
        sp.add_argument(f"--keep-{k}", type=int, metavar="N")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--include-ca", dest="include_ca", action="store_true", default=None)
    g.add_argument("--exclude-ca", dest="include_ca", action="store_false")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_schedule)

    sp = sub.add_parser("scheduler", help="run the backup scheduler in the foreground (a systemd service)")
    sp.set_defaults(func=_scheduler)
