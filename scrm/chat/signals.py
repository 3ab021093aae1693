"""Chat signals per friendship (external_userid × rep userid): when the customer and the rep last
wrote, whether the customer is waiting for our reply and since when, and how fast the rep
answers, in working hours (scrm.timeutil.WorkingHours).

The archive ingest calls ``record`` once per batch with the batch's new 1:1 messages between a
customer and a rep. It is on the ingest's hot path, so a batch costs a fixed handful of
statements whatever its size (rows ensured with one INSERT … ON CONFLICT DO NOTHING, read with
one SELECT — FOR UPDATE on PostgreSQL, so two ingests of the same friendship queue instead of
losing a figure — and written with one executemany UPDATE), each in chunks of ``CHUNK`` rows,
with the messages folded per friendship in memory between the read and the write.

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

from sqlalchemy import BigInteger, ForeignKey, Integer, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from scrm.db import Base, Id
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
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        fresh = {"response_count": 0, "response_total_s": 0, "updated_at": now}
        ensure = [{"friendship_id": fid, **fresh} for fid in chunk]
        connection.execute(_ensure_statement(dialect, table), ensure)
        read = select(table.c.friendship_id, *(table.c[name] for name in _FIELDS)).where(
            table.c.friendship_id.in_(chunk)
        )
        if dialect == "postgresql":
            read = read.with_for_update()
        for row in connection.execute(read):
            before = tuple(row[1:])
            after = _fold(before, by_friend[row[0]], hours)
            if after != before:
                values = dict(zip(_FIELDS, after, strict=True))
                values["b_friendship_id"] = row[0]
                values["last_message_at"] = _later(after[0], after[1])
                values["updated_at"] = now
                changed.append(values)
    if changed:
        connection.execute(_update_statement(table), changed)
    return len(changed)


@functools.cache
def _ensure_statement(dialect: str, table: Table) -> Any:
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=["friendship_id"])


@functools.cache
def _update_statement(table: Table) -> Any:
    # The SET clause comes from the parameters' keys (the fields, last_message_at, updated_at).
    return update(table).where(table.c.friendship_id == bindparam("b_friendship_id"))


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
    (last_customer, last_rep, waiting, answered_start, answered_at, latest_s, count, total) = state
    # SQLite hands datetimes back naive (UTC): make them comparable with the messages'.
    last_customer, last_rep, waiting = _utc(last_customer), _utc(last_rep), _utc(waiting)
    answered_start, answered_at = _utc(answered_start), _utc(answered_at)
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


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else ensure_utc(moment)


def signals_for(session: Session, friendship_id: int) -> ChatSignal | None:
    return session.get(ChatSignal, friendship_id)
