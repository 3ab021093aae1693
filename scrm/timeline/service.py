"""Writes to the timeline: one entry per thing that happened."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert
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


def record_many(session: Session, entries: Sequence[dict[str, Any]]) -> None:
    """Many entries at once (``record``'s keyword arguments each), in one executemany and without
    an object per entry: for batches such as the rules' tags on thousands of chat friends."""
    if not entries:
        return
    now = utcnow()
    rows = [
        {
            "kind": entry["kind"],
            "summary": entry["summary"][:512],
            "external_userid": entry.get("external_userid"),
            "userid": entry.get("userid"),
            "lead_id": entry.get("lead_id"),
            "customer_id": entry.get("customer_id"),
            "occurred_at": entry.get("occurred_at") or now,
            "data": entry.get("data") or {},
        }
        for entry in entries
    ]
    session.connection().execute(insert(Activity), rows)  # Core executemany, no ORM bulk work
