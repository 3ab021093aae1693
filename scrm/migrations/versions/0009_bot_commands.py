"""bot commands: the passive reply to each rep message, kept for WeCom's retries

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa
from alembic import op


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bot_replies",
        sa.Column("id", Id, nullable=False),
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.Column("inbox_event_id", Id, nullable=True),
        sa.Column("userid", sa.String(length=64), nullable=False),
        sa.Column("msg_id", sa.String(length=32), nullable=False),
        sa.Column("command", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_event_id"], ["inbox_events.id"], name=op.f("fk_bot_replies_inbox_event_id_inbox_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_replies")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_bot_replies_dedupe_key")),
    )
    op.create_index(op.f("ix_bot_replies_inbox_event_id"), "bot_replies", ["inbox_event_id"], unique=False)
    op.create_index(op.f("ix_bot_replies_userid"), "bot_replies", ["userid"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_bot_replies_userid"), table_name="bot_replies")
    op.drop_index(op.f("ix_bot_replies_inbox_event_id"), table_name="bot_replies")
    op.drop_table("bot_replies")
