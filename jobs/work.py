"""Units of work over the inbox and the outbox; each owns its transactions (DESIGN §6.1).

Events are claimed in batches with one statement, their WeCom reads run outside any transaction,
and they apply in short transactions (a savepoint per event only once one of them has failed).
Outbox rows are claimed the same way, sent outside transactions, and their outcomes recorded
together. The scheduler's ticks and the web's after-ack pool are thin callers of what is here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import handlers
from scrm.db import drop_session_caches, step_aside, transaction
from scrm.errors import WeComError, WeComRetryable
from scrm.models import InboxStatus, OutboxKind, OutboxStatus
from scrm.services import inbox, outbox
from scrm.services.context import Context
from scrm.services.welcome import WelcomeSend
from scrm.timeutil import utcnow
from scrm.wecom.parse import Envelope, parse_envelope

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

current_event_id: ContextVar[int | None] = ContextVar("current_event_id", default=None)


# A batch applies its events in transactions of about this long: enough to spread the cost of a
# commit over many events, short enough that on SQLite a web worker waiting to store a callback
# (the one writer lock) is never held up by much more than that.
APPLY_BUDGET_S = 0.015
BATCH = 32


@dataclass
class Staged:
    """One claimed event between its WeCom reads (outside any transaction) and its apply."""

    event: inbox.ClaimedEvent
    envelope: Envelope | None = None
    handler: handlers.Handler | None = None
    prepared: Any = None
    error: BaseException | None = None


def _map(pool: Executor | None, fn: Callable[[T], R], items: list[T]) -> list[R]:
    if pool is None or len(items) < 2:
        return [fn(item) for item in items]
    return list(pool.map(fn, items))


def process_claimed(
    ctx: Context, events: list[inbox.ClaimedEvent], pool: Executor | None = None, *, send_queued: bool = False
) -> dict[int, InboxStatus]:
    """Run the handlers of claimed events and record each outcome; returns each event's status.

    WeCom reads (``prepare``) run first, outside any transaction and side by side on ``pool``.
    Then the events apply in a few short transactions. Should one event fail, its transaction
    is run again with each event in its own savepoint: the failure rolls back that event only and
    is recorded on its row for a retry with backoff. With ``send_queued`` the WeCom writes the
    handlers queued are sent right away instead of waiting for the outbox tick.
    """
    staged = _map(pool, lambda event: _prepare(ctx, event), events)
    failures = {s.event.id: s.error for s in staged if s.error is not None}
    ready = [s for s in staged if s.error is None]
    statuses: dict[int, InboxStatus] = {}
    queued: list[int] = []
    start = 0
    while start < len(ready):
        taken, applied, more = _apply_next_chunk(ctx, ready, start, failures, send_queued)
        statuses.update(applied)
        queued += more
        start += len(taken)
    if failures:
        statuses.update(_record_failures(ctx, failures))
    if queued:
        send_due(ctx, pool, ids=queued)
    return statuses


def _apply_next_chunk(
    ctx: Context, ready: list[Staged], start: int, failures: dict[int, BaseException], send_queued: bool
) -> tuple[list[Staged], dict[int, InboxStatus], list[int]]:
    """Apply the events from ``ready[start]`` on that fit one transaction; returns the events
    taken, their statuses and the outbox rows they queued (see ``_apply_chunk``).

    Optimistically without savepoints: events rarely fail, and a savepoint per event cost more
    than many an event's own writes (two more round-trips on PostgreSQL). If the transaction
    fails, the same events run again with a savepoint each, so only a failing event is rolled
    back. Failures that no savepoint explains — the database itself — fail every event taken,
    or all that are left when none was, for a retry with backoff.
    """
    taken: list[Staged] = []
    try:
        return taken, *_apply_chunk(ctx, _within_budget(ready, start, taken), None, send_queued)
    except Exception as error:  # noqa: BLE001 - rolled back whole; sorted out below
        failure: BaseException = error
    if taken:
        try:
            return taken, *_apply_chunk(ctx, iter(taken), failures, send_queued)
        except Exception as error:  # noqa: BLE001 - the transaction itself failed
            failure = error
    else:
        taken = ready[start:]
    for item in taken:
        failures[item.event.id] = failure
    return taken, {}, []


def _within_budget(ready: list[Staged], start: int, taken: list[Staged]) -> Iterator[Staged]:
    """Events from ``ready[start:]`` for as long as ``APPLY_BUDGET_S`` lasts (at least one), the
    clock starting at the first; each one handed out is also appended to ``taken``."""
    began = time.monotonic()
    for item in ready[start:]:
        if taken and time.monotonic() - began >= APPLY_BUDGET_S:
            return
        taken.append(item)
        yield item


def _apply_chunk(
    ctx: Context, items: Iterator[Staged], failures: dict[int, BaseException] | None, send_queued: bool
) -> tuple[dict[int, InboxStatus], list[int]]:
    """Apply events in one transaction and close their inbox rows; returns their statuses and,
    with ``send_queued``, the outbox rows they queued. ``failures``: see ``_apply``."""
    applied: dict[int, InboxStatus] = {}
    with transaction(ctx.session_factory) as session:
        began = time.monotonic()
        for item in items:
            status = _apply(session, item, failures)
            if status is not None:
                applied[item.event.id] = status
        inbox.mark_done_many(session, applied)
        queued = outbox.pending_for_events(session, list(applied)) if send_queued and applied else []
    step_aside(ctx.engine, time.monotonic() - began, urgent_work_behind=outbox.welcomes_behind(ctx.engine))
    return applied, queued


def _prepare(ctx: Context, event: inbox.ClaimedEvent) -> Staged:
    token = current_event_id.set(event.id)
    staged = Staged(event)
    try:
        staged.envelope = parse_envelope(event.payload)
        staged.handler = handlers.lookup(staged.envelope)
        if staged.handler is not None:
            staged.prepared = staged.handler.prepare(ctx.gateway, staged.envelope)
    except Exception as exc:  # noqa: BLE001 - recorded on the row, never raised to WeCom
        staged.error = exc
    finally:
        current_event_id.reset(token)
    return staged


def _apply(session: Session, item: Staged, failures: dict[int, BaseException] | None) -> InboxStatus | None:
    """Apply one event. With ``failures``, in a savepoint: a failure rolls back this event only
    and is recorded there. Without, a failure propagates and takes its transaction with it."""
    token = current_event_id.set(item.event.id)
    try:
        if item.handler is None:
            return InboxStatus.IGNORED
        assert item.envelope is not None
        if failures is None:
            item.handler.apply(session, item.envelope, item.prepared, item.event.id)
            return InboxStatus.DONE
        try:
            with session.begin_nested():
                item.handler.apply(session, item.envelope, item.prepared, item.event.id)
            return InboxStatus.DONE
        except Exception as exc:  # noqa: BLE001 - this event's savepoint is rolled back; the rest go on
            drop_session_caches(session)
            failures[item.event.id] = exc
            return None
    finally:
        current_event_id.reset(token)


def _record_failures(ctx: Context, failures: dict[int, BaseException]) -> dict[int, InboxStatus]:
    statuses: dict[int, InboxStatus] = {}
    with transaction(ctx.session_factory) as session:
        for inbox_id, exc in failures.items():
            token = current_event_id.set(inbox_id)
            try:
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, WeComError | OperationalError):
                    log.warning("inbox %s handler failed: %s", inbox_id, error)
                else:
                    log.error("inbox %s handler failed", inbox_id, exc_info=exc)
                statuses[inbox_id] = inbox.mark_failed(
                    session, inbox_id, error, ctx.settings.inbox_max_attempts
                ).status
            finally:
                current_event_id.reset(token)
    return statuses


def process_event(
    ctx: Context, inbox_id: int, *, force: bool = False, follow_line: bool = True, send_queued: bool = False
) -> InboxStatus | None:
    """Claim one inbox row, run its handler, record the outcome; then the next row in its line.

    Returns the final status of ``inbox_id`` or None when another worker holds it or an earlier
    event about the same customer is still open. ``force`` (replay) runs it whatever its status
    and place in line, unless a worker is processing it right now.
    """
    result: InboxStatus | None = None
    next_id: int | None = inbox_id
    first = True
    while next_id is not None:
        with transaction(ctx.session_factory) as session:
            if force and first:
                replayed = inbox.claim_for_replay(session, next_id)
                events = [replayed] if replayed is not None else []
            else:
                events = inbox.claim_due(session, limit=1, ids=[next_id])
        if not events:
            break
        event = events[0]
        status = process_claimed(ctx, events, send_queued=send_queued).get(event.id)
        if first:
            result = status
        first = False
        if not follow_line or status not in (InboxStatus.DONE, InboxStatus.IGNORED):
            break
        with transaction(ctx.session_factory) as session:
            next_id = inbox.next_in_line(session, event.ordering_key, event.id)
    return result


def wire_key(idempotency_key: str, created_at: datetime) -> str:
    # The key WeCom-side dedupe sees also names the row's creation instant: a rebuilt database
    # reuses ids, and its new writes must not be taken for replays of old ones.
    return f"{idempotency_key}@{created_at.timestamp():.6f}"


def _attempt(
    ctx: Context, kind: OutboxKind, payload: dict[str, Any], key: str
) -> dict[str, Any] | WeComError:
    """One WeCom write, outside any transaction; never raises — the outcome is recorded."""
    try:
        return ctx.gateway.execute(kind, payload, key)
    except WeComError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - release the claim whatever happened; never leave it leased
        log.exception("outbox %s call failed unexpectedly", kind)
        return WeComRetryable(f"{type(exc).__name__} while sending")


def send_claimed(ctx: Context, claimed: list[outbox.Claimed], pool: Executor | None = None) -> int:
    """Send claimed outbox rows (side by side on ``pool``), then record every outcome in one
    transaction; returns how many are now sent."""
    if not claimed:
        return 0
    results = _map(
        pool, lambda c: _attempt(ctx, c.kind, c.payload, wire_key(c.idempotency_key, c.created_at)), claimed
    )
    outcomes = {c.id: result for c, result in zip(claimed, results, strict=True)}
    with transaction(ctx.session_factory) as session:
        statuses = outbox.record_outcomes(session, outcomes, ctx.settings.outbox_max_attempts)
    return sum(1 for status in statuses.values() if status is OutboxStatus.SENT)


def send_due(
    ctx: Context,
    pool: Executor | None = None,
    *,
    ids: list[int] | None = None,
    min_priority: int | None = None,
    limit: int = 200,
) -> int:
    """Claim due outbox rows (all, only ``ids``, or only the urgent ones) and send them."""
    with transaction(ctx.session_factory) as session:
        claimed = outbox.claim_due(session, limit=limit, ids=ids, min_priority=min_priority)
    return send_claimed(ctx, claimed, pool)


def drain_outbox(
    ctx: Context, limit: int = 200, pool: Executor | None = None, leave_urgent_for: timedelta | None = None
) -> int:
    """Send every due outbox row, ``limit`` at a time; returns how many were sent."""
    total = 0
    while True:
        with transaction(ctx.session_factory) as session:
            claimed = outbox.claim_due(session, limit=limit, leave_urgent_for=leave_urgent_for)
        total += send_claimed(ctx, claimed, pool)
        if len(claimed) < limit:
            return total


def drain_outbox_tick(ctx: Context) -> int:
    """The scheduler's outbox tick (every 1 s): every due write, leaving welcome messages to the
    welcome lane unless they have waited past its grace (the lane is down or behind)."""
    return drain_outbox(ctx, leave_urgent_for=outbox.WELCOME_LANE_GRACE)


def dispatch_inbox(
    ctx: Context,
    pool: Executor,
    welcomes_idle: threading.Event | None = None,
    limit: int = BATCH,
    max_events: int = 5000,
) -> int:
    """The scheduler's fast tick: process due events in batches until none is left.

    Rows are claimed with compare-and-set, so a web worker (or another scheduler replica)
    working the same rows never runs an event twice. Between batches the tick steps aside while
    welcome messages are being sent (``welcomes_idle`` cleared): those race a 20 s clock, the
    handlers do not, and in one Python process only one thread runs at a time.
    """
    done = 0
    handled = 0
    while handled < max_events:
        if welcomes_idle is not None:
            welcomes_idle.wait(timeout=2.0)
        with transaction(ctx.session_factory) as session:
            events = inbox.claim_due(session, limit=limit)
        if not events:
            break
        statuses = process_claimed(ctx, events, pool, send_queued=True)
        handled += len(events)
        done += sum(1 for s in statuses.values() if s in (InboxStatus.DONE, InboxStatus.IGNORED))
    return done


def send_due_welcomes(ctx: Context, pool: Executor, welcomes_idle: threading.Event) -> int:
    """The scheduler's welcome tick (every 0.1 s): send pending welcome messages first of all."""
    welcomes_idle.clear()
    try:
        return send_due(ctx, pool, min_priority=outbox.WELCOME_PRIORITY)
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
    """Send a welcome ``inbox.accept`` stored already claimed; its code dies in 20 s."""
    try:
        if welcome.expires_at <= utcnow():
            with transaction(ctx.session_factory) as session:
                outbox.record_expired(session, [welcome.command_id])
            return
        key = wire_key(welcome.idempotency_key, welcome.created_at)
        result = _attempt(ctx, OutboxKind.SEND_WELCOME_MSG, dict(welcome.payload), key)
        with transaction(ctx.session_factory) as session:
            outbox.record_outcomes(session, {welcome.command_id: result}, ctx.settings.outbox_max_attempts)
    except Exception:  # noqa: BLE001 - background thread: the outbox tick retries after the lease
        log.exception("sending welcome %s failed; the scheduler will retry", welcome.command_id)
