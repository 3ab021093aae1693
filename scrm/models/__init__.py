"""SQLAlchemy 2 typed models for everything scrm keeps.

WeCom's own picture (staff, external contacts, friendships, tags, customer groups) sits beside
the CRM picture WeCom lacks (channels, leads, customers, contacts, timeline) and the two
reliability tables (inbox of received callbacks, outbox of WeCom writes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scrm.db import Base, StrEnumType
from scrm.models.enums import (
    ActivityKind,
    ChannelStatus,
    CustomerKind,
    FriendshipStatus,
    GroupMemberType,
    InboxStatus,
    LeadStatus,
    OutboxKind,
    OutboxStatus,
    StaffRole,
    TagSource,
)
from scrm.timeutil import utcnow

__all__ = [
    "ActivityKind",
    "ChannelStatus",
    "CustomerKind",
    "FriendshipStatus",
    "GroupMemberType",
    "InboxStatus",
    "LeadStatus",
    "OutboxKind",
    "OutboxStatus",
    "StaffRole",
    "TagSource",
    "Base",
    "Staff",
    "ExternalContact",
    "Friendship",
    "TagGroup",
    "Tag",
    "FriendshipTag",
    "CustomerGroup",
    "CustomerGroupMember",
    "Channel",
    "Lead",
    "Customer",
    "Contact",
    "Activity",
    "InboxEvent",
    "OutboxCommand",
    "WeComToken",
    "ApiKey",
]

Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER keys


class Staff(Base):
    """A WeCom member (员工) who may be a rep, a manager or an admin in scrm."""

    __tablename__ = "staff"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    userid: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[StaffRole] = mapped_column(StrEnumType(StaffRole), default=StaffRole.REP)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ExternalContact(Base):
    """The person as WeCom sees them (one ``external_userid`` per corp), linked to our CRM."""

    __tablename__ = "external_contacts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    external_userid: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    type: Mapped[int] = mapped_column(default=1)  # 1 WeChat user, 2 WeCom user
    gender: Mapped[int] = mapped_column(default=0)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    avatar: Mapped[str] = mapped_column(String(512), default="")
    corp_name: Mapped[str] = mapped_column(String(128), default="")
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    friendships: Mapped[list[Friendship]] = relationship(back_populates="external_contact")
    lead: Mapped[Lead | None] = relationship()
    contact: Mapped[Contact | None] = relationship()


class Friendship(Base):
    """One friendship (好友): external_userid × rep userid. Never deleted, only closed."""

    __tablename__ = "friendships"
    __table_args__ = (UniqueConstraint("external_userid", "userid"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    external_contact_id: Mapped[int] = mapped_column(ForeignKey("external_contacts.id"), index=True)
    external_userid: Mapped[str] = mapped_column(String(64))
    userid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[FriendshipStatus] = mapped_column(
        StrEnumType(FriendshipStatus), default=FriendshipStatus.ACTIVE, index=True
    )
    add_way: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(String(64), default="", index=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"), index=True)
    remark: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(512), default="")
    remark_corp_name: Mapped[str] = mapped_column(String(128), default="")
    remark_mobiles: Mapped[list[str]] = mapped_column(JSON, default=list)
    added_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    removed_at: Mapped[datetime | None] = mapped_column()
    removed_by: Mapped[str | None] = mapped_column(String(32))  # rep | customer | transfer
    removal_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    external_contact: Mapped[ExternalContact] = relationship(back_populates="friendships")
    channel: Mapped[Channel | None] = relationship()
    tags: Mapped[list[FriendshipTag]] = relationship(cascade="all, delete-orphan")


class TagGroup(Base):
    __tablename__ = "tag_groups"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    group_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    order: Mapped[int] = mapped_column(BigInteger, default=0)
    is_deleted: Mapped[bool] = mapped_column(default=False)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    tags: Mapped[list[Tag]] = relationship(back_populates="group")


class Tag(Base):
    """A corp tag (企业客户标签) mirrored from WeCom."""

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tag_id: Mapped[str] = mapped_column(String(64), unique=True)
    tag_group_id: Mapped[int | None] = mapped_column(ForeignKey("tag_groups.id"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    order: Mapped[int] = mapped_column(BigInteger, default=0)
    is_deleted: Mapped[bool] = mapped_column(default=False)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    group: Mapped[TagGroup | None] = relationship(back_populates="tags")


class FriendshipTag(Base):
    __tablename__ = "friendship_tags"
    friendship_id: Mapped[int] = mapped_column(ForeignKey("friendships.id"), primary_key=True)
    tag_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[TagSource] = mapped_column(StrEnumType(TagSource), default=TagSource.WECOM)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerGroup(Base):
    """A customer group chat (客户群)."""

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


class Channel(Base):
    """A channel QR code (「联系我」 contact way); ``state`` is what WeCom echoes back on add."""

    __tablename__ = "channels"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(30), unique=True)
    userids: Mapped[list[str]] = mapped_column(JSON, default=list)
    auto_tag_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    welcome_text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ChannelStatus] = mapped_column(StrEnumType(ChannelStatus), default=ChannelStatus.PENDING)
    config_id: Mapped[str | None] = mapped_column(String(64))
    qr_code: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Lead(Base):
    """Raw prospect information (线索), not yet qualified; often not yet a friend."""

    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    phone_e164: Mapped[str | None] = mapped_column(String(32), index=True)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    token: Mapped[str | None] = mapped_column(String(16), unique=True)  # carried in a channel state
    source: Mapped[str] = mapped_column(String(32), default="channel")
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"), index=True)
    owner_userid: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[LeadStatus] = mapped_column(StrEnumType(LeadStatus), default=LeadStatus.NEW)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    channel: Mapped[Channel | None] = relationship()
    customer: Mapped[Customer | None] = relationship()


class Customer(Base):
    """The business subject (客户): a company (B2B) or a person (B2C)."""

    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[CustomerKind] = mapped_column(StrEnumType(CustomerKind), default=CustomerKind.PERSON)
    name: Mapped[str] = mapped_column(String(128), default="")
    owner_userid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    contacts: Mapped[list[Contact]] = relationship(back_populates="customer")


class Contact(Base):
    """A person (联系人) at a customer; may be a friend of one or more reps."""

    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    phone_e164: Mapped[str | None] = mapped_column(String(32), index=True)
    unionid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    customer: Mapped[Customer] = relationship(back_populates="contacts")


class Activity(Base):
    """One timeline entry about a person, a lead or a customer."""

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_external_userid_occurred_at", "external_userid", "occurred_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[ActivityKind] = mapped_column(StrEnumType(ActivityKind))
    external_userid: Mapped[str | None] = mapped_column(String(64))
    userid: Mapped[str | None] = mapped_column(String(64))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    summary: Mapped[str] = mapped_column(String(512), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    lead: Mapped[Lead | None] = relationship()
    customer: Mapped[Customer | None] = relationship()


class InboxEvent(Base):
    """A verified, decrypted callback, stored before we acknowledge it to WeCom."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        Index("ix_inbox_events_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_inbox_events_ordering_key_id", "ordering_key", "id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    msg_type: Mapped[str] = mapped_column(String(32))
    event: Mapped[str] = mapped_column(String(64), default="")
    change_type: Mapped[str] = mapped_column(String(64), default="")
    ordering_key: Mapped[str] = mapped_column(String(80), default="")
    payload: Mapped[str] = mapped_column(Text)  # decrypted XML; never logged
    created_time: Mapped[int] = mapped_column(BigInteger, default=0)  # WeCom's CreateTime
    status: Mapped[InboxStatus] = mapped_column(StrEnumType(InboxStatus), default=InboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column()
    processed_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)


class OutboxCommand(Base):
    """A WeCom write, stored with the change that caused it and sent by the scheduler."""

    __tablename__ = "outbox_commands"
    __table_args__ = (Index("ix_outbox_commands_status_next_attempt_at", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[OutboxKind] = mapped_column(StrEnumType(OutboxKind))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[OutboxStatus] = mapped_column(StrEnumType(OutboxStatus), default=OutboxStatus.PENDING)
    priority: Mapped[int] = mapped_column(default=0)  # higher first; welcome messages race a 20 s clock
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    last_errcode: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    inbox_event_id: Mapped[int | None] = mapped_column(ForeignKey("inbox_events.id"), index=True)
    channel_id: Mapped[int | None] = mapped_column(ForeignKey("channels.id"))


class WeComToken(Base):
    """The access token, shared by every process (REFERENCE §3.1: cache it, per app)."""

    __tablename__ = "wecom_tokens"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))
    expires_at: Mapped[datetime | None] = mapped_column()


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[StaffRole] = mapped_column(StrEnumType(StaffRole))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_revoked: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
