"""Reads of customers: one live customer (following merges), a customer's contacts, and the
likely duplicate companies a manager reviews (the same normalised company name)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from scrm.customers.models import Contact, Customer, CustomerKind


def live_customer(session: Session, customer_id: int) -> Customer | None:
    """The customer, or the one it was merged into (a merged customer is no longer used)."""
    customer = session.get(Customer, customer_id)
    seen: set[int] = set()
    while customer is not None and customer.merged_into_id is not None and customer.id not in seen:
        seen.add(customer.id)
        customer = session.get(Customer, customer.merged_into_id)
    return customer


def contacts_of(session: Session, customer_id: int) -> list[Contact]:
    return list(
        session.scalars(select(Contact).where(Contact.customer_id == customer_id).order_by(Contact.id))
    )


@dataclass(frozen=True)
class DuplicatePair:
    """Two live companies with the same ``company_key``: ``first`` is the group's oldest (the
    natural survivor), ``other`` a later one, and ``reason`` says why they look alike."""

    first: Customer
    other: Customer
    reason: str


def _may_see(row: type[Customer], visible: Collection[str] | None) -> list[ColumnElement[bool]]:
    """Live companies with a key, owned by someone in ``visible`` (None: everyone) or pooled."""
    where: list[ColumnElement[bool]] = [
        row.merged_into_id.is_(None),
        row.kind == CustomerKind.COMPANY,
        row.company_key != "",
    ]
    if visible is not None:
        where.append(or_(row.owner_userid.is_(None), row.owner_userid.in_(list(visible))))
    return where


def _pairs(visible: Collection[str] | None) -> Select[Customer, Customer]:
    # The groups: one GROUP BY over the indexed company_key, among the customers this user may
    # see (a pair is listed only when both sides are visible). Each later member of a group is
    # paired with the group's oldest, so a group of n is n - 1 merges away from one customer.
    groups = (
        select(Customer.company_key.label("key"), func.min(Customer.id).label("first_id"))
        .where(*_may_see(Customer, visible))
        .group_by(Customer.company_key)
        .having(func.count() > 1)
        .subquery()
    )
    first, other = aliased(Customer), aliased(Customer)
    return (
        select(first, other)
        .join(groups, first.id == groups.c.first_id)
        .join(other, and_(other.company_key == groups.c.key, other.id != first.id, *_may_see(other, visible)))
        .order_by(first.id, other.id)
    )


def likely_duplicates(
    session: Session, *, visible: Collection[str] | None, limit: int = 20, offset: int = 0
) -> list[DuplicatePair]:
    """Pairs of live companies sharing a normalised company name (scrm.leads.normalize's
    company_key: legal form, city, width and punctuation aside), both of them customers the user
    may see: owned by someone in ``visible`` (None: everyone) or in the pool. Oldest group first."""
    rows = session.execute(_pairs(visible).limit(limit).offset(offset)).all()
    return [DuplicatePair(a, b, f"same company {a.company_key}: {a.name} / {b.name}"[:256]) for a, b in rows]


def count_likely_duplicates(session: Session, *, visible: Collection[str] | None) -> int:
    """How many pairs ``likely_duplicates`` lists in all."""
    pairs = _pairs(visible).order_by(None).subquery()
    return int(session.scalar(select(func.count()).select_from(pairs)) or 0)
