"""`outpost-sign`: make, sign, verify and inspect offline bundles on an offline signing station.

    outpost-sign keygen --out DIR [--label NAME]
    outpost-sign create KIND --appliance ID --seq N --expires 7d --payload name=path ... --out FILE
    outpost-sign create ca-material --appliance ID --seq N --expires 7d --out FILE
                 --csr REQ.pem --root-cert outpost-root.pem --root-key outpost-root-key.pem
                 [--days N] [--passphrase-file F]
             or  --intermediate CERT.pem --intermediate-key KEY.pem [--root-cert outpost-root.pem]
    outpost-sign sign FILE --key KEYFILE
    outpost-sign verify FILE --trust STORE.json --appliance ID [--last-seq N]
    outpost-sign inspect FILE
    outpost-sign enrolment-key --keys keys.json [--user U | --tags tag:a,tag:b] [--reusable]
                               [--ephemeral] [--expires 30d] [--description TEXT]

The clock is read here, at the edge, and passed into the sans-IO core.
Exit codes: 0 success, 1 bundle rejected, 2 usage or file error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from outpost_server.bundles import format as fmt
from outpost_server.bundles import payloads as pl
from outpost_server.bundles.errors import BundleRejected
from outpost_server.bundles.signing import add_signature, public_bytes
from outpost_server.bundles.trust import TrustStore, TrustStoreError
from outpost_server.bundles.verify import verify
from outpost_server.ca import certs as ca_certs
from outpost_server.ca import material as ca_material
from outpost_server.ca.keystore import decrypt_private_key
from outpost_server.errors import OutpostError

_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_PAYLOAD_FILE_BYTES = fmt.MAX_BUNDLE_BYTES  # a payload can never be bigger than its bundle


class UsageError(Exception):
    pass


def parse_duration(text: str) -> int:
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"duration {text!r}: use e.g. 90s, 30m, 12h, 7d")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (never a window where a key is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_new(tmp, data, 0o644)
    os.replace(tmp, path)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot load key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 private key")
    return key


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pub = public_bytes(key)
    kid = fmt.key_id_for(pub)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    write_new(out / f"{kid}.key", pem, 0o600)
    entry: dict[str, object] = {
        "key_id": kid,
        "public_key": pub.hex(),
        "kinds": [],
        "label": args.label or "",
    }
    write_new(out / f"{kid}.pub", (json.dumps(entry, indent=2) + "\n").encode(), 0o644)
    print(
        f"key id {kid}\nprivate key {out / (kid + '.key')} (mode 0600)\n"
        f"public key  {out / (kid + '.pub')}"
    )
    print("add the .pub object to the trust store's signers and fill in its kinds")
    return 0


CARRIED_KEY_WARNING = (
    "WARNING: this bundle carries the issuing CA's private key (intermediate-key.pem) in "
    "clear inside the signed bundle: whoever copies the medium has the key. Prefer "
    "`outpost ca request-intermediate` on the appliance and --csr here."
)


def _read_pem(path: str, what: str) -> bytes:
    p = Path(path)
    if p.stat().st_size > ca_material.MAX_PEM_BYTES:
        raise UsageError(f"{path}: too large for {what}")
    return p.read_bytes()


def ca_material_payloads(args: argparse.Namespace, now: int) -> dict[str, bytes]:
    """intermediate.pem (+ root.pem, + intermediate-key.pem when made elsewhere)."""
    from cryptography import x509  # noqa: PLC0415

    if args.payload:
        raise UsageError("ca-material takes --csr (or --intermediate), not --payload")
    root_pem = _read_pem(args.root_cert, "a root certificate") if args.root_cert else None
    if args.csr:
        if args.intermediate or args.intermediate_key:
            raise UsageError("give either --csr or --intermediate/--intermediate-key, not both")
        if not (root_pem and args.root_key):
            raise UsageError(
                "--csr needs --root-cert and --root-key (as `outpost ca export-root` wrote them)"
            )
        try:
            csr = x509.load_pem_x509_csr(_read_pem(args.csr, "a request"))
            root = x509.load_pem_x509_certificate(root_pem)
        except ValueError as exc:
            raise UsageError(f"cannot read the request or root certificate: {exc}") from None
        if args.passphrase_file:
            lines = Path(args.passphrase_file).read_text().splitlines()
            passphrase = (lines[0] if lines else "").encode()
        else:
            passphrase = getpass.getpass("Root key passphrase: ").encode()
        root_key = decrypt_private_key(_read_pem(args.root_key, "a root key"), passphrase)
        days = args.days if args.days is not None else ca_certs.INTERMEDIATE_LIFETIME.days
        cert = ca_certs.issue_intermediate_from_csr(
            csr, root, root_key, dt.datetime.fromtimestamp(now, dt.UTC), dt.timedelta(days=days)
        )
        out = {ca_material.INTERMEDIATE_PAYLOAD: ca_certs.pem(cert)}
    elif args.intermediate and args.intermediate_key:
        if args.root_key or args.days is not None:
            raise UsageError(
                "--root-key and --days are for --csr; this certificate is already issued"
            )
        out = {
            ca_material.INTERMEDIATE_PAYLOAD: _read_pem(args.intermediate, "a certificate"),
            ca_material.INTERMEDIATE_KEY_PAYLOAD: _read_pem(args.intermediate_key, "a key"),
        }
        parsed = ca_material.parse_material(out)  # never package a key that is not the cert's
        assert parsed.key is not None
        if parsed.key.public_key().public_numbers() != parsed.cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise UsageError("--intermediate-key is not the key of --intermediate")
        print(CARRIED_KEY_WARNING, file=sys.stderr)
    else:
        raise UsageError(
            "ca-material needs --csr REQ --root-cert ROOT --root-key KEY "
            "(or --intermediate CERT --intermediate-key KEY)"
        )
    if root_pem is not None:
        out[ca_material.ROOT_PAYLOAD] = root_pem
    ca_material.parse_material(out)
    return out


def cmd_create(args: argparse.Namespace) -> int:
    created = int(args.created) if args.created is not None else int(time.time())
    if args.kind == "ca-material":
        payloads = ca_material_payloads(args, created)
    else:
        payloads = _payload_files(args)
    manifest = fmt.manifest_for(
        args.kind,
        args.appliance,
        args.seq,
        created,
        created + parse_duration(args.expires),
        payloads,
    )
    data = fmt.build(manifest, payloads)
    if len(data) > fmt.MAX_BUNDLE_BYTES:
        raise UsageError(f"bundle would be {len(data)} bytes, limit {fmt.MAX_BUNDLE_BYTES}")
    write_new(Path(args.out), data, 0o644)
    print(
        f"created unsigned {args.kind} bundle {args.out} ({len(data)} bytes); "
        "now run: outpost-sign sign"
    )
    return 0


def _payload_files(args: argparse.Namespace) -> dict[str, bytes]:
    payloads: dict[str, bytes] = {}
    for spec in args.payload or []:
        name, sep, path = spec.partition("=")
        if not sep:
            raise UsageError(f"--payload {spec!r}: use name=path")
        if name in payloads:
            raise UsageError(f"payload {name} given twice")
        p = Path(path)
        if p.stat().st_size > MAX_PAYLOAD_FILE_BYTES:
            raise UsageError(f"payload {path} is larger than a bundle may be")
        payloads[name] = p.read_bytes()
    return payloads


def cmd_sign(args: argparse.Namespace) -> int:
    path = Path(args.file)
    data = add_signature(path.read_bytes(), load_private_key(Path(args.key)))
    replace_file(path, data)
    sigs = fmt.decode_signatures(fmt.parse_frame(data).signature_bytes)
    print(f"signed; {len(sigs)} signature(s): {', '.join(s.key_id for s in sigs)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    trust = TrustStore.loads(Path(args.trust).read_bytes())
    now = int(args.now) if args.now is not None else int(time.time())
    data = Path(args.file).read_bytes()
    last: dict[str, int] = {}
    if args.last_seq is not None:
        peek = fmt.decode_manifest(fmt.parse_frame(data).manifest_bytes)
        last = {peek.signer_set: int(args.last_seq)}
    kinds = fmt.ALL_KINDS if args.any_kind else fmt.INBOUND_KINDS
    vb = verify(data, trust, args.appliance, now, last, accept_kinds=kinds)
    print(
        f"OK {vb.kind} seq {vb.seq} for {vb.manifest.appliance}, "
        f"signed by {', '.join(sorted(vb.signers))}"
    )
    return 0


def describe(data: bytes) -> list[str]:
    """As much of a bundle as can be parsed without trusting it; stops at the first failure."""
    lines = [f"size        {len(data)} bytes"]
    try:
        frame = fmt.parse_frame(data)
    except BundleRejected as exc:
        return [*lines, f"INVALID     {exc}"]
    try:
        sigs = fmt.decode_signatures(frame.signature_bytes)
        signers = ", ".join(s.key_id for s in sigs) or "(unsigned)"
    except BundleRejected as exc:
        signers = f"INVALID ({exc})"
    try:
        m = fmt.decode_manifest(frame.manifest_bytes)
    except BundleRejected as exc:
        return [*lines, f"signers     {signers}", f"INVALID     {exc}"]
    lines += [
        f"kind        {m.kind}",
        f"appliance   {m.appliance}",
        f"sequence    {m.seq} (signer set {m.signer_set})",
        f"created     {m.created} ({_utc(m.created)})",
        f"expires     {m.expires} ({_utc(m.expires)})",
        f"signers     {signers}",
        f"payloads    {len(m.payloads)}",
    ]
    lines += [f"  {p.name}  {p.size} bytes  sha256 {p.sha256.hex()}" for p in m.payloads]
    try:
        split = fmt.split_payloads(data, frame, m)
    except BundleRejected as exc:
        lines.append(f"INVALID     {exc}")
    else:
        if m.kind == "ca-material":
            lines += _describe_ca_material(split)
    lines.append("(signatures, trust and digests are not checked by inspect; use verify)")
    return lines


def _describe_ca_material(payloads: dict[str, bytes]) -> list[str]:
    try:
        mat = ca_material.parse_material(payloads)
    except OutpostError as exc:
        return [f"INVALID     {exc}"]
    d = ca_material.describe(mat.cert)
    lines = [
        f"issuing CA  {d['subject']}",
        f"  issuer    {d['issuer']}",
        f"  serial    {d['serial']}",
        f"  valid     {d['not_before']} to {d['not_after']}",
        f"  SHA-256   {d['sha256']}",
        "  key       "
        + ("carried in this bundle" if mat.key is not None else "pending request on the appliance"),
    ]
    if mat.key is not None:
        lines.append(CARRIED_KEY_WARNING)
    return lines


def cmd_enrolment_key(args: argparse.Namespace) -> int:
    """Add one new key to keys.json (the enrolment-keys payload); print its text once.

    Only the SHA-256 of the secret goes into the file, so the bundle (and the
    USB stick carrying it) holds no usable key; the printed text goes to the
    device being enrolled.
    """
    path = Path(args.keys)
    if path.exists():
        doc = json.loads(path.read_text())
        pl.parse_keys({pl.KEYS_PAYLOAD: path.read_bytes()})  # refuse to extend a broken file
    else:
        doc = {"format": pl.KEYS_FORMAT, "keys": []}
    tags = [t for t in (args.tags or "").split(",") if t]
    if not args.user and not tags:
        raise UsageError("a key needs --user or --tags")
    expires = int(time.time()) + parse_duration(args.expires) if args.expires else None
    entry, text = pl.new_key(
        args.user or None, tags, args.reusable, args.ephemeral, expires, args.description or ""
    )
    doc["keys"].append(entry)
    pl.parse_keys({pl.KEYS_PAYLOAD: json.dumps(doc).encode()})  # the whole file stays valid
    replace_file(path, (json.dumps(doc, indent=2) + "\n").encode())
    print(
        f"{text}\n\n(shown once: give it to the device; {path} holds only its hash, "
        f"prefix {entry['prefix']}, {len(doc['keys'])} key(s) in the file)"
    )
    return 0


def _utc(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def cmd_inspect(args: argparse.Namespace) -> int:
    print("\n".join(describe(Path(args.file).read_bytes())))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="outpost-sign", description="Offline bundle signing tool")
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="new Ed25519 signer key")
    k.add_argument("--out", required=True)
    k.add_argument("--label", default="")
    c = sub.add_parser("create", help="new unsigned bundle")
    c.add_argument("kind", choices=sorted(fmt.ALL_KINDS))
    c.add_argument("--appliance", required=True)
    c.add_argument("--seq", type=int, required=True)
    c.add_argument("--expires", required=True, help="validity from creation, e.g. 7d")
    c.add_argument("--created", type=int, help="unix time (default: now)")
    c.add_argument("--payload", action="append", metavar="NAME=PATH")
    c.add_argument("--out", required=True)
    ca = c.add_argument_group("ca-material (a new issuing CA for the appliance)")
    ca.add_argument("--csr", help="request written by `outpost ca request-intermediate`")
    ca.add_argument("--root-cert", help="the site root certificate (outpost-root.pem)")
    ca.add_argument("--root-key", help="the encrypted root key (outpost-root-key.pem)")
    ca.add_argument("--passphrase-file", help="root key passphrase, first line (default: ask)")
    ca.add_argument("--days", type=int, help="issuing CA lifetime (default and most: 1826)")
    ca.add_argument("--intermediate", help="an issuing CA certificate made elsewhere")
    ca.add_argument(
        "--intermediate-key", help="its private key: travels on the medium (prefer --csr)"
    )
    s = sub.add_parser("sign", help="add a signature")
    s.add_argument("file")
    s.add_argument("--key", required=True)
    v = sub.add_parser("verify", help="verify against a trust store")
    v.add_argument("file")
    v.add_argument("--trust", required=True)
    v.add_argument("--appliance", required=True)
    v.add_argument("--now", type=int, help="unix time (default: now)")
    v.add_argument("--last-seq", type=int, help="highest sequence already accepted for this kind")
    v.add_argument("--any-kind", action="store_true", help="also accept outbound kinds")
    i = sub.add_parser("inspect", help="human-readable dump, also of invalid bundles")
    i.add_argument("file")
    e = sub.add_parser("enrolment-key", help="add a new key to an enrolment-keys keys.json")
    e.add_argument("--keys", required=True, help="keys.json to create or extend")
    e.add_argument("--user", help="owner (a user name on the appliance)")
    e.add_argument("--tags", help="comma-separated tags, e.g. tag:sensor")
    e.add_argument("--reusable", action="store_true")
    e.add_argument("--ephemeral", action="store_true")
    e.add_argument("--expires", help="lifetime from now, e.g. 30d (default: never)")
    e.add_argument("--description", default="")
    return p


COMMANDS = {
    "keygen": cmd_keygen,
    "create": cmd_create,
    "sign": cmd_sign,
    "verify": cmd_verify,
    "inspect": cmd_inspect,
    "enrolment-key": cmd_enrolment_key,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.cmd](args)
    except BundleRejected as exc:
        print(f"REJECTED {exc}", file=sys.stderr)
        return 1
    except (UsageError, TrustStoreError, OutpostError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
