"""tag library two-way: local tags, scrm-made groups and tags and their sync to WeCom

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
