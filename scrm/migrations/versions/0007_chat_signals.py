"""chat signals per friendship: last customer and rep messages, waiting since, response times

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401


revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
