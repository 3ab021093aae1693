"""A WeCom write, stored with the change that caused it and sent by the scheduler."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed: a sender holds it until lease_until
    SENT = "sent"
    DEAD = "dead"  # retries exhausted or refused for good; retry by hand
    EXPIRED = "expired"  # never attempted before its deadline (a welcome code's 20 s)
    UNKNOWN = "unknown"  # an attempt may have reached WeCom, and nothing can tell us whether


class OutboxCommand(Base):
    __tablename__ = "outbox_commands"
    __table_args__ = (Index("ix_outbox_commands_status_next_attempt_at", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # a registered kind (outbox.kinds)
    payload: Mapped[dict[str, Any]] = mapped_column()
    # What the write is about, for its kind's outcome hook and the console: "channel:12".
    # Indexed: pages count a channel's, a friend's or a bulk's writes by it.
    ref: Mapped[str] = mapped_column(String(128), default="", index=True)
    status: Mapped[OutboxStatus] = mapped_column(StrEnumType(OutboxStatus), default=OutboxStatus.PENDING)
    priority: Mapped[int] = mapped_column(default=0)  # higher first; welcome messages race a 20 s clock
    attempts: Mapped[int] = mapped_column(default=0)
    # An attempt timed out or its sender vanished: WeCom may have done it. A write that cannot
    # be retried safely then ends UNKNOWN rather than DEAD or EXPIRED.
    has_unknown_attempt: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    # The current holder's claim: only it may record the attempt's outcome.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    last_errcode: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    inbox_event_id: Mapped[int | None] = mapped_column(ForeignKey("inbox_events.id"), index=True)
