"""One audit row per sensitive action: an export, a merge, an import (who, what, how many)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id
from scrm.timeutil import utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))  # a staff userid, "admin", or "apikey:<name>"
    action: Mapped[str] = mapped_column(String(32), index=True)  # export, merge, import, …
    target: Mapped[str] = mapped_column(String(64), default="")  # e.g. "leads", "lead:12"
    count: Mapped[int] = mapped_column(default=0)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
