"""customer groups: local tags on groups, joins over time

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
