"""friend tagging: manual tag removals that rules respect, large bulk taggings queued with their
progress, and friends found by tag

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A bulk's progress page counts its mark_tag rows by ref; the friend page reads welcomes by it.
    op.create_index(op.f("ix_outbox_commands_ref"), "outbox_commands", ["ref"], unique=False)
    op.create_table(
        "friendship_tag_removals",
        sa.Column("id", Id, nullable=False),
        sa.Column("friendship_id", Id, nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("removed_by", sa.String(length=64), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["friendship_id"],
            ["friendships.id"],
            name=op.f("fk_friendship_tag_removals_friendship_id_friendships"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_friendship_tag_removals")),
        sa.UniqueConstraint(
            "friendship_id", "tag_id", name=op.f("uq_friendship_tag_removals_friendship_id_tag_id")
        ),
    )
    op.create_index(
        op.f("ix_friendship_tag_removals_tag_id"), "friendship_tag_removals", ["tag_id"], unique=False
    )
    op.create_table(
        "tag_bulks",
        sa.Column("id", Id, nullable=False),
        sa.Column("bulk_id", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("add_tag_ids", sa.JSON(), nullable=False),
        sa.Column("remove_tag_ids", sa.JSON(), nullable=False),
        sa.Column("friendship_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("progressed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_bulks")),
        sa.UniqueConstraint("bulk_id", name=op.f("uq_tag_bulks_bulk_id")),
    )
    op.create_index(op.f("ix_tag_bulks_status"), "tag_bulks", ["status"], unique=False)
    op.create_index(
        "ix_friendship_tags_tag_id_friendship_id",
        "friendship_tags",
        ["tag_id", "friendship_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_commands_ref"), table_name="outbox_commands")
    op.drop_index(op.f("ix_tag_bulks_status"), table_name="tag_bulks")
    op.drop_table("tag_bulks")
    op.drop_index("ix_friendship_tags_tag_id_friendship_id", table_name="friendship_tags")
    op.drop_index(op.f("ix_friendship_tag_removals_tag_id"), table_name="friendship_tag_removals")
    op.drop_table("friendship_tag_removals")
