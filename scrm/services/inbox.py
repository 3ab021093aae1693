"""The inbox: every verified callback, stored before WeCom gets its 200.

``accept`` inserts under the event's dedupe key (WeCom's retries of one event collapse to one row)
and, for an add event carrying a WelcomeCode, queues the welcome message in the same write —
the code lives 20 s (doc 92137), so it must not wait behind the handler. It runs for every
callback while WeCom waits, so unlike other services it writes through ``db.hot_write``'s
DBAPI-level connection (the edge still owns the commit) and uses as few statements as the
database allows. Processing claims a row with a compare-and-set, and only when no earlier row
about the same customer or group is still open: events of one customer apply in arrival order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session

from scrm.db import HotConnection, dialect_insert, insert_ignore_statement
from scrm.errors import NotFound
from scrm.models import InboxEvent, InboxStatus, OutboxCommand
from scrm.services import welcome
from scrm.timeutil import utcnow
from scrm.wecom.parse import Envelope

log = logging.getLogger(__name__)

TABLE = cast(Table, InboxEvent.__table__)  # Core statements on the hot paths skip the ORM's per-row work

LEASE = timedelta(seconds=120)
# Long enough for one send with its timeout; a second sender after it would get 41051 anyway.
WELCOME_LEASE = timedelta(seconds=10)
OPEN_STATUSES = (InboxStatus.PENDING, InboxStatus.PROCESSING, InboxStatus.FAILED)


@dataclass(frozen=True)
class Accepted:
    inbox_id: int | None  # None: a duplicate delivery of an event we already hold
    welcome: welcome.WelcomeSend | None


def accept(
    conn: HotConnection, envelope: Envelope, plaintext: str, *, claim_welcome: bool = False
) -> Accepted:
    """Store the event unless we hold it already, with its welcome command if it calls for one.

    ``conn`` comes from ``db.hot_write``. On PostgreSQL it autocommits, so event and
    welcome go in as one statement (a CTE); on SQLite it is one transaction. Either way a retry
    of an event we hold writes nothing, not even a second welcome. ``claim_welcome``: the caller
    sends the welcome itself right after commit, so the row is stored claimed.
    """
    now = utcnow()
    event_row = {
        "dedupe_key": envelope.dedupe_key,
        "msg_type": envelope.msg_type[:32],
        "event": envelope.event[:64],
        "change_type": envelope.change_type[:64],
        "ordering_key": envelope.ordering_key[:80],
        "payload": plaintext,
        "created_time": envelope.create_time,
        "status": InboxStatus.PENDING.value,
        "attempts": 0,
        "received_at": now,
        "next_attempt_at": now,
    }
    command = welcome.command_for_event(
        conn.engine, envelope, now=now, claimed_for=WELCOME_LEASE if claim_welcome else None
    )
    dialect = conn.engine.dialect.name
    if command is None:
        return Accepted(_first_value(conn, _insert_event(dialect), event_row), None)
    if dialect == "postgresql":
        params = event_row | {f"command_{name}": value for name, value in command.items()}
        statement = _insert_event_and_command_pg(tuple(event_row), tuple(command))
        inbox_id, command_id = conn.first(statement, params) or (None, None)
    else:
        command_id = None
        inbox_id = _first_value(conn, _insert_event(dialect), event_row)
        if inbox_id is not None:
            command_id = _first_value(
                conn,
                insert_ignore_statement(dialect, OutboxCommand, ["idempotency_key"]),
                command | {"inbox_event_id": inbox_id},
            )
    return Accepted(inbox_id, welcome.WelcomeSend.of(command_id, command) if command_id else None)


def _first_value(conn: HotConnection, statement: Any, values: dict[str, Any]) -> Any:
    """The id an ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` gave; None when it conflicted."""
    row = conn.first(statement, values)
    return None if row is None else row[0]


def _insert_event(dialect: str) -> Any:
    return insert_ignore_statement(dialect, InboxEvent, ["dedupe_key"])


@cache
def _insert_event_and_command_pg(event_fields: tuple[str, ...], command_fields: tuple[str, ...]) -> Any:
    """One PostgreSQL statement: the inbox row, and the outbox row only if the inbox row is new.

    Returns (inbox id or NULL for a duplicate, command id or NULL). Built once for the column
    names ``accept`` fills; the outbox values are bound as ``command_<column>``.
    """
    event_table, command_table = TABLE, cast(Table, OutboxCommand.__table__)
    event = (
        dialect_insert("postgresql", InboxEvent)
        .values({name: bindparam(name, type_=event_table.c[name].type) for name in event_fields})
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(event_table.c.id)
        .cte("event")
    )
    command_columns = [command_table.c[name] for name in command_fields if name != "inbox_event_id"]
    command = (
        dialect_insert("postgresql", OutboxCommand)
        .from_select(
            [c.name for c in command_columns] + ["inbox_event_id"],
            select(*(bindparam(f"command_{c.name}", type_=c.type) for c in command_columns), event.c.id),
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(command_table.c.id)
        .cte("command")
    )
    return select(select(event.c.id).scalar_subquery(), select(command.c.id).scalar_subquery())


@dataclass(frozen=True)
class ClaimedEvent:
    """A row this worker now holds (PROCESSING, leased)."""

    id: int
    payload: str
    ordering_key: str


def _due(now: datetime) -> ColumnElement[bool]:
    t = TABLE.c
    return or_(
        t.status.in_((InboxStatus.PENDING, InboxStatus.FAILED)) & (t.next_attempt_at <= now),
        (t.status == InboxStatus.PROCESSING) & (t.lease_until < now),
    )


def claim_due(session: Session, *, limit: int, ids: list[int] | None = None) -> list[ClaimedEvent]:
    """Claim up to ``limit`` due rows that are first in line for their customer or group, in one
    UPDATE … RETURNING; optionally only among ``ids``.

    A row waits while an earlier row with its ordering key is still open (pending, processing or
    failed), so one customer's events apply in arrival order while different customers' events
    run side by side. The due condition is repeated in the outer WHERE: a compare-and-set, so a
    web worker or another scheduler replica racing for the same row never gets it too.
    """
    now = utcnow()
    t = TABLE
    earlier = t.alias("earlier")
    blocked = exists().where(
        earlier.c.ordering_key == t.c.ordering_key,
        earlier.c.id < t.c.id,
        earlier.c.status.in_(OPEN_STATUSES),
    )
    candidates = select(t.c.id).where(_due(now), or_(t.c.ordering_key == "", ~blocked))
    if ids is not None:
        candidates = candidates.where(t.c.id.in_(ids))
    candidates = candidates.order_by(t.c.id).limit(limit)
    rows = session.execute(
        update(t)
        .where(t.c.id.in_(candidates.scalar_subquery()), _due(now))
        .values(status=InboxStatus.PROCESSING, lease_until=now + LEASE, attempts=t.c.attempts + 1)
        .returning(t.c.id, t.c.payload, t.c.ordering_key)
    ).all()
    return sorted((ClaimedEvent(row.id, row.payload, row.ordering_key) for row in rows), key=lambda e: e.id)


def mark_done_many(session: Session, statuses: dict[int, InboxStatus]) -> None:
    """Close the rows a batch applied (DONE, or IGNORED when no handler knows the event)."""
    t = TABLE
    now = utcnow()
    for status in set(statuses.values()):
        ids = [i for i, s in statuses.items() if s is status]
        session.execute(
            update(t)
            .where(t.c.id.in_(ids))
            .values(status=status, processed_at=now, lease_until=None, last_error=None)
        )


def claim_for_replay(session: Session, inbox_id: int) -> ClaimedEvent | None:
    """Claim a row for ``scrm events replay`` whatever its status and place in line, unless a
    worker is processing it right now."""
    t = TABLE
    row = session.execute(
        update(t)
        .where(t.c.id == inbox_id, t.c.status != InboxStatus.PROCESSING)
        .values(status=InboxStatus.PROCESSING, lease_until=utcnow() + LEASE, attempts=t.c.attempts + 1)
        .returning(t.c.id, t.c.payload, t.c.ordering_key)
    ).first()
    return ClaimedEvent(row.id, row.payload, row.ordering_key) if row is not None else None


def mark_failed(session: Session, inbox_id: int, error: str, max_attempts: int) -> InboxEvent:
    row = session.get_one(InboxEvent, inbox_id)
    row.lease_until = None
    row.last_error = error[:4000]
    if row.attempts >= max_attempts:
        row.status = InboxStatus.DEAD
        log.warning(
            "inbox %s (%s/%s) dead after %s attempts", row.id, row.event, row.change_type, row.attempts
        )
    else:
        row.status = InboxStatus.FAILED
        row.next_attempt_at = utcnow() + timedelta(seconds=min(2**row.attempts, 600))
    return row


def next_in_line(session: Session, ordering_key: str, after_id: int) -> int | None:
    if not ordering_key:
        return None
    return session.scalar(
        select(InboxEvent.id)
        .where(
            InboxEvent.ordering_key == ordering_key,
            InboxEvent.id > after_id,
            InboxEvent.status == InboxStatus.PENDING,
        )
        .order_by(InboxEvent.id)
        .limit(1)
    )


def reset_for_replay(session: Session, inbox_ids: list[int]) -> list[int]:
    """Put chosen events back to PENDING (any status but one being processed right now)."""
    done: list[int] = []
    for inbox_id in inbox_ids:
        row = session.get(InboxEvent, inbox_id)
        if row is None:
            raise NotFound(f"inbox event {inbox_id} does not exist")
        if row.status is InboxStatus.PROCESSING and row.lease_until and row.lease_until > utcnow():
            continue
        row.status = InboxStatus.PENDING
        row.attempts = 0
        row.next_attempt_at = utcnow()
        row.last_error = None
        done.append(inbox_id)
    return done
