"""Units of work over the inbox and the outbox; each owns its transactions (DESIGN §6.1).

Events are claimed in batches with one statement; their WeCom reads run outside any transaction,
side by side; then they apply in a short transaction, each in its own savepoint so one failure
costs only that event. Outbox rows are claimed one at a time whenever a sender is free, sent
outside any transaction, and their outcome recorded by the claim's holder. The scheduler's ticks
and the web's after-ack pool are thin callers of what is here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import handlers
from scrm.context import Context
from scrm.db import transaction
from scrm.errors import WeComError, WeComRetryable
from scrm.friends import queries as friend_queries
from scrm.friends import service as friends
from scrm.inbox import service as inbox
from scrm.inbox.models import InboxStatus
from scrm.outbox import kinds
from scrm.outbox import service as outbox
from scrm.outbox.models import OutboxStatus
from scrm.timeutil import utcnow
from scrm.wecom.parse import Envelope, parse_envelope

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

current_event_id: ContextVar[int | None] = ContextVar("current_event_id", default=None)

BATCH = 32
# A transaction applies events (each in its own savepoint) for about this long: enough to spread
# a commit over several events, short enough that on SQLite, where units of work queue for the
# one writer, a callback waiting to be stored is never held up by much more than that.
APPLY_BUDGET_S = 0.015


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
    Then the events apply in short transactions, each in a savepoint: a failure rolls back that
    event only and is recorded on its row for a retry with backoff. With ``send_queued`` the
    WeCom writes the handlers queued are sent right away instead of waiting for the outbox tick.
    """
    staged = _map(pool, lambda event: _prepare(ctx, event), events)
    failures = {s.event.id: s.error for s in staged if s.error is not None}
    ready = [s for s in staged if s.error is None]
    statuses: dict[int, InboxStatus] = {}
    queued: list[int] = []
    start = 0
    while start < len(ready):
        taken: list[Staged] = []
        try:
            applied, more = _apply_chunk(ctx, iter(ready[start:]), taken, failures, send_queued)
        except Exception as error:  # noqa: BLE001 - the transaction itself failed (the database)
            taken = taken or ready[start:]
            for item in taken:
                failures[item.event.id] = error
            applied, more = {}, []
        start += len(taken)
        statuses.update(applied)
        queued += more
    if failures:
        statuses.update(_record_failures(ctx, failures))
    if queued:
        send_due(ctx, pool, ids=queued)
    return statuses


def _apply_chunk(
    ctx: Context,
    todo: Iterator[Staged],
    taken: list[Staged],
    failures: dict[int, BaseException],
    send_queued: bool,
) -> tuple[dict[int, InboxStatus], list[int]]:
    """Apply events from ``todo`` in one transaction for about APPLY_BUDGET_S (at least one);
    each event handed out is appended to ``taken``."""
    applied: dict[int, InboxStatus] = {}
    began = time.monotonic()
    with transaction(ctx.session_factory) as session:
        for item in todo:
            taken.append(item)
            status = _apply(session, item, failures)
            if status is not None:
                applied[item.event.id] = status
            if time.monotonic() - began >= APPLY_BUDGET_S:
                break
        inbox.mark_done_many(session, applied)
        queued = outbox.pending_for_events(session, list(applied)) if send_queued and applied else []
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


def _apply(session: Session, item: Staged, failures: dict[int, BaseException]) -> InboxStatus | None:
    """Apply one event in a savepoint: a failure rolls back this event only and is recorded."""
    token = current_event_id.set(item.event.id)
    try:
        if item.handler is None:
            return InboxStatus.IGNORED
        assert item.envelope is not None
        try:
            with session.begin_nested():
                item.handler.apply(session, item.envelope, item.prepared, item.event.id)
            return InboxStatus.DONE
        except Exception as exc:  # noqa: BLE001 - this event's savepoint is rolled back; the rest go on
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


def dispatch_inbox(ctx: Context, pool: Executor, limit: int = BATCH, max_events: int = 5000) -> int:
    """The scheduler's dispatch tick: process due events in batches until none is left.

    Rows are claimed with compare-and-set, so a web worker (or another scheduler replica)
    working the same rows never runs an event twice.
    """
    done = 0
    handled = 0
    while handled < max_events:
        with transaction(ctx.session_factory) as session:
            events = inbox.claim_due(session, limit=limit)
        if not events:
            break
        statuses = process_claimed(ctx, events, pool, send_queued=True)
        handled += len(events)
        done += sum(1 for s in statuses.values() if s in (InboxStatus.DONE, InboxStatus.IGNORED))
    return done


def refresh_awaiting_details(ctx: Context, limit: int = 50) -> int:
    """Read WeCom's detail of friends recorded from their event alone, and bring it in (person,
    remark, tags, link to a lead or customer). A read that still fails leaves them waiting for
    the next tick. Returns how many were completed."""
    with ctx.session_factory() as session:
        waiting = friend_queries.awaiting_detail(session, limit)
    completed = 0
    for external_userid, userid in waiting:
        try:
            detail = friends.Detail(ctx.gateway.get_external_contact(external_userid), utcnow())
        except WeComError as error:
            log.info("detail of %s still unavailable (%s)", external_userid, error.code)
            break  # WeCom is not answering; the next tick tries again
        with transaction(ctx.session_factory) as session:
            friendship = friends.find(session, external_userid, userid)
            if friendship is not None and friendship.awaiting_detail_at is not None:
                friends.apply_detail(session, friendship, detail)
                completed += 1
    return completed


# --- the outbox --------------------------------------------------------------------------------


def wire_key(idempotency_key: str, created_at: datetime) -> str:
    # The key WeCom-side dedupe sees also names the row's creation instant: a rebuilt database
    # reuses ids, and its new writes must not be taken for replays of old ones.
    return f"{idempotency_key}@{created_at.timestamp():.6f}"


def _attempt(ctx: Context, claimed: outbox.Claimed) -> dict[str, Any] | WeComError:
    """One WeCom write, outside any transaction; never raises — the outcome is recorded."""
    try:
        kind = kinds.get(claimed.kind)
        body = kind.render(ctx.gateway, claimed.payload) if kind.render is not None else claimed.payload
        return ctx.gateway.write(kind.path, body, wire_key(claimed.idempotency_key, claimed.created_at))
    except WeComError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - record whatever happened; never leave it leased
        log.exception("outbox %s (%s) call failed unexpectedly", claimed.id, claimed.kind)
        return WeComRetryable(f"{type(exc).__name__} while sending")


def _claim(
    ctx: Context,
    count: int = 1,
    *,
    urgent_only: bool = False,
    leave_urgent_for: timedelta | None = None,
    ids: list[int] | None = None,
) -> list[outbox.Claimed]:
    handlers.load_all()  # every outbox kind is registered by the domain that owns it
    with transaction(ctx.session_factory) as session:
        return outbox.claim_many(
            session,
            count,
            call_timeout_s=ctx.settings.wecom_timeout_s,
            urgent_only=urgent_only,
            leave_urgent_for=leave_urgent_for,
            ids=ids,
        )


def _send_claimed(ctx: Context, claimed: outbox.Claimed) -> OutboxStatus:
    result = _attempt(ctx, claimed)
    with transaction(ctx.session_factory) as session:
        status = outbox.record_outcome(session, claimed, result, ctx.settings.outbox_max_attempts)
    return status if status is not None else OutboxStatus.SENDING


def send_one(
    ctx: Context,
    *,
    urgent_only: bool = False,
    leave_urgent_for: timedelta | None = None,
    ids: list[int] | None = None,
) -> OutboxStatus | None:
    """Claim one due write, send it, record the outcome; None when nothing was due."""
    claims = _claim(ctx, urgent_only=urgent_only, leave_urgent_for=leave_urgent_for, ids=ids)
    if not claims:
        return None
    claimed = claims[0]
    return _send_claimed(ctx, claimed)


# While calls are in flight and nothing is due, how often to look again for rows falling due.
LOOK_AGAIN_S = 0.1


def send_due(
    ctx: Context,
    pool: Executor | None = None,
    *,
    ids: list[int] | None = None,
    urgent_only: bool = False,
    leave_urgent_for: timedelta | None = None,
    senders: int = 8,
    limit: int = 1000,
) -> int:
    """Send due writes until none is left and none is in flight (or ``limit`` attempts), up to
    ``senders`` calls at once on ``pool``. Returns how many were sent.

    This thread claims, one row at a time, whenever a sender is free, and looks again every
    LOOK_AGAIN_S while calls are in flight: rows that fall due meanwhile (adds keep arriving) go
    out at once on the free senders. (Senders that each stopped at their first empty claim left
    the lane at the width it had when the tick began — 14 of 32 calls in flight while 50
    welcomes waited for them, their codes dying.)
    """
    if pool is None or senders < 2:
        sent = 0
        for _ in range(limit):
            status = send_one(ctx, urgent_only=urgent_only, leave_urgent_for=leave_urgent_for, ids=ids)
            if status is None:
                break
            sent += status is OutboxStatus.SENT
        return sent
    # A claim waiting in the pool's queue would spend its lease there: no more claims than workers.
    senders = min(senders, getattr(pool, "_max_workers", senders))
    free = threading.Semaphore(senders)
    futures: list[Future[OutboxStatus]] = []
    try:
        while len(futures) < limit:
            free.acquire()
            slots = 1  # as many as are free now, in one claiming transaction
            while slots < min(senders, limit - len(futures)) and free.acquire(blocking=False):
                slots += 1
            try:
                claims = _claim(
                    ctx, slots, urgent_only=urgent_only, leave_urgent_for=leave_urgent_for, ids=ids
                )
            except BaseException:
                for _ in range(slots):
                    free.release()
                raise
            for _ in range(slots - len(claims)):
                free.release()
            if not claims:
                in_flight = [f for f in futures if not f.done()]
                if not in_flight:
                    break
                wait(in_flight, timeout=LOOK_AGAIN_S, return_when=FIRST_COMPLETED)
                continue
            for claimed in claims:
                future = pool.submit(_send_claimed, ctx, claimed)
                future.add_done_callback(lambda _: free.release())
                futures.append(future)
    finally:
        wait(futures)  # every claim taken here has its outcome recorded before the tick ends
    return sum(1 for f in futures if f.result() is OutboxStatus.SENT)


def drain_outbox(
    ctx: Context, pool: Executor | None = None, leave_urgent_for: timedelta | None = None
) -> int:
    """Send every due outbox row; returns how many were sent."""
    return send_due(ctx, pool, leave_urgent_for=leave_urgent_for)


def drain_outbox_tick(ctx: Context, pool: Executor) -> int:
    """The scheduler's outbox tick (every 1 s): every due write, leaving welcome messages to the
    welcome lane unless they have waited past its grace (the lane is down or behind)."""
    return drain_outbox(ctx, pool, leave_urgent_for=outbox.URGENT_LANE_GRACE)


def send_due_welcomes(ctx: Context, pool: Executor, senders: int) -> int:
    """The scheduler's welcome tick (every 0.1 s): welcome messages, ``senders`` at a time so a
    slow WeCom does not cap the lane at one welcome per call's latency."""
    return send_due(ctx, pool, urgent_only=True, senders=senders)


def after_ack(ctx: Context, inbox_id: int | None) -> None:
    """What a web worker does right after acknowledging a callback, off the request thread:
    run the handler, then send the writes it queued. Anything left is picked up by the ticks."""
    try:
        if inbox_id is not None:
            process_event(ctx, inbox_id, send_queued=True)
    except Exception:  # noqa: BLE001 - background thread: log and leave it to the ticks
        log.exception("after-ack work for inbox %s failed; the scheduler will retry", inbox_id)


def send_welcome(ctx: Context, command_id: int) -> None:
    """Send a welcome the callback just queued; its code dies in 20 s."""
    try:
        send_one(ctx, ids=[command_id])
    except Exception:  # noqa: BLE001 - background thread: the welcome tick retries
        log.exception("sending welcome %s failed; the scheduler will retry", command_id)


class QuietFailures:
    """Wraps a tick so that while a cause persists (the database is down) it logs one line per
    ``every_s`` with how many runs failed, not a traceback per run; the first failure of a
    streak is logged in full."""

    def __init__(self, name: str, tick: Callable[..., Any], every_s: float = 30.0) -> None:
        self.name = name
        self._tick = tick
        self._every_s = every_s
        self._failures = 0
        self._since_logged = 0
        self._last_logged = 0.0

    def __call__(self, *args: Any) -> Any:
        try:
            result = self._tick(*args)
        except Exception as error:  # noqa: BLE001 - a tick must not die; it runs again
            self._failures += 1
            self._since_logged += 1
            now = time.monotonic()
            if self._failures == 1:
                log.exception("tick %s failed; retrying every run", self.name)
                self._last_logged, self._since_logged = now, 0
            elif now - self._last_logged >= self._every_s:
                log.error(
                    "tick %s still failing: %s runs in %.0f s (%s: %s)",
                    self.name,
                    self._since_logged,
                    now - self._last_logged,
                    type(error).__name__,
                    error,
                )
                self._last_logged, self._since_logged = now, 0
            return None
        if self._failures:
            log.warning("tick %s recovered after %s failed runs", self.name, self._failures)
            self._failures = self._since_logged = 0
        return result
