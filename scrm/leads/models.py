"""A lead: who, from where (source, channel), whose (owner), how far (status), and the customer
it became or belongs to."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scrm.channels.models import Channel
from scrm.customers.models import Customer
from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class LeadStatus(StrEnum):
    NEW = "new"
    CONTACTED = "contacted"
    QUALIFIED = "qualified"
    CONVERTED = "converted"
    DISQUALIFIED = "disqualified"


class Lead(Base):
    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    phone_e164: Mapped[str | None] = mapped_column(String(32), index=True)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    token: Mapped[str | None] = mapped_column(String(16), unique=True)  # carried in a channel state
    source: Mapped[str] = mapped_column(String(32), default="channel")
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"), index=True)
    owner_userid: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[LeadStatus] = mapped_column(StrEnumType(LeadStatus), default=LeadStatus.NEW)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[Channel | None] = relationship()
    customer: Mapped[Customer | None] = relationship()
