"""initial schema: server keys, users, nodes, enrolment keys

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_keys",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("secret", sa.LargeBinary(32), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("machine_key", sa.LargeBinary(32), nullable=False, index=True),
        sa.Column("node_key", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("disco_key", sa.LargeBinary(32), nullable=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("given_name", sa.String(63), nullable=False),
        sa.Column("ipv4", sa.String(15), nullable=False, unique=True),
        sa.Column("ipv6", sa.String(39), nullable=False, unique=True),
        sa.Column("tags", sa.Text, nullable=False, server_default=""),
        sa.Column("endpoints", sa.Text, nullable=False, server_default=""),
        sa.Column("home_derp", sa.Integer, nullable=False, server_default="0"),
        sa.Column("hostinfo", sa.Text, nullable=False, server_default="{}"),
        sa.Column("cap_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("key_expiry", sa.DateTime, nullable=True),
        sa.Column("ephemeral", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=True),
        sa.Column("enrolment_key_id", sa.Integer, nullable=True),
        sa.UniqueConstraint("given_name", name="uq_nodes_given_name"),
    )
    op.create_table(
        "enrolment_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prefix", sa.String(32), nullable=False, unique=True),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
        sa.Column("reusable", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("ephemeral", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("tags", sa.Text, nullable=False, server_default=""),
        sa.Column("expires", sa.DateTime, nullable=True),
        sa.Column("uses", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("description", sa.String(255), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("enrolment_keys")
    op.drop_table("nodes")
    op.drop_table("users")
    op.drop_table("server_keys")
