"""Auto-tagging rules and what they did.

A rule has one trigger and the conditions of that trigger (columns that other triggers leave
empty), and the tags it applies. A hit is one tag a rule put on one friendship: unique per
(rule, friendship, tag), so a rule applies a tag to a friendship at most once, whatever replays
or repeats — and "how many friends it tagged" is the number of distinct friendships in its hits.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class RuleTrigger(StrEnum):
    ON_ADD = "on_add"  # a customer adds a rep: by channel and time-of-day window
    GROUP_JOIN = "group_join"  # a customer joins a customer group
    KEYWORD = "keyword"  # a keyword in a chat message
    LEAD_CHANGE = "lead_change"  # the linked lead's grade or status changes


class MatchMode(StrEnum):
    # How scrm.chat.keywords matches (its docstring has the details and the near misses):
    EXACT = "exact"  # the keyword appears in the message as it is (case and width folded)
    FUZZY = "fuzzy"  # or one edit inside it (a filler character, a typo), for 3+ characters


class TagRule(Base):
    __tablename__ = "tag_rules"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[RuleTrigger] = mapped_column(StrEnumType(RuleTrigger), index=True)
    # on_add: channel ids (empty: any channel, or none) and a window in Asia/Shanghai ("HH:MM";
    # start > end wraps midnight; both None: any time), on ISO weekdays (1 Monday … 7 Sunday;
    # empty: every day). The weekday is the one the window starts on.
    channel_ids: Mapped[list[int]] = mapped_column(default=list)
    window_start: Mapped[str | None] = mapped_column(String(5))
    window_end: Mapped[str | None] = mapped_column(String(5))
    weekdays: Mapped[list[int]] = mapped_column(default=list)
    # group_join: customer group chat ids (empty: any group).
    chat_ids: Mapped[list[str]] = mapped_column(default=list)
    # keyword: the keywords and how they match.
    keywords: Mapped[list[str]] = mapped_column(default=list)
    match_mode: Mapped[MatchMode] = mapped_column(StrEnumType(MatchMode), default=MatchMode.FUZZY)
    # lead_change: the grades and/or statuses that fire (either listed one matching is enough).
    lead_grades: Mapped[list[str]] = mapped_column(default=list)
    lead_statuses: Mapped[list[str]] = mapped_column(default=list)
    tag_ids: Mapped[list[str]] = mapped_column(default=list)
    is_enabled: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TagRuleHit(Base):
    __tablename__ = "tag_rule_hits"
    __table_args__ = (
        UniqueConstraint("rule_id", "friendship_id", "tag_id"),
        Index("ix_tag_rule_hits_friendship_id_tag_id", "friendship_id", "tag_id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("tag_rules.id", ondelete="CASCADE"))
    friendship_id: Mapped[int] = mapped_column(ForeignKey("friendships.id"))
    tag_id: Mapped[str] = mapped_column(String(64))
    # What fired it: "add", "group:<chat_id>", "msg:<msgid>", "lead:<id>".
    cause: Mapped[str] = mapped_column(String(128), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)
