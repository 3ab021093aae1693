"""chat archive: messages stored once by msgid, per-friendship chat signals

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
