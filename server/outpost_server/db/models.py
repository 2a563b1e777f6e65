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
