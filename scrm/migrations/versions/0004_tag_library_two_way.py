"""tag library two-way: local tags, scrm-made groups and tags and their sync to WeCom

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


TABLES = ("tag_groups", "tags")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("is_local", sa.Boolean(), nullable=False, server_default=sa.false()))
            batch.add_column(
                sa.Column("sync_state", sa.String(length=32), nullable=False, server_default="synced")
            )
            batch.add_column(
                sa.Column("sync_error", sa.String(length=500), nullable=False, server_default="")
            )
            batch.add_column(sa.Column("wecom_created_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("wecom_created_at")
            batch.drop_column("sync_error")
            batch.drop_column("sync_state")
            batch.drop_column("is_local")
