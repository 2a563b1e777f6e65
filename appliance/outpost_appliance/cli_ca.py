"""`outpost ca ...`: the offline certificate authority, run locally on the data directory.

These commands work on DATA_DIR/ca/ directly (file-based, locked against the
running server), not through the admin API: the CA must be usable before the
server first starts (`ca init`) and while it is stopped. The server notices a
new leaf or CRL on its next renewal check.

The exception is `ca request-intermediate`: the running server makes and
keeps the pending issuing-CA key and audits the request, so it goes through
the admin API (the server must be running); the CLI only writes the request
to the directory or device given with --to.

Passphrases are read with getpass (never echoed, never on the command line) or
from `--passphrase-file` (first line) for scripted installs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from outpost_server.ca import REVOCATION_REASONS, CAEvent, CAStatus, OfflineCA
from outpost_server.errors import Conflict, InvalidInput, OutpostError

DEFAULT_DATA_DIR = "./data"
ISSUE_DEFAULT_DAYS = 397


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(
        getattr(args, "data_dir", None) or os.environ.get("OUTPOST_DATA_DIR") or DEFAULT_DATA_DIR
    ).resolve()


def _ca_dir(args: argparse.Namespace) -> Path:
    return _data_dir(args) / "ca"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _passphrase(args: argparse.Namespace, prompt: str, *, confirm: bool = False) -> bytes:
    if args.passphrase_file:
        lines = Path(args.passphrase_file).read_text().splitlines()
        return (lines[0] if lines else "").encode()
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise InvalidInput("the passphrases do not match; nothing was changed")
    return first.encode()


def _confirm(args: argparse.Namespace, what: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print(f"outpost: {what} Re-run with --yes to confirm.", file=sys.stderr)
        return False
    return input(f"{what} Type 'yes' to continue: ").strip().lower() == "yes"


def _events(
    args: argparse.Namespace, events: list[CAEvent], extra: dict[str, Any] | None = None
) -> None:
    if args.json:
        out: dict[str, Any] = {"events": [dict(asdict(e), at=e.at.isoformat()) for e in events]}
        out.update(extra or {})
        print(json.dumps(out, indent=2, default=str))
        return
    for e in events:
        serial = f" serial {e.serial}" if e.serial else ""
        print(f"{e.action}:{serial} {e.subject}\n    {e.detail}")


def format_status(s: CAStatus) -> str:
    def cert(label: str, c: Any) -> list[str]:
        return [
            f"{label}",
            f"  subject      {c.subject}",
            f"  serial       {c.serial}",
            f"  valid until  {c.not_after:%Y-%m-%d %H:%M} UTC ({c.days_left} days left)",
            f"  SHA-256      {c.sha256}",
        ]

    lines = [f"Outpost CA for site {s.site!r} in {s.directory}", ""]
    lines += cert("Root CA (install this on clients)", s.root)
    lines += cert("Issuing CA", s.intermediate)
    if s.leaf is not None:
        lines += cert(f"Server certificate (generation {s.leaf_generation})", s.leaf)
        lines.append(f"  names        {', '.join(s.leaf_names)}")
        if s.renew_due_at is not None:
            lines.append(f"  renews from  {s.renew_due_at:%Y-%m-%d}")
    last = s.exports[-1] if s.exports else None
    lines += [
        "",
        f"Root key:         {s.root_key_state}",
        "Last export:      "
        + (
            f"{last.at:%Y-%m-%d} to {last.path} "
            f"({'with key' if last.with_key else 'certificate only'})"
            if last
            else "never"
        ),
        f"Name constraints: {s.name_constraints}",
        f"Issued leaves:    {s.issued_count}, revoked: {s.revoked_count}",
        f"CRL:              #{s.crl_number}, next update {s.crl_next_update:%Y-%m-%d}",
    ]
    if s.pending_intermediate:
        p = s.pending_intermediate
        lines.append(
            f"Pending request:  key {p['key_sha256'][:16]}... made {p['created'][:16]} "
            f"by {p['actor']} (import its certificate with a ca-material bundle)"
        )
    if s.warnings:
        lines += ["", *(f"! {w}" for w in s.warnings)]
    return "\n".join(lines)


# ------------------------------------------------------------------ handlers
def cmd_init(args: argparse.Namespace) -> int:
    names = [n for arg in args.name for n in arg.split(",") if n]
    if not names:
        raise InvalidInput("give the appliance's names with --name (DNS names and IP addresses)")
    if OfflineCA.exists(_ca_dir(args)):
        raise Conflict(
            f"a certificate authority already exists in {_ca_dir(args)}; nothing was changed"
        )
    print("The root key is stored encrypted under this passphrase. Without it the root")
    print("key is lost: the issuing CA cannot be renewed and every client needs a new root.")
    passphrase = _passphrase(args, "New root key passphrase: ", confirm=True)
    ca, events = OfflineCA.init(
        _ca_dir(args),
        site=args.site,
        names=names,
        passphrase=passphrase,
        now=_now(),
        actor=_actor(),
        permit_dns=args.permit_dns,
        permit_ip=args.permit_ip,
    )
    _events(args, events)
    if not args.json:
        st = ca.status(_now())
        print(f"\nRoot SHA-256: {st.root.sha256}")
        print(
            "Next: `outpost ca export-root --with-key DIR` to removable media, then "
            "`outpost ca remove-root-key --export-dir DIR`."
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    st = OfflineCA.open(_ca_dir(args)).status(_now())
    if args.json:
        print(json.dumps(asdict(st), indent=2, default=str))
    else:
        print(format_status(st))
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    names = [n for arg in args.name for n in arg.split(",") if n]
    ca = OfflineCA.open(_ca_dir(args))
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise Conflict(f"{out} is not empty; give a new directory for the certificate and key")
    leaf = ca.issue(names, dt.timedelta(days=args.days), _now(), actor=_actor())
    out.mkdir(parents=True, exist_ok=True)
    (out / "cert.pem").write_bytes(leaf.cert_pem)
    (out / "chain.pem").write_bytes(leaf.chain_pem)
    fd = os.open(out / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(leaf.key_pem)
    _events(args, leaf.events, {"directory": str(out)})
    if not args.json:
        print(f"\nWrote {out}/cert.pem, chain.pem (serve this) and key.pem (mode 0600).")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    ca = OfflineCA.open(_ca_dir(args))
    if not _confirm(
        args, f"Revoke certificate {args.serial} ({args.reason})? This cannot be undone."
    ):
        return 1
    _events(args, ca.revoke(args.serial, args.reason, _now(), actor=_actor()))
    return 0


def cmd_export_root(args: argparse.Namespace) -> int:
    ca = OfflineCA.open(_ca_dir(args))
    events = ca.export_root(Path(args.directory), _now(), include_key=args.with_key, actor=_actor())
    _events(args, events)
    if not args.json and args.with_key:
        print(
            "\nKeep this medium safe. Then run `outpost ca remove-root-key --export-dir "
            f"{args.directory}` while it is still mounted."
        )
    return 0


def cmd_remove_root_key(args: argparse.Namespace) -> int:
    ca = OfflineCA.open(_ca_dir(args))
    export_dir = Path(args.export_dir)
    if not _confirm(
        args,
        f"Delete the root key from this box? Afterwards the only copy is in {export_dir}.",
    ):
        return 1
    passphrase = _passphrase(args, "Root key passphrase (to check the exported copy): ")
    _events(args, ca.remove_root_key(export_dir, passphrase, _now(), actor=_actor()))
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    ca = OfflineCA.open(_ca_dir(args))
    names = [n for arg in (args.name or []) for n in arg.split(",") if n] or None
    if args.intermediate:
        if not _confirm(args, "Replace the issuing CA (and the server certificate)?"):
            return 1
        passphrase = _passphrase(args, "Root key passphrase: ")
        events = ca.renew_intermediate(
            passphrase,
            _now(),
            actor=_actor(),
            permit_dns=args.permit_dns,
            permit_ip=args.permit_ip,
            root_key_file=Path(args.root_key) if args.root_key else None,
        )
    elif args.force or names is not None:
        events = ca.renew(_now(), names, actor=_actor())
    else:
        events = ca.renew_if_due(_now(), actor=_actor())
        if not events and not args.json:
            print(
                "Nothing due: the server certificate and CRL are current "
                "(use --force to renew now)."
            )
    _events(args, events)
    return 0


def cmd_request_intermediate(args: argparse.Namespace, client: Any) -> int:
    """Ask the server for a pending issuing-CA key and its request; write the request out."""
    from cryptography import x509  # noqa: PLC0415

    from outpost_server.bundles.media import MediaError  # noqa: PLC0415

    from .media_export import write_and_verify  # noqa: PLC0415

    r = client.post("/v1/certs/intermediate-request", {})
    csr = r["csr_pem"].encode()
    written = None
    if args.to:

        def check(back: bytes) -> object:
            if not x509.load_pem_x509_csr(back).is_signature_valid:
                raise InvalidInput("the request read back does not verify")
            return None

        try:
            written = write_and_verify(args.to, r["file"], csr, check)
        except (MediaError, OSError, ValueError) as exc:
            print(f"outpost: request not written to {args.to}: {exc}", file=sys.stderr)
            return 2
        if written.problem:
            print(
                f"outpost: REQUEST NOT WRITTEN at {written.path}: {written.problem}",
                file=sys.stderr,
            )
            return 1
    if args.json:
        out = {k: r[k] for k in ("file", "key_sha256", "root_sha256", "events")}
        out["path"] = written.path if written else None
        out["csr_pem"] = r["csr_pem"]
        print(json.dumps(out, indent=2))
        return 0
    if written is None:
        sys.stdout.write(r["csr_pem"])
        return 0
    print(
        f"wrote {written.path}, read back and verified\n"
        f"pending key {r['key_sha256']} (stays on this box)\n"
        f"site root   {r['root_sha256']}\n"
        "Next, at the signing station: outpost-sign create ca-material --csr "
        f"{r['file']} --root-cert outpost-root.pem --root-key outpost-root-key.pem ...,\n"
        "sign the bundle, bring it back and approve it (`outpost bundles approve`)."
    )
    return 0


HANDLERS = {
    "init": cmd_init,
    "status": cmd_status,
    "issue": cmd_issue,
    "revoke": cmd_revoke,
    "export-root": cmd_export_root,
    "remove-root-key": cmd_remove_root_key,
    "renew": cmd_renew,
}


def handle(args: argparse.Namespace, client: Any = None) -> int:
    """Entry point set as `func`; `client` (the admin API) only for request-intermediate."""
    try:
        if args.ca_action == "request-intermediate":
            return cmd_request_intermediate(args, client)
        return HANDLERS[args.ca_action](args)
    except OutpostError as exc:
        print(f"outpost: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"outpost: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------- parser
def add_commands(subparsers: Any) -> None:
    ca = subparsers.add_parser(
        "ca", help="offline certificate authority (runs on DATA_DIR/ca, no server needed)"
    )
    sub = ca.add_subparsers(dest="ca_action", required=True)

    def common(sp: argparse.ArgumentParser, *, passphrase: bool = False, yes: bool = False) -> None:
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        if passphrase:
            sp.add_argument(
                "--passphrase-file", help="read the root key passphrase from this file's first line"
            )
        if yes:
            sp.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        sp.set_defaults(func=handle)

    sp = sub.add_parser("init", help="create the root CA, issuing CA and server certificate")
    sp.add_argument(
        "--site", default="outpost", help="site name shown in certificates (default %(default)s)"
    )
    sp.add_argument(
        "--name",
        action="append",
        default=[],
        required=True,
        help="DNS name or IP address clients use for this appliance (repeat, or comma-separate)",
    )
    sp.add_argument(
        "--permit-dns",
        action="append",
        help="permitted DNS domain for the issuing CA (repeat; default: internal, home.arpa, "
        "lan, local, localhost, plus each --name)",
    )
    sp.add_argument(
        "--permit-ip",
        action="append",
        help="permitted IP range for the issuing CA (repeat; default: private and "
        "non-routable ranges, plus each --name)",
    )
    common(sp, passphrase=True)

    common(
        sub.add_parser("status", help="show root, issuing CA, server certificate, root key state")
    )

    sp = sub.add_parser(
        "issue", help="issue an extra server certificate and key into a new directory"
    )
    sp.add_argument(
        "--name", action="append", required=True, help="DNS name or IP address (repeat)"
    )
    sp.add_argument(
        "--days",
        type=int,
        default=ISSUE_DEFAULT_DAYS,
        help="lifetime in days (1-397, default %(default)s)",
    )
    sp.add_argument(
        "--out", required=True, help="new directory for cert.pem, chain.pem and key.pem"
    )
    common(sp)

    sp = sub.add_parser("revoke", help="revoke a certificate by serial and re-sign the CRL")
    sp.add_argument("serial", help="serial in hex, as `outpost ca status` prints it")
    sp.add_argument("--reason", default="unspecified", choices=sorted(REVOCATION_REASONS))
    common(sp, yes=True)

    sp = sub.add_parser(
        "export-root", help="write the root certificate (and encrypted key) to a directory"
    )
    sp.add_argument("directory", help="e.g. a mounted USB stick")
    sp.add_argument("--with-key", action="store_true", help="also copy the encrypted root key")
    common(sp)

    sp = sub.add_parser(
        "remove-root-key", help="delete the root key after checking an exported copy"
    )
    sp.add_argument(
        "--export-dir", required=True, help="directory written by `export-root --with-key`"
    )
    common(sp, passphrase=True, yes=True)

    sp = sub.add_parser(
        "request-intermediate",
        help="new issuing-CA key kept on the box; write a request for the offline root to sign "
        "(through the running server)",
    )
    sp.add_argument(
        "--to", help="directory or USB block device for the request (default: print it)"
    )
    common(sp)

    sp = sub.add_parser(
        "renew", help="renew the server certificate if due (or now), or the issuing CA"
    )
    sp.add_argument(
        "--force", action="store_true", help="renew the server certificate even if not due"
    )
    sp.add_argument(
        "--name", action="append", help="new names for the server certificate (renews now)"
    )
    sp.add_argument(
        "--intermediate", action="store_true", help="replace the issuing CA (needs the root key)"
    )
    sp.add_argument(
        "--root-key", help="encrypted root key file on removable media (with --intermediate)"
    )
    sp.add_argument(
        "--permit-dns", action="append", help="new permitted DNS domains (with --intermediate)"
    )
    sp.add_argument(
        "--permit-ip", action="append", help="new permitted IP ranges (with --intermediate)"
    )
    common(sp, passphrase=True, yes=True)
