"""offline bundles: trust store history, sequences per signer set, staged bundles

Revision ID: 0003_bundles
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_bundles"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bundle_trust_stores",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "bundle_sequences",
        sa.Column("signer_set", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
    )
    op.create_table(
        "bundle_staged",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("medium_label", sa.String(64), nullable=False, server_default=""),
        sa.Column("medium_serial", sa.String(128), nullable=False, server_default=""),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False, server_default=""),
        sa.Column("seq", sa.Integer, nullable=True),
        sa.Column("signers", sa.Text, nullable=False, server_default=""),
        sa.Column("bundle_created", sa.Integer, nullable=True),
        sa.Column("bundle_expires", sa.Integer, nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("data", sa.LargeBinary, nullable=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("staged_by", sa.String(128), nullable=False),
        sa.Column("staged_at", sa.DateTime, nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decided_at", sa.DateTime, nullable=True),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("result", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("bundle_staged")
    op.drop_table("bundle_sequences")
    op.drop_table("bundle_trust_stores")
