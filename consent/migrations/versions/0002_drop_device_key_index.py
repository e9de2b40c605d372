"""Drop log_entries' index on device_key alone: the (device_key, nonce) unique index serves.

Every lookup by device key (the replay check of each batch) is answered by the unique
constraint's index, whose first column is device_key; the single-column index was one
more B-tree to update on every append.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_log_entries_device_key", "log_entries")


def downgrade() -> None:
    op.create_index("ix_log_entries_device_key", "log_entries", ["device_key"])
