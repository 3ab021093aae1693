"""Reads of follow-ups, and the one timeline of a lead or a customer: its activities (with the
friend events of its external contacts), follow-ups, ownership changes and merges, newest first."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from scrm.followups.models import FollowUp
from scrm.leads.models import LeadMerge, OwnershipChange
from scrm.people.models import ExternalContact
from scrm.timeline.models import Activity


def for_lead(session: Session, lead_id: int, limit: int = 200) -> list[FollowUp]:
    return list(
        session.scalars(
            select(FollowUp)
            .where(FollowUp.lead_id == lead_id)
            .order_by(FollowUp.at.desc(), FollowUp.id.desc())
            .limit(limit)
        )
    )


def for_customer(session: Session, customer_id: int, limit: int = 200) -> list[FollowUp]:
    return list(
        session.scalars(
            select(FollowUp)
            .where(FollowUp.customer_id == customer_id)
            .order_by(FollowUp.at.desc(), FollowUp.id.desc())
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a lead's or customer's timeline, whatever table it came from."""

    kind: str  # an ActivityKind, "follow_up", "ownership" or "merge"
    at: datetime
    summary: str
    userid: str | None
    data: dict[str, Any] = field(default_factory=dict)


def _external_userids(session: Session, lead_id: int | None, customer_id: int | None) -> list[str]:
    stmt = select(ExternalContact.external_userid)
    if lead_id is not None:
        stmt = stmt.where(ExternalContact.lead_id == lead_id)
    else:
        from scrm.customers.models import Contact

        stmt = stmt.join(Contact, Contact.id == ExternalContact.contact_id).where(
            Contact.customer_id == customer_id
        )
    return list(session.scalars(stmt))


def timeline(
    session: Session, *, lead_id: int | None = None, customer_id: int | None = None, limit: int = 200
) -> list[TimelineEntry]:
    """The merged timeline of one lead or one customer, newest first."""
    if (lead_id is None) == (customer_id is None):
        raise ValueError("name exactly one of lead_id and customer_id")
    entries: list[TimelineEntry] = []
    people = _external_userids(session, lead_id, customer_id)
    own = Activity.lead_id == lead_id if lead_id is not None else Activity.customer_id == customer_id
    where = or_(own, Activity.external_userid.in_(people)) if people else own
    for a in session.scalars(
        select(Activity).where(where).order_by(Activity.occurred_at.desc(), Activity.id.desc()).limit(limit)
    ):
        entries.append(TimelineEntry(str(a.kind), a.occurred_at, a.summary, a.userid, dict(a.data or {})))
    follow_ups = for_lead(session, lead_id, limit) if lead_id is not None else []
    if customer_id is not None:
        follow_ups = for_customer(session, customer_id, limit)
    for f in follow_ups:
        entries.append(
            TimelineEntry(
                "follow_up",
                f.at,
                f"{f.kind}: {f.content}"[:512],
                f.author_userid,
                {
                    "kind": str(f.kind),
                    "next_follow_up_at": f.next_follow_up_at.isoformat() if f.next_follow_up_at else None,
                },
            )
        )
    owned = (
        OwnershipChange.lead_id == lead_id
        if lead_id is not None
        else OwnershipChange.customer_id == customer_id
    )
    for o in session.scalars(
        select(OwnershipChange).where(owned).order_by(OwnershipChange.at.desc()).limit(limit)
    ):
        entries.append(
            TimelineEntry(
                "ownership",
                o.at,
                f"{o.reason}: {o.from_userid or 'pool'} → {o.to_userid or 'pool'}"
                + (f" ({o.note})" if o.note else ""),
                o.actor,
                {"reason": str(o.reason), "from": o.from_userid, "to": o.to_userid},
            )
        )
    if lead_id is not None:
        for m in session.scalars(
            select(LeadMerge)
            .where(LeadMerge.survivor_id == lead_id)
            .order_by(LeadMerge.merged_at.desc())
            .limit(limit)
        ):
            entries.append(
                TimelineEntry(
                    "merge",
                    m.merged_at,
                    f"lead {m.merged_id} merged in ({m.rule})",
                    m.merged_by,
                    {"merged_id": m.merged_id, "rule": m.rule, "score": m.score},
                )
            )
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit]
