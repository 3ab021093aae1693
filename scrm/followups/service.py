"""Writes follow-ups (跟进记录): logging one moves the lead or customer's follow-up dates, clears
a pending recycle warning (the owner is working it), moves a new or assigned lead to contacted,
and rescores the lead."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy.orm import Session

from scrm.customers.models import Customer
from scrm.errors import Forbidden, InvalidInput
from scrm.followups.models import FollowUp, FollowUpKind
from scrm.leads import queries as lead_queries
from scrm.leads import service as leads
from scrm.leads.models import Lead, LeadStatus
from scrm.people.models import ExternalContact
from scrm.timeutil import utcnow

MAX_CONTENT = 4000
NOT_YOUR_CUSTOMER = "该客户属于其他员工 / That customer belongs to a rep whose customers you cannot see."
NOT_LINKED = "请先关联或创建线索 / Link this customer to a lead or customer, or create a lead, first"


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


def linked_records(session: Session, person: ExternalContact) -> tuple[Lead | None, Customer | None]:
    """The lead and the customer a friend is linked to (either may be None)."""
    # A merge re-points the merged lead's people at the survivor, so person.lead is live.
    lead = person.lead
    customer_id = person.contact.customer_id if person.contact else (lead.customer_id if lead else None)
    customer = session.get(Customer, customer_id) if customer_id is not None else None
    return lead, customer


def may_see_customer(customer: Customer, visible: Collection[str] | None) -> bool:
    return visible is None or customer.owner_userid is None or customer.owner_userid in visible


def log_for_person(
    session: Session,
    person: ExternalContact,
    *,
    visible: Collection[str] | None,
    kind: FollowUpKind | str,
    content: str,
    author_userid: str,
    next_follow_up_at: datetime | None = None,
    now: datetime | None = None,
) -> FollowUp:
    """A follow-up about a friend, where their timeline shows it: on their linked lead, else on
    their linked customer, if the user may see it (the sidebar's form and the bot's ``记``).
    InvalidInput when the friend is linked to neither; Forbidden when another rep owns it."""
    lead, customer = linked_records(session, person)
    if lead is None and customer is None:
        raise InvalidInput(NOT_LINKED, field="lead_id")
    if lead is not None:
        lead = lead_queries.visible_lead(session, lead.id, visible)
        customer = None  # the lead's timeline is where the sidebar shows it
    elif customer is not None and not may_see_customer(customer, visible):
        raise Forbidden(NOT_YOUR_CUSTOMER)
    return log_follow_up(
        session,
        lead=lead,
        customer=customer,
        kind=kind,
        content=content,
        next_follow_up_at=next_follow_up_at,
        author_userid=author_userid,
        external_userid=person.external_userid,
        now=now,
    )
