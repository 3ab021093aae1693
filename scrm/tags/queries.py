"""Reads of the tag library."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from scrm.tags.models import LOCAL_PREFIX, PROVISIONAL_PREFIX, FriendshipTagRemoval, Tag, TagGroup


def names(session: Session, tag_ids: list[str]) -> dict[str, str]:
    if not tag_ids:
        return {}
    rows = session.execute(select(Tag.tag_id, Tag.name).where(Tag.tag_id.in_(tag_ids)))
    return {tag_id: name for tag_id, name in rows}


def library(session: Session) -> list[TagGroup]:
    """Live tag groups (corp and local) with their tags, in WeCom's order: a larger ``order``
    comes first (doc 92117); ``live_tags`` gives a group's live tags in that order."""
    return list(
        session.scalars(
            select(TagGroup)
            .where(TagGroup.is_deleted.is_(False))
            .options(selectinload(TagGroup.tags))
            .order_by(TagGroup.order.desc(), TagGroup.id)
        )
    )


def live_tags(group: TagGroup) -> list[Tag]:
    return sorted((t for t in group.tags if not t.is_deleted), key=lambda t: (-t.order, t.id))


TagKind = Literal["corp", "local", "pending", "deleted"]


def kinds_of(session: Session, tag_ids: Iterable[str]) -> dict[str, TagKind]:
    """What each known tag id is, for deciding what may go to WeCom (mark_tag takes corp tags only):

    - ``"corp"``: a live corp tag WeCom knows by this id: friends can be tagged with it, and
      mark_tag sends it;
    - ``"local"``: a live local tag (``local-…`` id): lives only in scrm, never sent to WeCom;
    - ``"pending"``: created in scrm, WeCom has not confirmed it yet (add_corp_tag queued, or
      failed): its ``pending-…`` id is provisional, so it cannot be put on a friend yet;
    - ``"deleted"``: deleted in WeCom or scrm (or its del_corp_tag is queued), or its group is.

    Ids not in the library are left out of the answer (a caller may pull the library and ask
    again)."""
    ids = sorted(set(tag_ids))
    if not ids:
        return {}
    out: dict[str, TagKind] = {}
    rows = session.execute(
        select(Tag.tag_id, Tag.is_deleted, Tag.is_local, TagGroup.is_deleted)
        .join(TagGroup, Tag.tag_group_id == TagGroup.id, isouter=True)
        .where(Tag.tag_id.in_(ids))
    )
    for tag_id, is_deleted, is_local, group_deleted in rows:
        if is_deleted or group_deleted:
            out[tag_id] = "deleted"
        elif is_local or tag_id.startswith(LOCAL_PREFIX):
            out[tag_id] = "local"
        elif tag_id.startswith(PROVISIONAL_PREFIX):
            out[tag_id] = "pending"
        else:
            out[tag_id] = "corp"
    return out


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


def corp_tag_ids(session: Session, tag_ids: list[str]) -> list[str]:
    """The ids among ``tag_ids`` that are live corp tags (``kinds_of`` says "corp"), in order."""
    kinds = kinds_of(session, tag_ids)
    return [t for t in dict.fromkeys(tag_ids) if kinds.get(t) == "corp"]
