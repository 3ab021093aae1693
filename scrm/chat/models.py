"""Archived chat messages (会话存档), stored once by ``msgid``, and the archive cursor.

A row keeps the archive's decrypted message as WeCom gives it (``msgid``, ``action``, ``from``
as ``sender``, ``tolist``, ``roomid``, ``msgtime`` as the aware-UTC ``sent_at``, ``msgtype`` and
the text as ``content``; doc 91774) plus what scrm resolves from it: for a 1:1 chat between a rep
(a staff userid) and an external contact (an id starting ``wm``/``wo``), the ``external_userid``,
the rep's ``userid``, the ``direction`` and the friendship it belongs to.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db import Base, Id, StrEnumType
from scrm.timeutil import utcnow


class ChatAction(StrEnum):
    SEND = "send"
    RECALL = "recall"  # the sender withdrew a message; the row is the recall notice itself
    SWITCH = "switch"  # a member switched corp; no content


class ChatDirection(StrEnum):
    CUSTOMER = "customer"  # an external contact wrote to a rep, 1:1
    REP = "rep"  # a rep wrote to an external contact, 1:1
    INTERNAL = "internal"  # between staff, or anything without an external contact
    GROUP = "group"  # in a group chat (roomid set)


class ChatMessage(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (
        Index("ix_chat_messages_friendship_id_sent_at", "friendship_id", "sent_at"),
        Index("ix_chat_messages_userid_sent_at", "userid", "sent_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    msgid: Mapped[str] = mapped_column(String(128), unique=True)
    action: Mapped[ChatAction] = mapped_column(StrEnumType(ChatAction))
    sender: Mapped[str] = mapped_column(String(64))  # the archive's ``from``
    tolist: Mapped[list[str]] = mapped_column(default=list)
    roomid: Mapped[str] = mapped_column(String(64), default="")  # empty for a 1:1 chat
    sent_at: Mapped[datetime] = mapped_column()  # the archive's ``msgtime`` (ms since epoch)
    msgtype: Mapped[str] = mapped_column(String(32), default="")
    content: Mapped[str] = mapped_column(Text, default="")  # text.content, or "[图片 image]" …
    external_userid: Mapped[str | None] = mapped_column(String(64))
    userid: Mapped[str | None] = mapped_column(String(64))
    direction: Mapped[ChatDirection] = mapped_column(StrEnumType(ChatDirection))
    friendship_id: Mapped[int | None] = mapped_column(ForeignKey("friendships.id"))


class ChatCursor(Base):
    """Where an archive source's reading stands (the Finance SDK's ``seq``), so a restart
    resumes instead of reading the archive from the start."""

    __tablename__ = "chat_cursors"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(32), unique=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
