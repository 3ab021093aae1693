"""Reads of the chat archive: a friendship's thread, a rep's latest 1:1 contact."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.chat.models import ChatAction, ChatDirection, ChatMessage

ONE_TO_ONE = (ChatDirection.CUSTOMER, ChatDirection.REP)


def last_chatted_external_userid(session: Session, userid: str) -> str | None:
    """The external contact ``userid`` (a rep) exchanged a 1:1 message with most recently, either
    way round; recall notices do not count. None when the rep has no archived 1:1 chat."""
    return session.scalar(
        select(ChatMessage.external_userid)
        .where(
            ChatMessage.userid == userid,
            ChatMessage.direction.in_(ONE_TO_ONE),
            ChatMessage.action == ChatAction.SEND,
        )
        .order_by(ChatMessage.sent_at.desc(), ChatMessage.id.desc())
        .limit(1)
    )


def thread(session: Session, friendship_id: int, *, limit: int = 50) -> list[ChatMessage]:
    """A friendship's latest messages, oldest first (as a chat window shows them)."""
    rows = session.scalars(
        select(ChatMessage)
        .where(ChatMessage.friendship_id == friendship_id)
        .order_by(ChatMessage.sent_at.desc(), ChatMessage.id.desc())
        .limit(limit)
    ).all()
    return list(reversed(rows))
