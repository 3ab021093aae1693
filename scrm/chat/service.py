"""Ingesting archived messages (会话存档): parse, store once by msgid, resolve the friendship,
match keyword rules, feed the chat signals.

The archive's decrypted message (doc 91774) is ``{"msgid", "action": send|recall|switch, "from",
"tolist": [...], "roomid": "" for 1:1, "msgtime": ms, "msgtype", "<msgtype>": {...}}``, e.g.
``"text": {"content": "..."}``; a ``switch`` (a member switched corp) has ``user`` and ``time``
instead of ``from`` and ``msgtime``. External contacts' ids start ``wm``/``wo`` (REFERENCE
§2.1); anything else in ``from``/``tolist`` is a staff userid (or, in a group, a robot).

Ingest is on the hot path (``make bench-chat``: 1M messages), so a batch is a fixed handful of
statements whatever its size, and no ORM object is made per message: rows are plain tuples,
friendships are resolved with one SELECT per chunk, and the rows are written in one
executemany (SQLite: ``INSERT … ON CONFLICT (msgid) DO NOTHING`` after one SELECT of the msgids
already stored, race-free because a unit of work holds SQLite's one writer) or by COPY into a
temporary table and one ``INSERT … SELECT … ON CONFLICT (msgid) DO NOTHING RETURNING msgid``
(PostgreSQL, where concurrent pulls are possible and the RETURNING says which rows were new).
Only the new rows are matched and signalled: a redelivered message changes nothing.

Decisions: keyword hits come only from text a customer sent in a 1:1 chat with a known
friendship (a rep's own words do not tag the customer); recall notices and switches are stored
but feed neither the signals nor the rules (the recalled message itself stays stored as sent).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.chat import signals
from scrm.chat.keywords import KeywordHit, KeywordMatcher
from scrm.chat.models import ChatCursor, ChatDirection
from scrm.db import sqlite_text
from scrm.errors import InvalidInput
from scrm.friends.models import Friendship
from scrm.timeutil import WorkingHours, utcnow

EXTERNAL_PREFIXES = ("wm", "wo")  # external_userid prefixes (REFERENCE §2.1)
CHUNK = 900  # ids per IN (...) list, below SQLite's historical 999 parameters

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CUSTOMER, REP, INTERNAL, GROUP = (d.value for d in ChatDirection)

# What a non-text message shows in a thread (the archive keeps its body under its msgtype).
SUMMARIES = {
    "image": "[图片 image]",
    "voice": "[语音 voice]",
    "video": "[视频 video]",
    "file": "[文件 file]",
    "emotion": "[表情 sticker]",
    "link": "[链接 link]",
    "weapp": "[小程序 mini program]",
    "card": "[名片 contact card]",
    "location": "[位置 location]",
    "redpacket": "[红包 red packet]",
    "revoke": "[撤回消息 recalled a message]",
    "agree": "[同意存档 agreed to archiving]",
    "disagree": "[拒绝存档 refused archiving]",
    "chatrecord": "[聊天记录 chat record]",
    "mixed": "[图文 mixed]",
    "meeting_voice_call": "[语音通话 voice call]",
    "voip_doc_share": "[共享文档 shared document]",
    "switch": "[切换企业 switched corp]",
}
# The titles worth a glance in a thread, after the summary.
_TITLED = {"link": "title", "weapp": "title", "file": "filename"}


class BadMessage(InvalidInput):
    """An archived message scrm cannot store (not an object, or no msgid, from or msgtime)."""


# One parsed message as the store writes it (columns of chat_messages, without id and
# friendship_id); a plain tuple, the cheapest thing Python builds.
Row = tuple[str, str, str, list[str], str, datetime, str, str, str | None, str | None, str]
COLUMNS = (
    "msgid",
    "action",
    "sender",
    "tolist",
    "roomid",
    "sent_at",
    "msgtype",
    "content",
    "external_userid",
    "userid",
    "direction",
    "friendship_id",
)


def parse(message: Any) -> Row:
    """One decrypted archive message → a row; raises BadMessage saying what is missing."""
    if not isinstance(message, dict):
        raise BadMessage("not a JSON object")
    msgid = message.get("msgid")
    if not isinstance(msgid, str) or not msgid:
        raise BadMessage("no msgid")
    action = message.get("action") or "send"
    if action == "switch":
        sender, msgtime = message.get("user"), message.get("time")
    else:
        sender, msgtime = message.get("from"), message.get("msgtime")
    if not isinstance(sender, str) or not sender:
        raise BadMessage("no from (the sender's id)")
    if type(msgtime) is not int:
        if isinstance(msgtime, str) and msgtime.isdigit():
            msgtime = int(msgtime)
        else:
            raise BadMessage("no msgtime (milliseconds since 1970)")
    if action not in ("send", "recall", "switch"):
        raise BadMessage(f"unknown action {action!r} (send, recall or switch)")
    tolist = message.get("tolist") or []
    if not isinstance(tolist, list):
        raise BadMessage("tolist is not a list")
    roomid = message.get("roomid") or ""
    msgtype = message.get("msgtype") or ("switch" if action == "switch" else "")
    if msgtype == "text":
        body = message.get("text")
        content = body.get("content", "") if isinstance(body, dict) else ""
        if not isinstance(content, str):
            content = str(content)
    else:
        content = SUMMARIES.get(msgtype, f"[{msgtype}]")
        titled = _TITLED.get(msgtype)
        if titled is not None:
            body = message.get(msgtype)
            if isinstance(body, dict) and body.get(titled):
                content = f"{content} {body[titled]}"
    external_userid = userid = None
    if roomid:
        direction = GROUP
    elif len(tolist) == 1:
        to = tolist[0]
        if sender.startswith(EXTERNAL_PREFIXES):
            if isinstance(to, str) and not to.startswith(EXTERNAL_PREFIXES):
                direction, external_userid, userid = CUSTOMER, sender, to
            else:
                direction = INTERNAL
        elif isinstance(to, str) and to.startswith(EXTERNAL_PREFIXES):
            direction, external_userid, userid = REP, to, sender
        else:
            direction, userid = INTERNAL, sender
    else:
        direction = INTERNAL
        if not sender.startswith(EXTERNAL_PREFIXES):
            userid = sender
    sent_at = _EPOCH + timedelta(milliseconds=msgtime)
    return (
        msgid, action, sender, tolist, roomid, sent_at, msgtype, content, external_userid, userid, direction
    )


@dataclass
class IngestReport:
    received: int = 0
    new: int = 0
    duplicates: int = 0
    # (index in the batch, reason) of messages that could not be stored
    rejected: list[tuple[int, str]] = field(default_factory=list)
    hits: list[KeywordHit] = field(default_factory=list)
    tagged: int = 0  # tags the hits added (set by whoever applies them: jobs.chat)
    signalled: int = 0  # friendships whose chat signals changed

    def add(self, other: IngestReport, offset: int = 0) -> None:
        self.received += other.received
        self.new += other.new
        self.duplicates += other.duplicates
        self.rejected.extend((offset + i, why) for i, why in other.rejected)
        self.hits.extend(other.hits)
        self.tagged += other.tagged
        self.signalled += other.signalled


def ingest(
    session: Session,
    messages: Sequence[Any],
    *,
    matcher: KeywordMatcher | None = None,
    hours: WorkingHours | None = None,
) -> IngestReport:
    """Store a batch of decrypted archive messages once each (by msgid); for the new ones, the
    keyword hits (returned, not applied) and the chat signals. Flushes only."""
    report = IngestReport(received=len(messages))
    rows: list[Row] = []
    seen: set[str] = set()
    for index, message in enumerate(messages):
        try:
            row = parse(message)
        except BadMessage as exc:
            report.rejected.append((index, str(exc)))
            continue
        if row[0] in seen:  # the same message twice in one batch
            report.duplicates += 1
            continue
        seen.add(row[0])
        rows.append(row)
    if not rows:
        return report
    session.flush()
    pairs: set[tuple[str, str]] = {(r[8], r[9]) for r in rows if r[8] is not None and r[9] is not None}  # type: ignore[misc]
    friendships = _friendships(session, pairs)
    stored: list[StoredRow] = [(*r, friendships.get((r[8], r[9]))) for r in rows]  # type: ignore[arg-type]
    new = _store(session, stored)
    report.new = len(new)
    report.duplicates += len(rows) - len(new)

    inputs: list[signals.SignalInput] = []
    hits = report.hits
    for item in new:
        friendship_id = item[11]
        if friendship_id is None or item[1] != "send":
            continue
        direction = item[10]
        if direction == CUSTOMER:
            inputs.append(signals.SignalInput(friendship_id, "customer", item[5]))
            if matcher and item[6] == "text":
                for rule_id in matcher.match(item[7]):
                    hits.append(KeywordHit(rule_id, friendship_id, item[0], item[5]))
        elif direction == REP:
            inputs.append(signals.SignalInput(friendship_id, "rep", item[5]))
    if inputs:  # in the batch's order: record keeps it for messages at the same moment
        report.signalled = signals.record(session, inputs, hours)
    return report


def _friendships(session: Session, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    externals = sorted({e for e, _ in pairs})
    found: dict[tuple[str, str], int] = {}
    for start in range(0, len(externals), CHUNK):
        chunk = externals[start : start + CHUNK]
        for fid, ext, userid in session.execute(
            select(Friendship.id, Friendship.external_userid, Friendship.userid).where(
                Friendship.external_userid.in_(chunk)
            )
        ):
            if (ext, userid) in pairs:
                found[(ext, userid)] = fid
    return found


StoredRow = tuple[Any, ...]  # a Row plus friendship_id


def _store(session: Session, rows: list[StoredRow]) -> list[StoredRow]:
    """Insert the rows whose msgid is not stored yet; returns those (in the batch's order)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        return _store_postgresql(connection, rows)
    msgids = [r[0] for r in rows]
    existing: set[str] = set()
    for start in range(0, len(msgids), CHUNK):
        chunk = msgids[start : start + CHUNK]
        select_stored = f"SELECT msgid FROM chat_messages WHERE msgid IN ({','.join('?' * len(chunk))})"  # noqa: S608
        existing.update(m for (m,) in connection.exec_driver_sql(select_stored, tuple(chunk)))
    new = [r for r in rows if r[0] not in existing] if existing else rows
    if new:
        # Values in the form the columns' types would bind them (StrEnum values, JSON text, and
        # the UTC timestamp as SQLAlchemy's SQLite DATETIME writes it), straight to executemany.
        connection.exec_driver_sql(
            _SQLITE_INSERT,
            [
                (
                    r[0], r[1], r[2], _json(r[3]), r[4],
                    sqlite_text(r[5]), r[6], r[7], r[8], r[9], r[10], r[11],
                )
                for r in new
            ],
        )
    return new


# json.dumps with an argument builds an encoder per call: one, kept, for every row's tolist.
_json = json.JSONEncoder(ensure_ascii=False).encode

_SQLITE_INSERT = (
    f"INSERT INTO chat_messages ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "  # noqa: S608
    "ON CONFLICT (msgid) DO NOTHING"
)
_PG_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS chat_messages_incoming ON COMMIT DELETE ROWS AS "  # noqa: S608
    f"SELECT {', '.join(COLUMNS)} FROM chat_messages WITH NO DATA"
)
_PG_MOVE = (
    f"INSERT INTO chat_messages ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} "  # noqa: S608
    "FROM chat_messages_incoming ON CONFLICT (msgid) DO NOTHING RETURNING msgid"
)


def _store_postgresql(connection: Any, rows: list[StoredRow]) -> list[StoredRow]:
    connection.exec_driver_sql(_PG_STAGE)
    driver = connection.connection.driver_connection
    with driver.cursor() as cursor:
        with cursor.copy(f"COPY chat_messages_incoming ({', '.join(COLUMNS)}) FROM STDIN") as copy:  # noqa: S608
            for r in rows:
                copy.write_row(
                    (r[0], r[1], r[2], _json(r[3]), *r[4:])
                )
    inserted = {m for (m,) in connection.exec_driver_sql(_PG_MOVE)}
    connection.exec_driver_sql("DELETE FROM chat_messages_incoming")
    return [r for r in rows if r[0] in inserted]


# --- the archive cursor ------------------------------------------------------------------------


def cursor_seq(session: Session, source: str) -> int:
    return int(session.scalar(select(ChatCursor.seq).where(ChatCursor.source == source)) or 0)


def advance_cursor(session: Session, source: str, seq: int) -> None:
    """Remember that ``source`` was read up to ``seq`` (never moves back)."""
    cursor = session.scalar(select(ChatCursor).where(ChatCursor.source == source))
    if cursor is None:
        session.add(ChatCursor(source=source, seq=seq, updated_at=utcnow()))
    elif seq > cursor.seq:
        cursor.seq = seq
    session.flush()


def rows_of(messages: Iterable[Any]) -> list[Row]:
    """Parse only (the benchmark's baseline): the exact parse step ingest runs."""
    return [parse(m) for m in messages]

