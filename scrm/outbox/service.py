"""Writes to the outbox: queue a WeCom write with the change that caused it, claim one for
sending, record the outcome of an attempt.

A claim is one row, held by a claim token under a lease sized to one call (for a welcome, never
past the code's death), so no claim outlives the call it covers and nothing is sent twice
because a lease lapsed mid-batch. Only the current holder may record an outcome: a sender whose
claim was taken over records nothing. The WeCom call itself happens between two short
transactions, never inside one (jobs/work.py). An attempt whose outcome cannot be known (a read
timeout, a sender that vanished) is remembered: a write that is safe to repeat is tried again
while it may still work; anything else ends UNKNOWN, never mislabelled as not sent.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from scrm.db import insert_ignore
from scrm.errors import Conflict, NotFound, WeComError, WeComOutcomeUnknown, WeComRateLimited, WeComRetryable
from scrm.outbox import kinds
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.timeutil import utcnow

log = logging.getLogger(__name__)

URGENT_PRIORITY = 100  # welcome messages: their code dies 20 s after the add (doc 92137)
EXPIRED_NOTE = "not sent: its deadline passed before it could be sent"
UNKNOWN_NOTE = "outcome unknown: an attempt may have reached WeCom; check in WeCom before retrying"
# How long the general lane leaves an urgent row to the welcome lane before sending it itself.
URGENT_LANE_GRACE = timedelta(seconds=2)
# A deadline closer than this is not worth an attempt: the call would outlive the code.
MIN_USEFUL_LIFE = timedelta(milliseconds=300)


def enqueue(
    session: Session,
    kind: kinds.Kind,
    payload: dict[str, Any],
    idempotency_key: str,
    *,
    ref: str = "",
    expires_at: datetime | None = None,
    inbox_event_id: int | None = None,
    not_before: datetime | None = None,
) -> int | None:
    """Queue a write; a second enqueue with the same key is a no-op (returns None). With
    ``not_before`` it is sent at that time and not sooner (a rep's reminder): what is due is data."""
    now = utcnow()
    return insert_ignore(
        session,
        OutboxCommand,
        {
            "idempotency_key": idempotency_key,
            "kind": kind.name,
            "payload": payload,
            "ref": ref,
            "status": OutboxStatus.PENDING.value,
            "priority": kind.priority,
            "attempts": 0,
            "has_unknown_attempt": False,
            "created_at": now,
            "next_attempt_at": max(not_before, now) if not_before is not None else now,
            "expires_at": expires_at,
            "inbox_event_id": inbox_event_id,
        },
        ["idempotency_key"],
    )


@dataclass(frozen=True)
class Claimed:
    """A row this sender now holds: everything needed to send it and to record the outcome."""

    id: int
    token: str
    kind: str
    payload: dict[str, Any]
    idempotency_key: str
    created_at: datetime


def lease_for(call_timeout_s: float, expires_at: datetime | None, now: datetime) -> timedelta:
    """Long enough for one call with a token refresh (two calls), never past a deadline. A write
    with a deadline (a welcome: its code dies 20 s after the add) gets one call's time only, so
    after a sender dies another retakes it while the code still lives; should the first call
    still land, WeCom dedupes the second (a used code answers 41051)."""
    if expires_at is not None:
        return min(timedelta(seconds=call_timeout_s + 1), expires_at - now)
    return timedelta(seconds=2 * call_timeout_s + 5)


def claim_next(
    session: Session,
    *,
    call_timeout_s: float,
    urgent_only: bool = False,
    leave_urgent_for: timedelta | None = None,
    ids: Iterable[int] | None = None,
) -> Claimed | None:
    """Claim the next due row, or None when nothing is due. Rows whose deadline has passed, or
    that cannot be retried after an unknown outcome, are closed on the way instead.

    Compare-and-set: the UPDATE repeats the due condition, so of two claimers racing for a row
    only one gets it; on PostgreSQL the candidate scan also skips rows another claimer holds.
    """
    select_due, claim = _claim_statements(urgent_only, leave_urgent_for is not None, ids is not None)
    while True:
        now = utcnow()
        params: dict[str, Any] = {"now": now}
        if leave_urgent_for is not None:
            params["urgent_before"] = now - leave_urgent_for
        if ids is not None:
            params["ids"] = list(ids)
        # Plain rows, not ORM objects: this runs once per WeCom write, and rarely needs more.
        row = session.execute(select_due, params).first()
        if row is None:
            return None
        lapsed = row.status is OutboxStatus.SENDING  # its sender vanished mid-call
        kind = kinds.get(row.kind)
        unknown = bool(row.has_unknown_attempt or lapsed)
        closing = _hopeless_status(row.expires_at, unknown, kind, now)
        if closing is not None:
            hopeless = session.get_one(OutboxCommand, row.id)
            hopeless.has_unknown_attempt = unknown
            # A lapsed row's holder may still be mid-call (a welcome's lease ends at its code's
            # death): it keeps its claim token, so a definite answer arriving later is recorded.
            _close(hopeless, closing, keep_claim=lapsed)
            session.flush()
            continue
        token = secrets.token_hex(16)
        claimed = session.execute(
            claim,
            {
                "now": now,
                "row_id": row.id,
                "token": token,
                "lease_until": now + lease_for(call_timeout_s, row.expires_at, now),
                "unknown": bool(row.has_unknown_attempt or lapsed),
            },
        ).first()
        if claimed is not None:
            return Claimed(row.id, token, row.kind, dict(row.payload), row.idempotency_key, row.created_at)


@functools.cache
def _claim_statements(urgent_only: bool, leaves_urgent: bool, among_ids: bool) -> tuple[Any, Any]:
    """The candidate scan and the compare-and-set claim, built once per shape with their values
    as bound parameters: building them per call cost more than running them."""
    t = OutboxCommand
    now = bindparam("now", type_=t.next_attempt_at.type)
    due = or_(
        (t.status == OutboxStatus.PENDING) & (t.next_attempt_at <= now),
        (t.status == OutboxStatus.SENDING) & (t.lease_until < now),
    )
    candidates = select(
        t.id,
        t.kind,
        t.status,
        t.expires_at,
        t.has_unknown_attempt,
        t.payload,
        t.idempotency_key,
        t.created_at,
    ).where(due)
    if urgent_only:
        candidates = candidates.where(t.priority >= URGENT_PRIORITY)
    if leaves_urgent:
        cutoff = bindparam("urgent_before", type_=t.created_at.type)
        candidates = candidates.where(or_(t.priority < URGENT_PRIORITY, t.created_at <= cutoff))
    if among_ids:
        candidates = candidates.where(t.id.in_(bindparam("ids", expanding=True)))
    select_due = candidates.order_by(t.priority.desc(), t.id).limit(1).with_for_update(skip_locked=True)
    claim = (
        update(t)
        .where(t.id == bindparam("row_id"), due)
        .values(
            status=OutboxStatus.SENDING,
            claim_token=bindparam("token"),
            lease_until=bindparam("lease_until", type_=t.lease_until.type),
            attempts=t.attempts + 1,
            has_unknown_attempt=bindparam("unknown"),
        )
        .returning(t.id)
        .execution_options(synchronize_session=False)
    )
    return select_due, claim


def claim_many(session: Session, count: int, **options: Any) -> list[Claimed]:
    """Claim up to ``count`` due rows in one transaction (``claim_next``'s options): a lane with
    several free senders pays for one transaction, not one each."""
    claimed: list[Claimed] = []
    while len(claimed) < count:
        one = claim_next(session, **options)
        if one is None:
            break
        claimed.append(one)
    return claimed


def _hopeless_status(
    expires_at: datetime | None, unknown: bool, kind: kinds.Kind, now: datetime
) -> OutboxStatus | None:
    """The status to close a row with instead of sending it, or None to send it: past its
    deadline (EXPIRED if no attempt may have reached WeCom, else UNKNOWN), or not retry-safe
    after an attempt of unknown outcome (UNKNOWN)."""
    if expires_at is not None and expires_at - now < MIN_USEFUL_LIFE:
        return OutboxStatus.UNKNOWN if unknown else OutboxStatus.EXPIRED
    if unknown and not kind.retry_safe:
        return OutboxStatus.UNKNOWN
    return None


def _close(row: OutboxCommand, status: OutboxStatus, *, keep_claim: bool = False) -> None:
    row.status = status
    row.lease_until = None
    if not keep_claim:
        row.claim_token = None
    if status is OutboxStatus.EXPIRED:
        row.last_error = EXPIRED_NOTE
    elif status is OutboxStatus.UNKNOWN:
        row.last_error = UNKNOWN_NOTE
    log.warning("outbox %s (%s) closed %s", row.id, row.kind, status)


def record_outcome(
    session: Session, claimed: Claimed, outcome: dict[str, Any] | WeComError, max_attempts: int
) -> OutboxStatus | None:
    """Record what an attempt came to; None when this sender no longer holds the claim.

    A row closed UNKNOWN while this attempt was in flight (its lease ended at its deadline) still
    takes the attempt's definite success: it did reach WeCom. Any other answer leaves it UNKNOWN.
    """
    kind = kinds.get(claimed.kind)
    if not isinstance(outcome, WeComError) and kind.on_sent is None:
        # The common case, in one statement: a success with nothing to follow up.
        sent = session.execute(
            _record_sent_statement(),
            {"row_id": claimed.id, "token": claimed.token, "sent_at": utcnow(), "result": outcome},
        ).first()
        if sent is None:
            log.warning("outbox %s: claim lost before its outcome was recorded", claimed.id)
            return None
        return OutboxStatus.SENT
    row = session.scalars(
        select(OutboxCommand)
        .where(
            OutboxCommand.id == claimed.id,
            OutboxCommand.claim_token == claimed.token,
            OutboxCommand.status.in_((OutboxStatus.SENDING, OutboxStatus.UNKNOWN)),
        )
        .with_for_update()
    ).first()
    if row is None:
        log.warning(
            "outbox %s: claim lost before its outcome was recorded; the holder records it", claimed.id
        )
        return None
    row.lease_until = None
    row.claim_token = None
    if row.status is OutboxStatus.UNKNOWN and isinstance(outcome, WeComError):
        if outcome.errcode not in kind.done_errcodes:
            return row.status
    if isinstance(outcome, WeComError):
        _failed(session, row, kind, outcome, max_attempts)
        log.info(
            "outbox %s (%s) attempt %s: %s -> %s", row.id, row.kind, row.attempts, outcome.errcode, row.status
        )
    else:
        _sent(session, row, kind, outcome)
    return row.status


@functools.cache
def _record_sent_statement() -> Any:
    """A success recorded on the claim, built once (values bound per call)."""
    t = OutboxCommand
    return (
        update(t)
        .where(
            t.id == bindparam("row_id"),
            t.claim_token == bindparam("token"),
            t.status.in_((OutboxStatus.SENDING, OutboxStatus.UNKNOWN)),
        )
        .values(
            status=OutboxStatus.SENT,
            sent_at=bindparam("sent_at", type_=t.sent_at.type),
            result=bindparam("result", type_=t.result.type),
            lease_until=None,
            claim_token=None,
            last_errcode=None,
            last_error=None,
        )
        .returning(t.id)
        .execution_options(synchronize_session=False)
    )


def _sent(session: Session, row: OutboxCommand, kind: kinds.Kind, result: dict[str, Any]) -> None:
    row.status = OutboxStatus.SENT
    row.sent_at = utcnow()
    row.result = result
    row.last_errcode = None
    row.last_error = None
    if kind.on_sent is not None:
        kind.on_sent(session, row, result)


def _failed(
    session: Session, row: OutboxCommand, kind: kinds.Kind, error: WeComError, max_attempts: int
) -> None:
    row.last_errcode = error.errcode
    row.last_error = error.message[:2000]
    if error.errcode in kind.done_errcodes:
        # e.g. 41051: the welcome code was used — by an earlier attempt of ours.
        row.status = OutboxStatus.SENT
        row.sent_at = utcnow()
        row.result = {"errcode": error.errcode, "note": "already done"}
        return
    if isinstance(error, WeComOutcomeUnknown):
        row.has_unknown_attempt = True
    if error.errcode in kind.expired_errcodes:
        _close(row, OutboxStatus.UNKNOWN if row.has_unknown_attempt else OutboxStatus.EXPIRED)
        return
    lives = row.expires_at is not None and row.expires_at > utcnow()
    retryable = isinstance(error, WeComRetryable) and (kind.retry_safe or not row.has_unknown_attempt)
    if retryable and (lives or row.attempts < max_attempts):
        row.status = OutboxStatus.PENDING
        delay = backoff(row.attempts, rate_limited=isinstance(error, WeComRateLimited))
        if row.expires_at is not None:
            delay = min(delay, timedelta(milliseconds=500))  # retry inside a welcome code's life
        row.next_attempt_at = utcnow() + delay
        return
    if row.has_unknown_attempt:
        _close(row, OutboxStatus.UNKNOWN)
        return
    row.status = OutboxStatus.DEAD
    log.warning("outbox %s (%s) dead after %s attempts: %s", row.id, row.kind, row.attempts, row.last_error)
    if kind.on_dead is not None:
        kind.on_dead(session, row)


def backoff(attempts: int, *, rate_limited: bool = False) -> timedelta:
    if rate_limited:
        # 45009 blocks the caller for a minute-window at least (REFERENCE §3.14)
        return timedelta(seconds=60 * min(attempts, 10))
    return timedelta(seconds=min(2 ** max(attempts - 1, 0), 300))


def retry(session: Session, command_id: int) -> OutboxCommand:
    """An admin's retry of a dead or unknown-outcome write (after checking WeCom, for the latter)."""
    row = session.get(OutboxCommand, command_id)
    if row is None:
        raise NotFound(f"outbox command {command_id} does not exist")
    if row.status not in (OutboxStatus.DEAD, OutboxStatus.UNKNOWN):
        raise Conflict(
            f"outbox command {command_id} is {row.status}; only dead or unknown ones can be retried"
        )
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise Conflict(
            f"outbox command {command_id} had a deadline that has passed; it can no longer be sent"
        )
    row.status = OutboxStatus.PENDING
    row.attempts = 0
    row.has_unknown_attempt = False
    row.claim_token = None
    row.next_attempt_at = utcnow()
    return row


def pending_for_events(session: Session, inbox_ids: list[int]) -> list[int]:
    """The writes these events' handlers just queued (so their worker can send them at once);
    not their urgent ones, which are the welcome lane's."""
    return list(
        session.scalars(
            select(OutboxCommand.id).where(
                OutboxCommand.inbox_event_id.in_(inbox_ids),
                OutboxCommand.status == OutboxStatus.PENDING,
                OutboxCommand.priority < URGENT_PRIORITY,
            )
        )
    )
