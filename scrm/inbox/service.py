"""Writes to the inbox: store a verified callback under its dedupe key, claim due events in
order, and record how their handling went.

``store`` runs in the callback's own unit of work, before WeCom gets its 200: one ordinary
``INSERT … ON CONFLICT DO NOTHING`` on a pooled connection, so WeCom's retries of one event
collapse to one row. Processing claims rows with a compare-and-set, and only rows that are first
in line for their customer or group: events of one customer apply in arrival order. A dead event
no longer holds its line; a replay of it is safe because every state remembers its event time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, Table, exists, or_, select, update
from sqlalchemy.orm import Session

from scrm.db import insert_ignore
from scrm.errors import NotFound
from scrm.inbox.models import OPEN_STATUSES, InboxEvent, InboxStatus
from scrm.timeutil import utcnow
from scrm.wecom.parse import Envelope

log = logging.getLogger(__name__)

# How long a claim lasts: one batch's WeCom reads (each with a couple of quick retries) and its
# apply. A worker that dies holding events delays them by at most this much.
LEASE = timedelta(seconds=30)


def store(session: Session, envelope: Envelope, plaintext: str) -> int | None:
    """Store a callback unless we hold it already; the new row's id, or None for a retry."""
    now = utcnow()
    return insert_ignore(
        session,
        InboxEvent,
        {
            "dedupe_key": envelope.dedupe_key,
            "msg_type": envelope.msg_type[:32],
            "event": envelope.event[:64],
            "change_type": envelope.change_type[:64],
            "ordering_key": envelope.ordering_key[:80],
            "userid": envelope.get("UserID")[:64],
            "external_userid": envelope.get("ExternalUserID")[:64],
            "payload": plaintext,
            "created_time": envelope.create_time,
            "status": InboxStatus.PENDING.value,
            "attempts": 0,
            "received_at": now,
            "next_attempt_at": now,
        },
        ["dedupe_key"],
    )


@dataclass(frozen=True)
class ClaimedEvent:
    """A row this worker now holds (PROCESSING, leased)."""

    id: int
    payload: str
    ordering_key: str


def _due(now: datetime) -> ColumnElement[bool]:
    t = InboxEvent
    return or_(
        t.status.in_((InboxStatus.PENDING, InboxStatus.FAILED)) & (t.next_attempt_at <= now),
        (t.status == InboxStatus.PROCESSING) & (t.lease_until < now),
    )


def claim_due(session: Session, *, limit: int, ids: list[int] | None = None) -> list[ClaimedEvent]:
    """Claim up to ``limit`` due rows that are first in line for their customer or group, in one
    UPDATE … RETURNING; optionally only among ``ids``.

    A row waits while an earlier row with its ordering key is still open (pending, processing or
    failed). The due condition is repeated in the outer WHERE: a compare-and-set, so a web worker
    or another scheduler replica racing for the same row never gets it too.
    """
    now = utcnow()
    t = cast(Table, InboxEvent.__table__)
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
    t = cast(Table, InboxEvent.__table__)
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
    t = cast(Table, InboxEvent.__table__)
    row = session.execute(
        update(t)
        .where(t.c.id == inbox_id, or_(t.c.status != InboxStatus.PROCESSING, t.c.lease_until < utcnow()))
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
