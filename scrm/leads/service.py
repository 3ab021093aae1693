"""Writes to leads: a lead for a new friend, and a lead that turned out to be a friend."""

from __future__ import annotations

from sqlalchemy.orm import Session

from scrm.channels.models import Channel
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
