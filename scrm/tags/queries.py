"""Reads of the tag library."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from scrm.tags.models import FriendshipTagRemoval, Tag, TagGroup


def names(session: Session, tag_ids: list[str]) -> dict[str, str]:
    if not tag_ids:
        return {}
    rows = session.execute(select(Tag.tag_id, Tag.name).where(Tag.tag_id.in_(tag_ids)))
    return {tag_id: name for tag_id, name in rows}


def library(session: Session) -> list[TagGroup]:
    """Live tag groups with their tags, in WeCom's order."""
    return list(
        session.scalars(
            select(TagGroup)
            .where(TagGroup.is_deleted.is_(False))
            .options(selectinload(TagGroup.tags))
            .order_by(TagGroup.order, TagGroup.id)
        )
    )


def removed_by_hand(
    session: Session, friendship_ids: Iterable[int], tag_ids: Iterable[str]
) -> set[tuple[int, str]]:
    """Which of these (friendship, tag) pairs a person removed by hand — in the console, the
    sidebar, the API or the WeCom client (edit_external_contact) — and has not added back since.

    Auto-tagging rules call this before applying tags: a pair in the answer must not be tagged
    again by a rule (a manual removal wins over a rule). Adding the tag again by hand clears the
    removal, so the pair leaves the answer. Returns ``{(friendship_id, tag_id), …}``, a subset
    of friendship_ids × tag_ids; empty input answers an empty set without a query. Reads in
    chunks, so any number of friendships can be asked about at once.
    """
    ids = sorted(set(friendship_ids))
    tags = sorted(set(tag_ids))
    if not ids or not tags:
        return set()
    found: set[tuple[int, str]] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = session.execute(
            select(FriendshipTagRemoval.friendship_id, FriendshipTagRemoval.tag_id).where(
                FriendshipTagRemoval.friendship_id.in_(chunk), FriendshipTagRemoval.tag_id.in_(tags)
            )
        )
        found.update((friendship_id, tag_id) for friendship_id, tag_id in rows)
    return found


_CHUNK = 500
