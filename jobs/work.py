"""Units of work over the inbox and the outbox; each owns its transactions (DESIGN §6.1)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import handlers
from scrm.db import transaction
from scrm.errors import WeComError, WeComRetryable
from scrm.models import InboxStatus, OutboxCommand, OutboxKind, OutboxStatus
from scrm.services import inbox, outbox
from scrm.services.context import Context
from scrm.services.welcome import WelcomeSend
from scrm.timeutil import utcnow
from scrm.wecom.parse import parse_envelope

log = logging.getLogger(__name__)

current_event_id: ContextVar[int | None] = ContextVar("current_event_id", default=None)


@dataclass
class Outcome:
    status: InboxStatus | None  # None: held by another worker, or waiting behind an earlier event
    next_id: int | None = None  # the next event about the same customer, now first in line
    queued: list[int] = field(default_factory=list)  # outbox rows the handler wrote


def process_event(
    ctx: Context, inbox_id: int, *, force: bool = False, follow_line: bool = True, send_queued: bool = False
) -> InboxStatus | None:
    """Claim one inbox row, run its handler, record the outcome; then the next row in its line.

    Returns the final status of ``inbox_id`` or None when another worker holds it or an earlier
    event about the same customer is still open. With ``send_queued`` the WeCom writes the handler
    queued are sent right away instead of waiting for the outbox tick.
    """
    result: InboxStatus | None = None
    next_id: int | None = inbox_id
    first = True
    while next_id is not None:
        outcome = _process_one(ctx, next_id, force=force and first)
        if first:
            result = outcome.status
        first = False
        if send_queued:
            for command_id in outcome.queued:
                send_command(ctx, command_id)
        next_id = outcome.next_id if follow_line else None
    return result


def _process_one(ctx: Context, inbox_id: int, *, force: bool) -> Outcome:
    token = current_event_id.set(inbox_id)
    try:
        with transaction(ctx.session_factory) as session:
            row = inbox.claim(session, inbox_id, force=force)
            if row is None:
                return Outcome(None)
            payload, ordering_key = row.payload, row.ordering_key
        try:
            envelope = parse_envelope(payload)
            handler = handlers.lookup(envelope)
            prepared = (
                handler.prepare(ctx.gateway, envelope) if handler else None
            )  # WeCom reads: no transaction
            # One transaction applies the event, closes its row and finds what comes next.
            with transaction(ctx.session_factory) as session:
                if handler is None:
                    status = InboxStatus.IGNORED
                else:
                    handler.apply(session, envelope, prepared, inbox_id)
                    status = InboxStatus.DONE
                inbox.mark_done(session, inbox_id, status)
                session.flush()
                queued = list(
                    session.scalars(
                        select(OutboxCommand.id).where(
                            OutboxCommand.inbox_event_id == inbox_id,
                            OutboxCommand.status == OutboxStatus.PENDING,
                        )
                    )
                )
                next_id = inbox.next_in_line(session, ordering_key, inbox_id)
            return Outcome(status, next_id, queued)
        except Exception as exc:  # noqa: BLE001 - any handler failure is recorded, never raised to WeCom
            error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, WeComError | OperationalError):
                log.exception("inbox %s handler failed", inbox_id)
            else:
                log.warning("inbox %s handler failed: %s", inbox_id, error)
            with transaction(ctx.session_factory) as session:
                row2 = inbox.mark_failed(session, inbox_id, error, ctx.settings.inbox_max_attempts)
                return Outcome(row2.status)
    finally:
        current_event_id.reset(token)


def send_command(ctx: Context, command_id: int) -> bool:
    """Claim one outbox row and send it; True when it was sent (or found already done)."""
    with transaction(ctx.session_factory) as session:
        command = outbox.claim(session, command_id)
        if command is None:
            return False
        kind, payload = command.kind, dict(command.payload)
        key = wire_key(command.idempotency_key, command.created_at)
    return _send(ctx, command_id, kind, payload, key)


def wire_key(idempotency_key: str, created_at: datetime) -> str:
    # The key WeCom-side dedupe sees also names the row's creation instant: a rebuilt database
    # reuses ids, and its new writes must not be taken for replays of old ones.
    return f"{idempotency_key}@{created_at.timestamp():.6f}"


def _send(ctx: Context, command_id: int, kind: OutboxKind, payload: dict[str, Any], key: str) -> bool:
    try:
        result = ctx.gateway.execute(kind, payload, key)  # outside any transaction
    except Exception as exc:  # noqa: BLE001 - release the claim whatever happened; never leave it leased
        error = exc if isinstance(exc, WeComError) else WeComRetryable(f"{type(exc).__name__} while sending")
        if not isinstance(exc, WeComError):
            log.exception("outbox %s (%s) failed unexpectedly", command_id, kind)
        with transaction(ctx.session_factory) as session:
            command = outbox.record_failure(session, command_id, error, ctx.settings.outbox_max_attempts)
            log.info(
                "outbox %s (%s) attempt %s failed: %s -> %s",
                command_id,
                kind,
                command.attempts,
                error.errcode,
                command.status,
            )
            return command.status.value == "sent"
    with transaction(ctx.session_factory) as session:
        outbox.record_success(session, command_id, result)
    return True


def drain_outbox(ctx: Context, limit: int = 200) -> int:
    """Send every due outbox row; returns how many were sent."""
    with transaction(ctx.session_factory) as session:
        ids = outbox.due_ids(session, limit)
    return sum(1 for command_id in ids if send_command(ctx, command_id))


def dispatch_inbox(
    ctx: Context, pool: ThreadPoolExecutor, welcomes_idle: threading.Event | None = None, limit: int = 500
) -> int:
    """The scheduler's fast tick: process every due event, in parallel across customers.

    Rows are claimed one by one with compare-and-set, so a web worker (or another scheduler
    replica) working the same rows never runs an event twice. Handler threads step aside while
    welcome messages are being sent (``welcomes_idle`` cleared): those race a 20 s clock, the
    handlers do not, and in one Python process only one thread runs at a time.
    """
    with transaction(ctx.session_factory) as session:
        ids = inbox.due_ids(session, limit)
    if not ids:
        return 0

    def run(inbox_id: int) -> InboxStatus | None:
        if welcomes_idle is not None:
            welcomes_idle.wait(timeout=2.0)
        return process_event(ctx, inbox_id, send_queued=True)

    results = list(pool.map(run, ids))
    return sum(1 for r in results if r in (InboxStatus.DONE, InboxStatus.IGNORED))


def send_due_welcomes(ctx: Context, pool: ThreadPoolExecutor, welcomes_idle: threading.Event) -> int:
    """The scheduler's welcome tick (every 0.1 s): send pending welcome messages first of all."""
    with transaction(ctx.session_factory) as session:
        ids = outbox.due_ids(session, 200, min_priority=outbox.WELCOME_PRIORITY)
    if not ids:
        welcomes_idle.set()
        return 0
    welcomes_idle.clear()
    try:
        return sum(1 for sent in pool.map(lambda i: send_command(ctx, i), ids) if sent)
    finally:
        welcomes_idle.set()


def after_ack(ctx: Context, inbox_id: int | None) -> None:
    """What a web worker does right after acknowledging a callback, off the request thread:
    run the handler, then send the writes it queued. Anything left is picked up by the ticks."""
    try:
        if inbox_id is not None:
            process_event(ctx, inbox_id, send_queued=True)
    except Exception:  # noqa: BLE001 - background thread: log and leave it to the ticks
        log.exception("after-ack work for inbox %s failed; the scheduler will retry", inbox_id)


def send_welcome(ctx: Context, welcome: WelcomeSend) -> None:
    """Send a welcome the accept transaction stored already claimed; its code dies in 20 s."""
    try:
        if welcome.expires_at <= utcnow():
            with transaction(ctx.session_factory) as session:
                outbox.record_expired(session, welcome.command_id)
            return
        key = wire_key(welcome.idempotency_key, welcome.created_at)
        _send(ctx, welcome.command_id, OutboxKind.SEND_WELCOME_MSG, dict(welcome.payload), key)
    except Exception:  # noqa: BLE001 - background thread: the outbox tick retries after the lease
        log.exception("sending welcome %s failed; the scheduler will retry", welcome.command_id)
