"""A verified, decrypted callback, stored before we acknowledge it to WeCom."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class InboxStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"  # will be retried by the tick
    DEAD = "dead"  # retries exhausted; replay by hand
    IGNORED = "ignored"  # no handler for this event; stored and acked


OPEN_STATUSES = (InboxStatus.PENDING, InboxStatus.PROCESSING, InboxStatus.FAILED)


class InboxEvent(Base):
    __tablename__ = "inbox_events"
    __table_args__ = (
        Index("ix_inbox_events_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_inbox_events_ordering_key_id", "ordering_key", "id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    msg_type: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64), default="")
    change_type: Mapped[str] = mapped_column(String(64), default="")
    ordering_key: Mapped[str] = mapped_column(String(80), default="")
    # Who the event is about, for the console (never the payload): the rep and the customer.
    userid: Mapped[str] = mapped_column(String(64), default="")
    external_userid: Mapped[str] = mapped_column(String(64), default="")
    payload: Mapped[str] = mapped_column(Text)  # decrypted XML; never logged
    created_time: Mapped[int] = mapped_column(BigInteger, default=0)  # WeCom's CreateTime
    status: Mapped[InboxStatus] = mapped_column(StrEnumType(InboxStatus), default=InboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column()
    processed_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
