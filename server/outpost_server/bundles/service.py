"""The appliance's bundle service: intake into staging, approval, atomic apply, exports.

Theory of operation
-------------------
Synchronous, no asyncio: the admin API calls it on the event loop's thread,
like the `Store`. It is the glue between the sans-IO verifier (verify.py,
intake.py, trust.py, payloads.py) and the single writer for bundle state
(state/bundles.py), and it audits every step with the actor it is given.

1. `intake_files` takes the bytes of the bundle files found on one medium (the
   root watcher or the CLI read them; the server never walks removable media),
   verifies them against the *persisted* trust store and sequences, and
   records each one: `staged` with its bytes, or `rejected` with the exact
   verifier message. Nothing is applied.
2. `approve` re-verifies the staged bytes against the trust store and
   sequences *as they are now* (they may have moved since staging), turns the
   payload into an `ApplyPlan` (parsing and validating everything, including
   compiling a policy), and hands the plan to `BundleLedger.apply`, which
   writes all of it with the sequence bump and the status in one transaction.
   Only after the commit does the live policy switch.
3. Any refusal leaves the database as it was. A bundle stays staged unless it
   can never become valid again (expired, or its sequence was overtaken), in
   which case approval closes it as `expired` / `rejected`.
"""

from __future__ import annotations

import difflib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..audit.export import EXPORT_KIND
from ..audit.log import AuditLog, ExportSigning
from ..ca.authority import CAEvent
from ..ca.material import CheckedIntermediate, describe, parse_material
from ..errors import Conflict, InvalidInput, OutpostError
from ..state.bundles import (
    Applied,
    ApplyPlan,
    BundleLedger,
    BundleStatus,
    KeySpec,
    NewBundle,
    StagedBundle,
)
from ..state.store import Store, parse_tags
from . import payloads as pl
from .errors import BundleRejected, Check
from .format import INBOUND_KINDS, decode_manifest, manifest_for, parse_frame, split_payloads
from .intake import IntakeReport, Rejected, load_bundles, verify_loaded
from .signing import build_signed
from .trust import TRUST_STORE_PAYLOAD, TrustStore, TrustStoreError, apply_update
from .verify import VerifiedBundle, verify

AuditSink = Callable[[str, str, dict[str, Any]], None]


class PolicyGate(Protocol):
    """The live policy (control/policystate.py): check compiles and tests, apply switches."""

    def check(self, text: str) -> Any: ...

    def apply(self, verdict: Any) -> None: ...


class CAMaterialGate(Protocol):
    """The running server's CA (ca/service.py ServerCertificates): check and install
    the issuing CA a ca-material bundle carries, then serve the new leaf."""

    def check_intermediate(self, payloads: Mapping[str, bytes]) -> CheckedIntermediate: ...

    def install_intermediate(
        self, payloads: Mapping[str, bytes], actor: str
    ) -> tuple[CheckedIntermediate, list[CAEvent], bool]: ...


class NoTrustStore(Conflict):
    """Nothing can be verified before the first trust store is installed."""


NO_TRUST_STORE = (
    "no-trust-store: no trust store is installed; provision one at the console with "
    "`outpost bundles trust init FILE`"
)


@dataclass(frozen=True, slots=True)
class Medium:
    """Where files came from, for the record: a USB stick's label and serial, or a CLI import."""

    label: str = ""
    serial: str = ""
    device: str = ""


@dataclass(slots=True)
class IntakeOutcome:
    staged: list[StagedBundle] = field(default_factory=list)
    rejected: list[StagedBundle] = field(default_factory=list)
    ignored: list[Rejected] = field(default_factory=list)


class ApprovalRefused(InvalidInput):
    """Approval refused, nothing applied; `closed_as` is set if the bundle left staging."""

    def __init__(self, message: str, closed_as: BundleStatus | None = None) -> None:
        super().__init__(message)
        self.closed_as = closed_as


@dataclass(frozen=True, slots=True)
class ExportedBundle:
    name: str
    data: bytes
    sha256: str
    public_key: bytes  # the appliance audit key that signed it, for read-back verification
    seq: int


def _utc(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


OUTBOUND_VALIDITY_S = 30 * 86400  # an inventory or enrolment package is not meant to sit on a stick for long


class BundleService:
    def __init__(  # noqa: PLR0917 - the collaborators, each once
        self,
        store: Store,
        ledger: BundleLedger,
        appliance_id: str,
        policy: PolicyGate,
        audit: AuditSink,
        clock: Callable[[], int] = lambda: int(time.time()),
        signing_key: Ed25519PrivateKey | None = None,
        ca: CAMaterialGate | None = None,
    ) -> None:
        self.ca = ca  # None: this server has no CA to import ca-material into
        self.signing_key = signing_key  # the appliance (audit) key that signs outbound bundles
        self.store = store
        self.ledger = ledger
        self.appliance_id = appliance_id
        self.policy = policy
        self._audit = audit
        self.clock = clock

    # -------------------------------------------------------------- trust store
    def trust(self) -> TrustStore | None:
        rec = self.ledger.trust()
        return None if rec is None else TrustStore.loads(rec.document.encode())

    def init_trust(self, raw: bytes, actor: str) -> TrustStore:
        """Install the first trust store (SPEC.md §7: physical presence is the root of trust)."""
        store = TrustStore.loads(raw)  # TrustStoreError says what is wrong with the file
        if store.threshold("trust-store") is None:
            raise TrustStoreError(
                "the trust store needs a trust-store threshold and signers for it, "
                "or it could never be rotated"
            )
        rec = self.ledger.init_trust(store.dumps().decode(), actor)
        self._audit(
            actor,
            "bundles.trust.init",
            {"version": rec.id, "after": _trust_summary(store)},
        )
        return store

    # ------------------------------------------------------------------- intake
    def intake_root(self, root: Path, medium: Medium, actor: str) -> IntakeOutcome:
        """Intake from a directory (a mounted medium or a folder); reading is bounded."""
        report = IntakeReport()
        loaded = load_bundles(root, report)
        return self.intake_files(loaded, medium, actor, ignored=report.ignored + report.rejected)

    def intake_files(
        self,
        files: Sequence[tuple[str, bytes]],
        medium: Medium,
        actor: str,
        ignored: Sequence[Rejected] = (),
    ) -> IntakeOutcome:
        out = IntakeOutcome(ignored=list(ignored))
        self._audit(
            actor,
            "bundles.intake",
            {
                "medium": medium.label,
                "serial": medium.serial,
                "device": medium.device,
                "files": len(files),
                "ignored": len(ignored),
            },
        )
        fresh: list[tuple[str, bytes]] = []
        names: set[str] = set()
        for name, data in files:
            digest = hashlib.sha256(data).hexdigest()
            dup = self.ledger.staged_with_digest(digest)
            if name in names:  # names key the results below; a medium cannot hold two anyway
                out.ignored.append(Rejected(name, "duplicate file name in one intake"))
            elif dup is not None:
                out.ignored.append(Rejected(name, f"already staged as bundle {dup.id}"))
            else:
                fresh.append((name, data))
            names.add(name)
        trust = self.trust()
        if trust is None:
            for name, data in fresh:
                rec = self._record_rejected(name, data, NO_TRUST_STORE, medium, actor)
                out.rejected.append(rec)
            return out
        now, seqs = self.clock(), self.ledger.last_seqs()
        report = verify_loaded(fresh, trust, self.appliance_id, now, seqs)
        by_name = dict(fresh)
        for name, vb in report.accepted:
            out.staged.append(self._record_staged(name, by_name[name], vb, medium, actor))
        for r in report.rejected:
            out.rejected.append(
                self._record_rejected(r.name, by_name.get(r.name, b""), r.reason, medium, actor)
            )
        out.ignored.extend(report.ignored)
        return out

    def _record_staged(
        self, name: str, data: bytes, vb: VerifiedBundle, medium: Medium, actor: str
    ) -> StagedBundle:
        m = vb.manifest
        b = self.ledger.record(
            NewBundle(
                medium_label=medium.label,
                medium_serial=medium.serial,
                file_name=name,
                size=len(data),
                sha256=vb.sha256.hex(),
                status=BundleStatus.STAGED,
                kind=m.kind,
                seq=m.seq,
                signers=tuple(sorted(vb.signers)),
                bundle_created=m.created,
                bundle_expires=m.expires,
                data=data,
            ),
            actor,
        )
        self._audit(actor, "bundle.staged", {**_brief(b), "medium": medium.label})
        return b

    def _record_rejected(
        self, name: str, data: bytes, reason: str, medium: Medium, actor: str
    ) -> StagedBundle:
        b = self.ledger.record(
            NewBundle(
                medium_label=medium.label,
                medium_serial=medium.serial,
                file_name=name,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                status=BundleStatus.REJECTED,
                reason=reason,
            ),
            actor,
        )
        self._audit(
            actor,
            "bundle.rejected",
            {
                "id": b.id,
                "file": name,
                "sha256": b.sha256,
                "reason": reason,
                "medium": medium.label,
            },
        )
        return b

    # ------------------------------------------------------------------ reading
    def list_bundles(self, status: BundleStatus | None = None) -> list[StagedBundle]:
        self.expire_stale("server")
        return self.ledger.bundles(status)

    def get(self, bundle_id: int) -> StagedBundle:
        return self.ledger.get(bundle_id)

    def expire_stale(self, actor: str) -> list[StagedBundle]:
        """Close staged bundles whose validity ended while they waited."""
        now = self.clock()
        out = []
        for b in self.ledger.bundles(BundleStatus.STAGED):
            if b.bundle_expires is not None and now >= b.bundle_expires:
                reason = f"expired: expired {b.bundle_expires}, now {now}"
                out.append(self.ledger.decide(b.id, BundleStatus.EXPIRED, actor, reason))
                self._audit(actor, "bundle.expired", {**_brief(b), "reason": reason})
        return out

    def preview(self, bundle_id: int) -> dict[str, Any]:
        """What approving a staged bundle would change, for the admin deciding (applies nothing).

        The bytes were verified at staging; the manifest and payloads are read
        from them again here, so what is shown is what would be applied.
        """
        b = self.ledger.get(bundle_id)
        if b.status is not BundleStatus.STAGED:
            return {}
        data = self.ledger.data(bundle_id)
        frame = parse_frame(data)
        manifest = decode_manifest(frame.manifest_bytes)
        payloads = split_payloads(data, frame, manifest)
        out: dict[str, Any] = {
            "payloads": [
                {"name": p.name, "size": p.size, "sha256": p.sha256.hex()}
                for p in manifest.payloads
            ]
        }
        try:
            if b.kind == "policy":
                text = pl.parse_policy(payloads)
                cur = self.store.current_policy()
                out["policy"] = text
                out["policy_diff"] = "".join(
                    difflib.unified_diff(
                        (cur.text if cur else "").splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        fromfile=f"version {cur.id}" if cur else "no policy",
                        tofile=f"bundle {b.id}",
                    )
                )
            elif b.kind == "enrolment-keys":
                out["keys"] = [
                    {
                        "prefix": k.prefix,
                        "user": k.user,
                        "tags": list(k.tags),
                        "reusable": k.reusable,
                        "ephemeral": k.ephemeral,
                        "expires": k.expires,
                        "description": k.description,
                    }
                    for k in pl.parse_keys(payloads)
                ]
            elif b.kind == "trust-store":
                new = TrustStore.loads(pl.exactly(payloads, TRUST_STORE_PAYLOAD, b.kind))
                out["trust"] = _trust_summary(new)
            elif b.kind == "ca-material":
                out["ca_material"] = describe(parse_material(payloads).cert)
                out["ca_material"] = self._ca().check_intermediate(payloads).summary()
            elif b.kind == "system-update":
                u = _system_update(payloads)
                out["system_update"] = {
                    "version": u.version,
                    "files": [
                        {"name": f.name, "size": f.size, "sha256": f.sha256}
                        for f in (u.root, u.kernel, u.initrd)
                    ],
                }
        except OutpostError as exc:
            out["problem"] = str(exc)  # approval will refuse with the same message
        return out

    # ------------------------------------------------------------------ exports
    def export_audit(
        self, audit_log: AuditLog, from_seq: int, to_seq: int | None, actor: str
    ) -> ExportedBundle:
        """A signed audit-export bundle of entries from_seq..to_seq (default: the newest)."""
        to = audit_log.last_seq if to_seq is None else to_seq
        if not 1 <= from_seq <= to <= audit_log.last_seq:
            raise InvalidInput(f"export range {from_seq}..{to} outside 1..{audit_log.last_seq}")
        now = self.clock()
        if to == audit_log.last_seq:
            audit_log.checkpoint(now)  # the auditor gets a signed head for the range's end
        seq = self.ledger.next_outbound_seq(EXPORT_KIND)
        data = audit_log.export(from_seq, to, ExportSigning(seq, now))
        out = ExportedBundle(
            name=f"audit-{self.appliance_id}-{from_seq}-{to}.opb",
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            public_key=audit_log.public_key,
            seq=seq,
        )
        self._audit(
            actor,
            "audit.export",
            {"from": from_seq, "to": to, "bundle_seq": seq, "sha256": out.sha256, "file": out.name},
        )
        return out

    def export_outbound(
        self, kind: str, payload_name: str, payload: bytes, file_name: str, actor: str, details: dict[str, Any]
    ) -> ExportedBundle:
        """A node-inventory or client-enrolment bundle, signed with the appliance key."""
        if kind not in ("node-inventory", "client-enrolment"):
            raise InvalidInput(f"{kind} is not an export this appliance makes")
        if self.signing_key is None:
            raise InvalidInput("this server has no appliance signing key for exports")
        now = self.clock()
        seq = self.ledger.next_outbound_seq(kind)
        payloads = {payload_name: payload}
        manifest = manifest_for(kind, self.appliance_id, seq, now, now + OUTBOUND_VALIDITY_S, payloads)
        data = build_signed(manifest, payloads, self.signing_key)
        out = ExportedBundle(
            name=file_name,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            public_key=self.signing_key.public_key().public_bytes_raw(),
            seq=seq,
        )
        self._audit(actor, f"bundle.export.{kind}", {**details, "bundle_seq": seq, "sha256": out.sha256, "file": out.name})
        return out

    # ------------------------------------------------------------------ decide
    def reject(self, bundle_id: int, actor: str, reason: str) -> StagedBundle:
        reason = reason.strip()
        if not reason:
            raise InvalidInput("a reason is required to reject a bundle")
        b = self.ledger.decide(bundle_id, BundleStatus.REJECTED, actor, reason)
        self._audit(actor, "bundle.reject", {**_brief(b), "reason": reason})
        return b

    def approve(
        self, bundle_id: int, actor: str, *, before_commit: Callable[[], None] | None = None
    ) -> Applied:
        """Re-verify, plan and apply one staged bundle atomically; ApprovalRefused says why not."""
        staged = self.ledger.get(bundle_id)
        if staged.status is not BundleStatus.STAGED:
            raise Conflict(f"bundle {bundle_id} is {staged.status}, not staged")
        try:
            vb, plan, verdict, before = self._plan(staged, actor)
        except BundleRejected as exc:
            closed = {Check.EXPIRED: BundleStatus.EXPIRED, Check.REPLAYED: BundleStatus.REJECTED}
            status = closed.get(exc.check)
            if status is not None:
                self.ledger.decide(bundle_id, status, actor, str(exc))
            self._refused(staged, actor, str(exc), status)
        except OutpostError as exc:
            self._refused(staged, actor, f"{staged.kind} payload refused: {exc}", None)
        if vb.kind == "ca-material":
            plan = self._install_ca_material(staged, vb, plan, actor)
        try:
            applied = self.ledger.apply(plan, before_commit)
        except OutpostError as exc:
            self._refused(staged, actor, f"apply refused: {exc}", None)
        if verdict is not None:
            self.policy.apply(verdict)  # the live tailnet follows only after the commit
        if applied.bundle.status is BundleStatus.APPROVED:
            self._audit(
                actor,
                "bundle.approve.install",
                {**_brief(applied.bundle), "signers": list(vb.signers), **plan.result},
            )
            return applied
        after = _after(applied)
        self._audit(
            actor,
            "bundle.apply",
            {
                **_brief(applied.bundle),
                "signers": list(vb.signers),
                "before": before,
                "after": after,
            },
        )
        return applied

    def _install_ca_material(
        self, staged: StagedBundle, vb: VerifiedBundle, plan: ApplyPlan, actor: str
    ) -> ApplyPlan:
        """Install the new issuing CA *before* the database transaction; see why below.

        The CA is files under DATA_DIR/ca (with its own journal and lock), the
        bundle ledger is SQLite: they cannot commit together. The order is
        chosen so that every failure leaves something valid and repeatable:

        * CA install fails (checks under the lock, disk full): nothing was
          switched (the CA rolls its own install forward or never started it),
          the bundle stays staged, the refusal is audited.
        * CA installed, then the transaction fails or the process dies: the
          new intermediate is valid and in use (it is signed by this site's
          root and was checked), only the bundle is still staged with its
          sequence unconsumed. Approving it again finds the certificate is
          already the issuing CA, changes nothing in the CA and completes
          the transaction.

        The other order (commit first, install after) could leave a bundle
        marked applied, its sequence spent, and the CA unchanged - with no
        way to approve it again.
        """
        try:
            checked, events, reloaded = self._ca().install_intermediate(vb.payloads, actor)
        except OutpostError as exc:  # a check under the CA's lock: nothing changed
            self._refused(staged, actor, f"ca-material not installed: {exc}", None)
        except OSError as exc:  # e.g. disk full part-way: the journal decides
            self._refused(
                staged,
                actor,
                f"ca-material install failed: {exc.strerror or exc}; the CA finishes an "
                "install it had started at its next operation; approve again",
                None,
            )
        for e in events:
            self._audit(
                actor,
                e.action,
                {"subject": e.subject, "serial": e.serial, "detail": e.detail, "bundle": staged.id},
            )
        return replace(plan, result={"intermediate": checked.summary(), "tls_reloaded": reloaded})

    def _ca(self) -> CAMaterialGate:
        if self.ca is None:
            raise InvalidInput(
                "this server has no certificate authority to import CA material into"
            )
        return self.ca

    def record_install(
        self, bundle_id: int, actor: str, phase: str, details: dict[str, Any]
    ) -> StagedBundle:
        """What the root-run installer (`outpost system update`) did with an approved update.

        The server never writes a slot; it records. `started` and `failed` are
        audit entries only; `installed` also moves the bundle to INSTALLED.
        """
        if phase not in INSTALL_PHASES:
            raise InvalidInput(f"phase must be one of {', '.join(INSTALL_PHASES)}, got {phase!r}")
        b = self.ledger.get(bundle_id)
        if b.kind != "system-update":
            what = b.kind or "not a verified bundle"
            raise Conflict(f"bundle {bundle_id} is {what}, not system-update")
        if b.status not in (BundleStatus.APPROVED, BundleStatus.INSTALLED):
            raise Conflict(f"bundle {bundle_id} is {b.status}, not approved for install")
        if phase == "installed":
            b = self.ledger.record_install(bundle_id, "system-update", {"installed": details})
        self._audit(actor, f"system.update.{phase}", {**_brief(b), **details})
        return b

    def _refused(
        self, staged: StagedBundle, actor: str, message: str, closed: BundleStatus | None
    ) -> NoReturn:
        self._audit(
            actor,
            "bundle.approve.refused",
            {**_brief(staged), "reason": message, "closed_as": closed.value if closed else None},
        )
        suffix = "" if closed is None else f" (bundle {staged.id} is now {closed})"
        raise ApprovalRefused(f"bundle {staged.id} not applied: {message}{suffix}", closed)

    def _plan(
        self, staged: StagedBundle, actor: str
    ) -> tuple[VerifiedBundle, ApplyPlan, Any, dict[str, Any]]:
        trust = self.trust()
        if trust is None:
            raise NoTrustStore(NO_TRUST_STORE)
        data = self.ledger.data(staged.id)
        now = self.clock()
        vb = verify(data, trust, self.appliance_id, now, self.ledger.last_seqs())
        kind = vb.kind
        base = ApplyPlan(staged.id, vb.signer_set, vb.seq, actor)
        signers = ", ".join(sorted(vb.signers))
        signed = f"bundle {staged.id} ({kind} seq {vb.seq}, signed by {signers})"
        if kind == "policy":
            text = pl.parse_policy(dict(vb.payloads))
            verdict = self.policy.check(text)  # PolicyError: refused, nothing applied
            cur = self.store.current_policy()
            plan = replace(
                base,
                policy_text=text,
                policy_comment=signed,
                result={"policy_sha256": hashlib.sha256(text.encode()).hexdigest()},
            )
            return vb, plan, verdict, {"policy_version": cur.id if cur else None}
        if kind == "enrolment-keys":
            keys = tuple(self._key_spec(e, now) for e in pl.parse_keys(dict(vb.payloads)))
            plan = replace(base, keys=keys, result={"keys": [k.prefix for k in keys]})
            return vb, plan, None, {"enrolment_keys": len(self.store.enrolment_keys())}
        if kind == "trust-store":
            pl.exactly(dict(vb.payloads), TRUST_STORE_PAYLOAD, kind)
            new = apply_update(trust, vb.payloads)
            cur_trust = self.ledger.trust()
            plan = replace(
                base, trust_document=new.dumps().decode(), result={"trust": _trust_summary(new)}
            )
            return (
                vb,
                plan,
                None,
                {
                    "trust_version": cur_trust.id if cur_trust else None,
                    "trust": _trust_summary(trust),
                },
            )
        if kind == "system-update":
            update = _system_update(vb.payloads)
            plan = replace(
                base,
                status=BundleStatus.APPROVED,
                result={
                    "approved_for_install": True,
                    "version": update.version,
                    "files": {
                        role: {"name": f.name, "size": f.size, "sha256": f.sha256}
                        for role, f in (
                            ("root", update.root),
                            ("kernel", update.kernel),
                            ("initrd", update.initrd),
                        )
                    },
                },
            )
            return vb, plan, None, {}
        if kind == "ca-material":
            checked = self._ca().check_intermediate(vb.payloads)  # changes nothing
            plan = replace(base, result={"intermediate": checked.summary()})
            return vb, plan, None, {"intermediate_serial": checked.replaces_serial}
        raise InvalidInput(f"kind {kind} is not accepted here")  # pragma: no cover - verify()

    def _key_spec(self, e: pl.KeyEntry, now: int) -> KeySpec:
        where = f"{pl.KEYS_PAYLOAD}: key {e.prefix}"
        tags = parse_tags(e.tags)
        user_id = None
        if e.user is not None:
            user_id = self.store.user_by_name(e.user).id  # NotFound names the user
        if user_id is None and not tags:
            raise pl.PayloadError(f"{where}: needs a user or at least one tag")
        if e.expires is not None and e.expires <= now:
            raise pl.PayloadError(f"{where}: expired {e.expires}, now {now}")
        return KeySpec(
            prefix=e.prefix,
            secret_hash=e.secret_sha256,
            user_id=user_id,
            reusable=e.reusable,
            ephemeral=e.ephemeral,
            tags=tags,
            expires=_utc(e.expires),
            description=e.description,
        )


INSTALL_PHASES = ("started", "installed", "failed")


def _system_update(payloads: Mapping[str, bytes]) -> Any:
    """The system-update.json payload, parsed by the on-device updater's own parser,
    so the server authorises exactly what `outpost system update` will write."""
    from outpost_appliance.sysupdate import UPDATE_PAYLOAD, parse_update  # noqa: PLC0415

    return parse_update(pl.exactly(dict(payloads), UPDATE_PAYLOAD, "system-update"))


def _brief(b: StagedBundle) -> dict[str, Any]:
    return {"id": b.id, "file": b.file_name, "kind": b.kind, "seq": b.seq, "sha256": b.sha256}


def _trust_summary(t: TrustStore) -> dict[str, Any]:
    return {
        "signers": sorted(f"{k.key_id}={','.join(sorted(k.kinds))}" for k in t.signers.values()),
        "thresholds": dict(t.thresholds),
        "retired": sorted(t.retired),
    }


def _after(a: Applied) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.policy is not None:
        out["policy_version"] = a.policy.id
    if a.keys:
        out["enrolment_keys"] = [k.prefix for k in a.keys]
    if a.trust is not None:
        out["trust_version"] = a.trust.id
    if a.bundle.kind == "ca-material" and isinstance(a.bundle.result, dict):
        out["intermediate"] = a.bundle.result.get("intermediate")
    return out


# system-update is approved for the root-run installer, never applied by the server
KINDS_APPLIED = INBOUND_KINDS - {"system-update"}
