"""A customer group chat (客户群) and its members, staff and external."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
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
    members: Mapped[list[CustomerGroupMember]] = relationship(back_populates="group")


class CustomerGroupMember(Base):
    __tablename__ = "customer_group_members"
    __table_args__ = (UniqueConstraint("customer_group_id", "member_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_group_id: Mapped[int] = mapped_column(ForeignKey("customer_groups.id"))
    member_id: Mapped[str] = mapped_column(String(64), index=True)  # userid or external_userid
    member_type: Mapped[GroupMemberType] = mapped_column(StrEnumType(GroupMemberType))
    join_scene: Mapped[int] = mapped_column(default=0)  # groupchat/get scale: 1 direct, 2 link, 3 QR
    joined_at: Mapped[datetime | None] = mapped_column()
    left_at: Mapped[datetime | None] = mapped_column()
    quit_scene: Mapped[int | None] = mapped_column()
    group: Mapped[CustomerGroup] = relationship(back_populates="members")
