"""Writes to customers: a customer for a new person, and the contacts it holds."""

from __future__ import annotations

from sqlalchemy.orm import Session

from scrm.customers.models import Contact, Customer, CustomerKind


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


def add_contact(
    session: Session, customer: Customer, *, name: str, phone_e164: str | None, unionid: str | None
) -> Contact:
    contact = Contact(customer_id=customer.id, name=name[:128], phone_e164=phone_e164, unionid=unionid)
    session.add(contact)
    session.flush()
    return contact
