"""Reads of the inbox for the console: stored callbacks, newest first, without their payloads.

The inbox knows no domain: the rows carry who an event is about (``userid``, ``external_userid``)
and the console turns those into names.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from scrm.inbox.models import InboxEvent, InboxStatus

PROBLEM_STATUSES = (InboxStatus.FAILED, InboxStatus.DEAD)


def list_events(session: Session, *, status: str = "", limit: int = 50, offset: int = 0) -> list[InboxEvent]:
    """``status``: a status value, "problem" (failed or dead) or "" for all. The payload is
    decrypted customer data: never loaded for a list."""
    stmt = select(InboxEvent).options(defer(InboxEvent.payload)).order_by(InboxEvent.id.desc())
    if status == "problem":
        stmt = stmt.where(InboxEvent.status.in_(PROBLEM_STATUSES))
    elif status:
        stmt = stmt.where(InboxEvent.status == InboxStatus(status))
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def status_counts(session: Session) -> dict[Any, int]:
    column = InboxEvent.status
    return {status: n for status, n in session.execute(select(column, func.count()).group_by(column))}
