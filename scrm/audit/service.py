"""Writes the audit log. Callers pass the session of the action they audit, so the row commits
(or rolls back) with it."""

from __future__ import annotations

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
