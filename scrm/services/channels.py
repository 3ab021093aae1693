"""Channels: 「联系我」 QR codes (doc 92228) and the ``state`` that ties an add back to one.

``state`` is the only channel identifier WeCom echoes (≤30 chars, REFERENCE §3.4), so it is a short
opaque key. A state may carry a lead token after ``~`` (``c7k2m9x~L4q8z1``): a code printed for
one known lead links the friend to that lead directly.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scrm.db import session_cache
from scrm.errors import InvalidInput
from scrm.models import Channel, ChannelStatus, Friendship, OutboxKind
from scrm.services import outbox

STATE_MAX = 30  # doc 92228
LEAD_SEPARATOR = "~"
_ALPHABET = string.ascii_lowercase + string.digits


def _token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class ResolvedState:
    channel: Channel | None
    lead_token: str | None


def split_state(state: str) -> tuple[str, str | None]:
    """(the channel's own state, the lead token it carries or None)."""
    base, _, lead_token = state.partition(LEAD_SEPARATOR)
    return base, lead_token or None


def resolve_state(session: Session, state: str) -> ResolvedState:
    """The channel a ``state`` names (remembered for the session: a batch of adds through one
    code looks the channel up once) and the lead token it carries, if any."""
    if not state:
        return ResolvedState(None, None)
    base, lead_token = split_state(state)
    known: dict[str, Channel | None] = session_cache(session, "channel_by_state")
    if base not in known:
        known[base] = session.scalar(select(Channel).where(Channel.state == base))
    return ResolvedState(known[base], lead_token)


def create_channel(
    session: Session,
    *,
    name: str,
    userids: list[str],
    auto_tag_ids: list[str] | None = None,
    welcome_text: str = "",
    state: str | None = None,
) -> Channel:
    name = name.strip()
    if not name:
        raise InvalidInput("give the channel a name, e.g. 2026 展会")
    if len(name) > 30:
        raise InvalidInput("channel names are at most 30 characters (WeCom's remark limit)")
    userids = [u.strip() for u in userids if u.strip()]
    if not userids:
        raise InvalidInput("choose at least one rep who will receive friends from this code")
    if len(userids) > 100:
        raise InvalidInput("a channel code can route to at most 100 reps (WeCom 41041)")
    if len(welcome_text.encode("utf-8")) > 4000:
        raise InvalidInput("the welcome text is over WeCom's 4000-byte limit; shorten it")
    state = state or "c" + _token(7)
    if len(state) > STATE_MAX - 9 or LEAD_SEPARATOR in state:
        raise InvalidInput(f"state must be at most {STATE_MAX - 9} characters without '~'")
    if session.scalar(select(Channel.id).where(Channel.state == state)):
        raise InvalidInput(f"state {state!r} is already used by another channel")
    channel = Channel(
        name=name,
        state=state,
        userids=userids,
        auto_tag_ids=list(auto_tag_ids or []),
        welcome_text=welcome_text,
        status=ChannelStatus.PENDING,
    )
    session.add(channel)
    session.flush()
    outbox.enqueue(
        session,
        OutboxKind.ADD_CONTACT_WAY,
        {
            "type": 1 if len(userids) == 1 else 2,
            "scene": 2,  # QR code
            "remark": name[:30],
            "skip_verify": True,
            "state": state,
            "user": userids,
        },
        f"add_contact_way:{channel.id}",
        channel_id=channel.id,
    )
    return channel


def lead_state(channel: Channel, lead_token: str) -> str:
    return f"{channel.state}{LEAD_SEPARATOR}{lead_token}"


def add_counts(session: Session) -> dict[int, int]:
    rows = session.execute(
        select(Friendship.channel_id, func.count())
        .where(Friendship.channel_id.is_not(None))
        .group_by(Friendship.channel_id)
    )
    return {channel_id: count for channel_id, count in rows if channel_id is not None}


def new_lead_token() -> str:
    return _token(8)
