"""The writer for offline-bundle state: trust store, sequences, staged bundles, atomic apply.

Theory of operation
-------------------
A sibling of `Store` (same engine, same event-loop thread, same rules): it
opens the transactions, hands out frozen values, and never lets an ORM row
escape. Three tables belong to it (migration 0003_bundles):

* `bundle_trust_stores`: every trust store ever installed, newest = current.
  The first one is installed by `init_trust` and only while the table is
  empty; later ones only by applying a verified `trust-store` bundle.
* `bundle_sequences`: the highest sequence accepted per signer set, so replay
  protection survives restarts. Outbound exports keep their own counters
  under `out:<kind>`.
* `bundle_staged`: every bundle intake saw, with its bytes while it waits for
  an administrator, and the decision (who, when, why) once made.

`apply()` is the one place a bundle changes the appliance: the payload's rows
(enrolment keys, a policy version, a trust store), the sequence bump and the
status change are written in ONE transaction. SQLite's journal makes that all
or nothing across kill -9 and power loss; `before_commit` lets a test kill the
process at the worst moment to show it. In-memory indices of the `Store` are
updated only after the commit succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db.models import (
    BundleSequenceRow,
    EnrolmentKeyRow,
    PolicyRow,
    StagedBundleRow,
    TrustStoreRow,
)
from ..errors import Conflict, InvalidInput, NotFound
from .model import EnrolmentKey, PolicyRecord, UserId
from .store import Store, _key, _policy, utcnow

StagedBundleId = NewType("StagedBundleId", int)

OUTBOUND_SEQUENCE_PREFIX = "out:"  # outbound counters never collide with an inbound signer set
MAX_REASON_CHARS = 1000  # an admin's free text or a verifier message; both are short


class BundleStatus(StrEnum):
    STAGED = "staged"
    APPLIED = "applied"
    REJECTED = "rejected"
    EXPIRED = "expired"
    # system-update only: the server authorises, a root tool writes the slot
    # (docs/image.md "Updates"). APPROVED = verified, sequence consumed, nothing
    # written yet; INSTALLED = the root tool reported the slot written.
    APPROVED = "approved"
    INSTALLED = "installed"


@dataclass(frozen=True, slots=True)
class TrustRecord:
    id: int
    document: str
    source: str
    actor: str
    created: datetime


@dataclass(frozen=True, slots=True)
class StagedBundle:
    id: StagedBundleId
    medium_label: str
    medium_serial: str
    file_name: str
    kind: str
    seq: int | None
    signers: tuple[str, ...]
    bundle_created: int | None
    bundle_expires: int | None
    size: int
    sha256: str
    status: BundleStatus
    staged_by: str
    staged_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewBundle:
    """What intake learnt about one file, for `record()`."""

    medium_label: str
    medium_serial: str
    file_name: str
    size: int
    sha256: str
    status: BundleStatus
    reason: str = ""
    kind: str = ""
    seq: int | None = None
    signers: tuple[str, ...] = ()
    bundle_created: int | None = None
    bundle_expires: int | None = None
    data: bytes | None = None  # kept only for staged bundles


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One enrolment key a bundle creates; the secret never reaches the appliance, only its hash."""

    prefix: str
    secret_hash: bytes
    user_id: UserId | None
    reusable: bool
    ephemeral: bool
    tags: tuple[str, ...]
    expires: datetime | None
    description: str


@dataclass(frozen=True, slots=True)
class ApplyPlan:
    """Everything one approved bundle changes, already validated; `apply` only writes it."""

    bundle_id: StagedBundleId
    signer_set: str
    seq: int
    actor: str
    keys: tuple[KeySpec, ...] = ()
    policy_text: str | None = None
    policy_comment: str = ""
    trust_document: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    # APPLIED for everything the server itself applies; APPROVED for a
    # system-update, which the server only authorises (it never writes a slot).
    status: BundleStatus = BundleStatus.APPLIED


@dataclass(frozen=True, slots=True)
class Applied:
    bundle: StagedBundle
    keys: tuple[EnrolmentKey, ...]
    policy: PolicyRecord | None
    trust: TrustRecord | None


class BundleLedger:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._engine = store.engine

    # ------------------------------------------------------------- trust store
    def trust(self) -> TrustRecord | None:
        with Session(self._engine) as s:
            q = select(TrustStoreRow).order_by(TrustStoreRow.id.desc()).limit(1)
            row = s.scalars(q).first()
            return _trust(row) if row is not None else None

    def trust_history(self) -> list[TrustRecord]:
        with Session(self._engine) as s:
            return [_trust(r) for r in s.scalars(select(TrustStoreRow).order_by(TrustStoreRow.id))]

    def init_trust(self, document: str, actor: str) -> TrustRecord:
        """Install the first trust store; refused once any store exists (rotate with a bundle)."""
        with Session(self._engine) as s, s.begin():
            if s.scalar(select(func.count()).select_from(TrustStoreRow)):
                raise Conflict(
                    "a trust store is already installed; change it with a signed trust-store "
                    "bundle (or re-provision the appliance)"
                )
            row = TrustStoreRow(
                document=document, source="console-init", actor=actor[:128], created=utcnow()
            )
            s.add(row)
            s.flush()
            return _trust(row)

    # --------------------------------------------------------------- sequences
    def last_seqs(self) -> dict[str, int]:
        """Highest accepted sequence per inbound signer set."""
        with Session(self._engine) as s:
            return {
                r.signer_set: r.seq
                for r in s.scalars(select(BundleSequenceRow))
                if not r.signer_set.startswith(OUTBOUND_SEQUENCE_PREFIX)
            }

    def next_outbound_seq(self, kind: str) -> int:
        """Issue the next sequence for an outbound bundle kind (monotonic per appliance)."""
        name = OUTBOUND_SEQUENCE_PREFIX + kind
        with Session(self._engine) as s, s.begin():
            row = s.get(BundleSequenceRow, name)
            if row is None:
                row = BundleSequenceRow(signer_set=name, seq=0, updated=utcnow())
                s.add(row)
            row.seq += 1
            row.updated = utcnow()
            return row.seq

    # ----------------------------------------------------------- staged bundles
    def record(self, new: NewBundle, actor: str) -> StagedBundle:
        with Session(self._engine) as s, s.begin():
            row = StagedBundleRow(
                medium_label=new.medium_label[:64],
                medium_serial=new.medium_serial[:128],
                file_name=new.file_name[:255],
                kind=new.kind,
                seq=new.seq,
                signers=",".join(new.signers),
                bundle_created=new.bundle_created,
                bundle_expires=new.bundle_expires,
                size=new.size,
                sha256=new.sha256,
                data=new.data,
                status=new.status.value,
                staged_by=actor[:128],
                staged_at=utcnow(),
                reason=new.reason[:MAX_REASON_CHARS],
                result="",
            )
            if new.status is not BundleStatus.STAGED:
                row.decided_by, row.decided_at = actor[:128], row.staged_at
            s.add(row)
            s.flush()
            return _staged(row)

    def get(self, bundle_id: int) -> StagedBundle:
        with Session(self._engine) as s:
            return _staged(self._row(s, bundle_id))

    def data(self, bundle_id: int) -> bytes:
        with Session(self._engine) as s:
            row = self._row(s, bundle_id)
            if row.data is None:
                raise NotFound(f"bundle {bundle_id}: its bytes were not kept ({row.status})")
            return row.data

    def bundles(self, status: BundleStatus | None = None) -> list[StagedBundle]:
        with Session(self._engine) as s:
            q = select(StagedBundleRow).order_by(StagedBundleRow.id)
            if status is not None:
                q = q.where(StagedBundleRow.status == status.value)
            return [_staged(r) for r in s.scalars(q)]

    def staged_with_digest(self, sha256: str) -> StagedBundle | None:
        with Session(self._engine) as s:
            row = s.scalars(
                select(StagedBundleRow).where(
                    StagedBundleRow.sha256 == sha256,
                    StagedBundleRow.status == BundleStatus.STAGED.value,
                )
            ).first()
            return _staged(row) if row is not None else None

    def decide(self, bundle_id: int, status: BundleStatus, actor: str, reason: str) -> StagedBundle:
        """Close a staged bundle without applying it (rejected by an admin, expired, replayed)."""
        if status is BundleStatus.APPLIED or status is BundleStatus.STAGED:
            raise InvalidInput("decide() closes a bundle; apply() is the only way to apply one")
        with Session(self._engine) as s, s.begin():
            row = self._row(s, bundle_id)
            _require_staged(row)
            row.status = status.value
            row.decided_by = actor[:128]
            row.decided_at = utcnow()
            row.reason = reason[:MAX_REASON_CHARS]
            return _staged(row)

    @staticmethod
    def _row(s: Session, bundle_id: int) -> StagedBundleRow:
        row = s.get(StagedBundleRow, bundle_id)
        if row is None:
            raise NotFound(f"no bundle with id {bundle_id}")
        return row

    # -------------------------------------------------------------------- apply
    def apply(self, plan: ApplyPlan, before_commit: Callable[[], None] | None = None) -> Applied:
        """Write everything `plan` changes, the sequence bump and the status in one transaction."""
        now = utcnow()
        with Session(self._engine) as s, s.begin():
            row = self._row(s, plan.bundle_id)
            _require_staged(row)
            seq_row = s.get(BundleSequenceRow, plan.signer_set)
            if seq_row is not None and plan.seq <= seq_row.seq:
                raise Conflict(
                    f"replayed: sequence {plan.seq} for {plan.signer_set}, "
                    f"already accepted {seq_row.seq}"
                )
            key_rows = self._add_keys(s, plan.keys, now)
            policy_row = None
            if plan.policy_text is not None:
                policy_row = PolicyRow(
                    text=plan.policy_text,
                    author=plan.actor[:128],
                    comment=plan.policy_comment[:255],
                    created=now,
                )
                s.add(policy_row)
            trust_row = None
            if plan.trust_document is not None:
                trust_row = TrustStoreRow(
                    document=plan.trust_document,
                    source=f"bundle {plan.bundle_id}",
                    actor=plan.actor[:128],
                    created=now,
                )
                s.add(trust_row)
            if seq_row is None:
                s.add(BundleSequenceRow(signer_set=plan.signer_set, seq=plan.seq, updated=now))
            else:
                seq_row.seq, seq_row.updated = plan.seq, now
            if plan.status not in (BundleStatus.APPLIED, BundleStatus.APPROVED):
                raise InvalidInput(f"apply() cannot leave a bundle {plan.status}")
            row.status = plan.status.value
            row.decided_by, row.decided_at = plan.actor[:128], now
            row.result = json.dumps(plan.result, sort_keys=True)
            s.flush()
            keys = tuple(_key(r) for r in key_rows)
            hashes = [r.secret_hash for r in key_rows]
            policy = _policy(policy_row) if policy_row is not None else None
            trust = _trust(trust_row) if trust_row is not None else None
            bundle = _staged(row)
            if before_commit is not None:
                before_commit()  # tests: kill -9 here, with every row written but not committed
        for key, secret_hash in zip(keys, hashes, strict=True):
            self._store.adopt_enrolment_key(key, secret_hash)
        return Applied(bundle, keys, policy, trust)

    def record_install(
        self, bundle_id: int, kind: str, result: dict[str, Any]
    ) -> StagedBundle:
        """Mark an approved `kind` bundle installed (the root tool wrote it); merge `result`.

        Re-running an install (after a power cut, say) reports again: an
        INSTALLED bundle may be reported installed once more.
        """
        with Session(self._engine) as s, s.begin():
            row = self._row(s, bundle_id)
            if row.kind != kind:
                what = row.kind or "not a verified bundle"
                raise Conflict(f"bundle {bundle_id} is {what}, not {kind}")
            if row.status not in (BundleStatus.APPROVED.value, BundleStatus.INSTALLED.value):
                raise Conflict(f"bundle {bundle_id} is {row.status}, not approved for install")
            merged = json.loads(row.result) if row.result else {}
            merged.update(result)
            row.status = BundleStatus.INSTALLED.value
            row.result = json.dumps(merged, sort_keys=True)
            return _staged(row)

    def _add_keys(
        self, s: Session, specs: Sequence[KeySpec], now: datetime
    ) -> list[EnrolmentKeyRow]:
        if not specs:
            return []
        prefixes = [k.prefix for k in specs]
        taken = set(
            s.scalars(select(EnrolmentKeyRow.prefix).where(EnrolmentKeyRow.prefix.in_(prefixes)))
        )
        if taken:
            raise Conflict(f"enrolment key prefix already exists: {', '.join(sorted(taken))}")
        rows = []
        for k in specs:
            row = EnrolmentKeyRow(
                prefix=k.prefix,
                secret_hash=k.secret_hash,
                user_id=k.user_id,
                reusable=k.reusable,
                ephemeral=k.ephemeral,
                tags=",".join(k.tags),
                expires=k.expires,
                uses=0,
                revoked=False,
                created=now,
                description=k.description[:255],
            )
            s.add(row)
            rows.append(row)
        s.flush()
        return rows


def _require_staged(row: StagedBundleRow) -> None:
    if row.status != BundleStatus.STAGED.value:
        raise Conflict(f"bundle {row.id} is {row.status}, not staged")


def _trust(row: TrustStoreRow) -> TrustRecord:
    return TrustRecord(row.id, row.document, row.source, row.actor, row.created)


def _staged(row: StagedBundleRow) -> StagedBundle:
    return StagedBundle(
        id=StagedBundleId(row.id),
        medium_label=row.medium_label,
        medium_serial=row.medium_serial,
        file_name=row.file_name,
        kind=row.kind,
        seq=row.seq,
        signers=tuple(k for k in row.signers.split(",") if k),
        bundle_created=row.bundle_created,
        bundle_expires=row.bundle_expires,
        size=row.size,
        sha256=row.sha256,
        status=BundleStatus(row.status),
        staged_by=row.staged_by,
        staged_at=row.staged_at,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        reason=row.reason,
        result=json.loads(row.result) if row.result else {},
    )
