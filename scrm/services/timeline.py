"""The timeline: one Activity row per thing that happened to a person, lead or customer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from scrm.models import Activity, ActivityKind, Customer, Lead
from scrm.timeutil import utcnow


def record(
    session: Session,
    kind: ActivityKind,
    summary: str,
    *,
    lead: Lead | None = None,
    customer: Customer | None = None,
    **columns: Any,
) -> Activity:
    """Add one entry (``columns``: those of ``row``). Pass ``lead``/``customer`` objects when they
    may not have ids yet (created in this unit of work): the flush fills the ids in, with no
    extra round trip."""
    activity = Activity(**row(kind, summary, **columns))
    if lead is not None:
        activity.lead = lead
    if customer is not None:
        activity.customer = customer
    session.add(activity)
    return activity


def row(
    kind: ActivityKind,
    summary: str,
    *,
    external_userid: str | None = None,
    userid: str | None = None,
    lead_id: int | None = None,
    customer_id: int | None = None,
    occurred_at: datetime | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The column values of one entry, for ``insert_rows`` (hot paths that skip the ORM)."""
    return {
        "kind": kind,
        "summary": summary[:512],
        "external_userid": external_userid,
        "userid": userid,
        "lead_id": lead_id,
        "customer_id": customer_id,
        "occurred_at": occurred_at or utcnow(),
        "data": data or {},
    }


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    session.connection().execute(insert(cast(Table, Activity.__table__)), rows)


def for_person(session: Session, external_userid: str, limit: int = 200) -> list[Activity]:
    stmt = (
        select(Activity)
        .where(Activity.external_userid == external_userid)
        .order_by(Activity.occurred_at.desc(), Activity.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
