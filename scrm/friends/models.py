"""One friendship: external_userid × rep userid. Never deleted, only closed.

Every state a callback sets remembers the time of the event that set it (``status_at``,
``remark_at``), so an older event — a WeCom retry, a replay, a dead event run by hand — never
overwrites a newer state (DESIGN §4).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scrm.channels.models import Channel
from scrm.db import Base, Id, StrEnumType
from scrm.people.models import ExternalContact
from scrm.tags.models import FriendshipTag
from scrm.timeutil import utcnow


class FriendshipStatus(StrEnum):
    ACTIVE = "active"
    HALF = "half"  # customer added a "no verification" rep who has not confirmed yet
    REMOVED_BY_REP = "removed_by_rep"
    REMOVED_BY_CUSTOMER = "removed_by_customer"
    TRANSFERRED = "transferred"


OPEN_STATUSES = (FriendshipStatus.ACTIVE, FriendshipStatus.HALF)


class Friendship(Base):
    __tablename__ = "friendships"
    __table_args__ = (UniqueConstraint("external_userid", "userid"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    external_contact_id: Mapped[int] = mapped_column(ForeignKey("external_contacts.id"), index=True)
    external_userid: Mapped[str] = mapped_column(String(64))
    userid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[FriendshipStatus] = mapped_column(
        StrEnumType(FriendshipStatus), default=FriendshipStatus.ACTIVE, index=True
    )
    # When the event that set ``status`` happened (WeCom's CreateTime), and its inbox row: of
    # two events in the same second, the one WeCom sent later (the higher inbox id) wins.
    status_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_event_id: Mapped[int | None] = mapped_column(BigInteger)  # an inbox id (BIGINT)
    add_way: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(String(64), default="", index=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"), index=True)
    remark: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(512), default="")
    remark_corp_name: Mapped[str] = mapped_column(String(128), default="")
    remark_mobiles: Mapped[list[str]] = mapped_column(default=list)
    # When WeCom's view of remark, description, mobiles and tags that we hold was read.
    remark_at: Mapped[datetime | None] = mapped_column()
    # Set while the add is known from its event alone: WeCom's detail read failed and is retried.
    awaiting_detail_at: Mapped[datetime | None] = mapped_column(index=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    removed_at: Mapped[datetime | None] = mapped_column()
    removed_by: Mapped[str | None] = mapped_column(String(32))  # rep | customer | transfer
    removal_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    external_contact: Mapped[ExternalContact] = relationship()
    channel: Mapped[Channel | None] = relationship()
    tags: Mapped[list[FriendshipTag]] = relationship(cascade="all, delete-orphan")
