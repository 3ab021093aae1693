"""Who a friend is: the external contact, and its link to a lead or a customer's contact.

Matching order on add (DESIGN §4): the lead token carried in the channel state, then unionid,
then a normalised phone from the rep's remark mobiles (phonenumbers, CN default). A person already
linked stays linked, so one person added by three reps is one lead/contact with three friendships.
"""

from __future__ import annotations

import logging
from typing import Any

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.models import (
    ActivityKind,
    Channel,
    Contact,
    Customer,
    CustomerKind,
    ExternalContact,
    Lead,
    LeadStatus,
)
from scrm.services import timeline

log = logging.getLogger(__name__)


def normalise_phone(raw: str, region: str = "CN") -> str | None:
    """E.164 for a valid number, else None. '138-0013-8000' and '+86 13800138000' agree."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str | None) -> str:
    """For logs and lists: +86138****8000."""
    if not e164:
        return ""
    return e164[:6] + "****" + e164[-4:] if len(e164) > 10 else "****"


def upsert_external_contact(session: Session, data: dict[str, Any]) -> ExternalContact:
    external_userid = data["external_userid"]
    person = session.scalar(select(ExternalContact).where(ExternalContact.external_userid == external_userid))
    if person is None:
        person = ExternalContact(external_userid=external_userid)
        session.add(person)
    person.name = str(data.get("name") or person.name or "")[:128]
    person.type = int(data.get("type") or person.type or 1)
    person.gender = int(data.get("gender") or 0)
    person.unionid = data.get("unionid") or person.unionid
    person.avatar = str(data.get("avatar") or "")[:512]
    person.corp_name = str(data.get("corp_name") or "")[:128]
    session.flush()
    return person


def link_person(
    session: Session,
    person: ExternalContact,
    *,
    phones: list[str],
    channel: Channel | None,
    lead_token: str | None,
    userid: str,
) -> str:
    """Link ``person`` to a lead or contact; returns how ('already', 'token', 'unionid', 'phone', 'new')."""
    if person.lead_id or person.contact_id:
        return "already"
    if lead_token:
        lead = session.scalar(select(Lead).where(Lead.token == lead_token))
        if lead is not None:
            _attach_lead(session, person, lead, "token")
            ensure_customer(session, person)
            return "token"
    if person.unionid:
        contact = session.scalar(select(Contact).where(Contact.unionid == person.unionid).limit(1))
        if contact is not None:
            _attach_contact(session, person, contact, "unionid")
            return "unionid"
        lead = session.scalar(select(Lead).where(Lead.unionid == person.unionid).order_by(Lead.id).limit(1))
        if lead is not None:
            _attach_lead(session, person, lead, "unionid")
            ensure_customer(session, person)
            return "unionid"
    normalised = [p for p in (normalise_phone(raw) for raw in phones) if p]
    for phone in normalised:
        contact = session.scalar(select(Contact).where(Contact.phone_e164 == phone).limit(1))
        if contact is not None:
            _attach_contact(session, person, contact, "phone")
            return "phone"
        lead = session.scalar(select(Lead).where(Lead.phone_e164 == phone).order_by(Lead.id).limit(1))
        if lead is not None:
            _attach_lead(session, person, lead, "phone")
            ensure_customer(session, person)
            return "phone"
    lead = Lead(
        name=person.name,
        phone_e164=normalised[0] if normalised else None,
        unionid=person.unionid,
        source="channel" if channel else "wecom",
        channel_id=channel.id if channel else None,
        owner_userid=userid,
        status=LeadStatus.CONTACTED,
    )
    session.add(lead)
    session.flush()
    person.lead_id = lead.id
    timeline.record(
        session,
        ActivityKind.LEAD_CREATED,
        f"新线索 / new lead from {channel.name if channel else 'WeCom add'}",
        external_userid=person.external_userid,
        userid=userid,
        lead_id=lead.id,
    )
    ensure_customer(session, person)
    return "new"


def _attach_lead(session: Session, person: ExternalContact, lead: Lead, how: str) -> None:
    person.lead_id = lead.id
    if lead.status is LeadStatus.NEW:
        lead.status = LeadStatus.CONTACTED
    if not lead.unionid and person.unionid:
        lead.unionid = person.unionid
    timeline.record(
        session,
        ActivityKind.LINKED,
        f"关联线索 #{lead.id} / linked to lead by {how}",
        external_userid=person.external_userid,
        lead_id=lead.id,
        data={"by": how},
    )


def _attach_contact(session: Session, person: ExternalContact, contact: Contact, how: str) -> None:
    person.contact_id = contact.id
    if not contact.unionid and person.unionid:
        contact.unionid = person.unionid
    timeline.record(
        session,
        ActivityKind.LINKED,
        f"关联客户联系人 #{contact.id} / linked to contact by {how}",
        external_userid=person.external_userid,
        customer_id=contact.customer_id,
        data={"by": how, "contact_id": contact.id},
    )


def ensure_customer(session: Session, person: ExternalContact) -> Customer:
    """Give the person a customer record: a company for WeCom users of another corp, else a person.

    A friend is always visible as a customer with a contact, even while its lead is unqualified;
    a lead that already points at a customer (converted or imported) keeps that customer.
    """
    lead = session.get(Lead, person.lead_id) if person.lead_id else None
    if person.contact_id:
        return session.get_one(Contact, person.contact_id).customer
    customer = session.get(Customer, lead.customer_id) if lead and lead.customer_id else None
    if customer is None:
        is_company = person.type == 2 and bool(person.corp_name)
        customer = Customer(
            kind=CustomerKind.COMPANY if is_company else CustomerKind.PERSON,
            name=(person.corp_name if is_company else person.name) or person.external_userid,
            owner_userid=lead.owner_userid if lead else None,
        )
        session.add(customer)
        session.flush()
        if lead is not None:
            lead.customer_id = customer.id
    contact = Contact(
        customer_id=customer.id,
        name=person.name,
        phone_e164=lead.phone_e164 if lead else None,
        unionid=person.unionid,
    )
    session.add(contact)
    session.flush()
    person.contact_id = contact.id
    return customer


def customer_id_of(session: Session, person: ExternalContact) -> int | None:
    if person.contact_id:
        return session.get_one(Contact, person.contact_id).customer_id
    if person.lead_id:
        return session.get_one(Lead, person.lead_id).customer_id
    return None
