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

from scrm.db import insert_returning_id
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
    values = person_values(data, person)
    if person is None:
        person = ExternalContact(external_userid=values["external_userid"])
        session.add(person)
    for key, value in values.items():
        setattr(person, key, value)
    return person


@dataclass(frozen=True)
class Link:
    """How a person came to be linked, and to what (objects: they may not have ids yet)."""

    how: str  # 'already', 'token', 'unionid', 'phone' or 'new'
    lead: Lead | None
    customer: Customer | None


@dataclass(frozen=True)
class Match:
    """An existing lead or contact a new friend turned out to be."""

    how: str  # 'token', 'unionid' or 'phone'
    lead: Lead | None = None
    contact: Contact | None = None


def normalise_all(phones: list[str]) -> list[str]:
    return [p for p in (normalise_phone(raw) for raw in phones) if p]


# What each kind of match compares, on a contact and on a lead.
_MATCH_COLUMNS = {
    "unionid": (Contact.unionid, Lead.unionid),
    "phone": (Contact.phone_e164, Lead.phone_e164),
}


def find_match(
    session: Session, *, unionid: str | None, phones: list[str], lead_token: str | None
) -> Match | None:
    """Look for the person among known leads and contacts: lead token, then unionid, then each
    normalised phone (contacts before leads). Reads only; nothing is flushed."""
    with session.no_autoflush:
        if lead_token:
            lead = session.scalar(select(Lead).where(Lead.token == lead_token))
            if lead is not None:
                return Match("token", lead=lead)
        keys: list[tuple[str, str]] = [("unionid", unionid)] if unionid else []
        keys += [("phone", phone) for phone in phones]
        for how, value in keys:
            contact_column, lead_column = _MATCH_COLUMNS[how]
            contact = session.scalar(select(Contact).where(contact_column == value).limit(1))
            if contact is not None:
                return Match(how, contact=contact)
            lead = session.scalar(select(Lead).where(lead_column == value).order_by(Lead.id).limit(1))
            if lead is not None:
                return Match(how, lead=lead)
    return None


def link_person(
    session: Session,
    person: ExternalContact,
    *,
    phones: list[str],
    channel: Channel | None,
    lead_token: str | None,
    userid: str,
) -> Link:
    """Link ``person`` to a lead or contact, creating a lead (and its customer) when nothing
    matches. ``phones``: already normalised (``normalise_all``)."""
    if person.lead_id or person.contact_id or person.lead is not None or person.contact is not None:
        return Link("already", person.lead, customer_of(person))
    match = find_match(session, unionid=person.unionid, phones=phones, lead_token=lead_token)
    return apply_match(session, person, match, phones=phones, channel=channel, userid=userid)


def apply_match(
    session: Session,
    person: ExternalContact,
    match: Match | None,
    *,
    phones: list[str],
    channel: Channel | None,
    userid: str,
) -> Link:
    """Link ``person`` to what ``find_match`` found, or to a new lead from ``channel``. New rows
    hang off each other through relationships, so the caller's one flush writes them all."""
    if match is not None and match.contact is not None:
        _attach_contact(session, person, match.contact, match.how)
        return Link(match.how, None, match.contact.customer)
    if match is not None and match.lead is not None:
        _attach_lead(session, person, match.lead, match.how)
        return Link(match.how, match.lead, ensure_customer(session, person))
    lead = Lead(**_new_lead_values(person.name, person.unionid, phones, channel, userid), channel=channel)
    session.add(lead)
    person.lead = lead
    timeline.record(
        session,
        ActivityKind.LEAD_CREATED,
        lead_created_summary(channel),
        external_userid=person.external_userid,
        userid=userid,
        lead=lead,
    )
    return Link("new", lead, ensure_customer(session, person))


def lead_created_summary(channel: Channel | None) -> str:
    return f"新线索 / new lead from {channel.name if channel else 'WeCom add'}"


def _new_lead_values(
    name: str, unionid: str | None, phones: list[str], channel: Channel | None, userid: str
) -> dict[str, Any]:
    return {
        "name": name,
        "phone_e164": phones[0] if phones else None,
        "unionid": unionid,
        "source": "channel" if channel else "wecom",
        "owner_userid": userid,
        "status": LeadStatus.CONTACTED,
    }


def _new_customer_values(person: dict[str, Any], owner_userid: str | None) -> dict[str, Any]:
    is_company = person["type"] == 2 and bool(person["corp_name"])
    return {
        "kind": CustomerKind.COMPANY if is_company else CustomerKind.PERSON,
        "name": (person["corp_name"] if is_company else person["name"]) or person["external_userid"],
        "owner_userid": owner_userid,
    }


def person_values(data: dict[str, Any], person: ExternalContact | None = None) -> dict[str, Any]:
    """The external_contacts columns WeCom's detail sets (``person``: the values it had)."""
    return {
        "external_userid": data["external_userid"],
        "name": str(data.get("name") or (person.name if person else "") or "")[:128],
        "type": int(data.get("type") or (person.type if person else 0) or 1),
        "gender": int(data.get("gender") or 0),
        "unionid": data.get("unionid") or (person.unionid if person else None),
        "avatar": str(data.get("avatar") or "")[:512],
        "corp_name": str(data.get("corp_name") or "")[:128],
    }


@dataclass(frozen=True)
class NewPerson:
    external_contact_id: int
    lead_id: int
    customer_id: int


def insert_new_person(
    session: Session, data: dict[str, Any], *, phones: list[str], channel: Channel | None, userid: str
) -> tuple[NewPerson, dict[str, Any]]:
    """A friend nobody knew (``find_match`` found nothing): customer, lead, contact and person
    written with four Core INSERTs, the cheapest shape of the commonest event scrm sees. Returns
    the new ids and the lead-created timeline row for the caller to insert with its own.

    The rows are the ones ``apply_match`` + ``ensure_customer`` would build through the ORM.
    """
    values = person_values(data)
    customer_id = insert_returning_id(session, Customer, _new_customer_values(values, userid))
    lead = _new_lead_values(values["name"], values["unionid"], phones, channel, userid)
    lead_id = insert_returning_id(
        session, Lead, {**lead, "channel_id": channel.id if channel else None, "customer_id": customer_id}
    )
    contact_id = insert_returning_id(
        session,
        Contact,
        {
            "customer_id": customer_id,
            "name": values["name"],
            "phone_e164": lead["phone_e164"],
            "unionid": values["unionid"],
        },
    )
    person_id = insert_returning_id(
        session, ExternalContact, {**values, "lead_id": lead_id, "contact_id": contact_id}
    )
    activity = timeline.row(
        ActivityKind.LEAD_CREATED,
        lead_created_summary(channel),
        external_userid=values["external_userid"],
        userid=userid,
        lead_id=lead_id,
    )
    return NewPerson(person_id, lead_id, customer_id), activity


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
        known = {
            "external_userid": person.external_userid,
            "name": person.name,
            "type": person.type,
            "corp_name": person.corp_name,
        }
        customer = Customer(**_new_customer_values(known, lead.owner_userid if lead else None))
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
