"""leads and customers: capture, dedupe, pool, assignment, follow-ups, audit

Leads gain what capture, dedupe and the pool need (email, company and its matching key, UTM,
external ref, grade and score, duplicate/merge pointers, follow-up and recycle times); customers
and contacts what conversion, dedupe and the pool need (assignment, follow-up and recycle
times). New: flagged duplicate pairs, the merge audit, ownership history, assignment and pool
rules, imports, follow-ups, the audit log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 22:55:56.983009
"""

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "assignment_rules",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("last_position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignment_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_assignment_rules_name")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", Id, nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"], unique=False)
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_table(
        "lead_imports",
        sa.Column("id", Id, nullable=False),
        sa.Column("filename", sa.String(length=256), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("owner_userid", sa.String(length=64), nullable=True),
        sa.Column("on_duplicate", sa.String(length=8), nullable=False),
        sa.Column("column_map", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("processed_rows", sa.Integer(), nullable=False),
        sa.Column("created_count", sa.Integer(), nullable=False),
        sa.Column("merged_count", sa.Integer(), nullable=False),
        sa.Column("flagged_count", sa.Integer(), nullable=False),
        sa.Column("skipped_count", sa.Integer(), nullable=False),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("failure", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_imports")),
    )
    op.create_table(
        "pool_rules",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("recycle_after_days", sa.Integer(), nullable=True),
        sa.Column("daily_claim_cap", sa.Integer(), nullable=True),
        sa.Column("holding_cap", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_rules")),
        sa.UniqueConstraint("name", name=op.f("uq_pool_rules_name")),
        sa.UniqueConstraint("source", name=op.f("uq_pool_rules_source")),
    )
    op.create_table(
        "assignment_members",
        sa.Column("id", Id, nullable=False),
        sa.Column("rule_id", Id, nullable=False),
        sa.Column("userid", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("daily_capacity", sa.Integer(), nullable=True),
        sa.Column("monthly_capacity", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["assignment_rules.id"],
            name=op.f("fk_assignment_members_rule_id_assignment_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignment_members")),
        sa.UniqueConstraint("rule_id", "userid", name=op.f("uq_assignment_members_rule_id_userid")),
    )
    op.create_index(op.f("ix_assignment_members_rule_id"), "assignment_members", ["rule_id"], unique=False)
    op.create_table(
        "follow_ups",
        sa.Column("id", Id, nullable=False),
        sa.Column("lead_id", Id, nullable=True),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("external_userid", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("next_follow_up_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("author_userid", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_follow_ups_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_follow_ups_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_follow_ups")),
    )
    op.create_index("ix_follow_ups_customer_id_at", "follow_ups", ["customer_id", "at"], unique=False)
    op.create_index("ix_follow_ups_lead_id_at", "follow_ups", ["lead_id", "at"], unique=False)
    op.create_table(
        "lead_duplicates",
        sa.Column("id", Id, nullable=False),
        sa.Column("lead_id", Id, nullable=False),
        sa.Column("other_lead_id", Id, nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_lead_duplicates_lead_id_leads")),
        sa.ForeignKeyConstraint(
            ["other_lead_id"], ["leads.id"], name=op.f("fk_lead_duplicates_other_lead_id_leads")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_duplicates")),
        sa.UniqueConstraint(
            "lead_id", "other_lead_id", name=op.f("uq_lead_duplicates_lead_id_other_lead_id")
        ),
    )
    op.create_index(op.f("ix_lead_duplicates_lead_id"), "lead_duplicates", ["lead_id"], unique=False)
    op.create_index(
        op.f("ix_lead_duplicates_other_lead_id"), "lead_duplicates", ["other_lead_id"], unique=False
    )
    op.create_table(
        "lead_merges",
        sa.Column("id", Id, nullable=False),
        sa.Column("survivor_id", Id, nullable=False),
        sa.Column("merged_id", Id, nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("merged_by", sa.String(length=64), nullable=True),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["merged_id"], ["leads.id"], name=op.f("fk_lead_merges_merged_id_leads")),
        sa.ForeignKeyConstraint(["survivor_id"], ["leads.id"], name=op.f("fk_lead_merges_survivor_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_merges")),
    )
    op.create_index(op.f("ix_lead_merges_merged_id"), "lead_merges", ["merged_id"], unique=False)
    op.create_index(op.f("ix_lead_merges_survivor_id"), "lead_merges", ["survivor_id"], unique=False)
    op.create_table(
        "ownership_changes",
        sa.Column("id", Id, nullable=False),
        sa.Column("lead_id", Id, nullable=True),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("from_userid", sa.String(length=64), nullable=True),
        sa.Column("to_userid", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("note", sa.String(length=256), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_ownership_changes_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_ownership_changes_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ownership_changes")),
    )
    op.create_index(
        op.f("ix_ownership_changes_customer_id"), "ownership_changes", ["customer_id"], unique=False
    )
    op.create_index(op.f("ix_ownership_changes_lead_id"), "ownership_changes", ["lead_id"], unique=False)
    op.create_index(
        "ix_ownership_changes_to_userid_reason_at",
        "ownership_changes",
        ["to_userid", "reason", "at"],
        unique=False,
    )
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("title", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch.create_index(batch.f("ix_contacts_email"), ["email"], unique=False)
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("company_key", sa.String(length=128), nullable=False, server_default=""))
        batch.add_column(sa.Column("region", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("industry", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("merged_into_id", Id, nullable=True))
        for name in ("assigned_at", "last_follow_up_at", "next_follow_up_at", "recycle_warned_at"):
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())
        )
        batch.create_index(batch.f("ix_customers_company_key"), ["company_key"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_customers_merged_into_id_customers"), "customers", ["merged_into_id"], ["id"]
        )
    with op.batch_alter_table("leads") as batch:
        batch.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        for name, length in (
            ("company", 128),
            ("company_key", 128),
            ("title", 64),
            ("region", 64),
            ("industry", 64),
        ):
            batch.add_column(sa.Column(name, sa.String(length=length), nullable=False, server_default=""))
        batch.add_column(sa.Column("utm", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("notes", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("external_ref", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("disqualified_reason", sa.String(length=256), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("grade", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("score", sa.Integer(), nullable=False, server_default="0"))
        for name in ("contact_id", "duplicate_of_id", "merged_into_id", "import_id"):
            batch.add_column(sa.Column(name, Id, nullable=True))
        for name in ("assigned_at", "last_follow_up_at", "next_follow_up_at", "recycle_warned_at"):
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())
        )
        batch.drop_index("ix_leads_owner_userid")
        batch.create_index("ix_leads_company_key_id", ["company_key", "id"], unique=False)
        batch.create_index(batch.f("ix_leads_created_at"), ["created_at"], unique=False)
        batch.create_index(batch.f("ix_leads_email"), ["email"], unique=False)
        batch.create_index(batch.f("ix_leads_import_id"), ["import_id"], unique=False)
        batch.create_index("ix_leads_owner_userid_status_id", ["owner_userid", "status", "id"], unique=False)
        batch.create_index("ix_leads_source_id", ["source", "id"], unique=False)
        batch.create_index("ix_leads_duplicate_of_id", ["duplicate_of_id"], unique=False)
        batch.create_index("ix_leads_merged_into_id", ["merged_into_id"], unique=False)
        batch.create_unique_constraint(batch.f("uq_leads_source_external_ref"), ["source", "external_ref"])
        batch.create_foreign_key(batch.f("fk_leads_contact_id_contacts"), "contacts", ["contact_id"], ["id"])
        batch.create_foreign_key(
            batch.f("fk_leads_duplicate_of_id_leads"), "leads", ["duplicate_of_id"], ["id"]
        )
        batch.create_foreign_key(
            batch.f("fk_leads_import_id_lead_imports"), "lead_imports", ["import_id"], ["id"]
        )
        batch.create_foreign_key(
            batch.f("fk_leads_merged_into_id_leads"), "leads", ["merged_into_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("leads") as batch:
        for constraint in (
            "fk_leads_merged_into_id_leads",
            "fk_leads_import_id_lead_imports",
            "fk_leads_duplicate_of_id_leads",
            "fk_leads_contact_id_contacts",
        ):
            batch.drop_constraint(constraint, type_="foreignkey")
        batch.drop_constraint("uq_leads_source_external_ref", type_="unique")
        for index in (
            "ix_leads_source_id",
            "ix_leads_duplicate_of_id",
            "ix_leads_merged_into_id",
            "ix_leads_owner_userid_status_id",
            "ix_leads_import_id",
            "ix_leads_email",
            "ix_leads_created_at",
            "ix_leads_company_key_id",
        ):
            batch.drop_index(index)
        batch.create_index("ix_leads_owner_userid", ["owner_userid"], unique=False)
        for column in (
            "updated_at",
            "recycle_warned_at",
            "next_follow_up_at",
            "last_follow_up_at",
            "assigned_at",
            "import_id",
            "merged_into_id",
            "duplicate_of_id",
            "contact_id",
            "score",
            "grade",
            "disqualified_reason",
            "external_ref",
            "notes",
            "utm",
            "industry",
            "region",
            "title",
            "company_key",
            "company",
            "email",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("customers") as batch:
        batch.drop_constraint("fk_customers_merged_into_id_customers", type_="foreignkey")
        batch.drop_index("ix_customers_company_key")
        for column in (
            "updated_at",
            "recycle_warned_at",
            "next_follow_up_at",
            "last_follow_up_at",
            "assigned_at",
            "merged_into_id",
            "industry",
            "region",
            "company_key",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("contacts") as batch:
        batch.drop_index("ix_contacts_email")
        batch.drop_column("email")
        batch.drop_column("title")
    op.drop_index("ix_ownership_changes_to_userid_reason_at", table_name="ownership_changes")
    op.drop_index(op.f("ix_ownership_changes_lead_id"), table_name="ownership_changes")
    op.drop_index(op.f("ix_ownership_changes_customer_id"), table_name="ownership_changes")
    op.drop_table("ownership_changes")
    op.drop_index(op.f("ix_lead_merges_survivor_id"), table_name="lead_merges")
    op.drop_index(op.f("ix_lead_merges_merged_id"), table_name="lead_merges")
    op.drop_table("lead_merges")
    op.drop_index(op.f("ix_lead_duplicates_other_lead_id"), table_name="lead_duplicates")
    op.drop_index(op.f("ix_lead_duplicates_lead_id"), table_name="lead_duplicates")
    op.drop_table("lead_duplicates")
    op.drop_index("ix_follow_ups_lead_id_at", table_name="follow_ups")
    op.drop_index("ix_follow_ups_customer_id_at", table_name="follow_ups")
    op.drop_table("follow_ups")
    op.drop_index(op.f("ix_assignment_members_rule_id"), table_name="assignment_members")
    op.drop_table("assignment_members")
    op.drop_table("pool_rules")
    op.drop_table("lead_imports")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_action"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("assignment_rules")
