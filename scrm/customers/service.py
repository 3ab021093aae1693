"""Writes to customers: a customer for a new person or a converted lead, and the contacts it
holds (found again by phone, email or unionid rather than added twice)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from scrm.customers.models import Contact, Customer, CustomerKind
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
