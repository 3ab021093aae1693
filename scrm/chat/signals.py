"""Chat signals per friendship (external_userid × rep userid): when the customer and the rep last
wrote, whether the customer is waiting for our reply and since when, and how fast the rep
answers, in working hours (scrm.timeutil.WorkingHours).

The archive ingest calls ``record`` once per batch with the batch's new 1:1 messages between a
customer and a rep. It is on the ingest's hot path, so a batch costs a fixed handful of
statements whatever its size: the stored rows read with one SELECT (FOR UPDATE on PostgreSQL,
so two ingests of the same friendship queue instead of losing a figure), the messages folded per
friendship in memory, new rows written with one INSERT … ON CONFLICT DO NOTHING RETURNING (a row
another ingest inserted meanwhile is read again and folded onto) and changed rows with one
UPDATE, in chunks of ``CHUNK`` friendships (on PostgreSQL each one statement over unnest()ed
arrays, on SQLite an executemany).

The rules, which make the figures independent of how the archive is cut into batches as long as
messages come roughly in order, and never corrupt them when they do not:

- ``last_customer_message_at`` / ``last_rep_message_at`` only move forward: an older message
  (a late batch, a re-pull) never moves them back.
- A customer message strictly after the last rep message opens a wait (``waiting_since``); a
  later one leaves it alone, an earlier one that is still after the last rep message moves its
  start back (it was the first unanswered message). A customer message at or before the last
  rep message is history that was already answered: it changes no wait.
- The first rep message at or after ``waiting_since`` answers the wait: its response time is the
  working seconds between the two, computed then, added to the running count and total, and
  kept as ``first_response_s`` (the latest answered wait).
- A late rep message that falls inside the latest answered wait (after its first customer
  message, before the reply we counted) was the real first reply: the latest figure and the
  total are corrected. Older waits are not revisited, and a late customer message never re-opens
  or lengthens a wait that was answered; the figures are then those of the messages as they
  arrived, which the README states.
- Messages at the same second keep the order the ingest gave them.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Literal

from sqlalchemy import BigInteger, ForeignKey, Integer, Table, any_, bindparam, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from scrm.db import Base, Id, from_sqlite_text, sqlite_text
from scrm.timeutil import WorkingHours, ensure_utc, utcnow

CHUNK = 1000
DEFAULT_HOURS = WorkingHours()


class ChatSignal(Base):
    """One row per friendship that has had a 1:1 message in the archive."""

    __tablename__ = "chat_signals"
    friendship_id: Mapped[int] = mapped_column(Id, ForeignKey("friendships.id"), primary_key=True)
    last_customer_message_at: Mapped[datetime | None] = mapped_column()
    last_rep_message_at: Mapped[datetime | None] = mapped_column()
    # The later of the two: "no contact for N days" filters and "last contact" sorts on it.
    last_message_at: Mapped[datetime | None] = mapped_column(index=True)
    # The first customer message since the last rep message; null when answered.
    waiting_since: Mapped[datetime | None] = mapped_column(index=True)
    # The latest answered wait: its first customer message, our first reply, the working seconds.
    answered_wait_started_at: Mapped[datetime | None] = mapped_column()
    first_response_at: Mapped[datetime | None] = mapped_column()
    first_response_s: Mapped[int | None] = mapped_column(Integer)
    # Every answered wait: average = total / count.
    response_count: Mapped[int] = mapped_column(Integer, default=0)
    response_total_s: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def average_response_s(self) -> int | None:
        return self.response_total_s // self.response_count if self.response_count else None


@dataclass(frozen=True, slots=True)
class SignalInput:
    friendship_id: int
    direction: Literal["customer", "rep"]
    sent_at: datetime


# The columns record() reads and writes, in this order (after friendship_id).
_FIELDS = (
    "last_customer_message_at",
    "last_rep_message_at",
    "waiting_since",
    "answered_wait_started_at",
    "first_response_at",
    "first_response_s",
    "response_count",
    "response_total_s",
)


def record(session: Session, inputs: Sequence[SignalInput], hours: WorkingHours | None = None) -> int:
    """Fold a batch of new 1:1 messages into their friendships' signals; flushes nothing else.

    ``hours`` defaults to 09:00–18:00 Monday to Friday in Asia/Shanghai; pass
    ``WorkingHours.from_settings(settings)`` for the configured ones. Returns how many
    friendships changed."""
    if not inputs:
        return 0
    hours = hours or DEFAULT_HOURS
    by_friend: dict[int, list[tuple[datetime, bool]]] = defaultdict(list)
    for item in inputs:
        sent_at = item.sent_at
        if sent_at.tzinfo is not UTC:
            sent_at = ensure_utc(sent_at)
        by_friend[item.friendship_id].append((sent_at, item.direction == "rep"))

    session.flush()
    connection = session.connection()
    dialect = connection.dialect.name
    table: Table = ChatSignal.__table__  # type: ignore[assignment]
    ids = sorted(by_friend)  # one lock order for every ingest: no deadlocks between two of them
    now = utcnow()
    changed: list[dict[str, Any]] = []
    texts: dict[datetime, str] = {}  # SQLite: the stored text of each timestamp read
    created = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        found = _fold_stored(connection, dialect, table, chunk, by_friend, hours, now, changed, texts)
        missing = [fid for fid in chunk if fid not in found]
        if not missing:
            continue
        fresh = [_values(fid, _fold(_EMPTY, by_friend[fid], hours), now) for fid in missing]
        inserted = _insert(connection, dialect, table, fresh, now)
        created += len(inserted)
        # A row another ingest inserted between our read and our insert (PostgreSQL; SQLite has
        # one writer): fold this batch onto it instead.
        lost = [fid for fid in missing if fid not in inserted]
        if lost:
            _fold_stored(connection, dialect, table, lost, by_friend, hours, now, changed, texts)
    if changed:
        _update(connection, dialect, changed, now, texts)
    return created + len(changed)


_EMPTY: tuple[Any, ...] = (None, None, None, None, None, None, 0, 0)


def _fold_stored(
    connection: Any,
    dialect: str,
    table: Table,
    ids: list[int],
    by_friend: dict[int, list[tuple[datetime, bool]]],
    hours: WorkingHours,
    now: datetime,
    changed: list[dict[str, Any]],
    texts: dict[datetime, str],
) -> set[int]:
    """Read the stored signals of ``ids`` (locked on PostgreSQL), fold their messages in, and
    collect the rows that changed; returns the ids that had a row."""
    if dialect == "postgresql":
        rows: Any = connection.execute(_read_statement(table, ids))
    else:
        rows = _read_sqlite(connection, ids, texts)
    found: set[int] = set()
    for row in rows:
        fid = row[0]
        found.add(fid)
        before = tuple(row[1:])
        after = _fold(before, by_friend[fid], hours)
        if after != before:
            changed.append(_values(fid, after, now))
    return found


def _read_statement(table: Table, ids: list[int]) -> Any:
    read = select(table.c.friendship_id, *(table.c[name] for name in _FIELDS))
    # One array parameter rather than an IN list: psycopg parses a statement of a thousand
    # placeholders anew for every length of list.
    ids_param = bindparam("ids", ids, type_=postgresql.ARRAY(BigInteger))
    return read.where(table.c.friendship_id == any_(ids_param)).with_for_update()


# On SQLite, which runs in-process, the rows go to and from the driver as the column types would
# bind them (timestamps as text, scrm.db.sqlite_text): SQLAlchemy's per-value processing was
# most of the signals' time (two thirds of 1.4 s per 100,000 messages in make bench-chat). A
# timestamp that the fold left as it was read is written back as the text read, not formatted.
_TIMES = 5  # the first five fields are timestamps, the last three integers
_SQLITE_READ = "SELECT friendship_id, {} FROM chat_signals WHERE friendship_id IN ({{}})".format(  # noqa: S608
    ", ".join(_FIELDS)
)
_SQLITE_UPDATE = (
    "UPDATE chat_signals SET {}, last_message_at = ?, updated_at = ? "  # noqa: S608
    "WHERE friendship_id = ?".format(", ".join(f"{name} = ?" for name in _FIELDS))
)


def _read_sqlite(connection: Any, ids: list[int], texts: dict[datetime, str]) -> list[tuple[Any, ...]]:
    statement = _SQLITE_READ.format(",".join("?" * len(ids)))
    out = []
    for row in connection.exec_driver_sql(statement, tuple(ids)):
        moments = []
        for raw in row[1 : 1 + _TIMES]:
            moment = from_sqlite_text(raw)
            if moment is not None:
                texts[moment] = raw
            moments.append(moment)
        out.append((row[0], *moments, *row[1 + _TIMES :]))
    return out


def _update_sqlite(
    connection: Any, rows: list[dict[str, Any]], now: datetime, texts: dict[datetime, str]
) -> None:
    def text_of(moment: datetime | None) -> str | None:
        if moment is None:
            return None
        known = texts.get(moment)
        if known is None:
            known = texts[moment] = sqlite_text(moment)  # type: ignore[assignment]
        return known

    updated_at = sqlite_text(now)
    connection.exec_driver_sql(
        _SQLITE_UPDATE,
        [
            (
                *(text_of(row[name]) for name in _FIELDS[:_TIMES]),
                *(row[name] for name in _FIELDS[_TIMES:]),
                text_of(row["last_message_at"]),
                updated_at,
                row["friendship_id"],
            )
            for row in rows
        ],
    )


def _values(friendship_id: int, state: tuple[Any, ...], now: datetime) -> dict[str, Any]:
    values = dict(zip(_FIELDS, state, strict=True))
    values["friendship_id"] = friendship_id
    values["last_message_at"] = _later(state[0], state[1])
    values["updated_at"] = now
    return values


def _insert(
    connection: Any, dialect: str, table: Table, rows: list[dict[str, Any]], now: datetime
) -> set[int]:
    """Insert new rows unless another ingest did first; the ids this one inserted."""
    if dialect == "postgresql":
        return set(connection.execute(_PG_INSERT, _arrays(rows, now)).scalars())
    return set(connection.execute(_insert_statement(table), rows).scalars())


def _update(
    connection: Any, dialect: str, rows: list[dict[str, Any]], now: datetime, texts: dict[datetime, str]
) -> None:
    if dialect == "postgresql":
        connection.execute(_PG_UPDATE, _arrays(rows, now))
    else:
        _update_sqlite(connection, rows, now, texts)


# On PostgreSQL a chunk is written by ONE statement over unnest()ed arrays, where an executemany
# is one statement per row for the server to plan and run (measured: 4x the time at 10,000
# friendships per batch). SQLite runs in-process, where executemany is already cheap.
_PG_COLUMNS = (
    ("friendship_id", "bigint"),
    ("last_customer_message_at", "timestamptz"),
    ("last_rep_message_at", "timestamptz"),
    ("waiting_since", "timestamptz"),
    ("answered_wait_started_at", "timestamptz"),
    ("first_response_at", "timestamptz"),
    ("first_response_s", "integer"),
    ("response_count", "integer"),
    ("response_total_s", "bigint"),
    ("last_message_at", "timestamptz"),
)
_UNNEST = "unnest({}) AS v({})".format(
    ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _PG_COLUMNS),
    ", ".join(name for name, _ in _PG_COLUMNS),
)
# Built from the constant column list above, never from input.
_PG_INSERT = text(
    "INSERT INTO chat_signals ({}, updated_at) SELECT v.*, CAST(:now AS timestamptz) FROM {} "  # noqa: S608
    "ON CONFLICT (friendship_id) DO NOTHING RETURNING friendship_id".format(
        ", ".join(name for name, _ in _PG_COLUMNS), _UNNEST
    )
)
_PG_UPDATE = text(
    "UPDATE chat_signals AS s SET {}, updated_at = CAST(:now AS timestamptz) FROM {} "  # noqa: S608
    "WHERE s.friendship_id = v.friendship_id".format(
        ", ".join(f"{name} = v.{name}" for name, _ in _PG_COLUMNS[1:]), _UNNEST
    )
)


def _arrays(rows: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    params: dict[str, Any] = {name: [row[name] for row in rows] for name, _ in _PG_COLUMNS}
    params["now"] = now
    return params


@functools.cache
def _insert_statement(table: Table) -> Any:
    return (
        sqlite.insert(table)
        .on_conflict_do_nothing(index_elements=["friendship_id"])
        .returning(table.c.friendship_id)
    )


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _fold(
    state: tuple[Any, ...], messages: list[tuple[datetime, bool]], hours: WorkingHours
) -> tuple[Any, ...]:
    """The signals after ``messages`` (the module docstring has the rules)."""
    # The columns' type (UTCDateTime) hands every stored moment back aware, in UTC.
    (last_customer, last_rep, waiting, answered_start, answered_at, latest_s, count, total) = state
    if waiting is not None:
        # An open wait is a customer message at ``waiting`` with no reply after it: replayed with
        # the batch, an older exchange in a late batch answers only what it answered then.
        messages.insert(0, (waiting, False))
        waiting = None
    messages.sort(key=itemgetter(0))  # stable: same-second messages keep the ingest's order
    for sent_at, is_rep in messages:
        if is_rep:
            if last_rep is None or sent_at > last_rep:
                last_rep = sent_at
            if waiting is not None and sent_at >= waiting:
                latest_s = hours.working_seconds_between(waiting, sent_at)
                count += 1
                total += latest_s
                answered_start, answered_at, waiting = waiting, sent_at, None
            elif _inside(answered_start, sent_at, answered_at):
                # A late reply, earlier than the one counted: it was the real first reply.
                corrected = hours.working_seconds_between(answered_start, sent_at)
                total += corrected - (latest_s or 0)
                latest_s, answered_at = corrected, sent_at
        else:
            if last_customer is None or sent_at > last_customer:
                last_customer = sent_at
            if (last_rep is None or sent_at > last_rep) and (waiting is None or sent_at < waiting):
                waiting = sent_at
    return (last_customer, last_rep, waiting, answered_start, answered_at, latest_s, count, total)


def _inside(start: datetime | None, moment: datetime, end: datetime | None) -> bool:
    return start is not None and end is not None and start <= moment < end


def signals_for(session: Session, friendship_id: int) -> ChatSignal | None:
    return session.get(ChatSignal, friendship_id)
