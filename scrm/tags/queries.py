"""Reads of the tag library."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from scrm.tags.models import Tag, TagGroup


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
