"""Writes to tags: the corp tag library mirrored from WeCom, and the tags on a friendship.

A tag event is handled by re-pulling the library (REFERENCE §2.3: simplest correct handler). A
friendship's tags are its ``tags`` collection of links, handed in by the friends domain.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from scrm.tags import library
from scrm.tags.models import FriendshipTag, TagSource


def sync_library(
    session: Session, tag_groups: list[dict[str, Any]], read_at: datetime | None = None
) -> tuple[int, int]:
    """Make the library equal get_corp_tag_list's answer, keeping local tags and scrm's changes
    still on their way to WeCom (scrm.tags.library.sync_library)."""
    return library.sync_library(session, tag_groups, read_at)


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
