"""A follow-up (跟进记录): what a rep did about a lead or a customer (call, visit, WeCom chat,
email, note), what was said, and when to follow up next."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class FollowUpKind(StrEnum):
    CALL = "call"
    VISIT = "visit"
    WECOM = "wecom"
    EMAIL = "email"
    NOTE = "note"


class FollowUp(Base):
    __tablename__ = "follow_ups"
    __table_args__ = (
        Index("ix_follow_ups_lead_id_at", "lead_id", "at"),
        Index("ix_follow_ups_customer_id_at", "customer_id", "at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    external_userid: Mapped[str | None] = mapped_column(String(64))  # when logged from the sidebar
    kind: Mapped[FollowUpKind] = mapped_column(StrEnumType(FollowUpKind))
    content: Mapped[str] = mapped_column(Text, default="")
    next_follow_up_at: Mapped[datetime | None] = mapped_column()
    author_userid: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
