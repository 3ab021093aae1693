"""event-time ordering, departments, API keys bound to staff, outbox claims and refs, WeCom problems

Friendships remember the time of the event that set their status and of the WeCom read that set
their remark; a friend may be known from its event alone (awaiting_detail_at). Staff carry their
WeCom departments; API keys the staff member they act as. Outbox rows are claimed with a token,
remember an attempt of unknown outcome, and say what they are about in ``ref`` instead of a
channel foreign key (the outbox knows no domain). Channel names are unique; channels can be
disabled. WeCom's refusals of our configuration are kept for the admin.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 20:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "departments",
        sa.Column("id", Id, nullable=False),
        sa.Column("department_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.BigInteger(), nullable=False),
        sa.Column("order", sa.BigInteger(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_departments")),
        sa.UniqueConstraint("department_id", name=op.f("uq_departments_department_id")),
    )
    op.create_table(
        "wecom_problems",
        sa.Column("errcode", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("errmsg", sa.Text(), nullable=False),
        sa.Column("path", sa.String(length=128), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("errcode", name=op.f("pk_wecom_problems")),
    )
    with op.batch_alter_table("staff") as batch:
        batch.add_column(sa.Column("department_ids", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("userid", sa.String(length=64), nullable=True))

    # Channel names become unique: older duplicates get their id appended.
    op.execute(
        "UPDATE channels SET name = name || ' #' || CAST(id AS VARCHAR(20)) WHERE id NOT IN "
        "(SELECT MIN(id) FROM channels GROUP BY name)"
    )
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("is_disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint(op.f("uq_channels_name"), ["name"])
    op.execute("UPDATE channels SET updated_at = created_at")
    with op.batch_alter_table("channels") as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)

    with op.batch_alter_table("external_contacts") as batch:
        batch.add_column(sa.Column("detail_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE external_contacts SET detail_at = updated_at")

    with op.batch_alter_table("friendships") as batch:
        batch.add_column(sa.Column("status_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("status_event_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("remark_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("awaiting_detail_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(op.f("ix_friendships_awaiting_detail_at"), ["awaiting_detail_at"])
    op.execute("UPDATE friendships SET status_at = COALESCE(removed_at, added_at), remark_at = updated_at")
    with op.batch_alter_table("friendships") as batch:
        batch.alter_column("status_at", existing_type=sa.DateTime(timezone=True), nullable=False)

    with op.batch_alter_table("inbox_events") as batch:
        batch.add_column(sa.Column("userid", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("external_userid", sa.String(length=64), nullable=False, server_default=""))

    with op.batch_alter_table("outbox_commands") as batch:
        batch.add_column(sa.Column("ref", sa.String(length=128), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("has_unknown_attempt", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
    op.execute(
        "UPDATE outbox_commands SET ref = 'channel:' || CAST(channel_id AS VARCHAR(20)) "
        "WHERE channel_id IS NOT NULL"
    )
    with op.batch_alter_table("outbox_commands") as batch:
        batch.drop_constraint("fk_outbox_commands_channel_id_channels", type_="foreignkey")
        batch.drop_column("channel_id")


def downgrade() -> None:
    with op.batch_alter_table("outbox_commands") as batch:
        batch.add_column(sa.Column("channel_id", Id, nullable=True))
        batch.create_foreign_key(
            "fk_outbox_commands_channel_id_channels", "channels", ["channel_id"], ["id"]
        )
    op.execute(
        "UPDATE outbox_commands SET channel_id = CAST(SUBSTR(ref, 9) AS INTEGER) WHERE ref LIKE 'channel:%'"
    )
    op.execute("UPDATE outbox_commands SET status = 'dead' WHERE status = 'unknown'")
    with op.batch_alter_table("outbox_commands") as batch:
        batch.drop_column("claim_token")
        batch.drop_column("has_unknown_attempt")
        batch.drop_column("ref")
    with op.batch_alter_table("inbox_events") as batch:
        batch.drop_column("external_userid")
        batch.drop_column("userid")
    with op.batch_alter_table("friendships") as batch:
        batch.drop_index(op.f("ix_friendships_awaiting_detail_at"))
        batch.drop_column("awaiting_detail_at")
        batch.drop_column("remark_at")
        batch.drop_column("status_event_id")
        batch.drop_column("status_at")
    with op.batch_alter_table("external_contacts") as batch:
        batch.drop_column("detail_at")
    with op.batch_alter_table("channels") as batch:
        batch.drop_constraint(op.f("uq_channels_name"), type_="unique")
        batch.drop_column("updated_at")
        batch.drop_column("is_disabled")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("userid")
    with op.batch_alter_table("staff") as batch:
        batch.drop_column("department_ids")
    op.drop_table("wecom_problems")
    op.drop_table("departments")
