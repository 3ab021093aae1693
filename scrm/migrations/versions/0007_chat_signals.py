"""chat signals per friendship: last customer and rep messages, waiting since, response times

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chat_signals",
        sa.Column("friendship_id", Id, nullable=False),
        sa.Column("last_customer_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_rep_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_wait_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_response_s", sa.Integer(), nullable=True),
        sa.Column("response_count", sa.Integer(), nullable=False),
        sa.Column("response_total_s", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["friendship_id"], ["friendships.id"], name=op.f("fk_chat_signals_friendship_id_friendships")
        ),
        sa.PrimaryKeyConstraint("friendship_id", name=op.f("pk_chat_signals")),
    )
    op.create_index(op.f("ix_chat_signals_last_message_at"), "chat_signals", ["last_message_at"])
    op.create_index(op.f("ix_chat_signals_waiting_since"), "chat_signals", ["waiting_since"])


def downgrade() -> None:
    op.drop_index(op.f("ix_chat_signals_waiting_since"), table_name="chat_signals")
    op.drop_index(op.f("ix_chat_signals_last_message_at"), table_name="chat_signals")
    op.drop_table("chat_signals")
