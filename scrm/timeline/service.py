"""Writes to the timeline: one entry per thing that happened."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from scrm.timeline.models import Activity, ActivityKind
from scrm.timeutil import utcnow


def record(
    session: Session,
    kind: ActivityKind,
    summary: str,
    *,
    external_userid: str | None = None,
    userid: str | None = None,
    lead_id: int | None = None,
    customer_id: int | None = None,
    occurred_at: datetime | None = None,
    data: dict[str, Any] | None = None,
) -> Activity:
    activity = Activity(
        kind=kind,
        summary=summary[:512],
        external_userid=external_userid,
        userid=userid,
        lead_id=lead_id,
        customer_id=customer_id,
        occurred_at=occurred_at or utcnow(),
        data=data or {},
    )
    session.add(activity)
    return activity
