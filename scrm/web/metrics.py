"""``GET /metrics``: Prometheus text format (prometheus-client), and the counters it exposes.

What is measured where:

- **Counted as it happens** (process-local counters, summed across processes in multiprocess
  mode): callbacks by outcome (``stored``, ``duplicate``, ``rejected`` with the rejection's code as
  ``reason``) — ``count_callback``, called by the callback view; the ack latency of
  ``POST /wecom/callback`` from the request reaching Flask to the response leaving the view — a
  histogram fed by ``install``'s request hooks; WeCom calls by path and errcode (``0`` success,
  ``transport`` when no answer came) — ``observe_wecom_call``, the gateway's ``on_call`` hook.
- **Read from the database at scrape time** (so every process and replica agrees, and nothing is
  lost when one dies): inbox and outbox backlogs by status and the age of their oldest open row,
  dead letters (inbox ``dead``; outbox ``dead`` and ``unknown``) and open WeCom problems.

Multiprocess (gunicorn): set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory writable by every
scrm process on the host (web workers and the scheduler), wiped at each deploy/start (e.g.
``rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"`` before gunicorn). It
must be in the environment before the process starts: prometheus-client reads it on import and
then keeps each process's counters in files there, which a scrape sums. Without it, counters are
per process (right for ``scrm serve``). scrm keeps no live gauges in those files, so no gunicorn
``child_exit`` hook is needed: a dead worker's counts stay in the sums, as counters should.

Access: an admin API key (``Authorization: Bearer …``; Prometheus's scrape config takes it as
``authorization: {credentials: …}``), or a loopback client that came through no proxy (no
``X-Forwarded-For``/``Forwarded``/``X-Real-IP`` header) — a Prometheus or ``curl`` on the same host.
A reverse proxy in front of scrm must set ``X-Forwarded-For`` (nginx's ``proxy_params``, Caddy by
default), or every outside request would look local.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from scrm.db import read, transaction
from scrm.directory import service as directory
from scrm.directory.models import StaffRole
from scrm.errors import Forbidden, Unauthorized
from scrm.inbox.models import InboxEvent, InboxStatus
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.timeutil import utcnow
from scrm.web.runtime import runtime
from scrm.wecom import health

bp = Blueprint("metrics", __name__)

INBOX_OPEN = (InboxStatus.PENDING, InboxStatus.FAILED, InboxStatus.PROCESSING)
OUTBOX_OPEN = (OutboxStatus.PENDING, OutboxStatus.SENDING)
INBOX_DEAD = (InboxStatus.DEAD,)
OUTBOX_DEAD = (OutboxStatus.DEAD, OutboxStatus.UNKNOWN)
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
# WeCom answers an ack deadline of 5 s (REFERENCE §1.6); the buckets resolve the fast end finely.
ACK_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Meters:
    """The process's counters, made once on first use (nothing at import time, DESIGN §6.2)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.callbacks = Counter(
            "scrm_callbacks",
            "WeCom callbacks received, by outcome (stored, duplicate, rejected) and rejection reason.",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "scrm_callback_ack_seconds",
            "Time from a callback POST reaching scrm to its acknowledgement.",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.wecom_calls = Counter(
            "scrm_wecom_calls",
            "WeCom server API calls by path and errcode (0 success, 'transport' when no answer came).",
            ["path", "errcode"],
            registry=self.registry,
        )


@functools.cache
def meters() -> _Meters:
    return _Meters()


def multiprocess_mode() -> bool:
    """prometheus-client chose its file-backed values (PROMETHEUS_MULTIPROC_DIR was set)."""
    return values.ValueClass is not values.MutexValue


# --- what the rest of the web tier (and the gateway hook) calls ------------------------------


def count_callback(outcome: str, reason: str = "") -> None:
    """A callback was ``stored``, acknowledged as a ``duplicate``, or ``rejected`` (``reason``: its
    ScrmError code, e.g. bad_signature)."""
    meters().callbacks.labels(outcome=outcome, reason=reason).inc()


def observe_wecom_call(path: str, errcode: int | None) -> None:
    """The gateway's ``on_call`` hook: one WeCom call answered ``errcode`` (None: no answer)."""
    label = "transport" if errcode is None else str(errcode)
    meters().wecom_calls.labels(path=path.split("?", 1)[0][:64], errcode=label).inc()


# --- figures read from the database at scrape time -------------------------------------------


@dataclass(frozen=True)
class Backlog:
    by_status: dict[str, int]
    oldest_at: datetime | None

    @property
    def open(self) -> int:
        return sum(self.by_status.values())

    def oldest_age_s(self, now: datetime) -> float | None:
        return None if self.oldest_at is None else max((now - self.oldest_at).total_seconds(), 0.0)


def _backlog(
    session: Session, model: Any, since: Any, statuses: Iterable[Any], *, waiting: Any = None
) -> Backlog:
    """Open rows by status, and the oldest ``since`` among those ``waiting`` (all open rows when
    None): a row scheduled for later is open but not late."""
    wanted = list(statuses)
    oldest_of = since if waiting is None else case((waiting, since))
    rows = session.execute(
        select(model.status, func.count(), func.min(oldest_of))
        .where(model.status.in_(wanted))
        .group_by(model.status)
    ).all()
    by_status = {str(s.value): 0 for s in wanted}
    oldest: datetime | None = None
    for status, count, first in rows:
        by_status[str(status.value if hasattr(status, "value") else status)] = int(count)
        if first is not None:
            first = first if first.tzinfo else first.replace(tzinfo=utcnow().tzinfo)
            oldest = first if oldest is None or first < oldest else oldest
    return Backlog(by_status, oldest)


def inbox_backlog(session: Session) -> Backlog:
    """Inbox events still to be handled (pending, failed, processing) and the oldest's arrival."""
    return _backlog(session, InboxEvent, InboxEvent.received_at, INBOX_OPEN)


def outbox_backlog(session: Session) -> Backlog:
    """Outbox commands still to be sent (pending, sending) and the oldest's creation among those
    that are due or were tried: a reminder queued for tomorrow (``not_before``) is not a backlog."""
    waiting = or_(OutboxCommand.next_attempt_at <= utcnow(), OutboxCommand.attempts > 0)
    return _backlog(session, OutboxCommand, OutboxCommand.created_at, OUTBOX_OPEN, waiting=waiting)


def dead_letters(session: Session) -> dict[tuple[str, str], int]:
    out = {("inbox", s.value): 0 for s in INBOX_DEAD} | {("outbox", s.value): 0 for s in OUTBOX_DEAD}
    for queue, model, statuses in (("inbox", InboxEvent, INBOX_DEAD), ("outbox", OutboxCommand, OUTBOX_DEAD)):
        for status, count in session.execute(
            select(model.status, func.count()).where(model.status.in_(statuses)).group_by(model.status)
        ):
            out[(queue, str(status.value))] = int(count)
    return out


class DatabaseCollector(Collector):
    """Gauges computed from the database on each scrape."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        with read(self._factory) as session:
            inbox, outbox = inbox_backlog(session), outbox_backlog(session)
            dead = dead_letters(session)
            problems = health.open_problems(session)
        for name, what, backlog in (("inbox", "inbox events", inbox), ("outbox", "outbox commands", outbox)):
            gauge = GaugeMetricFamily(f"scrm_{name}_backlog", f"Open {what} by status.", labels=["status"])
            for status, count in backlog.by_status.items():
                gauge.add_metric([status], count)
            yield gauge
            age = backlog.oldest_age_s(now)
            yield GaugeMetricFamily(
                f"scrm_{name}_oldest_open_age_seconds",
                f"Age of the oldest open {what[:-1]} (0 when none is open).",
                value=age or 0.0,
            )
        letters = GaugeMetricFamily(
            "scrm_dead_letters",
            "Rows that need a person: inbox dead, outbox dead or unknown.",
            labels=["queue", "status"],
        )
        for (queue, status), count in dead.items():
            letters.add_metric([queue, status], count)
        yield letters
        open_problems = GaugeMetricFamily(
            "scrm_wecom_open_problems",
            "WeCom configuration problems not yet resolved, by errcode.",
            labels=["errcode"],
        )
        for problem in problems:
            open_problems.add_metric([str(problem.errcode)], 1)
        yield open_problems


# --- the endpoint ----------------------------------------------------------------------------


def _check_access() -> None:
    if request.remote_addr in LOOPBACK and not any(h in request.headers for h in PROXY_HEADERS):
        return
    if not request.headers.get("Authorization"):
        raise Unauthorized(
            "/metrics needs an admin API key (Authorization: Bearer <key>) unless scraped from this host"
        )
    with transaction(runtime().ctx.session_factory) as session:
        key = directory.authenticate(session, request.headers.get("Authorization"))
        if key.role is not StaffRole.ADMIN:
            raise Forbidden("/metrics needs an admin API key; this key's role is " + str(key.role))


@bp.get("/metrics")
def scrape() -> Response:
    _check_access()
    # No auto-describe: it would run the database collector once more at registration.
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Forward(meters().registry))
    registry.register(DatabaseCollector(runtime().ctx.session_factory))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Forward(Collector):
    """The in-process counters, added to a scrape's registry alongside the database gauges."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._source.collect()


# --- ack latency -----------------------------------------------------------------------------


def _start_clock() -> None:
    if request.endpoint == "callback.receive":
        g.scrm_callback_started = time.perf_counter()


def _stop_clock(response: Response) -> Response:
    started = g.pop("scrm_callback_started", None)
    if started is not None:
        meters().ack_seconds.observe(time.perf_counter() - started)
    return response


def install(app: Flask) -> None:
    """The /metrics route and the ack-latency clock around ``POST /wecom/callback``."""
    meters()
    app.register_blueprint(bp)
    app.before_request(_start_clock)
    app.after_request(_stop_clock)
