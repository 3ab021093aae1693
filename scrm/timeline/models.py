"""One Activity row per thing that happened to a person, lead or customer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class ActivityKind(StrEnum):
    FRIEND_ADDED = "friend_added"
    FRIEND_HALF_ADDED = "friend_half_added"
    FRIEND_EDITED = "friend_edited"
    REP_DELETED_CUSTOMER = "rep_deleted_customer"
    CUSTOMER_DELETED_REP = "customer_deleted_rep"
    TRANSFERRED = "transferred"
    TRANSFER_FAILED = "transfer_failed"
    JOINED_GROUP = "joined_group"
    LEFT_GROUP = "left_group"
    LEAD_CREATED = "lead_created"
    LINKED = "linked"
    NOTE = "note"


class Activity(Base):
    """One timeline entry about a person, a lead or a customer."""

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_external_userid_occurred_at", "external_userid", "occurred_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[ActivityKind] = mapped_column(StrEnumType(ActivityKind))
    external_userid: Mapped[str | None] = mapped_column(String(64))
    userid: Mapped[str | None] = mapped_column(String(64))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    summary: Mapped[str] = mapped_column(String(512), default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
