"""Leads (线索) and what a sales team does with them: who they are and where they came from, whose
they are (owner, or the public pool 公海), how far they got (status, grade, score), which lead
they duplicate or were merged into, and the customer they became. Beside the lead: the pairs
flagged for review, the audit of every merge (the merged lead as it was), the history of
ownership, the assignment rules that route new leads to reps, the pool rules that recycle
neglected ones, and the imports that brought them in."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scrm.channels.models import Channel
from scrm.customers.models import Customer
from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class LeadStatus(StrEnum):
    """new → assigned → contacted → qualified → converted / disqualified (with a reason)."""

    NEW = "new"
    ASSIGNED = "assigned"
    CONTACTED = "contacted"
    QUALIFIED = "qualified"
    CONVERTED = "converted"
    DISQUALIFIED = "disqualified"


# The statuses a lead may still move through: a converted or disqualified lead is closed, and
# neither assignment nor the pool's recycling touches it.
OPEN_STATUSES = (LeadStatus.NEW, LeadStatus.ASSIGNED, LeadStatus.CONTACTED, LeadStatus.QUALIFIED)


class LeadGrade(StrEnum):
    A = "A"
    B = "B"
    C = "C"


class Lead(Base):
    __tablename__ = "leads"
    __table_args__ = (
        # The list pages: a rep's (or the pool's) leads by status, newest first; by source.
        Index("ix_leads_owner_userid_status_id", "owner_userid", "status", "id"),
        Index("ix_leads_source_id", "source", "id"),
        # Merges and deletes look leads up by what points at them (SQLite checks the foreign keys
        # of every deleted row by these columns).
        Index("ix_leads_duplicate_of_id", "duplicate_of_id"),
        Index("ix_leads_merged_into_id", "merged_into_id"),
        # Dedupe reads a company's newest leads: company_key, then id, in index order.
        Index("ix_leads_company_key_id", "company_key", "id"),
        # An external system's id for the lead is unique within its source (a re-post is a duplicate).
        UniqueConstraint("source", "external_ref"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    phone_e164: Mapped[str | None] = mapped_column(String(32), index=True)
    email: Mapped[str | None] = mapped_column(String(254), index=True)  # lowercased
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    company: Mapped[str] = mapped_column(String(128), default="")
    # The company with its legal form, city and punctuation stripped (scrm.leads.normalize):
    # what fuzzy matching compares and blocks on.
    company_key: Mapped[str] = mapped_column(String(128), default="")
    title: Mapped[str] = mapped_column(String(64), default="")
    region: Mapped[str] = mapped_column(String(64), default="")
    industry: Mapped[str] = mapped_column(String(64), default="")
    token: Mapped[str | None] = mapped_column(String(16), unique=True)  # carried in a channel state
    source: Mapped[str] = mapped_column(String(32), default="channel")
    utm: Mapped[dict[str, Any]] = mapped_column(default=dict)  # utm_source/medium/campaign/content/term
    notes: Mapped[str] = mapped_column(Text, default="")
    external_ref: Mapped[str | None] = mapped_column(String(64))
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"), index=True)
    owner_userid: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[LeadStatus] = mapped_column(StrEnumType(LeadStatus), default=LeadStatus.NEW)
    disqualified_reason: Mapped[str] = mapped_column(String(256), default="")
    grade: Mapped[LeadGrade | None] = mapped_column(StrEnumType(LeadGrade))
    score: Mapped[int] = mapped_column(default=0)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    # A likely duplicate awaiting review points at the lead it may duplicate; a merged lead at
    # the lead that absorbed it (and is no longer listed).
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    import_id: Mapped[int | None] = mapped_column(ForeignKey("lead_imports.id"), index=True)
    assigned_at: Mapped[datetime | None] = mapped_column()
    last_follow_up_at: Mapped[datetime | None] = mapped_column()
    next_follow_up_at: Mapped[datetime | None] = mapped_column()
    # Set when the pool's recycle tick has warned the owner; cleared by any follow-up.
    recycle_warned_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    channel: Mapped[Channel | None] = relationship()
    customer: Mapped[Customer | None] = relationship()


class DuplicateStatus(StrEnum):
    OPEN = "open"
    MERGED = "merged"
    DISMISSED = "dismissed"


class LeadDuplicate(Base):
    """A pair of leads that may be one person, for a human to merge or dismiss."""

    __tablename__ = "lead_duplicates"
    __table_args__ = (UniqueConstraint("lead_id", "other_lead_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)  # the newer one
    other_lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    rule: Mapped[str] = mapped_column(String(32))  # phone, email, unionid, name+company
    score: Mapped[float] = mapped_column(default=1.0)
    reason: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[DuplicateStatus] = mapped_column(
        StrEnumType(DuplicateStatus), default=DuplicateStatus.OPEN
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolved_by: Mapped[str | None] = mapped_column(String(64))


class LeadMerge(Base):
    """The audit of one merge: which lead survived, and the merged lead exactly as it was."""

    __tablename__ = "lead_merges"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    survivor_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    merged_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    rule: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(default=1.0)
    snapshot: Mapped[dict[str, Any]] = mapped_column(default=dict)
    merged_by: Mapped[str | None] = mapped_column(String(64))
    merged_at: Mapped[datetime] = mapped_column(default=utcnow)


class OwnershipReason(StrEnum):
    CREATED = "created"
    ASSIGNED = "assigned"  # by a rule
    REASSIGNED = "reassigned"  # by a manager
    CLAIMED = "claimed"
    RELEASED = "released"
    RECYCLED = "recycled"
    MERGED = "merged"


class OwnershipChange(Base):
    """One change of a lead's (or a customer's) owner; ``to_userid`` None is the pool. Also what
    capacities and claim caps count: how many leads a rep got today and in 30 days."""

    __tablename__ = "ownership_changes"
    __table_args__ = (Index("ix_ownership_changes_to_userid_reason_at", "to_userid", "reason", "at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    from_userid: Mapped[str | None] = mapped_column(String(64))
    to_userid: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[OwnershipReason] = mapped_column(StrEnumType(OwnershipReason))
    note: Mapped[str] = mapped_column(String(256), default="")
    actor: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AssignmentRule(Base):
    """Routes a new lead to a rep: tried in priority order (lowest first); the first rule whose
    filters match and that has a rep under capacity wins; no rule → the pool. Reps take turns
    (round robin) in ``position`` order."""

    __tablename__ = "assignment_rules"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    priority: Mapped[int] = mapped_column(default=100)
    is_enabled: Mapped[bool] = mapped_column(default=True)
    # Empty list = any. Keys: region, industry, source, channel_id.
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The last member served, so the next lead goes to the one after.
    last_position: Mapped[int] = mapped_column(default=-1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    members: Mapped[list[AssignmentMember]] = relationship(
        order_by="AssignmentMember.position", cascade="all, delete-orphan"
    )


class AssignmentMember(Base):
    __tablename__ = "assignment_members"
    __table_args__ = (UniqueConstraint("rule_id", "userid"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("assignment_rules.id", ondelete="CASCADE"), index=True)
    userid: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(default=0)
    daily_capacity: Mapped[int | None] = mapped_column()  # new leads per day; None = unlimited
    monthly_capacity: Mapped[int | None] = mapped_column()  # new leads per 30 days


class PoolRule(Base):
    """How the public pool (公海) treats leads of a source (``source`` None: the default rule):
    recycle a lead whose owner logs no follow-up for ``recycle_after_days`` (warning the day
    before), and cap how many a rep may claim per day and hold at once."""

    __tablename__ = "pool_rules"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str | None] = mapped_column(String(32), unique=True)
    recycle_after_days: Mapped[int | None] = mapped_column(default=7)
    daily_claim_cap: Mapped[int | None] = mapped_column(default=20)
    holding_cap: Mapped[int | None] = mapped_column(default=200)


class ImportStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class LeadImport(Base):
    """One import of a CSV or XLSX file: its options, progress and row-level error report. Its
    leads are written in one transaction: a crash leaves none of them behind."""

    __tablename__ = "lead_imports"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    filename: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(32), default="import")
    owner_userid: Mapped[str | None] = mapped_column(String(64))
    on_duplicate: Mapped[str] = mapped_column(String(8), default="flag")
    column_map: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[ImportStatus] = mapped_column(StrEnumType(ImportStatus), default=ImportStatus.PENDING)
    total_rows: Mapped[int] = mapped_column(default=0)
    processed_rows: Mapped[int] = mapped_column(default=0)
    created_count: Mapped[int] = mapped_column(default=0)
    merged_count: Mapped[int] = mapped_column(default=0)
    flagged_count: Mapped[int] = mapped_column(default=0)
    skipped_count: Mapped[int] = mapped_column(default=0)
    error_count: Mapped[int] = mapped_column(default=0)
    # [{"row": 12, "column": "phone", "reason": "…"}], at most the first 1,000.
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    failure: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()  # when a runner claimed it (its lease)
    finished_at: Mapped[datetime | None] = mapped_column()
