"""Reads of the chat archive: a friendship's thread, a rep's latest 1:1 contact."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from scrm.chat.models import ChatAction, ChatDirection, ChatMessage
from scrm.chat.signals import ChatSignal
from scrm.friends import queries as friend_queries
from scrm.friends.models import Friendship
from scrm.timeutil import utcnow

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


# --- friends with their chat signals (silent customers, waiting for our reply) -----------------

FRIEND_SORTS = ("added", "last_contact", "waiting_longest")


@dataclass(frozen=True)
class SignalFilter:
    """``silent_days``: no message either way for that many days (a friendship with no message
    at all counts from when it was added). ``waiting``: the customer's last messages are
    unanswered. ``sort``: ``added`` (newest add first), ``last_contact`` (longest without contact
    first), ``waiting_longest`` (longest-waiting first, then those not waiting)."""

    silent_days: int | None = None
    waiting: bool = False
    sort: str = "added"


def last_contact_at() -> Any:
    """The last message either way, or the add when there is none: what silence counts from."""
    return func.coalesce(ChatSignal.last_message_at, Friendship.added_at)


def friends_with_signals(
    session: Session, f: friend_queries.FriendFilter, signals: SignalFilter, *, now: datetime | None = None
) -> list[tuple[Friendship, ChatSignal | None]]:
    """A page of friends (``f``: visibility, filters, page) with their signals, filtered and sorted
    in SQL on chat_signals' indexes (last_message_at, waiting_since) joined by primary key."""
    base = friend_queries.friends_query(f).outerjoin(ChatSignal, ChatSignal.friendship_id == Friendship.id)
    stmt: Select[Any] = base.add_columns(ChatSignal)
    if signals.silent_days is not None:
        cutoff = (now or utcnow()) - timedelta(days=signals.silent_days)
        stmt = stmt.where(
            or_(
                ChatSignal.last_message_at < cutoff,
                and_(ChatSignal.last_message_at.is_(None), Friendship.added_at < cutoff),
            )
        )
    if signals.waiting:
        stmt = stmt.where(ChatSignal.waiting_since.is_not(None))
    stmt = stmt.order_by(None)
    if signals.sort == "last_contact":
        stmt = stmt.order_by(last_contact_at(), Friendship.id)
    elif signals.sort == "waiting_longest":
        stmt = stmt.order_by(ChatSignal.waiting_since.is_(None), ChatSignal.waiting_since, Friendship.id)
    else:
        stmt = stmt.order_by(Friendship.added_at.desc(), Friendship.id.desc())
    return [(friendship, signal) for friendship, signal in session.execute(stmt)]


def signal_json(signal: ChatSignal | None) -> dict[str, Any]:
    """The signals as the API shows them on a friend (ISO 8601 UTC; seconds of working time)."""
    return {
        "last_customer_message_at": _iso(signal.last_customer_message_at if signal else None),
        "last_rep_message_at": _iso(signal.last_rep_message_at if signal else None),
        "waiting_since": _iso(signal.waiting_since if signal else None),
        "first_response_s": signal.first_response_s if signal else None,
        "average_response_s": signal.average_response_s if signal else None,
    }


def signal_of(session: Session, friendship_id: int) -> ChatSignal | None:
    return session.get(ChatSignal, friendship_id)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
