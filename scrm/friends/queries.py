"""Reads of friendships for the console and the JSON API: friends with their channel, lead,
customer and tags, filtered to what the asking user may see."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from scrm.channels.models import Channel
from scrm.friends.models import OPEN_STATUSES, Friendship, FriendshipStatus
from scrm.people.models import ExternalContact
from scrm.people.service import customer_id_of
from scrm.tags.models import FriendshipTag


@dataclass(frozen=True)
class FriendFilter:
    userid: str | None = None
    external_userid: str | None = None
    state: str | None = None
    channel_id: int | None = None
    tag_id: str | None = None
    # Several tags (corp or local): friends with any of them, or with all of them.
    tag_ids: tuple[str, ...] = ()
    tag_match: str = "any"  # any | all
    status: str | None = None  # 'active' (active + half), 'removed', or a FriendshipStatus value
    limit: int = 100
    offset: int = 0
    # The reps whose friends the asker may see; None: everyone's (admins, managers of all).
    visible_userids: frozenset[str] | None = field(default=None)


def friends_query(f: FriendFilter) -> Select[Friendship]:
    stmt = select(Friendship).options(
        selectinload(Friendship.tags),
        selectinload(Friendship.channel),
        selectinload(Friendship.external_contact).selectinload(ExternalContact.contact),
        selectinload(Friendship.external_contact).selectinload(ExternalContact.lead),
    )
    stmt = filtered(stmt, f)
    return stmt.order_by(Friendship.added_at.desc(), Friendship.id.desc()).limit(f.limit).offset(f.offset)


def friendship_ids_query(f: FriendFilter) -> Select[int]:
    """The ids of every friendship the filter matches (no page): what a bulk action works on."""
    return filtered(select(Friendship.id), f).order_by(Friendship.id)


def count_friends(session: Session, f: FriendFilter) -> int:
    """How many friendships the filter matches, ignoring its page."""
    matching = filtered(select(Friendship.id), f).subquery()
    return session.scalar(select(func.count()).select_from(matching)) or 0


def filtered(stmt: Select[Any], f: FriendFilter) -> Select[Any]:
    """The filter's conditions on a select of friendships (no order, no page). Tag filters are
    IN-subqueries on friendship_tags served by its (tag_id, friendship_id) index: nothing is
    loaded into Python to filter."""
    if f.tag_ids:
        ids = sorted(set(f.tag_ids))
        if f.tag_match == "all":
            for tag_id in ids:
                holders = select(FriendshipTag.friendship_id).where(FriendshipTag.tag_id == tag_id)
                stmt = stmt.where(Friendship.id.in_(holders))
        else:
            stmt = stmt.where(
                Friendship.id.in_(select(FriendshipTag.friendship_id).where(FriendshipTag.tag_id.in_(ids)))
            )
    if f.visible_userids is not None:
        stmt = stmt.where(Friendship.userid.in_(sorted(f.visible_userids)))
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
        stmt = stmt.where(Friendship.status.in_(OPEN_STATUSES))
    elif f.status == "removed":
        stmt = stmt.where(Friendship.status.not_in(OPEN_STATUSES))
    elif f.status:
        stmt = stmt.where(Friendship.status == FriendshipStatus(f.status))
    return stmt


def list_friends(session: Session, f: FriendFilter) -> list[Friendship]:
    return list(session.scalars(friends_query(f)))


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
        "customer_id": customer_id_of(friendship.external_contact),
        "tags": sorted(link.tag_id for link in friendship.tags),
        "added_at": _iso(friendship.added_at),
        "removed_at": _iso(friendship.removed_at),
        "awaiting_detail": friendship.awaiting_detail_at is not None,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def add_counts(session: Session) -> dict[int, int]:
    """How many friendships each channel brought."""
    rows = session.execute(
        select(Friendship.channel_id, func.count())
        .where(Friendship.channel_id.is_not(None))
        .group_by(Friendship.channel_id)
    )
    return {channel_id: count for channel_id, count in rows if channel_id is not None}


def awaiting_detail(session: Session, limit: int = 50) -> list[tuple[str, str]]:
    """(external_userid, userid) of friends known from their event alone, longest-waiting first."""
    rows = session.execute(
        select(Friendship.external_userid, Friendship.userid)
        .where(Friendship.awaiting_detail_at.is_not(None), Friendship.status.in_(OPEN_STATUSES))
        .order_by(Friendship.awaiting_detail_at, Friendship.id)
        .limit(limit)
    )
    return [(external_userid, userid) for external_userid, userid in rows]
