"""The bot's answer to each message a rep sends to the app, kept so WeCom's retry of the same
message (it re-sends when no answer came within 5 s, doc 90930) gets the same passive reply and
the command's effect happens once."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class BotReplyStatus(StrEnum):
    DONE = "done"  # the command ran; ``reply`` is its answer
    FAILED = "failed"  # the command raised: ``reply`` is the apology, ``error`` what went wrong


class BotReply(Base):
    __tablename__ = "bot_replies"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # The inbox dedupe key of the rep's message (it includes MsgId, FromUserName and CreateTime).
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    inbox_event_id: Mapped[int | None] = mapped_column(ForeignKey("inbox_events.id"), index=True)
    userid: Mapped[str] = mapped_column(String(64), index=True)
    msg_id: Mapped[str] = mapped_column(String(32), default="")
    command: Mapped[str] = mapped_column(String(16))  # log | remind | lookup | help
    status: Mapped[BotReplyStatus] = mapped_column(StrEnumType(BotReplyStatus))
    reply: Mapped[str] = mapped_column(Text)  # what the rep was answered (never logged)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
