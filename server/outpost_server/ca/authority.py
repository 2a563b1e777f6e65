"""The offline certificate authority: files under DATA_DIR/ca/.

    root.pem                 root certificate (public; what clients trust)
    root-key.pem             root key, PKCS#8 encrypted under the admin passphrase;
                             absent after `ca remove-root-key` or an unattended init
    intermediate.pem         issuing CA certificate
    intermediate-key.pem     issuing CA key, unencrypted, mode 0600 (see docs/ca.md)
    intermediate-pending-key.pem  key of an outstanding request for a new issuing CA
                             (`ca request-intermediate`), 0600, until a certificate for it is
                             imported from a ca-material bundle
    intermediate-next.pem    only while a new issuing CA is being installed: its certificate
                             and key in one file, the roll-forward journal (see below)
    leaves/<generation>/     the server leaf: chain.pem (leaf + intermediate), key.pem
    issued/<serial>.pem      every certificate the intermediate signed
    crl.der, crl.pem         CRL signed by the intermediate
    state.json               bookkeeping: current leaf, issued, revoked, exports
    .lock                    flock: the server and the CLI may both change the CA

Every change is written to new files then renamed into place (and fsynced),
so a reader - the TLS listener reloading its certificate, or a crash - only
ever sees the old or the new state. The server leaf lives in a new directory
per generation; `state.json` switches to it last, and the previous generation
is kept so a listener that read the old paths a moment ago still finds them.

Replacing the issuing CA changes two fixed files (certificate and key) that
must always match, then the leaf, CRL and state. That cannot be one rename,
so it is journalled: the new certificate and key are first written together
as one file, `intermediate-next.pem` (atomic); from then on the install is
*rolled forward*. The journal is removed only after `state.json` names a
leaf issued by the new CA. Whoever takes the lock next (the server's hourly
check, a CLI command, a re-approval) and finds the journal finishes the
install before doing anything else, so a kill at any point leaves the old CA
(no journal yet) or, after the next lock, the new one: never a key and a
certificate that do not belong together.

Every public method that changes something returns `CAEvent`s for the audit log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..backup.failpoint import failpoint
from ..durable import fsync_dir, write_atomic
from ..errors import Conflict, InvalidInput, NotFound
from . import certs
from .certs import CertInfo, Revocation, serial_hex
from .keystore import (
    ROOT_KEY_KDF,
    ScryptParams,
    check_passphrase_policy,
    decrypt_private_key,
    encrypt_private_key,
    is_encrypted,
)
from .material import CAMaterial, CheckedIntermediate, check_intermediate
from .names import IPAddress, NameConstraints, parse_names

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Renew the server leaf at 2/3 of its lifetime or this long before expiry,
# whichever comes first: months of slack for a box that was switched off.
LEAF_RENEW_FRACTION = 2 / 3
LEAF_RENEW_BEFORE = dt.timedelta(days=30)
# Re-sign the CRL this long before its nextUpdate so consumers never hold a stale one.
CRL_REFRESH_BEFORE = dt.timedelta(days=10)
INTERMEDIATE_WARN_BEFORE = dt.timedelta(days=180)  # time to fetch the root key from the safe
ROOT_WARN_BEFORE = dt.timedelta(days=730)  # time to carry a new root to every client
LEAF_GENERATIONS_KEPT = 2  # current + previous, for a listener mid-reload

REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}

ROOT_CERT = "root.pem"
ROOT_KEY = "root-key.pem"
INTER_CERT = "intermediate.pem"
INTER_KEY = "intermediate-key.pem"
PENDING_KEY = "intermediate-pending-key.pem"
INTER_NEXT = "intermediate-next.pem"
STATE = "state.json"
EXPORT_ROOT_PEM = "outpost-root.pem"
EXPORT_ROOT_DER = "outpost-root.cer"
EXPORT_ROOT_KEY = "outpost-root-key.pem"
EXPORT_README = "README.txt"


class CAError(Conflict):
    """The CA cannot do this in its current state (not initialised, expired, key removed)."""


@dataclass(frozen=True)
class CAEvent:
    """One audit record: who did what, when, to which certificate."""

    actor: str
    action: str
    at: dt.datetime
    subject: str
    serial: str | None
    detail: str = ""


@dataclass(frozen=True)
class TLSFiles:
    """Paths the TLS listener loads. A new `generation` means: load again."""

    root_cert: Path
    leaf_chain: Path
    leaf_key: Path
    generation: int = 0
    serial: str = ""
    not_after: dt.datetime | None = None


@dataclass(frozen=True)
class IssuedLeaf:
    cert_pem: bytes
    key_pem: bytes
    chain_pem: bytes  # leaf + intermediate, what a TLS server presents
    serial: str
    not_after: dt.datetime
    events: list[CAEvent]


@dataclass(frozen=True)
class ExportRecord:
    path: str
    at: dt.datetime
    with_key: bool


@dataclass(frozen=True)
class CAStatus:
    directory: Path
    site: str
    root: CertInfo
    intermediate: CertInfo
    leaf: CertInfo | None
    leaf_names: list[str]
    leaf_generation: int
    renew_due_at: dt.datetime | None
    root_key_present: bool
    root_key_encrypted: bool
    root_key_state: str  # "on box, encrypted" | "removed (kept offline)" | "not kept"
    exports: list[ExportRecord]
    issued_count: int
    revoked_count: int
    crl_number: int
    crl_next_update: dt.datetime
    name_constraints: str
    warnings: list[str] = field(default_factory=list)
    # an outstanding `ca request-intermediate`: {"key_sha256", "created", "actor"}
    pending_intermediate: dict[str, str] | None = None


# ------------------------------------------------------------------ files


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomic replace: a reader sees the old or the new content, never half."""
    write_atomic(path, data, mode)


def _dt(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def _check_now(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise InvalidInput("`now` must be timezone-aware (UTC)")
    return now.astimezone(dt.UTC)


def parse_serial(text: str) -> int:
    """Serial as printed by `ca status`/`ca issue`: hex, optional 0x and colons."""
    t = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(t, 16)
    except ValueError as exc:
        raise InvalidInput(
            f"{text!r} is not a certificate serial (hex, as `outpost ca status` prints)"
        ) from exc
    if value <= 0:
        raise InvalidInput("certificate serials are positive")
    return value


class OfflineCA:
    """A file-based CA in one directory. Construct with `open()` or `init()`."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    # ------------------------------------------------------------- creation
    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / STATE).is_file()

    @classmethod
    def open(cls, directory: Path) -> OfflineCA:
        if not cls.exists(directory):
            raise CAError(f"no certificate authority in {directory}: run `outpost ca init` first")
        return cls(directory)

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        site: str,
        names: Sequence[str],
        passphrase: bytes | None,
        now: dt.datetime,
        actor: str,
        permit_dns: Sequence[str] | None = None,
        permit_ip: Sequence[str] | None = None,
        kdf: ScryptParams | None = None,
    ) -> tuple[OfflineCA, list[CAEvent]]:
        """Create root, intermediate, server leaf and CRL in one atomic step.

        With `passphrase=None` the root key is discarded once it has signed the
        intermediate ("unattended": what the server does on a fresh data
        directory). Nobody can then make a new intermediate; `ca init` on a
        new directory is the way to a CA whose root key is kept.
        """
        now = _check_now(now)
        site = site.strip()
        if not site or len(site) > certs.SITE_MAX_CHARS or not site.isprintable():
            raise InvalidInput(f"site name must be 1-{certs.SITE_MAX_CHARS} printable characters")
        if passphrase is not None:
            check_passphrase_policy(passphrase)
        leaf_names = parse_names(names)
        constraints = NameConstraints.build(
            names=leaf_names, permit_dns=permit_dns, permit_ip=permit_ip
        )
        constraints.check(leaf_names)
        if cls.exists(directory):
            raise Conflict(
                f"a certificate authority already exists in {directory}; nothing was changed "
                "(clients trust its root: replacing it means re-installing a root on every client)"
            )
        if directory.exists() and any(directory.iterdir()):
            raise Conflict(f"{directory} exists and is not empty; refusing to create a CA there")
        directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

        root_key = certs.new_key()
        root = certs.build_root(root_key, site, now)
        inter_key = certs.new_key()
        inter = certs.build_intermediate(root, root_key, inter_key, site, constraints, now)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.init-"))
        try:
            os.chmod(tmp, 0o700)
            (tmp / "leaves").mkdir(mode=0o700)
            (tmp / "issued").mkdir(mode=0o700)
            _write(tmp / ROOT_CERT, certs.pem(root))
            if passphrase is not None:
                _write(
                    tmp / ROOT_KEY,
                    encrypt_private_key(root_key, passphrase, kdf or ROOT_KEY_KDF),
                    0o600,
                )
            _write(tmp / INTER_CERT, certs.pem(inter))
            _write(tmp / INTER_KEY, certs.key_pem(inter_key), 0o600)
            state: dict[str, Any] = {
                "version": STATE_VERSION,
                "site": site,
                "created": now.isoformat(),
                "root_key": "encrypted" if passphrase is not None else "not-kept",
                "constraints": constraints.to_json(),
                "leaf": {"names": [str(n) for n in leaf_names], "generation": 0, "serial": None},
                "issued": [],
                "revoked": [],
                "crl": {"number": 0, "next_update": now.isoformat()},
                "exports": [],
            }
            ca = cls(tmp)
            events = [
                CAEvent(
                    actor,
                    "ca.init",
                    now,
                    root.subject.rfc4514_string(),
                    serial_hex(root.serial_number),
                    "root key "
                    f"{'encrypted on box' if passphrase else 'discarded (unattended init)'}; "
                    f"name constraints: {constraints.describe()}",
                ),
                CAEvent(
                    actor,
                    "ca.intermediate.issue",
                    now,
                    inter.subject.rfc4514_string(),
                    serial_hex(inter.serial_number),
                    f"valid until {inter.not_valid_after_utc:%Y-%m-%d}",
                ),
            ]
            ca._record_issued(state, inter, "intermediate", [], actor, now)
            events += ca._issue_server_leaf(state, leaf_names, now, actor)
            events += ca._sign_crl(state, now, actor)
            ca._commit(state)
            os.replace(tmp, directory)  # an empty target directory is replaced too
            fsync_dir(directory.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(directory), events

    # ---------------------------------------------------------------- state
    def _load_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.dir / STATE).read_text())
        except FileNotFoundError as exc:
            raise CAError(
                f"no certificate authority in {self.dir}: run `outpost ca init` first"
            ) from exc
        if state.get("version") != STATE_VERSION:
            raise CAError(f"{self.dir / STATE} has unknown version {state.get('version')!r}")
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        _write(self.dir / STATE, json.dumps(state, indent=2, sort_keys=True).encode(), 0o600)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Exclusive lock across processes; yields fresh state (caller saves it)."""
        if not self.exists(self.dir):
            raise CAError(f"no certificate authority in {self.dir}: run `outpost ca init` first")
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self._load_state()
            if (self.dir / INTER_NEXT).exists():
                self._finish_interrupted_install(state)
                state = self._load_state()
            yield state
        finally:
            os.close(fd)

    def _finish_interrupted_install(self, state: dict[str, Any]) -> None:
        """An issuing-CA install was killed after its journal was written: finish it."""
        cert, _ = _load_next(self.dir / INTER_NEXT)
        chain = self.dir / "leaves" / state["leaf"]["dir"] / "chain.pem"
        served = x509.load_pem_x509_certificates(chain.read_bytes())
        if len(served) > 1 and served[1] == cert:  # state.json already switched: only tidy up
            self._drop_journal(state)
            return
        now = dt.datetime.now(dt.UTC)
        events = self._roll_forward(state, now, "ca-recovery")
        # Nobody is there to audit these; the log says what happened. The
        # bundle that started the install is still staged, and approving it
        # again records `ca.intermediate.import` ("already installed").
        for e in events:
            log.warning(
                "finished an interrupted issuing-CA install: %s %s %s",
                e.action,
                e.serial or "",
                e.detail,
            )

    def _root(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate((self.dir / ROOT_CERT).read_bytes())

    def _inter(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate((self.dir / INTER_CERT).read_bytes())
        key = serialization.load_pem_private_key((self.dir / INTER_KEY).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def _usable_inter(
        self, now: dt.datetime
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert, key = self._inter()
        if now >= cert.not_valid_after_utc:
            raise CAError(
                f"the issuing CA expired on {cert.not_valid_after_utc:%Y-%m-%d}: "
                "bring the root key "
                "back and run `outpost ca renew --intermediate`"
            )
        return cert, key

    def _constraints(self, state: dict[str, Any]) -> NameConstraints:
        return NameConstraints.from_json(state["constraints"])

    def _record_issued(
        self,
        state: dict[str, Any],
        cert: x509.Certificate,
        kind: str,
        names: Sequence[IPAddress | str],
        actor: str,
        now: dt.datetime,
    ) -> None:
        serial = serial_hex(cert.serial_number)
        _write(self.dir / "issued" / f"{serial}.pem", certs.pem(cert))
        state["issued"].append(
            {
                "serial": serial,
                "kind": kind,
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
                "names": [str(n) for n in names],
                "not_after": cert.not_valid_after_utc.isoformat(),
                "issued_at": now.isoformat(),
                "actor": actor,
            }
        )

    def _issue_server_leaf(
        self, state: dict[str, Any], names: Sequence[IPAddress | str], now: dt.datetime, actor: str
    ) -> list[CAEvent]:
        inter, inter_key = self._usable_inter(now)
        self._constraints(state).check(names)
        key = certs.new_key()
        leaf = certs.build_leaf(
            inter, inter_key, key, state["site"], names, certs.LEAF_LIFETIME, now
        )
        gen = int(state["leaf"]["generation"]) + 1
        leaves = self.dir / "leaves"
        final = leaves / f"{gen:06d}"
        tmp = Path(tempfile.mkdtemp(dir=leaves, prefix=".new-"))
        _write(tmp / "key.pem", certs.key_pem(key), 0o600)
        _write(tmp / "chain.pem", certs.pem(leaf) + certs.pem(inter))
        if final.exists():  # left over from a crash before state.json was switched
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(leaves)
        self._record_issued(state, leaf, "server", names, actor, now)
        previous = state["leaf"].get("serial")
        state["leaf"] = {
            "names": [str(n) for n in names],
            "generation": gen,
            "serial": serial_hex(leaf.serial_number),
            "dir": final.name,
        }
        # Old generations go once state.json no longer points at them (see below).
        state["_prune"] = True
        detail = (
            f"names {', '.join(map(str, names))}; valid until {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
        if previous:
            detail += f"; replaces {previous}"
        return [
            CAEvent(
                actor,
                "ca.leaf.renew",
                now,
                leaf.subject.rfc4514_string(),
                serial_hex(leaf.serial_number),
                detail,
            )
        ]

    def _commit(self, state: dict[str, Any]) -> None:
        prune = state.pop("_prune", False)
        self._save_state(state)
        if prune:
            keep = int(state["leaf"]["generation"])
            for d in (self.dir / "leaves").iterdir():
                if d.name.isdigit() and int(d.name) <= keep - LEAF_GENERATIONS_KEPT:
                    shutil.rmtree(d, ignore_errors=True)

    def _sign_crl(self, state: dict[str, Any], now: dt.datetime, actor: str) -> list[CAEvent]:
        inter, inter_key = self._usable_inter(now)
        inter_subject = inter.subject.rfc4514_string()
        mine = {i["serial"] for i in state["issued"] if i["issuer"] == inter_subject}
        revoked = [
            Revocation(int(r["serial"], 16), x509.ReasonFlags(r["reason"]), _dt(r["at"]))
            for r in state["revoked"]
            if r["serial"] in mine
        ]
        number = int(state["crl"]["number"]) + 1
        crl = certs.build_crl(inter, inter_key, revoked, number, now)
        _write(self.dir / "crl.der", crl.public_bytes(serialization.Encoding.DER))
        _write(self.dir / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
        next_update = crl.next_update_utc
        assert next_update is not None
        state["crl"] = {"number": number, "next_update": next_update.isoformat()}
        return [
            CAEvent(
                actor,
                "ca.crl.sign",
                now,
                inter_subject,
                None,
                f"CRL #{number}, {len(revoked)} revoked, next update {next_update:%Y-%m-%d}",
            )
        ]

    # ------------------------------------------------------- server leaf API
    def current_leaf(self) -> TLSFiles:
        """The server certificate to load now. Reload when `generation` changes."""
        state = self._load_state()
        leaf = state["leaf"]
        d = self.dir / "leaves" / leaf["dir"]
        entry = next(i for i in state["issued"] if i["serial"] == leaf["serial"])
        return TLSFiles(
            root_cert=self.dir / ROOT_CERT,
            leaf_chain=d / "chain.pem",
            leaf_key=d / "key.pem",
            generation=int(leaf["generation"]),
            serial=leaf["serial"],
            not_after=_dt(entry["not_after"]),
        )

    def _leaf_due(
        self, state: dict[str, Any], names: Sequence[IPAddress | str] | None, now: dt.datetime
    ) -> str | None:
        """Why the server leaf must be replaced now, or None."""
        leaf_state = state["leaf"]
        if names is not None and sorted(map(str, names)) != sorted(leaf_state["names"]):
            return "names changed"
        if any(r["serial"] == leaf_state["serial"] for r in state["revoked"]):
            return "current leaf revoked"
        chain = self.dir / "leaves" / leaf_state["dir"] / "chain.pem"
        leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
        inter, _ = self._inter()
        if leaf.issuer != inter.subject:
            return "issuing CA replaced"
        if now >= self._renew_at(leaf):
            return "due"
        return None

    @staticmethod
    def _renew_at(leaf: x509.Certificate) -> dt.datetime:
        start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        return min(start + (end - start) * LEAF_RENEW_FRACTION, end - LEAF_RENEW_BEFORE)

    def renew_if_due(
        self, now: dt.datetime, names: Sequence[str] | None = None, actor: str = "scheduler"
    ) -> list[CAEvent]:
        """Replace the server leaf if due (or `names` differ) and re-sign the CRL if due.

        Call at server start (with the configured names) and then on a schedule
        (e.g. hourly). Returns [] when nothing changed.
        """
        now = _check_now(now)
        parsed = parse_names(names) if names is not None else None
        with self._locked() as state:
            events: list[CAEvent] = []
            if parsed is not None:
                self._constraints(state).check(parsed)
            reason = self._leaf_due(state, parsed, now)
            if reason is not None:
                use = parsed if parsed is not None else parse_names(state["leaf"]["names"])
                events += self._issue_server_leaf(state, use, now, actor)
            if now >= _dt(state["crl"]["next_update"]) - CRL_REFRESH_BEFORE:
                events += self._sign_crl(state, now, actor)
            if events:
                self._commit(state)
            return events

    def renew(
        self, now: dt.datetime, names: Sequence[str] | None = None, actor: str = "admin"
    ) -> list[CAEvent]:
        """Replace the server leaf now (e.g. after a suspected key leak)."""
        now = _check_now(now)
        with self._locked() as state:
            use = parse_names(names if names is not None else state["leaf"]["names"])
            events = self._issue_server_leaf(state, use, now, actor)
            self._commit(state)
            return events

    # -------------------------------------------------------- other leaves
    def issue(
        self, names: Sequence[str], lifetime: dt.timedelta, now: dt.datetime, actor: str = "admin"
    ) -> IssuedLeaf:
        """An extra server certificate (e.g. for another service on the site network)."""
        now = _check_now(now)
        if not certs.MIN_LEAF_LIFETIME <= lifetime <= certs.LEAF_LIFETIME:
            raise InvalidInput(
                f"lifetime must be between {certs.MIN_LEAF_LIFETIME.days} and "
                f"{certs.LEAF_LIFETIME.days} days "
                "(Apple platforms reject longer server certificates)"
            )
        parsed = parse_names(names)
        with self._locked() as state:
            self._constraints(state).check(parsed)
            inter, inter_key = self._usable_inter(now)
            key = certs.new_key()
            leaf = certs.build_leaf(inter, inter_key, key, state["site"], parsed, lifetime, now)
            self._record_issued(state, leaf, "extra", parsed, actor, now)
            self._commit(state)
        serial = serial_hex(leaf.serial_number)
        event = CAEvent(
            actor,
            "ca.leaf.issue",
            now,
            leaf.subject.rfc4514_string(),
            serial,
            f"names {', '.join(map(str, parsed))}; valid until {leaf.not_valid_after_utc:%Y-%m-%d}",
        )
        return IssuedLeaf(
            certs.pem(leaf),
            certs.key_pem(key),
            certs.pem(leaf) + certs.pem(inter),
            serial,
            leaf.not_valid_after_utc,
            [event],
        )

    # ---------------------------------------------------------- revocation
    def revoke(
        self, serial: int | str, reason: str, now: dt.datetime, actor: str = "admin"
    ) -> list[CAEvent]:
        """Add a leaf to the CRL; if it is the server's own leaf, replace that at once."""
        now = _check_now(now)
        number = parse_serial(serial) if isinstance(serial, str) else serial
        if reason not in REVOCATION_REASONS:
            raise InvalidInput(
                f"unknown revocation reason {reason!r}; use one of: {', '.join(REVOCATION_REASONS)}"
            )
        with self._locked() as state:
            hexs = serial_hex(number)
            entry = next((i for i in state["issued"] if i["serial"] == hexs), None)
            if entry is None:
                raise NotFound(f"no certificate with serial {hexs} was issued by this CA")
            if entry["kind"] == "intermediate":
                raise InvalidInput(
                    "that is the issuing CA itself; "
                    "replace it with `outpost ca renew --intermediate`"
                )
            inter, _ = self._usable_inter(now)
            if entry["issuer"] != inter.subject.rfc4514_string():
                raise CAError(
                    f"{hexs} was signed by a previous issuing CA whose key is gone; it cannot be "
                    f"listed on the current CRL (it expires {entry['not_after'][:10]})"
                )
            if any(r["serial"] == hexs for r in state["revoked"]):
                raise Conflict(f"certificate {hexs} is already revoked")
            state["revoked"].append(
                {
                    "serial": hexs,
                    "reason": REVOCATION_REASONS[reason].value,
                    "at": now.isoformat(),
                    "actor": actor,
                }
            )
            events = [CAEvent(actor, "ca.revoke", now, entry["subject"], hexs, f"reason {reason}")]
            if state["leaf"]["serial"] == hexs:
                events += self._issue_server_leaf(
                    state, parse_names(state["leaf"]["names"]), now, actor
                )
            events += self._sign_crl(state, now, actor)
            self._commit(state)
            return events

    def crl_bytes(self, fmt: Literal["der", "pem"] = "der") -> bytes:
        """The current CRL, for GET /ca/crl (DER: application/pkix-crl)."""
        return (self.dir / f"crl.{fmt}").read_bytes()

    # ------------------------------------------------------------ root key
    def unlock_root(self, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
        path = self.dir / ROOT_KEY
        if not path.exists():
            raise CAError("the root key is not on this box (removed, or never kept)")
        return decrypt_private_key(path.read_bytes(), passphrase)

    def export_root(
        self, dest: Path, now: dt.datetime, include_key: bool, actor: str = "admin"
    ) -> list[CAEvent]:
        """Write the root certificate (PEM and DER) and optionally the encrypted root key.

        Files are read back and compared before the export is recorded, so a
        later `remove_root_key` can trust it. Existing different files are
        never overwritten.
        """
        now = _check_now(now)
        with self._locked() as state:
            root = self._root()
            files: dict[str, bytes] = {
                EXPORT_ROOT_PEM: certs.pem(root),
                EXPORT_ROOT_DER: root.public_bytes(serialization.Encoding.DER),
            }
            if include_key:
                key_path = self.dir / ROOT_KEY
                if not key_path.exists():
                    raise CAError(
                        "the root key is not on this box; only the certificate can be exported"
                    )
                files[EXPORT_ROOT_KEY] = key_path.read_bytes()
            files[EXPORT_README] = _export_readme(root, state["site"], include_key, now).encode()
            dest.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                target = dest / name
                if target.exists() and target.read_bytes() != data and name != EXPORT_README:
                    raise Conflict(
                        f"{target} exists with different content; choose an empty directory"
                    )
            for name, data in files.items():
                _write(dest / name, data, 0o600 if name == EXPORT_ROOT_KEY else 0o644)
            for name, data in files.items():
                if (dest / name).read_bytes() != data:
                    raise Conflict(f"read-back of {dest / name} differs: the medium may be faulty")
            state["exports"].append(
                {
                    "path": str(dest.resolve()),
                    "at": now.isoformat(),
                    "with_key": include_key,
                    "key_sha256": hashlib.sha256(files[EXPORT_ROOT_KEY]).hexdigest()
                    if include_key
                    else None,
                }
            )
            self._commit(state)
        what = "root certificate and encrypted root key" if include_key else "root certificate"
        return [
            CAEvent(
                actor,
                "ca.root.export",
                now,
                root.subject.rfc4514_string(),
                serial_hex(root.serial_number),
                f"{what} to {dest.resolve()}",
            )
        ]

    def remove_root_key(
        self, export_dir: Path, passphrase: bytes, now: dt.datetime, actor: str = "admin"
    ) -> list[CAEvent]:
        """Delete the root key from the box after proving the export in `export_dir` is usable.

        The exported copy must be byte-identical to the key on the box and must
        decrypt with `passphrase`: afterwards it is the only copy.
        """
        now = _check_now(now)
        with self._locked() as state:
            key_path = self.dir / ROOT_KEY
            if not key_path.exists():
                raise CAError("the root key is not on this box (already removed, or never kept)")
            exported = export_dir / EXPORT_ROOT_KEY
            if not exported.exists():
                raise NotFound(
                    f"no exported root key at {exported}: run `outpost ca export-root --with-key` "
                    "to removable media first, and keep that medium mounted"
                )
            if exported.read_bytes() != key_path.read_bytes():
                raise Conflict(
                    f"{exported} is not a copy of this CA's root key; nothing was removed"
                )
            decrypt_private_key(exported.read_bytes(), passphrase)
            key_path.unlink()
            fsync_dir(self.dir)
            state["root_key"] = "removed"
            self._commit(state)
            root = self._root()
        return [
            CAEvent(
                actor,
                "ca.root.remove-key",
                now,
                root.subject.rfc4514_string(),
                serial_hex(root.serial_number),
                f"export verified at {exported.resolve()}",
            )
        ]

    def renew_intermediate(
        self,
        passphrase: bytes,
        now: dt.datetime,
        actor: str = "admin",
        *,
        permit_dns: Sequence[str] | None = None,
        permit_ip: Sequence[str] | None = None,
        root_key_file: Path | None = None,
    ) -> list[CAEvent]:
        """New issuing CA (and server leaf) signed by the root; constraints kept unless given.

        `root_key_file` reads the root key from removable media when it is no
        longer on the box.
        """
        now = _check_now(now)
        with self._locked() as state:
            if root_key_file is not None:
                root_key = decrypt_private_key(root_key_file.read_bytes(), passphrase)
            else:
                root_key = self.unlock_root(passphrase)
            root = self._root()
            if root_key.public_key().public_numbers() != _ec_pub(root).public_numbers():
                raise InvalidInput("that key is not this CA's root key")
            old = self._constraints(state)
            leaf_names = parse_names(state["leaf"]["names"])
            if permit_dns is None and permit_ip is None:
                constraints = old
            else:
                constraints = NameConstraints.build(
                    names=leaf_names,
                    permit_dns=list(old.dns) if permit_dns is None else permit_dns,
                    permit_ip=[str(n) for n in old.ip] if permit_ip is None else permit_ip,
                )
            key = certs.new_key()
            inter = certs.build_intermediate(root, root_key, key, state["site"], constraints, now)
            event = CAEvent(
                actor,
                "ca.intermediate.issue",
                now,
                inter.subject.rfc4514_string(),
                serial_hex(inter.serial_number),
                f"valid until {inter.not_valid_after_utc:%Y-%m-%d}; "
                f"constraints {constraints.describe()}",
            )
            return [event, *self._install_intermediate(state, inter, key, now, actor)]

    # ------------------------------------------- issuing CA signed offline
    def request_intermediate(
        self, now: dt.datetime, actor: str = "admin"
    ) -> tuple[bytes, list[CAEvent]]:
        """A new issuing-CA key kept here as *pending*, and a PKCS#10 request for it (PEM).

        The request goes to the offline signing station, where the root key
        signs it (`outpost-sign create ca-material --csr`); the certificate
        comes back in a ca-material bundle and `import_intermediate` pairs it
        with this key. The private key never leaves the box. A new request
        replaces an older pending one (its key is overwritten).
        """
        now = _check_now(now)
        with self._locked() as state:
            if state["root_key"] == "not-kept":
                raise CAError(
                    "this CA's root key was discarded at unattended init: nobody can sign a "
                    "new issuing CA for it (see docs/ca.md, `outpost ca init`)"
                )
            key = certs.new_key()
            csr = certs.build_intermediate_csr(key, state["site"], self._constraints(state), now)
            old = state.get("pending_intermediate")
            # Key first, then state: a kill in between leaves a key file whose
            # fingerprint state.json does not name, which counts as no request.
            _write(self.dir / PENDING_KEY, certs.key_pem(key), 0o600)
            fp = certs.key_fingerprint(key.public_key())
            state["pending_intermediate"] = {
                "key_sha256": fp,
                "created": now.isoformat(),
                "actor": actor,
            }
            self._commit(state)
        detail = f"pending key {fp}; constraints {self._constraints(state).describe()}"
        if old:
            detail += f"; replaces the request of {old['created'][:16]} (key {old['key_sha256']})"
        event = CAEvent(
            actor, "ca.intermediate.request", now, csr.subject.rfc4514_string(), None, detail
        )
        return csr.public_bytes(serialization.Encoding.PEM), [event]

    def _pending_public(self, state: dict[str, Any]) -> ec.EllipticCurvePublicKey | None:
        key = self._pending_key(state)
        return None if key is None else key.public_key()

    def _pending_key(self, state: dict[str, Any]) -> ec.EllipticCurvePrivateKey | None:
        pending = state.get("pending_intermediate")
        path = self.dir / PENDING_KEY
        if not pending or not path.exists():
            return None
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return None
        if certs.key_fingerprint(key.public_key()) != pending["key_sha256"]:
            return None  # left by a request killed before state.json named it
        return key

    def _check_import(
        self, state: dict[str, Any], material: CAMaterial, now: dt.datetime
    ) -> CheckedIntermediate:
        current, _ = self._inter()
        return check_intermediate(
            material,
            root=self._root(),
            site_constraints=self._constraints(state),
            leaf_names=parse_names(state["leaf"]["names"]),
            pending=self._pending_public(state),
            current=current,
            now=now,
        )

    def check_import(self, material: CAMaterial, now: dt.datetime) -> CheckedIntermediate:
        """Every check `import_intermediate` makes, changing nothing (preview, planning)."""
        return self._check_import(self._load_state(), material, _check_now(now))

    def import_intermediate(
        self, material: CAMaterial, now: dt.datetime, actor: str = "admin"
    ) -> tuple[CheckedIntermediate, list[CAEvent]]:
        """Install an issuing CA signed by this site's root at the offline station.

        Checked again under the lock, then installed like a renewal (journal,
        key and certificate, server leaf, CRL, state.json last). Importing the
        certificate that is already the issuing CA changes nothing and says so:
        an approval whose database step failed after the install is repeated.
        """
        now = _check_now(now)
        with self._locked() as state:
            checked = self._check_import(state, material, now)
            cert = checked.cert
            subject, serial = cert.subject.rfc4514_string(), serial_hex(cert.serial_number)
            if checked.already_installed:
                return checked, [
                    CAEvent(
                        actor,
                        "ca.intermediate.import",
                        now,
                        subject,
                        serial,
                        "already the issuing CA (an earlier approval installed it); "
                        "nothing changed",
                    )
                ]
            key = checked.key if checked.key is not None else self._pending_key(state)
            assert key is not None  # check_intermediate found the pending key
            event = CAEvent(
                actor,
                "ca.intermediate.import",
                now,
                subject,
                serial,
                f"key {checked.key_source}; valid until {cert.not_valid_after_utc:%Y-%m-%d}; "
                f"constraints {checked.constraints.describe()}; "
                f"replaces {checked.replaces_serial}",
            )
            return checked, [event, *self._install_intermediate(state, cert, key, now, actor)]

    def _install_intermediate(
        self,
        state: dict[str, Any],
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        now: dt.datetime,
        actor: str,
    ) -> list[CAEvent]:
        """Make `cert`/`key` the issuing CA; the caller holds the lock and checked both."""
        _write(self.dir / INTER_NEXT, certs.pem(cert) + certs.key_pem(key), 0o600)
        return self._roll_forward(state, now, actor)

    def _roll_forward(self, state: dict[str, Any], now: dt.datetime, actor: str) -> list[CAEvent]:
        """Carry out the journalled install; safe to repeat from any point it was killed at."""
        cert, key = _load_next(self.dir / INTER_NEXT)
        _write(self.dir / INTER_KEY, certs.key_pem(key), 0o600)
        failpoint("ca.install.after-key")  # tests: the key no longer matches intermediate.pem
        _write(self.dir / INTER_CERT, certs.pem(cert))
        try:
            nc: x509.NameConstraints | None = cert.extensions.get_extension_for_class(
                x509.NameConstraints
            ).value
        except x509.ExtensionNotFound:
            nc = None
        state["constraints"] = NameConstraints.from_extension(nc).to_json()
        serial = serial_hex(cert.serial_number)
        if not any(i["serial"] == serial for i in state["issued"]):
            self._record_issued(state, cert, "intermediate", [], actor, now)
        pending = state.get("pending_intermediate")
        if pending and pending["key_sha256"] == certs.key_fingerprint(key.public_key()):
            state["pending_intermediate"] = None
        events = self._issue_server_leaf(state, parse_names(state["leaf"]["names"]), now, actor)
        events += self._sign_crl(state, now, actor)
        self._commit(state)  # the switch: state.json names a leaf of the new issuing CA
        failpoint("ca.install.after-state")
        self._drop_journal(state)
        return events

    def _drop_journal(self, state: dict[str, Any]) -> None:
        (self.dir / INTER_NEXT).unlink(missing_ok=True)
        if not state.get("pending_intermediate"):
            (self.dir / PENDING_KEY).unlink(missing_ok=True)
        fsync_dir(self.dir)

    # ---------------------------------------------------------------- status
    def status(self, now: dt.datetime) -> CAStatus:
        now = _check_now(now)
        state = self._load_state()
        root = self._root()
        inter, _ = self._inter()
        files = self.current_leaf()
        leaf = x509.load_pem_x509_certificates(files.leaf_chain.read_bytes())[0]
        key_path = self.dir / ROOT_KEY
        present = key_path.exists()
        encrypted = present and is_encrypted(key_path.read_bytes())
        root_key_state = {
            "encrypted": "on box, encrypted",
            "removed": "removed from box (kept offline)",
            "not-kept": "not kept (unattended init: no new issuing CA can be made)",
        }[state["root_key"]]
        exports = [ExportRecord(e["path"], _dt(e["at"]), e["with_key"]) for e in state["exports"]]
        warnings: list[str] = []
        if present and not any(e.with_key for e in exports):
            warnings.append(
                "the root key has never been exported: run `outpost ca export-root --with-key`"
            )
        if present:
            warnings.append(
                "the root key is on the box: after exporting it, run `outpost ca remove-root-key`"
            )
        if inter.not_valid_after_utc - now < INTERMEDIATE_WARN_BEFORE:
            warnings.append(
                f"the issuing CA expires {inter.not_valid_after_utc:%Y-%m-%d}: "
                "run `outpost ca renew --intermediate` with the root key, or "
                "`outpost ca request-intermediate` and have the request signed offline"
            )
        if root.not_valid_after_utc - now < ROOT_WARN_BEFORE:
            warnings.append(
                f"the root expires {root.not_valid_after_utc:%Y-%m-%d}: "
                "plan a new root for all clients"
            )
        if leaf.not_valid_after_utc <= now:
            warnings.append("the server certificate has expired: run `outpost ca renew`")
        return CAStatus(
            directory=self.dir,
            site=state["site"],
            root=CertInfo.of(root, now),
            intermediate=CertInfo.of(inter, now),
            leaf=CertInfo.of(leaf, now),
            leaf_names=list(state["leaf"]["names"]),
            leaf_generation=files.generation,
            renew_due_at=self._renew_at(leaf),
            root_key_present=present,
            root_key_encrypted=encrypted,
            root_key_state=root_key_state,
            exports=exports,
            issued_count=sum(1 for i in state["issued"] if i["kind"] != "intermediate"),
            revoked_count=len(state["revoked"]),
            crl_number=int(state["crl"]["number"]),
            crl_next_update=_dt(state["crl"]["next_update"]),
            name_constraints=self._constraints(state).describe(),
            warnings=warnings,
            pending_intermediate=state.get("pending_intermediate"),
        )

    def issued(self) -> list[dict[str, Any]]:
        """Bookkeeping rows for every certificate issued (for listings)."""
        state = self._load_state()
        revoked = {r["serial"]: r for r in state["revoked"]}
        return [dict(i, revoked=i["serial"] in revoked) for i in state["issued"]]


def _load_next(path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    data = path.read_bytes()
    cert = x509.load_pem_x509_certificate(data)
    key = serialization.load_pem_private_key(data, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _ec_pub(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    return pub


def _export_readme(root: x509.Certificate, site: str, with_key: bool, now: dt.datetime) -> str:
    key_note = (
        f"{EXPORT_ROOT_KEY}: the root CA private key, encrypted under the admin passphrase\n"
        "  (PKCS#8, scrypt + AES-256). Keep this medium in a safe. It is needed only to\n"
        "  renew the issuing CA (every few years) or change name constraints.\n"
        if with_key
        else ""
    )
    return (
        f"Outpost root certificate for site {site!r}, exported {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"Subject:  {root.subject.rfc4514_string()}\n"
        f"Valid:    {root.not_valid_before_utc:%Y-%m-%d} to {root.not_valid_after_utc:%Y-%m-%d}\n"
        f"SHA-256:  {certs.fingerprint(root)}\n\n"
        "Compare the SHA-256 fingerprint with `outpost ca status` on the appliance before\n"
        "installing the root on a client.\n\n"
        f"{EXPORT_ROOT_PEM}: root certificate, PEM (Linux: SSL_CERT_FILE or the system bundle)\n"
        f"{EXPORT_ROOT_DER}: the same certificate, DER (Windows, macOS, iOS, Android installers)\n"
        f"{key_note}"
    )
