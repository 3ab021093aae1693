"""Reads of leads: the filtered, sorted, paginated list (what a user may see of it), one lead as
a user may see it, and a lead's open duplicate pairs."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from scrm.errors import Forbidden, InvalidInput, NotFound
from scrm.leads.models import DuplicateStatus, Lead, LeadDuplicate, LeadGrade, LeadStatus
from scrm.leads.normalize import phone_e164

# A q that looks like a phone (digits with the usual separators, 7+ digits) is looked up as an
# E.164 phone on its index instead of as text.
_PHONE_LIKE = re.compile(r"^[+＋(（]?[0-9０-９][0-9０-９ ()（）+＋-]{5,}$")
SORTS = {
    "-created_at": (Lead.created_at.desc(), Lead.id.desc()),
    "created_at": (Lead.created_at.asc(), Lead.id.asc()),
    "-id": (Lead.id.desc(),),
    "id": (Lead.id.asc(),),
    "-score": (Lead.score.desc(), Lead.id.desc()),
    "score": (Lead.score.asc(), Lead.id.asc()),
    # Leads without a date last on both databases (SQLite puts NULLs first by default).
    "next_follow_up_at": (Lead.next_follow_up_at.asc().nulls_last(), Lead.id.asc()),
    "-updated_at": (Lead.updated_at.desc(), Lead.id.desc()),
}


@dataclass(frozen=True)
class LeadFilter:
    """``visible`` None: every owner (admin); otherwise only leads these userids own, plus the
    pool (owner None). ``after_id`` is a keyset cursor for the id sorts."""

    visible: Collection[str] | None = None
    status: LeadStatus | None = None
    statuses: Collection[LeadStatus] | None = None  # any of these (the pool: the open statuses)
    owner_userid: str | None = None
    source: str | None = None
    channel_id: int | None = None
    grade: LeadGrade | None = None
    q: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    pool: bool | None = None
    sort: str = "-id"
    limit: int = 100
    offset: int = 0
    after_id: int | None = None


def _visible_clause(visible: Collection[str] | None) -> ColumnElement[bool] | None:
    if visible is None:
        return None
    return or_(Lead.owner_userid.is_(None), Lead.owner_userid.in_(list(visible)))


def may_see(lead: Lead, visible: Collection[str] | None) -> bool:
    return visible is None or lead.owner_userid is None or lead.owner_userid in visible


def _where(f: LeadFilter) -> Select[Lead]:
    stmt = select(Lead).where(Lead.merged_into_id.is_(None))
    clause = _visible_clause(f.visible)
    if clause is not None:
        stmt = stmt.where(clause)
    if f.status is not None:
        stmt = stmt.where(Lead.status == f.status)
    if f.statuses is not None:
        stmt = stmt.where(Lead.status.in_(list(f.statuses)))
    if f.owner_userid is not None:
        stmt = stmt.where(Lead.owner_userid == f.owner_userid)
    if f.pool is True:
        stmt = stmt.where(Lead.owner_userid.is_(None))
    elif f.pool is False:
        stmt = stmt.where(Lead.owner_userid.is_not(None))
    if f.source is not None:
        stmt = stmt.where(Lead.source == f.source)
    if f.channel_id is not None:
        stmt = stmt.where(Lead.channel_id == f.channel_id)
    if f.grade is not None:
        stmt = stmt.where(Lead.grade == f.grade)
    if f.created_from is not None:
        stmt = stmt.where(Lead.created_at >= f.created_from)
    if f.created_to is not None:
        stmt = stmt.where(Lead.created_at < f.created_to)
    q = (f.q or "").strip()
    if q:
        phone = phone_e164(q) if _PHONE_LIKE.match(q) else None
        if phone:
            stmt = stmt.where(Lead.phone_e164 == phone)
        else:
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(or_(Lead.name.ilike(like, escape="\\"), Lead.company.ilike(like, escape="\\")))
    return stmt


def select_leads(f: LeadFilter) -> Select[Lead]:
    """The leads ``f`` selects in its sort order, unpaged (``limit``, ``offset`` and ``after_id``
    ignored): what an export streams in one query."""
    if f.sort not in SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(SORTS)}", field="sort")
    return _where(f).order_by(*SORTS[f.sort])


# A list's total is counted up to COUNT_CAP rows and is None beyond (the API's Page.total is
# counted "where cheap"). Counting every lead a broad filter selects reads each row (merged leads
# are left out, so no index answers it alone): 250-350 ms for 275k-990k of 1M leads on PostgreSQL
# while the page itself takes 1 ms (tests/bench/leads_api_bench.py).
COUNT_CAP = 10_000


def list_leads(
    session: Session, f: LeadFilter, *, count: bool = True, count_cap: int | None = COUNT_CAP
) -> tuple[list[Lead], int | None]:
    """One page of the leads ``f`` selects (merged leads never listed), and how many match in all:
    None when ``count`` is off or more than ``count_cap`` match (``count_cap`` None counts all)."""
    if f.sort not in SORTS:
        raise InvalidInput(f"sort must be one of {', '.join(SORTS)}", field="sort")
    stmt = _where(f)
    total = None
    if count:
        counted = stmt.order_by(None).with_only_columns(Lead.id)
        if count_cap is not None:
            counted = counted.limit(count_cap + 1)
        total = int(session.scalar(select(func.count()).select_from(counted.subquery())) or 0)
        if count_cap is not None and total > count_cap:
            total = None
    if f.after_id is not None:
        if f.sort not in ("id", "-id"):
            raise InvalidInput("after_id pages the id sorts only: use sort=-id or sort=id", field="after_id")
        stmt = stmt.where(Lead.id < f.after_id if f.sort == "-id" else Lead.id > f.after_id)
    else:
        stmt = stmt.offset(f.offset)
    rows = list(session.scalars(stmt.order_by(*SORTS[f.sort]).limit(f.limit)))
    return rows, total


def visible_lead(session: Session, lead_id: int, visible: Collection[str] | None) -> Lead:
    """The lead, if the user may see it: NotFound when there is none, Forbidden when another rep
    owns it. A merged lead answers as itself (its ``merged_into_id`` says where it went)."""
    lead = session.get(Lead, lead_id)
    if lead is None:
        raise NotFound(f"no lead {lead_id}")
    if not may_see(lead, visible):
        raise Forbidden(
            f"lead {lead_id} belongs to {lead.owner_userid!r}, whose leads this user cannot see; "
            "ask its owner or a manager"
        )
    return lead


def open_duplicates(session: Session, lead_id: int) -> list[LeadDuplicate]:
    return list(
        session.scalars(
            select(LeadDuplicate)
            .where(
                or_(LeadDuplicate.lead_id == lead_id, LeadDuplicate.other_lead_id == lead_id),
                LeadDuplicate.status == DuplicateStatus.OPEN,
            )
            .order_by(LeadDuplicate.id)
        )
    )
