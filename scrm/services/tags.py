"""The corp tag library mirrored from WeCom, and the tags on each friendship.

Tags are per (rep, customer) pair in WeCom (REFERENCE §3.3), so they hang off the friendship.
A tag event is handled by re-pulling the library (REFERENCE §2.3: simplest correct handler).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from scrm.models import Friendship, FriendshipTag, Tag, TagGroup, TagSource
from scrm.timeutil import utcnow


def sync_library(session: Session, tag_groups: list[dict[str, Any]]) -> tuple[int, int]:
    """Upsert groups and tags from get_corp_tag_list; anything WeCom no longer lists is deleted."""
    now = utcnow()
    seen_groups: set[str] = set()
    seen_tags: set[str] = set()
    for g in tag_groups:
        group = session.scalar(select(TagGroup).where(TagGroup.group_id == g["group_id"]))
        if group is None:
            group = TagGroup(group_id=g["group_id"])
            session.add(group)
        group.name = str(g.get("group_name", ""))[:64]
        group.order = int(g.get("order") or 0)
        group.is_deleted = bool(g.get("deleted", False))
        group.synced_at = now
        session.flush()
        seen_groups.add(group.group_id)
        for t in g.get("tag", []):
            tag = session.scalar(select(Tag).where(Tag.tag_id == t["id"]))
            if tag is None:
                tag = Tag(tag_id=t["id"])
                session.add(tag)
            tag.tag_group_id = group.id
            tag.name = str(t.get("name", ""))[:64]
            tag.order = int(t.get("order") or 0)
            tag.is_deleted = bool(t.get("deleted", False))
            tag.synced_at = now
            seen_tags.add(tag.tag_id)
    for group in session.scalars(select(TagGroup).where(TagGroup.is_deleted.is_(False))):
        if group.group_id not in seen_groups:
            group.is_deleted = True
    for tag in session.scalars(select(Tag).where(Tag.is_deleted.is_(False))):
        if tag.tag_id not in seen_tags:
            tag.is_deleted = True
    session.flush()
    return len(seen_groups), len(seen_tags)


def set_wecom_tags(session: Session, friendship: Friendship, tag_ids: list[str]) -> None:
    """Make the friendship's tags match what WeCom reports, keeping the source of ones we added."""
    wanted = set(tag_ids)
    for link in list(friendship.tags):
        if link.tag_id not in wanted:
            friendship.tags.remove(link)
    have = {link.tag_id for link in friendship.tags}
    for tag_id in wanted - have:
        friendship.tags.append(FriendshipTag(tag_id=tag_id, source=TagSource.WECOM))


def add_tags(session: Session, friendship: Friendship, tag_ids: list[str], source: TagSource) -> list[str]:
    have = {link.tag_id for link in friendship.tags}
    added = [t for t in tag_ids if t not in have]
    for tag_id in added:
        friendship.tags.append(FriendshipTag(tag_id=tag_id, source=source))
    return added


def insert_links(session: Session, friendship_id: int, links: list[tuple[str, TagSource]]) -> None:
    """Tag a friendship that was just inserted with Core (no ORM collection to append to)."""
    if links:
        now = utcnow()
        session.connection().execute(
            insert(cast(Table, FriendshipTag.__table__)),
            [{"friendship_id": friendship_id, "tag_id": t, "source": s, "created_at": now} for t, s in links],
        )


def names(session: Session, tag_ids: list[str]) -> dict[str, str]:
    if not tag_ids:
        return {}
    rows = session.execute(select(Tag.tag_id, Tag.name).where(Tag.tag_id.in_(tag_ids)))
    return {tag_id: name for tag_id, name in rows}
