"""Read models for the console and the JSON API: friends with their channel, lead, customer, tags."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, selectinload

from scrm.models import Channel, Contact, ExternalContact, Friendship, FriendshipStatus, FriendshipTag, Lead


@dataclass(frozen=True)
class FriendFilter:
    userid: str | None = None
    external_userid: str | None = None
    state: str | None = None
    channel_id: int | None = None
    tag_id: str | None = None
    status: str | None = None  # 'active' (active + half), 'removed', or a FriendshipStatus value
    limit: int = 100
    offset: int = 0


def friends_query(f: FriendFilter) -> Select[Friendship]:
    stmt = select(Friendship).options(
        selectinload(Friendship.tags),
        selectinload(Friendship.channel),
        selectinload(Friendship.external_contact).selectinload(ExternalContact.contact),
        selectinload(Friendship.external_contact).selectinload(ExternalContact.lead),
    )
    if f.userid:
        stmt = stmt.where(Friendship.userid == f.userid)
    if f.external_userid:
        stmt = stmt.where(Friendship.external_userid == f.external_userid)
    if f.state:
        stmt = stmt.where(Friendship.state == f.state)
    if f.channel_id:
        stmt = stmt.where(Friendship.channel_id == f.channel_id)
    if f.tag_id:
        stmt = stmt.where(
            Friendship.id.in_(select(FriendshipTag.friendship_id).where(FriendshipTag.tag_id == f.tag_id))
        )
    if f.status == "active":
        stmt = stmt.where(Friendship.status.in_((FriendshipStatus.ACTIVE, FriendshipStatus.HALF)))
    elif f.status == "removed":
        stmt = stmt.where(Friendship.status.not_in((FriendshipStatus.ACTIVE, FriendshipStatus.HALF)))
    elif f.status:
        stmt = stmt.where(Friendship.status == FriendshipStatus(f.status))
    return stmt.order_by(Friendship.added_at.desc(), Friendship.id.desc()).limit(f.limit).offset(f.offset)


def list_friends(session: Session, f: FriendFilter) -> list[Friendship]:
    return list(session.scalars(friends_query(f)))


def customer_id(friendship: Friendship) -> int | None:
    person = friendship.external_contact
    contact: Contact | None = person.contact
    if contact is not None:
        return contact.customer_id
    lead: Lead | None = person.lead
    return lead.customer_id if lead is not None else None


def friend_json(friendship: Friendship) -> dict[str, Any]:
    channel: Channel | None = friendship.channel
    return {
        "external_userid": friendship.external_userid,
        "userid": friendship.userid,
        "name": friendship.external_contact.name,
        "status": friendship.status.value,
        "state": friendship.state,
        "channel": {"id": channel.id, "name": channel.name} if channel else None,
        "lead_id": friendship.external_contact.lead_id,
        "customer_id": customer_id(friendship),
        "tags": sorted(link.tag_id for link in friendship.tags),
        "added_at": _iso(friendship.added_at),
        "removed_at": _iso(friendship.removed_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
