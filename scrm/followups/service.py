"""Writes follow-ups (跟进记录): logging one moves the lead or customer's follow-up dates, clears
a pending recycle warning (the owner is working it), moves a new or assigned lead to contacted,
and rescores the lead."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from scrm.customers.models import Customer
from scrm.errors import InvalidInput
from scrm.followups.models import FollowUp, FollowUpKind
from scrm.leads import service as leads
from scrm.leads.models import Lead, LeadStatus
from scrm.timeutil import utcnow

MAX_CONTENT = 4000


def log_follow_up(
    session: Session,
    *,
    lead: Lead | None = None,
    customer: Customer | None = None,
    kind: FollowUpKind | str,
    content: str = "",
    next_follow_up_at: datetime | None = None,
    author_userid: str | None = None,
    external_userid: str | None = None,
    now: datetime | None = None,
) -> FollowUp:
    """Record what ``author_userid`` did about ``lead`` and/or ``customer`` and when to follow up
    next (None: no date set)."""
    now = now or utcnow()
    errors: dict[str, str] = {}
    if lead is None and customer is None:
        errors["lead_id"] = "a follow-up is about a lead or a customer: name one"
    try:
        chosen = FollowUpKind(kind)
    except ValueError:
        errors["kind"] = "must be one of " + ", ".join(k.value for k in FollowUpKind)
    if len(content) > MAX_CONTENT:
        errors["content"] = f"at most {MAX_CONTENT} characters (got {len(content)})"
    if next_follow_up_at is not None:
        if next_follow_up_at.tzinfo is None:
            errors["next_follow_up_at"] = "give a time zone (e.g. 2026-12-01T09:00:00+08:00)"
        elif next_follow_up_at <= now:
            errors["next_follow_up_at"] = "must be in the future"
    if errors:
        raise InvalidInput("the follow-up has fields to fix: " + ", ".join(sorted(errors)), fields=errors)
    follow_up = FollowUp(
        lead_id=lead.id if lead else None,
        customer_id=customer.id if customer else None,
        external_userid=external_userid,
        kind=chosen,
        content=content,
        next_follow_up_at=next_follow_up_at,
        author_userid=author_userid,
        at=now,
    )
    session.add(follow_up)
    for row in (lead, customer):
        if row is not None:
            row.last_follow_up_at = now
            row.next_follow_up_at = next_follow_up_at
    if lead is not None:
        lead.recycle_warned_at = None
        if lead.status in (LeadStatus.NEW, LeadStatus.ASSIGNED):
            lead.status = LeadStatus.CONTACTED
        session.flush()
        leads.rescore(session, lead)
    session.flush()
    return follow_up
