"""The inbox: every verified callback, stored before WeCom gets its 200.

``arrive`` builds a callback's row and, for an add event carrying a WelcomeCode, its welcome
command — the code lives 20 s (doc 92137), so the welcome must not wait behind the handler —
converted for the driver in the request's own thread. ``accept`` then stores a whole group of
arrivals (``db.run_hot_write``'s group commit) under their dedupe keys (WeCom's retries of one
event collapse to one row), events and welcomes in the same write. It runs for every callback
while WeCom waits, so unlike other services it writes through the DBAPI-level connection and
with one multi-row statement per table (one CTE on PostgreSQL). Processing claims a row with a
compare-and-set, and only when no earlier row about the same customer or group is still open:
events of one customer apply in arrival order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from itertools import chain
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Engine,
    String,
    Table,
    bindparam,
    exists,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from scrm.db import (
    HotConnection,
    RowShape,
    dialect_insert,
    insert_ignore_rows,
    insert_ignore_rows_statement,
    positional_sql,
)
from scrm.errors import NotFound
from scrm.models import InboxEvent, InboxStatus, OutboxCommand, OutboxKind
from scrm.services import outbox, welcome
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


@dataclass(frozen=True)
class Arrival:
    """One verified callback made ready for the inbox (``arrive``): its rows built and converted
    for the driver in the request's own thread, before the write it waits for."""

    dedupe_key: str
    event_values: list[Any]  # EVENT fields, driver-ready
    command: dict[str, Any] | None  # the welcome's outbox row, if the event calls for one
    command_values: list[Any] | None  # its COMMAND fields, driver-ready; inbox_event_id unset


# The inbox columns ``arrive`` fills. RowShape.values refuses a row with a key more or less,
# so this list and ``arrive``'s row cannot drift apart unnoticed.
_EVENT_FIELDS = (
    "dedupe_key",
    "msg_type",
    "event",
    "change_type",
    "ordering_key",
    "payload",
    "created_time",
    "status",
    "attempts",
    "received_at",
    "next_attempt_at",
)


# The outbox columns a welcome command fills: the keys of ``outbox.command_row``.
_COMMAND_FIELDS = tuple(outbox.command_row(OutboxKind.SEND_WELCOME_MSG, {}, ""))


@dataclass(frozen=True)
class _Shapes:
    event: RowShape
    command: RowShape
    command_id_slot: int  # where inbox_event_id sits in a command's values


_SHAPES: dict[tuple[str, str], _Shapes] = {}


def _shapes(dialect: Any) -> _Shapes:
    key = (dialect.name, dialect.driver)
    shapes = _SHAPES.get(key)
    if shapes is None:
        command = RowShape(dialect, OutboxCommand, _COMMAND_FIELDS)
        shapes = _Shapes(
            RowShape(dialect, InboxEvent, _EVENT_FIELDS), command, command.fields.index("inbox_event_id")
        )
        shapes = _SHAPES.setdefault(key, shapes)
    return shapes


def arrive(engine: Engine, envelope: Envelope, plaintext: str, *, claim_welcome: bool = False) -> Arrival:
    """The inbox row of a verified callback, and the welcome command its add event calls for.

    ``claim_welcome``: the caller sends the welcome itself right after commit, so the command
    is stored claimed.
    """
    now = utcnow()
    shapes = _shapes(engine.dialect)
    dedupe_key = envelope.dedupe_key
    event = {
        "dedupe_key": dedupe_key,
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
    claimed_for = WELCOME_LEASE if claim_welcome else None
    command = welcome.command_for_event(engine, envelope, now=now, claimed_for=claimed_for)
    converted: dict[int, tuple[Any, Any]] = {}  # one ``now`` stamps four columns: convert it once
    return Arrival(
        dedupe_key,
        shapes.event.values(event, converted),
        command,
        shapes.command.values(command, converted) if command is not None else None,
    )


def accept(conn: HotConnection, arrivals: list[Arrival]) -> list[Accepted]:
    """Store each event unless we hold it already, with its welcome command if it has one; one
    result per arrival, in order.

    ``conn`` comes from ``db.run_hot_write``; the arrivals are the callbacks one group commit
    gathered. PostgreSQL: the events and their welcomes go in with one statement (a CTE of two
    multi-row inserts), which the autocommitting connection commits whole. SQLite: one
    multi-row statement for the events, then one for the welcomes, in the group's
    transaction. Either way a retry of an event we hold writes nothing, not even a second
    welcome; of two deliveries of one event in the same group the first is stored and the
    second is the duplicate.
    """
    first_of_key: dict[str, int] = {}
    for index, arrival in enumerate(arrivals):
        first_of_key.setdefault(arrival.dedupe_key, index)
    positions = sorted(first_of_key.values())  # later deliveries in the group are duplicates
    unique = [arrivals[index] for index in positions]
    shapes = _shapes(conn.engine.dialect)
    insert = _insert_pg if conn.engine.dialect.name == "postgresql" else _insert_sqlite
    inbox_ids, command_ids = insert(conn, shapes, unique)
    results = [Accepted(None, None)] * len(arrivals)
    for index, arrival, inbox_id, command_id in zip(positions, unique, inbox_ids, command_ids, strict=True):
        command = arrival.command
        send = welcome.WelcomeSend.of(command_id, command) if command_id and command else None
        results[index] = Accepted(inbox_id, send)
    return results


def _insert_sqlite(
    conn: HotConnection, shapes: _Shapes, arrivals: list[Arrival]
) -> tuple[list[int | None], list[int | None]]:
    """The events with one statement, then the welcome commands of the new ones with another
    (they need the events' ids); returns (inbox id or None, command id or None) per arrival."""
    inbox_ids = insert_ignore_rows(conn, shapes.event, "dedupe_key", [a.event_values for a in arrivals])
    welcomed: list[tuple[int, list[Any]]] = []
    for position, (arrival, inbox_id) in enumerate(zip(arrivals, inbox_ids, strict=True)):
        if inbox_id is not None and arrival.command_values is not None:
            values = list(arrival.command_values)
            values[shapes.command_id_slot] = inbox_id
            welcomed.append((position, values))
    command_ids: list[int | None] = [None] * len(arrivals)
    stored = insert_ignore_rows(conn, shapes.command, "idempotency_key", [values for _, values in welcomed])
    for (position, _), command_id in zip(welcomed, stored, strict=True):
        command_ids[position] = command_id
    return inbox_ids, command_ids


def _insert_pg(
    conn: HotConnection, shapes: _Shapes, arrivals: list[Arrival]
) -> tuple[list[int | None], list[int | None]]:
    """The events, and the welcome commands of those that are new, in one statement; returns
    (inbox id or None for a stored duplicate, command id or None) per arrival."""
    welcomed = [arrival for arrival in arrivals if arrival.command_values is not None]
    sql = _insert_pg_sql(shapes, len(arrivals), len(welcomed))
    slot = shapes.command_id_slot
    params = list(chain.from_iterable(arrival.event_values for arrival in arrivals))
    for arrival in welcomed:
        values = arrival.command_values or []
        params += [arrival.dedupe_key, *values[:slot], *values[slot + 1 :]]
    stored = {(is_command, key): row_id for is_command, row_id, key in conn.returning(sql, params)}
    inbox_ids = [stored.get((False, arrival.dedupe_key)) for arrival in arrivals]
    command_ids = [
        stored.get((True, arrival.command["idempotency_key"])) if arrival.command else None
        for arrival in arrivals
    ]
    return inbox_ids, command_ids


@cache
def _insert_pg_sql(shapes: _Shapes, events: int, commands: int) -> str:
    """The statement ``_insert_pg`` runs for ``events`` events of which ``commands`` carry a
    welcome; it binds the events' values, then per welcome its event's dedupe key and its
    values without inbox_event_id. Built once per shape.

    WITH event AS (INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING id, dedupe_key),
    command AS (INSERT … SELECT the welcome values joined to *new* events on the dedupe key …
    ON CONFLICT DO NOTHING RETURNING id, idempotency_key) SELECT both: a welcome is stored
    only with its event, never for a retry of an event we hold. Every welcome value is cast to
    its column's type: in a UNION a parameter's type is not inferred from the target column.
    """
    command_table = cast(Table, OutboxCommand.__table__)
    stored_fields = [name for name in shapes.command.fields if name != "inbox_event_id"]
    command_names = [
        [f"for_{i}", *(f"command_{name}_{i}" for name in stored_fields)] for i in range(commands)
    ]
    new_events, event_names = insert_ignore_rows_statement(shapes.event, "dedupe_key", events)
    event = new_events.cte("event")
    statement: Any = select(
        literal_column("false").label("is_command"), event.c.id, event.c.dedupe_key.label("key")
    )
    if commands:
        wanted_rows = [
            select(
                sql_cast(bindparam(names[0], type_=String()), String()).label("dedupe_key"),
                *(
                    sql_cast(
                        bindparam(bound, type_=command_table.c[name].type), command_table.c[name].type
                    ).label(name)
                    for name, bound in zip(stored_fields, names[1:], strict=True)
                ),
            )
            for names in command_names
        ]
        wanted = (union_all(*wanted_rows) if len(wanted_rows) > 1 else wanted_rows[0]).subquery("wanted")
        command = (
            dialect_insert("postgresql", OutboxCommand)
            .from_select(
                [*stored_fields, "inbox_event_id"],
                select(*(wanted.c[name] for name in stored_fields), event.c.id).join_from(
                    wanted, event, wanted.c.dedupe_key == event.c.dedupe_key
                ),
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(command_table.c.id, command_table.c.idempotency_key)
            .cte("command")
        )
        statement = union_all(
            statement, select(literal_column("true"), command.c.id, command.c.idempotency_key)
        )
    expected = event_names + list(chain.from_iterable(command_names))
    return positional_sql(shapes.event.dialect, statement, expected)


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
