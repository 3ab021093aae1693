"""Reads of channels: the list (newest first), one channel, a channel's names."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.channels.models import Channel


def all_channels(session: Session, *, include_disabled: bool = True) -> list[Channel]:
    stmt = select(Channel).order_by(Channel.created_at.desc(), Channel.id.desc())
    if not include_disabled:
        stmt = stmt.where(Channel.is_disabled.is_(False))
    return list(session.scalars(stmt))


def by_id(session: Session, channel_id: int) -> Channel | None:
    return session.get(Channel, channel_id)


def names(session: Session, channel_ids: set[int] | list[int]) -> dict[int, str]:
    wanted = set(channel_ids)
    if not wanted:
        return {}
    rows = session.execute(select(Channel.id, Channel.name).where(Channel.id.in_(wanted)))
    return {channel_id: name for channel_id, name in rows}
