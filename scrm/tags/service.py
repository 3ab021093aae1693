"""Writes to tags: the corp tag library mirrored from WeCom, and the tags on a friendship.

A tag event is handled by re-pulling the library (REFERENCE §2.3: simplest correct handler). A
friendship's tags are its ``tags`` collection of links, handed in by the friends domain.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.tags.models import FriendshipTag, Tag, TagGroup, TagSource
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


def set_wecom_tags(links: list[FriendshipTag], tag_ids: list[str], keep: Collection[str] = ()) -> None:
    """Make a friendship's tags match what WeCom reports, keeping the source of ones we added.
    ``keep``: tags WeCom cannot know (local tags), left as they are."""
    wanted = set(tag_ids)
    kept = set(keep)
    for link in list(links):
        if link.tag_id not in wanted and link.tag_id not in kept:
            links.remove(link)
    have = {link.tag_id for link in links}
    for tag_id in sorted(wanted - have):
        links.append(FriendshipTag(tag_id=tag_id, source=TagSource.WECOM))


def add_tags(links: list[FriendshipTag], tag_ids: list[str], source: TagSource) -> list[str]:
    """Add tags a friendship lacks; returns those it did not have."""
    have = {link.tag_id for link in links}
    added = [t for t in dict.fromkeys(tag_ids) if t not in have]
    for tag_id in added:
        links.append(FriendshipTag(tag_id=tag_id, source=source))
    return added
