"""A customer group chat (客户群), its members (staff and external), each membership over time, and
the local tags put on it.

``customer_group_members`` holds one row per person per group: where they stand now (or when they
left). ``customer_group_joins`` holds one row per membership — a join and, once they leave, its
leave — so a customer who left and came back has two rows there, and joins over time count each
join. WeCom reports joins on two scales that must never share an enum (REFERENCE §2.2):
groupchat/get's ``join_scene`` (doc 92122: 1 direct invite, 2 invite link, 3 QR code) and the
change_external_chat event's ``JoinScene`` (doc 92130: 0 invited by a member, 3 QR code); each has
its own column.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class GroupMemberType(StrEnum):
    STAFF = "staff"
    EXTERNAL = "external"


class CustomerGroup(Base):
    __tablename__ = "customer_groups"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    owner_userid: Mapped[str] = mapped_column(String(64), default="")
    notice: Mapped[str] = mapped_column(Text, default="")
    member_version: Mapped[str] = mapped_column(String(64), default="")
    is_dismissed: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    dismissed_at: Mapped[datetime | None] = mapped_column(default=None)  # the dismiss event's time
    members: Mapped[list[CustomerGroupMember]] = relationship(back_populates="group")


class CustomerGroupMember(Base):
    __tablename__ = "customer_group_members"
    __table_args__ = (UniqueConstraint("customer_group_id", "member_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_group_id: Mapped[int] = mapped_column(ForeignKey("customer_groups.id"))
    member_id: Mapped[str] = mapped_column(String(64), index=True)  # userid or external_userid
    member_type: Mapped[GroupMemberType] = mapped_column(StrEnumType(GroupMemberType))
    # groupchat/get's name (need_name=1) or group nickname: all we know of a customer who is
    # nobody's friend.
    name: Mapped[str] = mapped_column(String(128), default="")
    join_scene: Mapped[int] = mapped_column(default=0)  # groupchat/get scale: 1 direct, 2 link, 3 QR
    joined_at: Mapped[datetime | None] = mapped_column()
    left_at: Mapped[datetime | None] = mapped_column()
    quit_scene: Mapped[int | None] = mapped_column()
    group: Mapped[CustomerGroup] = relationship(back_populates="members")


class CustomerGroupJoin(Base):
    """One membership: a join and, once the member leaves, the leave.

    ``joined_at`` is groupchat/get's ``join_time`` when we have it (``has_join_time``), else the
    add_member event's time. ``left_at`` is the del_member event's time when that event came
    (``has_leave_event``), else when a sync first found the member gone (an upper bound).
    """

    __tablename__ = "customer_group_joins"
    __table_args__ = (
        Index("ix_customer_group_joins_group_member", "customer_group_id", "member_id"),
        Index("ix_customer_group_joins_group_joined_at", "customer_group_id", "joined_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_group_id: Mapped[int] = mapped_column(ForeignKey("customer_groups.id"))
    member_id: Mapped[str] = mapped_column(String(64))
    member_type: Mapped[GroupMemberType] = mapped_column(StrEnumType(GroupMemberType))
    joined_at: Mapped[datetime] = mapped_column()
    has_join_time: Mapped[bool] = mapped_column(default=False)
    join_scene: Mapped[int | None] = mapped_column(default=None)  # groupchat/get: 1 direct, 2 link, 3 QR
    event_join_scene: Mapped[int | None] = mapped_column(default=None)  # event JoinScene: 0 invited, 3 QR
    left_at: Mapped[datetime | None] = mapped_column(default=None)
    has_leave_event: Mapped[bool] = mapped_column(default=False)
    quit_scene: Mapped[int | None] = mapped_column(default=None)  # 0 left, 1 removed (doc 92130)


class CustomerGroupTag(Base):
    """A local tag on a group. WeCom has no tags on groups, so only local tags (scrm's own,
    ``local-…`` ids) go here."""

    __tablename__ = "customer_group_tags"
    __table_args__ = (UniqueConstraint("customer_group_id", "tag_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_group_id: Mapped[int] = mapped_column(ForeignKey("customer_groups.id"))
    tag_id: Mapped[str] = mapped_column(String(64), index=True)
    added_by: Mapped[str] = mapped_column(String(64), default="")
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
