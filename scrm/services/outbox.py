"""The outbox: every WeCom write as a row, written with the change that caused it.

Rows are claimed with a compare-and-set UPDATE (status + lease), so two scheduler replicas or a
web worker and the scheduler never send the same row at once; on PostgreSQL the candidate scan
also uses ``FOR UPDATE SKIP LOCKED``. The gateway call happens between two short transactions,
never inside one. Outcomes: sent; retry later with backoff (-1, 45009, timeouts, token trouble);
expired (a welcome code past its 20 s life); dead after ``max_attempts`` — visible in the console.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Engine, Table, or_, select, update
from sqlalchemy.orm import Session

from scrm.db import insert_ignore
from scrm.errors import Conflict, WeComError, WeComRateLimited, WeComRetryable
from scrm.models import Channel, ChannelStatus, OutboxCommand, OutboxKind, OutboxStatus
from scrm.timeutil import utcnow

log = logging.getLogger(__name__)

TABLE = cast(Table, OutboxCommand.__table__)  # Core statements on the hot paths skip the ORM's per-row work

LEASE = timedelta(seconds=60)
WELCOME_PRIORITY = 100
EXPIRED_NOTE = "expired before it could be sent"
# How long the outbox tick leaves a welcome row to the welcome lane before sending it itself.
WELCOME_LANE_GRACE = timedelta(seconds=2)
# A welcome due this long without the welcome lane taking it means the lane is short of CPU or
# database (see welcomes_behind).
WELCOME_BEHIND = timedelta(milliseconds=500)
# 41051: the customer already got a welcome (another app or an earlier try of ours) — done (doc 92137).
ALREADY_DONE_ERRCODES = {OutboxKind.SEND_WELCOME_MSG: {41051}}
# 41050: welcome code invalid or expired — nothing will ever make it work again.
EXPIRED_ERRCODES = {OutboxKind.SEND_WELCOME_MSG: {41050}}


def enqueue(
    session: Session, kind: OutboxKind, payload: dict[str, Any], idempotency_key: str, **options: Any
) -> int | None:
    """Queue a write; a second enqueue with the same key is a no-op (returns None). ``options``
    are ``command_row``'s: priority, expires_at, inbox_event_id, channel_id."""
    row = command_row(kind, payload, idempotency_key, **options)
    return insert_ignore(session, OutboxCommand, row, ["idempotency_key"])


def command_row(
    kind: OutboxKind,
    payload: dict[str, Any],
    idempotency_key: str,
    *,
    priority: int = 0,
    expires_at: datetime | None = None,
    inbox_event_id: int | None = None,
    channel_id: int | None = None,
    claimed_for: timedelta | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The column values of a new outbox row, for ``enqueue`` and the callback's own insert.

    ``claimed_for``: the caller sends the row itself right after commit, so it is stored already
    claimed (status SENDING, leased for that long) — no second round of claiming on the hot path.
    If the sender dies, the outbox tick takes the row over when the lease lapses.
    """
    now = now or utcnow()
    return {
        "idempotency_key": idempotency_key,
        "kind": kind.value,
        "payload": payload,
        "status": (OutboxStatus.SENDING if claimed_for else OutboxStatus.PENDING).value,
        "lease_until": now + claimed_for if claimed_for else None,
        "priority": priority,
        "attempts": 1 if claimed_for else 0,
        "created_at": now,
        "next_attempt_at": now,
        "expires_at": expires_at,
        "inbox_event_id": inbox_event_id,
        "channel_id": channel_id,
    }


@dataclass(frozen=True)
class Claimed:
    """A row this worker now holds (SENDING, leased): everything needed to send it."""

    id: int
    kind: OutboxKind
    payload: dict[str, Any]
    idempotency_key: str
    created_at: datetime


def _due(now: datetime) -> ColumnElement[bool]:
    t = TABLE.c
    return or_(
        (t.status == OutboxStatus.PENDING) & (t.next_attempt_at <= now),
        (t.status == OutboxStatus.SENDING) & (t.lease_until < now),
    )


def claim_due(
    session: Session,
    *,
    limit: int = 100,
    min_priority: int | None = None,
    ids: Iterable[int] | None = None,
    leave_urgent_for: timedelta | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` due rows (optionally only among ``ids``) in one UPDATE … RETURNING.

    The due condition sits in the outer WHERE as well as in the candidate scan, so it is a
    compare-and-set: two claimers racing for a row never both get it (on PostgreSQL the scan
    also skips rows another claimer has locked). Rows past their expiry — a welcome code older
    than 20 s — are marked expired here instead of being handed out. ``leave_urgent_for``: a
    claimer that is not the welcome lane takes welcome rows only once they have waited that long
    (the lane is down or behind), so it never competes with the lane for them.
    """
    now = utcnow()
    t = TABLE
    candidates = select(t.c.id).where(_due(now))
    if min_priority is not None:
        candidates = candidates.where(t.c.priority >= min_priority)
    if leave_urgent_for is not None:
        candidates = candidates.where(
            or_(t.c.priority < WELCOME_PRIORITY, t.c.created_at <= now - leave_urgent_for)
        )
    if ids is not None:
        candidates = candidates.where(t.c.id.in_(list(ids)))
    candidates = (
        candidates.order_by(t.c.priority.desc(), t.c.id).limit(limit).with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(t)
        .where(t.c.id.in_(candidates.scalar_subquery()), _due(now))
        .values(status=OutboxStatus.SENDING, lease_until=now + LEASE, attempts=t.c.attempts + 1)
        .returning(t.c.id, t.c.kind, t.c.payload, t.c.idempotency_key, t.c.created_at, t.c.expires_at)
    ).all()
    expired = [row.id for row in rows if row.expires_at is not None and row.expires_at <= now]
    record_expired(session, expired)
    return sorted(
        (
            Claimed(row.id, row.kind, dict(row.payload), row.idempotency_key, row.created_at)
            for row in rows
            if row.id not in expired
        ),
        key=lambda c: c.id,
    )


def pending_for_events(session: Session, inbox_ids: list[int]) -> list[int]:
    """The writes these events' handlers just queued (so their worker can send them at once);
    not their welcome messages, which are the welcome lane's."""
    return list(
        session.scalars(
            select(OutboxCommand.id).where(
                OutboxCommand.inbox_event_id.in_(inbox_ids),
                OutboxCommand.status == OutboxStatus.PENDING,
                OutboxCommand.priority < WELCOME_PRIORITY,
            )
        )
    )


def welcomes_behind(engine: Engine, behind: timedelta = WELCOME_BEHIND) -> bool:
    """Whether a welcome has been due for longer than ``behind`` and is still not taken.

    The welcome lane claims every 0.1 s, so such a row means the lane is starved — on a shared
    host, by the handler lane working off a backlog beside it. The handler lane asks between
    its transactions and makes room (``db.step_aside``): its work can wait, a welcome code dies
    20 s after the add. One indexed read with LIMIT 1, outside any transaction.
    """
    t = TABLE.c
    query = (
        select(t.id)
        .where(
            t.status == OutboxStatus.PENDING,
            t.next_attempt_at <= utcnow() - behind,
            t.priority >= WELCOME_PRIORITY,
        )
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


def backoff(attempts: int, *, rate_limited: bool = False) -> timedelta:
    if rate_limited:
        # 45009 blocks the caller for a minute-window at least (REFERENCE §3.14)
        return timedelta(seconds=60 * min(attempts, 10))
    return timedelta(seconds=min(2 ** (attempts - 1), 300))


def record_expired(session: Session, command_ids: list[int]) -> None:
    """Close rows whose deadline (a welcome code's 20 s) passed before they could be sent."""
    if command_ids:
        session.execute(
            update(TABLE)
            .where(TABLE.c.id.in_(command_ids))
            .values(status=OutboxStatus.EXPIRED, last_error=EXPIRED_NOTE, lease_until=None)
        )
        log.warning("outbox %s expired before sending", ", ".join(map(str, sorted(command_ids))))


def record_outcomes(
    session: Session, outcomes: dict[int, dict[str, Any] | WeComError], max_attempts: int
) -> dict[int, OutboxStatus]:
    """Record what a batch of sends came to, all rows in one go; returns each row's new status."""
    commands = session.scalars(select(OutboxCommand).where(OutboxCommand.id.in_(list(outcomes))))
    statuses: dict[int, OutboxStatus] = {}
    for command in commands:
        outcome = outcomes[command.id]
        if isinstance(outcome, WeComError):
            _failed(session, command, outcome, max_attempts)
            log.info(
                "outbox %s (%s) attempt %s failed: %s -> %s",
                command.id,
                command.kind,
                command.attempts,
                outcome.errcode,
                command.status,
            )
        else:
            _succeeded(session, command, outcome)
        statuses[command.id] = command.status
    return statuses


def _succeeded(session: Session, command: OutboxCommand, result: dict[str, Any]) -> OutboxCommand:
    command.status = OutboxStatus.SENT
    command.sent_at = utcnow()
    command.lease_until = None
    command.result = result
    command.last_error = None
    _apply_side_effects(session, command, result)
    return command


def _failed(session: Session, command: OutboxCommand, error: WeComError, max_attempts: int) -> OutboxCommand:
    command.lease_until = None
    command.last_errcode = error.errcode
    command.last_error = error.message[:2000]
    if error.errcode in ALREADY_DONE_ERRCODES.get(command.kind, set()):
        command.status = OutboxStatus.SENT
        command.sent_at = utcnow()
        command.result = {"errcode": error.errcode, "note": "already done"}
        return command
    if error.errcode in EXPIRED_ERRCODES.get(command.kind, set()):
        command.status = OutboxStatus.EXPIRED
        return command
    if isinstance(error, WeComRetryable) and command.attempts < max_attempts:
        command.status = OutboxStatus.PENDING
        delay = backoff(command.attempts, rate_limited=isinstance(error, WeComRateLimited))
        if command.expires_at is not None:
            # A welcome code dies in 20 s: retry fast inside the window rather than after it.
            delay = min(delay, timedelta(milliseconds=500))
        command.next_attempt_at = utcnow() + delay
        return command
    command.status = OutboxStatus.DEAD
    log.warning(
        "outbox %s (%s) dead after %s attempts: %s",
        command.id,
        command.kind,
        command.attempts,
        command.last_error,
    )
    if command.kind is OutboxKind.ADD_CONTACT_WAY and command.channel_id:
        channel = session.get(Channel, command.channel_id)
        if channel is not None:
            channel.status = ChannelStatus.FAILED
    return command


def retry_dead(session: Session, command_id: int) -> OutboxCommand:
    command = session.get_one(OutboxCommand, command_id)
    if command.status is not OutboxStatus.DEAD:
        raise Conflict(f"outbox command {command_id} is {command.status}; only dead commands can be retried")
    command.status = OutboxStatus.PENDING
    command.attempts = 0
    command.next_attempt_at = utcnow()
    return command


def _apply_side_effects(session: Session, command: OutboxCommand, result: dict[str, Any]) -> None:
    if command.kind is OutboxKind.ADD_CONTACT_WAY and command.channel_id:
        channel = session.get(Channel, command.channel_id)
        if channel is not None:
            channel.config_id = result.get("config_id")
            channel.qr_code = result.get("qr_code")
            channel.status = ChannelStatus.ACTIVE
