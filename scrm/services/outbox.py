"""The outbox: every WeCom write as a row, written with the change that caused it.

Rows are claimed with a compare-and-set UPDATE (status + lease), so two scheduler replicas or a
web worker and the scheduler never send the same row at once; on PostgreSQL the candidate scan
also uses ``FOR UPDATE SKIP LOCKED``. The gateway call happens between two short transactions,
never inside one. Outcomes: sent; retry later with backoff (-1, 45009, timeouts, token trouble);
expired (a welcome code past its 20 s life); dead after ``max_attempts`` — visible in the console.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, true, update
from sqlalchemy.orm import Session

from scrm.db import insert_ignore
from scrm.errors import Conflict, WeComError, WeComRateLimited, WeComRetryable
from scrm.models import Channel, ChannelStatus, OutboxCommand, OutboxKind, OutboxStatus
from scrm.timeutil import utcnow

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
WELCOME_PRIORITY = 100
# 41051: the customer already got a welcome (another app or an earlier try of ours) — done (doc 92137).
ALREADY_DONE_ERRCODES = {OutboxKind.SEND_WELCOME_MSG: {41051}}
# 41050: welcome code invalid or expired — nothing will ever make it work again.
EXPIRED_ERRCODES = {OutboxKind.SEND_WELCOME_MSG: {41050}}


def enqueue(
    session: Session,
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
) -> int | None:
    """Queue a write; a second enqueue with the same key is a no-op (returns None).

    ``claimed_for``: the caller sends the row itself right after commit, so it is stored already
    claimed (status SENDING, leased for that long) — no second round of claiming on the hot path.
    If the sender dies, the outbox tick takes the row over when the lease lapses.
    """
    now = now or utcnow()
    return insert_ignore(
        session,
        OutboxCommand,
        {
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
        },
        ["idempotency_key"],
    )


def due_ids(session: Session, limit: int = 100, *, min_priority: int | None = None) -> list[int]:
    now = utcnow()
    stmt = (
        select(OutboxCommand.id)
        .where(
            or_(
                (OutboxCommand.status == OutboxStatus.PENDING) & (OutboxCommand.next_attempt_at <= now),
                (OutboxCommand.status == OutboxStatus.SENDING) & (OutboxCommand.lease_until < now),
            ),
            OutboxCommand.priority >= min_priority if min_priority is not None else true(),
        )
        .order_by(OutboxCommand.priority.desc(), OutboxCommand.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(stmt))


def claim(session: Session, command_id: int) -> OutboxCommand | None:
    """Take the row for sending if nobody else holds it; the caller commits right after."""
    now = utcnow()
    result = session.execute(
        update(OutboxCommand)
        .where(
            OutboxCommand.id == command_id,
            or_(
                (OutboxCommand.status == OutboxStatus.PENDING) & (OutboxCommand.next_attempt_at <= now),
                (OutboxCommand.status == OutboxStatus.SENDING) & (OutboxCommand.lease_until < now),
            ),
        )
        .values(status=OutboxStatus.SENDING, lease_until=now + LEASE, attempts=OutboxCommand.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    command = session.get(OutboxCommand, command_id, populate_existing=True)
    if command is not None and command.expires_at is not None and command.expires_at <= now:
        command.status = OutboxStatus.EXPIRED
        command.last_error = "expired before it could be sent"
        command.lease_until = None
        log.warning("outbox %s (%s) expired before sending", command.id, command.kind)
        return None
    return command


def backoff(attempts: int, *, rate_limited: bool = False) -> timedelta:
    if rate_limited:
        # 45009 blocks the caller for a minute-window at least (REFERENCE §3.14)
        return timedelta(seconds=60 * min(attempts, 10))
    return timedelta(seconds=min(2 ** (attempts - 1), 300))


def record_expired(session: Session, command_id: int) -> None:
    command = session.get_one(OutboxCommand, command_id)
    command.status = OutboxStatus.EXPIRED
    command.last_error = "expired before it could be sent"
    command.lease_until = None
    log.warning("outbox %s (%s) expired before sending", command.id, command.kind)


def record_success(session: Session, command_id: int, result: dict[str, Any]) -> OutboxCommand:
    command = session.get_one(OutboxCommand, command_id)
    command.status = OutboxStatus.SENT
    command.sent_at = utcnow()
    command.lease_until = None
    command.result = result
    command.last_error = None
    _apply_side_effects(session, command, result)
    return command


def record_failure(session: Session, command_id: int, error: WeComError, max_attempts: int) -> OutboxCommand:
    command = session.get_one(OutboxCommand, command_id)
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
