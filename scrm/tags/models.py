"""Tag groups and corp tags (企业客户标签) mirrored from WeCom, and the tags on a friendship.

Tags are per (rep, customer) pair in WeCom (REFERENCE §3.3), so a link hangs off the friendship.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class TagSource(StrEnum):
    WECOM = "wecom"
    CHANNEL = "channel"
    MANUAL = "manual"
    RULE = "rule"


class TagSyncState(StrEnum):
    """Where a group or tag stands with WeCom. A change made in scrm is PENDING until the outbox
    has sent it (add/edit/del_corp_tag), then SYNCED; FAILED when WeCom refused it for good (the
    console shows it). Mirrored rows and local ones are SYNCED."""

    SYNCED = "synced"
    PENDING = "pending"
    FAILED = "failed"


# Ids scrm makes up; WeCom's start with "et" (REFERENCE §3.3), so these never collide.
LOCAL_PREFIX = "local-"  # a local group or tag: lives only in scrm, never sent to WeCom
PROVISIONAL_PREFIX = "pending-"  # a corp group or tag created in scrm, before WeCom's id comes back


class TagGroup(Base):
    __tablename__ = "tag_groups"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    group_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    order: Mapped[int] = mapped_column(BigInteger, default=0)
    is_deleted: Mapped[bool] = mapped_column(default=False)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    is_local: Mapped[bool] = mapped_column(default=False)
    sync_state: Mapped[TagSyncState] = mapped_column(
        StrEnumType(TagSyncState), default=TagSyncState.SYNCED
    )
    sync_error: Mapped[str] = mapped_column(String(500), default="")
    wecom_created_at: Mapped[datetime | None] = mapped_column(default=None)  # create_time
    tags: Mapped[list[Tag]] = relationship(back_populates="group")


class Tag(Base):
    """A corp tag mirrored from WeCom."""

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tag_id: Mapped[str] = mapped_column(String(64), unique=True)
    tag_group_id: Mapped[int | None] = mapped_column(ForeignKey("tag_groups.id"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    order: Mapped[int] = mapped_column(BigInteger, default=0)
    is_deleted: Mapped[bool] = mapped_column(default=False)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    is_local: Mapped[bool] = mapped_column(default=False)
    sync_state: Mapped[TagSyncState] = mapped_column(
        StrEnumType(TagSyncState), default=TagSyncState.SYNCED
    )
    sync_error: Mapped[str] = mapped_column(String(500), default="")
    wecom_created_at: Mapped[datetime | None] = mapped_column(default=None)  # create_time
    group: Mapped[TagGroup | None] = relationship(back_populates="tags")


class FriendshipTag(Base):
    __tablename__ = "friendship_tags"
    # Friends by tag (the list filters, rules): the key leads with friendship_id, so this index
    # serves "which friendships carry tag X" without a scan (an index-only scan on PostgreSQL).
    __table_args__ = (Index("ix_friendship_tags_tag_id_friendship_id", "tag_id", "friendship_id"),)
    friendship_id: Mapped[int] = mapped_column(ForeignKey("friendships.id"), primary_key=True)
    tag_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[TagSource] = mapped_column(StrEnumType(TagSource), default=TagSource.WECOM)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FriendshipTagRemoval(Base):
    """A person took this tag off this friendship (console, sidebar, API, or the rep in the WeCom
    client, seen through edit_external_contact). Auto-tagging rules do not put it back; adding
    the tag again by hand deletes the row."""

    __tablename__ = "friendship_tag_removals"
    __table_args__ = (UniqueConstraint("friendship_id", "tag_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    friendship_id: Mapped[int] = mapped_column(ForeignKey("friendships.id"))
    tag_id: Mapped[str] = mapped_column(String(64), index=True)
    removed_by: Mapped[str] = mapped_column(String(64), default="")  # a userid, or "wecom:<userid>"
    removed_at: Mapped[datetime] = mapped_column(default=utcnow)


class TagBulkStatus(StrEnum):
    PENDING = "pending"  # queued: the scheduler's tick runs it
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class TagBulk(Base):
    """A bulk tagging too large for one request, run by the scheduler in chunks: its progress
    row (``done`` of ``total`` friendships changed here; the WeCom side is counted from the
    outbox rows with ``ref = tagbulk:<bulk_id>``)."""

    __tablename__ = "tag_bulks"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    bulk_id: Mapped[str] = mapped_column(String(16), unique=True)
    actor: Mapped[str] = mapped_column(String(64))
    add_tag_ids: Mapped[list[str]] = mapped_column(default=list)
    remove_tag_ids: Mapped[list[str]] = mapped_column(default=list)
    friendship_ids: Mapped[list[int]] = mapped_column(default=list)
    status: Mapped[TagBulkStatus] = mapped_column(
        StrEnumType(TagBulkStatus), default=TagBulkStatus.PENDING, index=True
    )
    total: Mapped[int] = mapped_column(default=0)
    done: Mapped[int] = mapped_column(default=0)  # friendships worked through so far
    changed: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)  # closed friendships, left alone
    error: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the current run was claimed or last finished a chunk: a running bulk that has not
    # moved for a while lost its process and is run again.
    progressed_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
