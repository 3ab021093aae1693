"""Writes to people: the external contact as WeCom describes them, and who they are to us.

Linking order on add (DESIGN §4): the lead token carried in the channel state, then unionid, then
a normalised phone from the rep's remark mobiles (phonenumbers, CN default), contacts before
leads. A person already linked stays linked, so one person added by three reps is one lead and
one contact with three friendships. Nothing matches: a new lead, customer and contact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.channels.models import Channel
from scrm.customers import service as customers
from scrm.customers.models import Contact, Customer
from scrm.db import insert_ignore
from scrm.leads import service as leads
from scrm.leads.models import Lead
from scrm.leads.normalize import phone_e164
from scrm.people.models import ExternalContact
from scrm.timeline import service as timeline
from scrm.timeline.models import ActivityKind
from scrm.timeutil import utcnow


def normalise_all(phones: list[str]) -> list[str]:
    return list(dict.fromkeys(p for p in (phone_e164(raw) for raw in phones) if p))


def ensure_person(session: Session, external_userid: str) -> ExternalContact:
    """The person row for ``external_userid``, created bare if new (race-safe: two reps' adds of
    one customer may run at once)."""
    person = session.scalar(select(ExternalContact).where(ExternalContact.external_userid == external_userid))
    if person is None:
        now = utcnow()
        insert_ignore(
            session,
            ExternalContact,
            {
                "external_userid": external_userid,
                "name": "",
                "type": 1,
                "gender": 0,
                "avatar": "",
                "corp_name": "",
                "created_at": now,
                "updated_at": now,
            },
            ["external_userid"],
        )
        person = session.scalars(
            select(ExternalContact).where(ExternalContact.external_userid == external_userid)
        ).one()
    return person


def refresh(person: ExternalContact, data: dict[str, Any], read_at: datetime) -> None:
    """Refresh the person from WeCom's external_contact detail, read at ``read_at``; an older read
    than the one we hold changes nothing."""
    if person.detail_at is not None and person.detail_at > read_at:
        return
    person.name = str(data.get("name") or person.name or "")[:128]
    person.type = int(data.get("type") or person.type or 1)
    person.gender = int(data.get("gender") or 0)
    person.unionid = data.get("unionid") or person.unionid
    person.avatar = str(data.get("avatar") or "")[:512]
    person.corp_name = str(data.get("corp_name") or "")[:128]
    person.detail_at = read_at


@dataclass(frozen=True)
class Link:
    """How a person came to be linked, and to what."""

    how: str  # 'already', 'token', 'unionid', 'phone' or 'new'
    lead_id: int | None
    customer_id: int | None


_MATCH_COLUMNS = {
    "unionid": (Contact.unionid, Lead.unionid),
    "phone": (Contact.phone_e164, Lead.phone_e164),
}


def find_match(
    session: Session, *, unionid: str | None, phones: list[str], lead_token: str | None
) -> tuple[str, Lead | None, Contact | None] | None:
    """(how, lead, contact) for a known lead or contact that is this person, or None."""
    if lead_token:
        lead = session.scalar(select(Lead).where(Lead.token == lead_token))
        if lead is not None:
            return "token", lead, None
    keys: list[tuple[str, str]] = [("unionid", unionid)] if unionid else []
    keys += [("phone", phone) for phone in phones]
    for how, value in keys:
        contact_column, lead_column = _MATCH_COLUMNS[how]
        contact = session.scalar(select(Contact).where(contact_column == value).order_by(Contact.id).limit(1))
        if contact is not None:
            return how, None, contact
        lead = session.scalar(select(Lead).where(lead_column == value).order_by(Lead.id).limit(1))
        if lead is not None:
            return how, lead, None
    return None


def link(
    session: Session,
    person: ExternalContact,
    *,
    phones: list[str],
    channel: Channel | None,
    lead_token: str | None,
    userid: str,
    create_when_unmatched: bool = True,
) -> Link:
    """Link ``person`` to a lead or contact, creating lead, customer and contact when nothing
    matches. ``phones``: already normalised. Without WeCom's detail pass
    ``create_when_unmatched=False``: a new lead made on too little would duplicate one the
    detail's unionid or phone would have matched (Link.how is then 'awaiting')."""
    if person.contact_id is not None or person.lead_id is not None:
        return Link("already", person.lead_id, customer_id_of(person))
    match = find_match(session, unionid=person.unionid, phones=phones, lead_token=lead_token)
    if match is not None:
        how, lead, contact = match
        if contact is not None:
            return _link_contact(session, person, contact, how)
        if lead is not None:
            return _link_lead(session, person, lead, how)
    if not create_when_unmatched:
        return Link("awaiting", None, None)
    customer = customers.new_customer(
        session,
        name=person.name or person.external_userid,
        corp_name=person.corp_name,
        is_wecom_user=person.type == 2,
        owner_userid=userid,
    )
    lead = leads.new_lead_from_add(
        session,
        name=person.name,
        phone_e164=phones[0] if phones else None,
        unionid=person.unionid,
        channel=channel,
        owner_userid=userid,
        customer_id=customer.id,
    )
    contact = customers.ensure_contact(
        session, customer, name=person.name, phone_e164=lead.phone_e164, unionid=person.unionid
    )
    person.lead_id, person.contact_id = lead.id, contact.id
    timeline.record(
        session,
        ActivityKind.LEAD_CREATED,
        f"新线索 / new lead from {channel.name if channel else 'WeCom add'}",
        external_userid=person.external_userid,
        userid=userid,
        lead_id=lead.id,
        customer_id=customer.id,
    )
    return Link("new", lead.id, customer.id)


def link_to_customer(
    session: Session, person: ExternalContact, customer: Customer, *, how: str, userid: str | None = None
) -> Link:
    """A rep says this person is (a contact of) ``customer``: its contact with the same unionid,
    or a new one."""
    contact = customers.ensure_contact(
        session, customer, name=person.name or person.external_userid, unionid=person.unionid
    )
    return _link_contact(session, person, contact, how, userid=userid)


def link_to_lead(
    session: Session, person: ExternalContact, lead: Lead, *, how: str, userid: str | None = None
) -> Link:
    """A rep says this person is ``lead`` (the sidebar's link, or a lead created for them)."""
    return _link_lead(session, person, lead, how, userid=userid)


def _link_contact(
    session: Session, person: ExternalContact, contact: Contact, how: str, *, userid: str | None = None
) -> Link:
    before = person.contact_id
    person.contact_id = contact.id
    if not contact.unionid and person.unionid:
        contact.unionid = person.unionid
    timeline.record(
        session,
        ActivityKind.LINKED,
        f"关联客户联系人 #{contact.id} / linked to contact by {how}",
        external_userid=person.external_userid,
        userid=userid,
        customer_id=contact.customer_id,
        data={"by": how, "contact_id": contact.id, "previous_contact_id": before},
    )
    return Link(how, None, contact.customer_id)


def _link_lead(
    session: Session, person: ExternalContact, lead: Lead, how: str, *, userid: str | None = None
) -> Link:
    before = person.lead_id
    person.lead_id = lead.id
    leads.friend_found(lead, unionid=person.unionid)
    customer_id = _ensure_contact(session, person, lead)
    timeline.record(
        session,
        ActivityKind.LINKED,
        f"关联线索 #{lead.id} / linked to lead by {how}",
        external_userid=person.external_userid,
        userid=userid,
        lead_id=lead.id,
        customer_id=customer_id,
        data={"by": how, "previous_lead_id": before},
    )
    return Link(how, lead.id, customer_id)


def _ensure_contact(session: Session, person: ExternalContact, lead: Lead) -> int:
    """A friend is always visible as a customer with a contact, even while its lead is
    unqualified; a lead that already points at a customer keeps that customer."""
    if lead.customer_id is None:
        customer = customers.new_customer(
            session,
            name=person.name or lead.name,
            corp_name=person.corp_name,
            is_wecom_user=person.type == 2,
            owner_userid=lead.owner_userid,
        )
        lead.customer_id = customer.id
    else:
        customer = lead.customer or session.get_one(Customer, lead.customer_id)
    contact = customers.ensure_contact(
        session, customer, name=person.name, phone_e164=lead.phone_e164, unionid=person.unionid
    )
    person.contact_id = contact.id
    return customer.id


def customer_id_of(person: ExternalContact) -> int | None:
    if person.contact is not None:
        return person.contact.customer_id
    if person.lead is not None:
        return person.lead.customer_id
    return None
