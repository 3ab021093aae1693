"""Writes the audit log. Callers pass the session of the action they audit, so the row commits
(or rolls back) with it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from scrm.audit.models import AuditEntry


def record(
    session: Session, *, actor: str, action: str, target: str = "", count: int = 0, **details: Any
) -> AuditEntry:
    entry = AuditEntry(actor=actor[:64], action=action, target=target[:64], count=count, details=details)
    session.add(entry)
    session.flush()
    return entry


def snapshot(row: Any) -> dict[str, Any]:
    """Every column of a mapped ``row`` as JSON values: what an audit row keeps of a record
    a merge is about to change."""
    out: dict[str, Any] = {}
    for col in row.__table__.columns:
        value = getattr(row, col.key)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, StrEnum):
            value = value.value
        out[col.key] = value
    return out
