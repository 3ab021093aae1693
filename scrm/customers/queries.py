"""Reads of customers: one live customer (following merges), a customer's contacts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.customers.models import Contact, Customer


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
