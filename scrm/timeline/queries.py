"""Reads of the timeline."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.timeline.models import Activity


def for_person(session: Session, external_userid: str, limit: int = 200) -> list[Activity]:
    stmt = (
        select(Activity)
        .where(Activity.external_userid == external_userid)
        .order_by(Activity.occurred_at.desc(), Activity.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
