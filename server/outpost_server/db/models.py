"""SQLAlchemy 2.0 tables. Only `state/` and `db/` import this module.

Schema changes go through Alembic revisions in `db/migrations/versions/`;
`db/engine.py` upgrades to head at start-up.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ServerKey(Base):
    """Long-lived server secrets (Noise key, legacy key, DERP key)."""

    __tablename__ = "server_keys"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary(32))
    created: Mapped[datetime] = mapped_column(DateTime)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    created: Mapped[datetime] = mapped_column(DateTime)


class NodeRow(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("given_name", name="uq_nodes_given_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_key: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    node_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    disco_key: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    hostname: Mapped[str] = mapped_column(String(255))
    given_name: Mapped[str] = mapped_column(String(63))
    ipv4: Mapped[str] = mapped_column(String(15), unique=True)
    ipv6: Mapped[str] = mapped_column(String(39), unique=True)
    tags: Mapped[str] = mapped_column(Text, default="")  # comma-separated, sorted
    endpoints: Mapped[str] = mapped_column(Text, default="")  # JSON list
    home_derp: Mapped[int] = mapped_column(Integer, default=0)
    hostinfo: Mapped[str] = mapped_column(Text, default="{}")  # JSON as the client sent it
    cap_version: Mapped[int] = mapped_column(Integer, default=0)
    key_expiry: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ephemeral: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    enrolment_key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    approved_routes: Mapped[str] = mapped_column(Text, default="")  # comma-separated prefixes


class EnrolmentKeyRow(Base):
    """Pre-authorised enrolment keys. Only a SHA-256 of the secret is stored."""

    __tablename__ = "enrolment_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    reusable: Mapped[bool] = mapped_column(Boolean, default=False)
    ephemeral: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[str] = mapped_column(Text, default="")
    expires: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[datetime] = mapped_column(DateTime)
    description: Mapped[str] = mapped_column(String(255), default="")


class PolicyRow(Base):
    """Every accepted policy, newest last; the current one is the highest id."""

    __tablename__ = "policies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(String(255), default="")
    created: Mapped[datetime] = mapped_column(DateTime)


# --------------------------------------------------------------- offline bundles
class TrustStoreRow(Base):
    """Every trust store the appliance has held, newest last; the current one is the highest id."""

    __tablename__ = "bundle_trust_stores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[str] = mapped_column(Text)  # trust-store.json as TrustStore.dumps() writes it
    source: Mapped[str] = mapped_column(String(64))  # "console-init" or "bundle <staged id>"
    actor: Mapped[str] = mapped_column(String(128))
    created: Mapped[datetime] = mapped_column(DateTime)


class BundleSequenceRow(Base):
    """Highest sequence accepted per signer set (inbound), or issued (outbound exports)."""

    __tablename__ = "bundle_sequences"
    signer_set: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    updated: Mapped[datetime] = mapped_column(DateTime)


class StagedBundleRow(Base):
    """A bundle seen by intake: staged for a decision, applied, rejected or expired."""

    __tablename__ = "bundle_staged"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    medium_label: Mapped[str] = mapped_column(String(64), default="")
    medium_serial: Mapped[str] = mapped_column(String(128), default="")
    file_name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32), default="")  # "" when the manifest was unreadable
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    signers: Mapped[str] = mapped_column(Text, default="")  # comma-separated key ids
    bundle_created: Mapped[int | None] = mapped_column(Integer, nullable=True)  # unix seconds
    bundle_expires: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # only while useful
    status: Mapped[str] = mapped_column(String(16), index=True)
    staged_by: Mapped[str] = mapped_column(String(128))
    staged_at: Mapped[datetime] = mapped_column(DateTime)
    decided_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[str] = mapped_column(Text, default="")  # JSON summary of what applying did
