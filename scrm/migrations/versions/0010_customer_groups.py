"""customer groups: local tags on groups, joins over time

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 00:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("customer_groups") as batch:
        batch.add_column(sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("customer_group_members") as batch:
        batch.add_column(sa.Column("name", sa.String(length=128), nullable=False, server_default=""))
    op.create_table(
        "customer_group_joins",
        sa.Column("id", Id, nullable=False),
        sa.Column("customer_group_id", Id, nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("member_type", sa.String(length=32), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("has_join_time", sa.Boolean(), nullable=False),
        sa.Column("join_scene", sa.Integer(), nullable=True),
        sa.Column("event_join_scene", sa.Integer(), nullable=True),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("has_leave_event", sa.Boolean(), nullable=False),
        sa.Column("quit_scene", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_group_id"],
            ["customer_groups.id"],
            name=op.f("fk_customer_group_joins_customer_group_id_customer_groups"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_group_joins")),
    )
    op.create_index(
        "ix_customer_group_joins_group_member", "customer_group_joins", ["customer_group_id", "member_id"]
    )
    op.create_index(
        "ix_customer_group_joins_group_joined_at", "customer_group_joins", ["customer_group_id", "joined_at"]
    )
    op.create_table(
        "customer_group_tags",
        sa.Column("id", Id, nullable=False),
        sa.Column("customer_group_id", Id, nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_group_id"],
            ["customer_groups.id"],
            name=op.f("fk_customer_group_tags_customer_group_id_customer_groups"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_group_tags")),
        sa.UniqueConstraint(
            "customer_group_id", "tag_id", name=op.f("uq_customer_group_tags_customer_group_id_tag_id")
        ),
    )
    op.create_index(op.f("ix_customer_group_tags_tag_id"), "customer_group_tags", ["tag_id"])
    # Every membership known so far becomes its first join (a member row held the latest one).
    op.execute(
        "INSERT INTO customer_group_joins (customer_group_id, member_id, member_type, joined_at, "
        "has_join_time, join_scene, event_join_scene, left_at, has_leave_event, quit_scene) "
        "SELECT customer_group_id, member_id, member_type, joined_at, "
        "true, join_scene, NULL, left_at, quit_scene IS NOT NULL, quit_scene "
        "FROM customer_group_members WHERE joined_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_customer_group_tags_tag_id"), table_name="customer_group_tags")
    op.drop_table("customer_group_tags")
    op.drop_index("ix_customer_group_joins_group_joined_at", table_name="customer_group_joins")
    op.drop_index("ix_customer_group_joins_group_member", table_name="customer_group_joins")
    op.drop_table("customer_group_joins")
    with op.batch_alter_table("customer_group_members") as batch:
        batch.drop_column("name")
    with op.batch_alter_table("customer_groups") as batch:
        batch.drop_column("dismissed_at")
