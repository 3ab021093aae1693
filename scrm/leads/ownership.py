"""Who owns a lead or a customer: the one place that changes their ``owner_userid`` and keeps its
history (OwnershipChange rows: assignment, claims, releases, recycling, merges). Capacities and
claim caps count those rows."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scrm.customers.models import Customer
from scrm.leads import hooks
from scrm.leads.models import Lead, LeadStatus, OwnershipChange, OwnershipReason
from scrm.timeutil import SHANGHAI, utcnow


def change_owner(
    session: Session,
    row: Lead | Customer,
    to_userid: str | None,
    reason: OwnershipReason,
    *,
    actor: str | None = None,
    note: str = "",
    now: datetime | None = None,
) -> OwnershipChange:
    """Give a lead or a customer to ``to_userid`` (None: the public pool) and record why. A lead
    that gets an owner while new becomes assigned; one back in the pool is new again for whoever
    claims it."""
    now = now or utcnow()
    is_lead = isinstance(row, Lead)
    change = OwnershipChange(
        lead_id=row.id if is_lead else None,
        customer_id=None if is_lead else row.id,
        from_userid=row.owner_userid,
        to_userid=to_userid,
        reason=reason,
        note=note[:256],
        actor=actor,
        at=now,
    )
    session.add(change)
    row.owner_userid = to_userid
    row.recycle_warned_at = None
    row.assigned_at = now if to_userid is not None else None
    status_before = row.status if isinstance(row, Lead) else None
    if isinstance(row, Lead):
        if to_userid is None and row.status is LeadStatus.ASSIGNED:
            row.status = LeadStatus.NEW
        elif to_userid is not None and row.status is LeadStatus.NEW:
            row.status = LeadStatus.ASSIGNED
    else:
        row.updated_at = now
    session.flush()
    if isinstance(row, Lead) and row.status is not status_before:
        hooks.lead_changed(session, row)
    return change


def received_since(
    session: Session, userid: str, reasons: tuple[OwnershipReason, ...], since: datetime
) -> int:
    """How many leads ``userid`` got for ``reasons`` since ``since`` (capacities, claim caps)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(OwnershipChange)
            .where(
                OwnershipChange.to_userid == userid,
                OwnershipChange.reason.in_(reasons),
                OwnershipChange.at >= since,
            )
        )
        or 0
    )


def day_start(now: datetime) -> datetime:
    """Midnight Asia/Shanghai before ``now`` (a rep's day), as aware UTC."""
    local = now.astimezone(SHANGHAI)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(now.tzinfo)


def thirty_days_before(now: datetime) -> datetime:
    return now - timedelta(days=30)
