"""What scrm keeps about WeCom itself: the shared access token, and the last time WeCom refused
our credentials, IP or permissions (shown to admins until a call succeeds again)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base
from scrm.timeutil import utcnow


class WeComToken(Base):
    """The access token, shared by every process (REFERENCE §3.1: cache it, per app)."""

    __tablename__ = "wecom_tokens"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))
    expires_at: Mapped[datetime | None] = mapped_column()


class WeComProblem(Base):
    """WeCom's latest refusal of our configuration (one row per errcode): what it said, where,
    and what the admin should do. ``resolved_at`` is set once a call of the same kind succeeds."""

    __tablename__ = "wecom_problems"
    errcode: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    errmsg: Mapped[str] = mapped_column(Text, default="")
    path: Mapped[str] = mapped_column(String(128), default="")
    fix: Mapped[str] = mapped_column(Text, default="")
    count: Mapped[int] = mapped_column(default=1)
    first_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column()
