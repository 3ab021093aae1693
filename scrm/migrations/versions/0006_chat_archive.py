"""chat archive: messages stored once by msgid, per-friendship chat signals

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa
from alembic import op


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chat_messages",
        sa.Column("id", Id, nullable=False),
        sa.Column("msgid", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("sender", sa.String(length=64), nullable=False),
        sa.Column("tolist", sa.JSON(), nullable=False),
        sa.Column("roomid", sa.String(length=64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("msgtype", sa.String(length=32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("external_userid", sa.String(length=64), nullable=True),
        sa.Column("userid", sa.String(length=64), nullable=True),
        sa.Column("direction", sa.String(length=32), nullable=False),
        sa.Column("friendship_id", Id, nullable=True),
        sa.ForeignKeyConstraint(
            ["friendship_id"], ["friendships.id"], name=op.f("fk_chat_messages_friendship_id_friendships")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
        sa.UniqueConstraint("msgid", name=op.f("uq_chat_messages_msgid")),
    )
    op.create_index(
        "ix_chat_messages_friendship_id_sent_at", "chat_messages", ["friendship_id", "sent_at"], unique=False
    )
    op.create_index("ix_chat_messages_userid_sent_at", "chat_messages", ["userid", "sent_at"], unique=False)
    op.create_table(
        "chat_cursors",
        sa.Column("id", Id, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_cursors")),
        sa.UniqueConstraint("source", name=op.f("uq_chat_cursors_source")),
    )


def downgrade() -> None:
    op.drop_table("chat_cursors")
    op.drop_index("ix_chat_messages_userid_sent_at", table_name="chat_messages")
    op.drop_index("ix_chat_messages_friendship_id_sent_at", table_name="chat_messages")
    op.drop_table("chat_messages")
