"""The inbox: every verified callback, stored before WeCom gets its 200.

``accept`` inserts under the event's dedupe key (WeCom's retries of one event collapse to one row)
and, for an add event carrying a WelcomeCode, queues the welcome message in the same transaction —
the code lives 20 s (doc 92137), so it must not wait behind the handler. Processing claims a row
with a compare-and-set, and only when no earlier row about the same customer or group is still
open: events of one customer apply in arrival order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from scrm.db import insert_ignore
from scrm.errors import NotFound
from scrm.models import InboxEvent, InboxStatus
from scrm.services import welcome
from scrm.timeutil import utcnow
from scrm.wecom.parse import Envelope

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=120)
# Long enough for one send with its timeout; a second sender after it would get 41051 anyway.
WELCOME_LEASE = timedelta(seconds=10)
OPEN_STATUSES = (InboxStatus.PENDING, InboxStatus.PROCESSING, InboxStatus.FAILED)


@dataclass(frozen=True)
class Accepted:
    inbox_id: int | None  # None: a duplicate delivery of an event we already hold
    welcome: welcome.WelcomeSend | None


def accept(session: Session, envelope: Envelope, plaintext: str, *, claim_welcome: bool = False) -> Accepted:
    """Store the event unless we hold it already. ``claim_welcome``: the caller will send the
    welcome itself right after commit, so the row is claimed here (one transaction fewer)."""
    now = utcnow()
    inbox_id = insert_ignore(
        session,
        InboxEvent,
        {
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
        },
        ["dedupe_key"],
    )
    if inbox_id is None:
        return Accepted(None, None)
    claimed_for = WELCOME_LEASE if claim_welcome else None
    return Accepted(inbox_id, welcome.queue_for_event(session, envelope, inbox_id, claimed_for=claimed_for))


def claim(session: Session, inbox_id: int, *, force: bool = False) -> InboxEvent | None:
    """Mark the row PROCESSING if it is due and first in line for its customer/group."""
    now = utcnow()
    row = session.get(InboxEvent, inbox_id)
    if row is None:
        return None
    if row.ordering_key and not force:
        earlier = session.scalar(
            select(func.count())
            .select_from(InboxEvent)
            .where(
                InboxEvent.ordering_key == row.ordering_key,
                InboxEvent.id < row.id,
                InboxEvent.status.in_(OPEN_STATUSES),
            )
        )
        if earlier:
            return None
    due = or_(
        InboxEvent.status.in_((InboxStatus.PENDING, InboxStatus.FAILED))
        & (InboxEvent.next_attempt_at <= now),
        (InboxEvent.status == InboxStatus.PROCESSING) & (InboxEvent.lease_until < now),
    )
    if force:
        due = InboxEvent.status != InboxStatus.PROCESSING
    result = session.execute(
        update(InboxEvent)
        .where(InboxEvent.id == inbox_id, due)
        .values(status=InboxStatus.PROCESSING, lease_until=now + LEASE, attempts=InboxEvent.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(InboxEvent, inbox_id, populate_existing=True)


def mark_done(session: Session, inbox_id: int, status: InboxStatus = InboxStatus.DONE) -> None:
    row = session.get_one(InboxEvent, inbox_id)
    row.status = status
    row.processed_at = utcnow()
    row.lease_until = None
    row.last_error = None


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


def due_ids(session: Session, limit: int = 200) -> list[int]:
    """Rows a tick should pick up: pending, failed past their backoff, or with a lapsed lease.

    A web worker may be taking a fresh row at the same moment; the compare-and-set in ``claim``
    lets exactly one of them run it.
    """
    now = utcnow()
    stmt = (
        select(InboxEvent.id)
        .where(
            or_(
                (InboxEvent.status == InboxStatus.FAILED) & (InboxEvent.next_attempt_at <= now),
                InboxEvent.status == InboxStatus.PENDING,
                (InboxEvent.status == InboxStatus.PROCESSING) & (InboxEvent.lease_until < now),
            )
        )
        .order_by(InboxEvent.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


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
