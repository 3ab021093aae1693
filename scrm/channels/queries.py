"""Reads of channels: the list with how many friends each brought."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.channels.models import Channel


def all_channels(session: Session, *, include_disabled: bool = True) -> list[Channel]:
    stmt = select(Channel).order_by(Channel.created_at.desc(), Channel.id.desc())
    if not include_disabled:
        stmt = stmt.where(Channel.is_disabled.is_(False))
    return list(session.scalars(stmt))


def by_state(session: Session, state: str) -> Channel | None:
    return session.scalar(select(Channel).where(Channel.state == state))
