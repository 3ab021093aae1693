"""Who a friend is: the external contact, and its link to a lead or a customer's contact.

Matching order on add (DESIGN §4): the lead token carried in the channel state, then unionid,
then a normalised phone from the rep's remark mobiles (phonenumbers, CN default). A person already
linked stays linked, so one person added by three reps is one lead/contact with three friendships.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


def find_external_contact(session: Session, external_userid: str) -> ExternalContact | None:
    return session.scalar(select(ExternalContact).where(ExternalContact.external_userid == external_userid))


def upsert_external_contact(session: Session, data: dict[str, Any]) -> ExternalContact:
    """Create or refresh the person from WeCom's external_contact detail."""
    return refresh_external_contact(session, data, find_external_contact(session, data["external_userid"]))


def refresh_external_contact(
    session: Session, data: dict[str, Any], person: ExternalContact | None
) -> ExternalContact:
    """Refresh ``person`` (the row the caller looked up; None when there is none yet, and it is
    created) from WeCom's detail. Nothing is flushed: ids come with the caller's flush."""
    if person is None:
        person = ExternalContact(external_userid=data["external_userid"])
        session.add(person)
    person.name = str(data.get("name") or person.name or "")[:128]
    person.type = int(data.get("type") or person.type or 1)
    person.gender = int(data.get("gender") or 0)
    person.unionid = data.get("unionid") or person.unionid
    person.avatar = str(data.get("avatar") or "")[:512]
    person.corp_name = str(data.get("corp_name") or "")[:128]
    return person


@dataclass(frozen=True)
class Link:
    """How a person came to be linked, and to what (objects: they may not have ids yet)."""

    how: str  # 'already', 'token', 'unionid', 'phone' or 'new'
    lead: Lead | None
    customer: Customer | None


def link_person(
    session: Session,
    person: ExternalContact,
    *,
    phones: list[str],
    channel: Channel | None,
    lead_token: str | None,
    userid: str,
) -> Link:
    """Link ``person`` to a lead or contact, creating a lead (and its customer) when nothing matches.

    Every lookup runs before anything is created, and new rows hang off each other through
    relationships, so the whole link is written by the caller's one flush.
    """
    if person.lead_id or person.contact_id or person.lead is not None or person.contact is not None:
        return Link("already", person.lead, customer_of(person))
    with session.no_autoflush:
        if lead_token:
            lead = session.scalar(select(Lead).where(Lead.token == lead_token))
            if lead is not None:
                _attach_lead(session, person, lead, "token")
                return Link("token", lead, ensure_customer(session, person))
        if person.unionid:
            contact = session.scalar(select(Contact).where(Contact.unionid == person.unionid).limit(1))
            if contact is not None:
                _attach_contact(session, person, contact, "unionid")
                return Link("unionid", None, contact.customer)
            lead = session.scalar(
                select(Lead).where(Lead.unionid == person.unionid).order_by(Lead.id).limit(1)
            )
            if lead is not None:
                _attach_lead(session, person, lead, "unionid")
                return Link("unionid", lead, ensure_customer(session, person))
        normalised = [p for p in (normalise_phone(raw) for raw in phones) if p]
        for phone in normalised:
            contact = session.scalar(select(Contact).where(Contact.phone_e164 == phone).limit(1))
            if contact is not None:
                _attach_contact(session, person, contact, "phone")
                return Link("phone", None, contact.customer)
            lead = session.scalar(select(Lead).where(Lead.phone_e164 == phone).order_by(Lead.id).limit(1))
            if lead is not None:
                _attach_lead(session, person, lead, "phone")
                return Link("phone", lead, ensure_customer(session, person))
    lead = Lead(
        name=person.name,
        phone_e164=normalised[0] if normalised else None,
        unionid=person.unionid,
        source="channel" if channel else "wecom",
        channel=channel,
        owner_userid=userid,
        status=LeadStatus.CONTACTED,
    )
    session.add(lead)
    person.lead = lead
    timeline.record(
        session,
        ActivityKind.LEAD_CREATED,
        f"新线索 / new lead from {channel.name if channel else 'WeCom add'}",
        external_userid=person.external_userid,
        userid=userid,
        lead=lead,
    )
    return Link("new", lead, ensure_customer(session, person))


def _attach_lead(session: Session, person: ExternalContact, lead: Lead, how: str) -> None:
    person.lead = lead
    if lead.status is LeadStatus.NEW:
        lead.status = LeadStatus.CONTACTED
    if not lead.unionid and person.unionid:
        lead.unionid = person.unionid
    timeline.record(
        session,
        ActivityKind.LINKED,
        f"关联线索 #{lead.id} / linked to lead by {how}",
        external_userid=person.external_userid,
        lead=lead,
        data={"by": how},
    )


def _attach_contact(session: Session, person: ExternalContact, contact: Contact, how: str) -> None:
    person.contact = contact
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
    if person.contact is not None:
        return person.contact.customer
    lead = person.lead
    customer = lead.customer if lead is not None else None
    if customer is None:
        is_company = person.type == 2 and bool(person.corp_name)
        customer = Customer(
            kind=CustomerKind.COMPANY if is_company else CustomerKind.PERSON,
            name=(person.corp_name if is_company else person.name) or person.external_userid,
            owner_userid=lead.owner_userid if lead else None,
        )
        session.add(customer)
        if lead is not None:
            lead.customer = customer
    contact = Contact(
        customer=customer,
        name=person.name,
        phone_e164=lead.phone_e164 if lead else None,
        unionid=person.unionid,
    )
    session.add(contact)
    person.contact = contact
    return customer


def customer_of(person: ExternalContact) -> Customer | None:
    if person.contact is not None:
        return person.contact.customer
    if person.lead is not None:
        return person.lead.customer
    return None
