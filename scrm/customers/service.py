"""Writes to customers: a customer for a new person or a converted lead, the contacts it holds
(found again by phone, email or unionid rather than added twice), and merging two customers that
are one company."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import column, or_, select, table, update
from sqlalchemy.orm import Session

from scrm.audit import service as audit
from scrm.audit.models import AuditEntry
from scrm.audit.service import record as record_audit
from scrm.customers.models import Contact, Customer, CustomerKind
from scrm.errors import Conflict, InvalidInput
from scrm.timeline import service as timeline
from scrm.timeline.models import Activity, ActivityKind
from scrm.timeutil import utcnow


def new_customer(
    session: Session, *, name: str, corp_name: str, is_wecom_user: bool, owner_userid: str | None
) -> Customer:
    """A company for a WeCom user of another corp (B2B), else a person (B2C)."""
    is_company = is_wecom_user and bool(corp_name)
    customer = Customer(
        kind=CustomerKind.COMPANY if is_company else CustomerKind.PERSON,
        name=(corp_name if is_company else name)[:128],
        owner_userid=owner_userid,
    )
    session.add(customer)
    session.flush()
    return customer


def create_customer(
    session: Session,
    *,
    kind: CustomerKind,
    name: str,
    company_key: str = "",
    region: str = "",
    industry: str = "",
    owner_userid: str | None = None,
    now: datetime | None = None,
) -> Customer:
    """A new company (with its normalised name, for finding it again) or person."""
    now = now or utcnow()
    customer = Customer(
        kind=kind,
        name=name[:128],
        company_key=company_key[:128] if kind is CustomerKind.COMPANY else "",
        region=region[:64],
        industry=industry[:64],
        owner_userid=owner_userid,
        created_at=now,
        updated_at=now,
    )
    session.add(customer)
    session.flush()
    return customer


def ensure_contact(
    session: Session,
    customer: Customer,
    *,
    name: str,
    title: str = "",
    phone_e164: str | None = None,
    email: str | None = None,
    unionid: str | None = None,
    now: datetime | None = None,
) -> Contact:
    """The customer's contact with the same phone, email or unionid (its blanks filled in), or a
    new one: converting two leads of one person must not list them twice."""
    keys = [
        column == value
        for column, value in (
            (Contact.phone_e164, phone_e164),
            (Contact.email, email),
            (Contact.unionid, unionid),
        )
        if value
    ]
    contact = None
    if keys:
        contact = session.scalar(
            select(Contact)
            .where(Contact.customer_id == customer.id, or_(*keys))
            .order_by(Contact.id)
            .limit(1)
        )
    if contact is None:
        contact = Contact(
            customer_id=customer.id,
            name=name[:128],
            title=title[:64],
            phone_e164=phone_e164,
            email=email,
            unionid=unionid,
            created_at=now or utcnow(),
        )
        session.add(contact)
    else:
        for attr, value in (
            ("name", name[:128]),
            ("title", title[:64]),
            ("phone_e164", phone_e164),
            ("email", email),
            ("unionid", unionid),
        ):
            if value and not getattr(contact, attr):
                setattr(contact, attr, value)
    session.flush()
    return contact


# --- merge -----------------------------------------------------------------------------------
#
# The rows above customers. A merge must re-point every row that names the merged customer, and
# some of those rows belong to domains above customers (leads and their ownership history,
# follow-ups), which customers may not import. As leads.service.merge does for its upper tables,
# customers names them here through SQLAlchemy Core, with only the columns it reads or writes;
# their foreign keys point at ``customers.id``. tests/test_customer_merge.py pins every name below
# on both databases.
_leads = table("leads", column("id"), column("customer_id"))
_follow_ups = table("follow_ups", column("id"), column("customer_id"))
_ownership_changes = table(
    "ownership_changes",
    column("id"),
    column("lead_id"),
    column("customer_id"),
    column("from_userid"),
    column("to_userid"),
    column("reason"),
    column("note"),
    column("actor"),
    column("at"),
)
# leads.models.OwnershipReason.MERGED, by value.
_MERGED_REASON = "merged"
# What a survivor takes from the merged customer when its own is blank (its name stays).
FILLABLE = ("name", "company_key", "region", "industry")


def snapshot(customer: Customer) -> dict[str, Any]:
    """Every column of ``customer`` as JSON values: what a merge's audit row keeps."""
    return audit.snapshot(customer)


def _repoint(session: Session, target: Any, merged_id: int, survivor_id: int) -> int:
    """Point ``target``'s customer_id at the survivor; how many rows moved."""
    result: Any = session.execute(
        update(target).where(target.c.customer_id == merged_id).values(customer_id=survivor_id)
    )
    return int(result.rowcount or 0)


def merge_customers(
    session: Session,
    survivor: Customer,
    merged: Customer,
    *,
    actor: str | None = None,
    now: datetime | None = None,
) -> AuditEntry:
    """Fold ``merged`` into ``survivor`` (two records of one company). The survivor keeps its
    fields and fills its blanks from the merged one (region, industry; its owner when it has
    none; the later last follow-up and the earlier next one). Everything that named the merged
    customer names the survivor: contacts (so their external contacts and friendships), leads,
    follow-ups, the timeline and the ownership history. The merged customer stays, pointing at
    the survivor and owned by nobody, and the audit row (action "merge") keeps it as it was."""
    now = now or utcnow()
    if survivor.id == merged.id:
        raise InvalidInput(
            "不能把客户合并到它自己 / A customer cannot be merged into itself; pick another customer",
            field="survivor",
        )
    for which in (survivor, merged):
        if which.merged_into_id is not None:
            raise Conflict(
                f"客户 #{which.id} 已合并到 #{which.merged_into_id} / Customer {which.id} was already "
                f"merged into customer {which.merged_into_id}; merge with that one"
            )
    before = snapshot(merged)
    changed: list[str] = []
    for name in FILLABLE:
        value = getattr(merged, name)
        if value and not getattr(survivor, name):
            setattr(survivor, name, value)
            changed.append(name)
    if merged.last_follow_up_at and (
        survivor.last_follow_up_at is None or merged.last_follow_up_at > survivor.last_follow_up_at
    ):
        survivor.last_follow_up_at = merged.last_follow_up_at
        changed.append("last_follow_up_at")
    if merged.next_follow_up_at and (
        survivor.next_follow_up_at is None or merged.next_follow_up_at < survivor.next_follow_up_at
    ):
        survivor.next_follow_up_at = merged.next_follow_up_at
        changed.append("next_follow_up_at")
    session.flush()
    moved = {
        "contacts": _repoint(session, Contact.__table__, merged.id, survivor.id),
        "leads": _repoint(session, _leads, merged.id, survivor.id),
        "follow_ups": _repoint(session, _follow_ups, merged.id, survivor.id),
        "activities": _repoint(session, Activity.__table__, merged.id, survivor.id),
        "ownership_changes": _repoint(session, _ownership_changes, merged.id, survivor.id),
    }
    # Customers merged into the merged one earlier now point at the survivor directly.
    session.execute(
        update(Customer).where(Customer.merged_into_id == merged.id).values(merged_into_id=survivor.id)
    )
    if survivor.owner_userid is None and merged.owner_userid is not None:
        # As ownership.change_owner does for a lead taken over in a merge: a history row, and the
        # recycling clock starts now for the new owner.
        session.execute(
            _ownership_changes.insert().values(
                lead_id=None,
                customer_id=survivor.id,
                from_userid=None,
                to_userid=merged.owner_userid,
                reason=_MERGED_REASON,
                note=f"customer {merged.id} merged in"[:256],
                actor=actor,
                at=now,
            )
        )
        survivor.owner_userid = merged.owner_userid
        survivor.assigned_at = now
        survivor.recycle_warned_at = None
        changed.append("owner_userid")
    merged.merged_into_id = survivor.id
    merged.owner_userid = None
    merged.assigned_at = None
    merged.recycle_warned_at = None
    merged.updated_at = now
    survivor.updated_at = now
    timeline.record(
        session,
        ActivityKind.NOTE,
        f"customer {merged.id} ({merged.name}) merged in",
        userid=actor,
        customer_id=survivor.id,
        occurred_at=now,
        data={"merged_customer_id": merged.id},
    )
    session.flush()
    # The bulk UPDATEs above bypassed the identity map: reload what they touched.
    session.expire_all()
    entry = record_audit(
        session,
        actor=actor or "system",
        action="merge",
        target=f"customer:{survivor.id}",
        count=1,
        merged_id=merged.id,
        fields=changed,
        moved=moved,
        snapshot=before,
    )
    return entry
