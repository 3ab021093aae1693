"""Writes to leads: a lead for a new friend, a lead that turned out to be a friend, building a
lead from validated input and enriching a known lead from a duplicate."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from scrm.channels.models import Channel
from scrm.leads.fields import LeadInput
from scrm.leads.models import Lead, LeadStatus


def new_lead_from_add(
    session: Session,
    *,
    name: str,
    phone_e164: str | None,
    unionid: str | None,
    channel: Channel | None,
    owner_userid: str,
    customer_id: int | None,
) -> Lead:
    """A friend nobody knew becomes a lead owned by the rep they added, already contacted."""
    lead = Lead(
        name=name[:128],
        phone_e164=phone_e164,
        unionid=unionid,
        source="channel" if channel else "wecom",
        channel_id=channel.id if channel else None,
        owner_userid=owner_userid,
        status=LeadStatus.CONTACTED,
        customer_id=customer_id,
    )
    session.add(lead)
    session.flush()
    return lead


def friend_found(lead: Lead, *, unionid: str | None) -> None:
    """A known lead became a friend: it has been contacted, and now has a WeChat identity."""
    if lead.status is LeadStatus.NEW:
        lead.status = LeadStatus.CONTACTED
    if not lead.unionid and unionid:
        lead.unionid = unionid


def build_lead(data: LeadInput, **extra: Any) -> Lead:
    """A Lead row from validated input (not added to a session): what capture and bulk imports
    both insert. ``extra`` sets further columns (import_id, owner_userid, status, …)."""
    values: dict[str, Any] = {
        "name": data.name,
        "phone_e164": data.phone_e164,
        "email": data.email,
        "unionid": data.unionid,
        "company": data.company,
        "company_key": data.company_key,
        "title": data.title,
        "region": data.region,
        "industry": data.industry,
        "source": data.source,
        "external_ref": data.external_ref,
        "owner_userid": data.owner_userid,
        "notes": data.notes,
        "utm": dict(data.utm),
        "channel_id": data.channel_id,
    }
    values.update(extra)
    return Lead(**values)


# Fields a merge or an enriching duplicate may fill when the surviving lead has them blank.
ENRICHABLE = (
    "name",
    "phone_e164",
    "email",
    "unionid",
    "company",
    "title",
    "region",
    "industry",
    "external_ref",
)


def enrich(lead: Lead, data: LeadInput) -> list[str]:
    """Fill ``lead``'s blank fields from ``data`` (the richest fields survive: nothing known is
    overwritten), append new notes, keep UTM keys not yet known. Returns the fields changed."""
    changed: list[str] = []
    for name in ENRICHABLE:
        value = getattr(data, name)
        if value and not getattr(lead, name):
            setattr(lead, name, value)
            changed.append(name)
    if "company" in changed:
        lead.company_key = data.company_key
    if data.notes and data.notes not in (lead.notes or ""):
        lead.notes = (lead.notes + "\n" + data.notes).strip() if lead.notes else data.notes
        changed.append("notes")
    missing_utm = {k: v for k, v in data.utm.items() if k not in (lead.utm or {})}
    if missing_utm:
        lead.utm = {**(lead.utm or {}), **missing_utm}
        changed.append("utm")
    return changed
