"""A channel QR code (「联系我」 contact way, doc 92228) with its reps, auto-tags and welcome text."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class ChannelStatus(StrEnum):
    PENDING = "pending"  # add_contact_way queued in the outbox
    ACTIVE = "active"
    FAILED = "failed"


class Channel(Base):
    """``state`` is what WeCom echoes back on add; ``name`` is unique so reports stay readable."""

    __tablename__ = "channels"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(30), unique=True)
    userids: Mapped[list[str]] = mapped_column(default=list)
    auto_tag_ids: Mapped[list[str]] = mapped_column(default=list)
    welcome_text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ChannelStatus] = mapped_column(StrEnumType(ChannelStatus), default=ChannelStatus.PENDING)
    # A disabled channel still attributes adds (its printed codes live on) but sends no welcome
    # and no auto-tags, and is hidden from pickers.
    is_disabled: Mapped[bool] = mapped_column(default=False)
    config_id: Mapped[str | None] = mapped_column(String(64))
    qr_code: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
