"""Units of work over the inbox and the outbox; each owns its transactions (DESIGN §6.1)."""

from __future__ import annotations

import logging
from contextvars import ContextVar

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

import handlers
from scrm.db import transaction
from scrm.errors import WeComError
from scrm.models import InboxStatus, OutboxCommand, OutboxStatus
from scrm.services import inbox, outbox
from scrm.services.context import Context
from scrm.wecom.parse import parse_envelope

log = logging.getLogger(__name__)

current_event_id: ContextVar[int | None] = ContextVar("current_event_id", default=None)


def process_event(
    ctx: Context, inbox_id: int, *, force: bool = False, follow_line: bool = True
) -> InboxStatus | None:
    """Claim one inbox row, run its handler, record the outcome; then the next row in its line.

    Returns the final status of ``inbox_id`` or None when another worker holds it or an earlier
    event about the same customer is still open.
    """
    result: InboxStatus | None = None
    next_id: int | None = inbox_id
    first = True
    while next_id is not None:
        status, ordering_key = _process_one(ctx, next_id, force=force and first)
        if first:
            result = status
        first = False
        if status is None or not follow_line:
            break
        with transaction(ctx.session_factory) as session:
            next_id = inbox.next_in_line(session, ordering_key, next_id)
    return result


def _process_one(ctx: Context, inbox_id: int, *, force: bool) -> tuple[InboxStatus | None, str]:
    token = current_event_id.set(inbox_id)
    try:
        with transaction(ctx.session_factory) as session:
            row = inbox.claim(session, inbox_id, force=force)
            if row is None:
                return None, ""
            payload, ordering_key = row.payload, row.ordering_key
        try:
            envelope = parse_envelope(payload)
            handler = handlers.lookup(envelope)
            if handler is None:
                with transaction(ctx.session_factory) as session:
                    inbox.mark_done(session, inbox_id, InboxStatus.IGNORED)
                return InboxStatus.IGNORED, ordering_key
            prepared = handler.prepare(ctx.gateway, envelope)  # WeCom reads, outside any transaction
            with transaction(ctx.session_factory) as session:
                handler.apply(session, envelope, prepared, inbox_id)
                inbox.mark_done(session, inbox_id)
            return InboxStatus.DONE, ordering_key
        except Exception as exc:  # noqa: BLE001 - any handler failure is recorded, never raised to WeCom
            error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, WeComError | OperationalError):
                log.exception("inbox %s handler failed", inbox_id)
            else:
                log.warning("inbox %s handler failed: %s", inbox_id, error)
            with transaction(ctx.session_factory) as session:
                row2 = inbox.mark_failed(session, inbox_id, error, ctx.settings.inbox_max_attempts)
                return row2.status, ordering_key
    finally:
        current_event_id.reset(token)


def send_command(ctx: Context, command_id: int) -> bool:
    """Claim one outbox row and send it; True when it was sent (or found already done)."""
    with transaction(ctx.session_factory) as session:
        command = outbox.claim(session, command_id)
        if command is None:
            return False
        kind, payload, key = command.kind, dict(command.payload), command.idempotency_key
    try:
        result = ctx.gateway.execute(kind, payload, key)  # outside any transaction
    except WeComError as error:
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


def send_command_safely(ctx: Context, command_id: int) -> bool:
    try:
        return send_command(ctx, command_id)
    except Exception:  # noqa: BLE001 - background thread: the outbox tick retries
        log.exception("sending outbox %s failed; the scheduler will retry", command_id)
        return False


def drain_outbox(ctx: Context, limit: int = 200) -> int:
    """Send every due outbox row; returns how many were sent."""
    with transaction(ctx.session_factory) as session:
        ids = outbox.due_ids(session, limit)
    return sum(1 for command_id in ids if send_command(ctx, command_id))


def retry_inbox(ctx: Context, limit: int = 200) -> int:
    with transaction(ctx.session_factory) as session:
        ids = inbox.due_ids(session, limit)
    done = 0
    for inbox_id in ids:
        if process_event(ctx, inbox_id) in (InboxStatus.DONE, InboxStatus.IGNORED):
            done += 1
    return done


def after_ack(ctx: Context, inbox_id: int | None, welcome_command_id: int | None) -> None:
    """What a web worker does right after acknowledging a callback, off the request thread.

    The welcome goes first (its code dies in 20 s), then the handler, then the writes it queued.
    Anything that fails here is picked up by the scheduler's ticks.
    """
    try:
        if welcome_command_id is not None:
            send_command(ctx, welcome_command_id)
        if inbox_id is not None:
            process_event(ctx, inbox_id)
            with transaction(ctx.session_factory) as session:
                queued = list(
                    session.scalars(
                        select(OutboxCommand.id).where(
                            OutboxCommand.inbox_event_id == inbox_id,
                            OutboxCommand.status == OutboxStatus.PENDING,
                        )
                    )
                )
            for command_id in queued:
                send_command(ctx, command_id)
    except Exception:  # noqa: BLE001 - background thread: log and leave it to the ticks
        log.exception("after-ack work for inbox %s failed; the scheduler will retry", inbox_id)
