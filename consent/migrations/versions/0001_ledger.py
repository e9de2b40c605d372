"""The ledger: entries, materialized consent state, checkpoints and the head row.

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
        "log_entries",
        sa.Column("index", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("device_key", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("nonce", sa.String(96), nullable=False),
        sa.Column("issued_at", sa.String(40), nullable=False),
        sa.Column("leaf", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("device_key", "nonce", name="uq_log_entries_nonce"),
    )
    op.create_index("ix_log_entries_device_key", "log_entries", ["device_key"])
    op.create_table(
        "consent_states",
        sa.Column("device_key", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(64), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("issued_at", sa.String(40), nullable=False),
        sa.Column("issued_epoch", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=True),
        sa.Column("expires_epoch", sa.Float(), nullable=True),
        sa.Column("policy_version", sa.String(32), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("size", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.create_table(
        "log_head",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
    )
    op.execute("INSERT INTO log_head (id, size, note) VALUES (1, 0, '')")


def downgrade() -> None:
    op.drop_table("log_head")
    op.drop_table("log_checkpoints")
    op.drop_table("consent_states")
    op.drop_index("ix_log_entries_device_key", "log_entries")
    op.drop_table("log_entries")
