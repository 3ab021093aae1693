"""auto-tagging rules, their hits, and manual removals that beat them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "tag_rules",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("channel_ids", sa.JSON(), nullable=False),
        sa.Column("window_start", sa.String(length=5), nullable=True),
        sa.Column("window_end", sa.String(length=5), nullable=True),
        sa.Column("weekdays", sa.JSON(), nullable=False),
        sa.Column("chat_ids", sa.JSON(), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("match_mode", sa.String(length=32), nullable=False),
        sa.Column("lead_grades", sa.JSON(), nullable=False),
        sa.Column("lead_statuses", sa.JSON(), nullable=False),
        sa.Column("tag_ids", sa.JSON(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_rules")),
    )
    op.create_index(op.f("ix_tag_rules_trigger"), "tag_rules", ["trigger"], unique=False)
    op.create_table(
        "tag_rule_hits",
        sa.Column("id", Id, nullable=False),
        sa.Column("rule_id", Id, nullable=False),
        sa.Column("friendship_id", Id, nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("cause", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["friendship_id"], ["friendships.id"], name=op.f("fk_tag_rule_hits_friendship_id_friendships")
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["tag_rules.id"], name=op.f("fk_tag_rule_hits_rule_id_tag_rules"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tag_rule_hits")),
        sa.UniqueConstraint(
            "rule_id", "friendship_id", "tag_id", name=op.f("uq_tag_rule_hits_rule_id_friendship_id_tag_id")
        ),
    )
    op.create_index(
        "ix_tag_rule_hits_friendship_id_tag_id", "tag_rule_hits", ["friendship_id", "tag_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_tag_rule_hits_friendship_id_tag_id", table_name="tag_rule_hits")
    op.drop_table("tag_rule_hits")
    op.drop_index(op.f("ix_tag_rules_trigger"), table_name="tag_rules")
    op.drop_table("tag_rules")
