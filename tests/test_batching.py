"""The scheduler's batch path: claiming many events at once, applying them in shared
transactions with one savepoint each, and SQLite's cross-process writer lock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from jobs import work
from scrm.db import WriterLock, transaction
from scrm.models import ExternalContact, Friendship, InboxEvent, InboxStatus, Lead
from scrm.services import friends, inbox
from tests.conftest import build_scrm
from tests.helpers import count


def ack_only(clean_db, sandbox_server):
    """scrm whose web only acknowledges: events wait in the inbox for the test to work them."""
    return build_scrm(clean_db, sandbox_server, SCRM_DISPATCH_THREADS="0")


def claim(harness, limit: int = 10) -> list[inbox.ClaimedEvent]:
    with transaction(harness.ctx.session_factory) as session:
        return inbox.claim_due(session, limit=limit)


def test_a_failing_event_rolls_back_alone_in_its_batch(clean_db, sandbox_server, monkeypatch):
    harness, server = ack_only(clean_db, sandbox_server)
    try:
        exts = [harness.driver.new_customer(f"批量{i}") for i in range(3)]
        for ext in exts:
            assert harness.driver.add_customer("zhangsan", ext).status == 200
        real_record_add = friends.record_add

        def fails_after_writing(session, **kwargs):
            real_record_add(session, **kwargs)  # the person, lead, customer and friendship are written…
            if kwargs["external_userid"] == exts[1]:
                raise RuntimeError("boom after writing")  # …and must all be rolled back

        monkeypatch.setattr(friends, "record_add", fails_after_writing)
        events = claim(harness)
        assert len(events) == 3
        statuses = work.process_claimed(harness.ctx, events)

        by_ext = {}
        with harness.session() as session:
            for event in events:
                row = session.get(InboxEvent, event.id)
                by_ext[next(e for e in exts if e in row.payload)] = (statuses[event.id], row)
        assert by_ext[exts[0]][0] is InboxStatus.DONE and by_ext[exts[2]][0] is InboxStatus.DONE
        failed = by_ext[exts[1]][1]
        assert failed.status is InboxStatus.FAILED and "boom after writing" in failed.last_error
        assert count(harness, Friendship) == 2
        assert count(harness, ExternalContact) == 2
        assert count(harness, Lead) == 2
        with harness.session() as session:
            assert (
                session.scalar(select(ExternalContact).where(ExternalContact.external_userid == exts[1]))
                is None
            )
    finally:
        server.shutdown()
        harness.ctx.engine.dispose()


def test_a_batch_where_nothing_fails_takes_no_savepoints(clean_db, sandbox_server):
    harness, server = ack_only(clean_db, sandbox_server)
    statements: list[str] = []
    event.listen(harness.ctx.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        for i in range(3):
            ext = harness.driver.new_customer(f"顺利{i}")
            assert harness.driver.add_customer("zhangsan", ext).status == 200
        events = claim(harness)
        statements.clear()
        statuses = work.process_claimed(harness.ctx, events)
        assert set(statuses.values()) == {InboxStatus.DONE} and len(statuses) == 3
        assert count(harness, Friendship) == 3
        assert not [s for s in statements if s.upper().startswith("SAVEPOINT")]
    finally:
        server.shutdown()
        harness.ctx.engine.dispose()


def test_a_database_failure_before_any_event_fails_the_batch_for_a_retry(
    clean_db, sandbox_server, monkeypatch
):
    harness, server = ack_only(clean_db, sandbox_server)
    try:
        for i in range(3):
            ext = harness.driver.new_customer(f"锁住{i}")
            assert harness.driver.add_customer("zhangsan", ext).status == 200
        events = claim(harness)
        real_transaction = work.transaction
        calls: list[int] = []

        def locked_once(factory):
            calls.append(1)
            if len(calls) == 1:  # the batch's first BEGIN fails; recording the failures works
                raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
            return real_transaction(factory)

        monkeypatch.setattr(work, "transaction", locked_once)
        statuses: dict = {}
        runner = threading.Thread(
            target=lambda: statuses.update(work.process_claimed(harness.ctx, events)), daemon=True
        )
        runner.start()
        runner.join(30)
        assert not runner.is_alive(), "the batch never finished"
        assert statuses == {event.id: InboxStatus.FAILED for event in events}
        with harness.session() as session:
            for event in events:
                row = session.get(InboxEvent, event.id)
                assert row.status is InboxStatus.FAILED and "database is locked" in row.last_error
        assert count(harness, Friendship) == 0
    finally:
        server.shutdown()
        harness.ctx.engine.dispose()


def test_a_batch_claims_only_the_first_open_event_of_each_customer(clean_db, sandbox_server):
    harness, server = ack_only(clean_db, sandbox_server)
    try:
        first, other = harness.driver.new_customer("顺序甲"), harness.driver.new_customer("顺序乙")
        harness.driver.add_customer("zhangsan", first)
        harness.driver.customer_deletes_rep("zhangsan", first)
        harness.driver.add_customer("zhangsan", other)
        with harness.session() as session:
            add_first, delete_first, add_other = session.scalars(
                select(InboxEvent.id).order_by(InboxEvent.id)
            )

        batch = claim(harness)
        assert [e.id for e in batch] == [add_first, add_other]  # the delete waits behind its add
        assert claim(harness) == []  # nothing else is due while those two are being worked
        work.process_claimed(harness.ctx, batch)
        assert [e.id for e in claim(harness)] == [delete_first]
    finally:
        server.shutdown()
        harness.ctx.engine.dispose()


PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("held")
"""


def test_sqlite_writers_of_different_processes_queue_on_the_lock_file(tmp_path):
    database = tmp_path / "scrm.db"
    lock = WriterLock(str(database))

    def probe() -> str:
        args = [sys.executable, "-c", PROBE, f"{database}.writelock"]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()

    with lock:
        with lock:  # re-entrant within a thread
            assert probe() == "held"
        assert probe() == "held"  # still held until the outermost exit
    assert probe() == "free"
    assert WriterLock(":memory:")._path is None  # an in-memory database has no file to lock


def test_background_writers_step_aside_only_while_others_queue_for_the_lock(tmp_path, monkeypatch):
    from scrm import db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'scrm.db'}")
    naps: list[float] = []
    clock = SimpleNamespace(sleep=naps.append, monotonic=time.monotonic)
    monkeypatch.setattr(db, "time", clock)  # scrm.db's clock only
    db.step_aside(engine, 0.01)
    assert naps == []  # nobody has queued: the lane keeps the lock's full speed

    holder = db._WRITE_LOCKS[engine]
    # Another process's writer: its own open file description, so it queues on flock.
    other = WriterLock(engine.url.database)
    entered = threading.Event()

    def other_writer() -> None:
        with other:
            entered.set()

    with holder:
        thread = threading.Thread(target=other_writer)
        thread.start()
        deadline = time.monotonic() + 10
        while not holder.waited_on_within(1.0):  # it stamps the file, then queues behind us
            assert time.monotonic() < deadline, "the other writer never queued"
            time.sleep(0.01)
        assert not entered.is_set()
    thread.join(5)
    assert entered.is_set()
    assert holder.waited_on_within(1.0)
    db.step_aside(engine, 0.01)
    assert naps == [0.01]  # someone queued a moment ago: leave the lock free as long as we held it
    db.step_aside(engine, 3.0)
    assert naps == [0.01, db.STEP_ASIDE_MAX_S]  # but not for as long as a rare long transaction
    naps.clear()
    clock.monotonic = lambda: time.monotonic() + db.STEP_ASIDE_WINDOW_S  # a while after that wait
    db.step_aside(engine, 0.01)
    assert naps == []
    engine.dispose()


def test_the_handler_lane_makes_room_while_welcomes_wait_for_their_lane(clean_db, monkeypatch):
    """A welcome due for more than WELCOME_BEHIND and still not taken means its lane is starved;
    the handler lane then pauses between its transactions, on either database."""
    from datetime import timedelta

    from scrm import db
    from scrm.models import OutboxKind
    from scrm.services import outbox
    from scrm.timeutil import utcnow

    engine = db.make_engine(clean_db)
    factory = db.make_session_factory(engine)
    try:
        assert not outbox.welcomes_behind(engine)  # nothing queued
        late = utcnow() - 2 * outbox.WELCOME_BEHIND
        with transaction(factory) as session:
            outbox.enqueue(session, OutboxKind.MARK_TAG, {"userid": "zhangsan"}, "tag:old", now=late)
            outbox.enqueue(
                session,
                OutboxKind.SEND_WELCOME_MSG,
                {"welcome_code": "fresh"},
                "welcome:fresh",
                priority=outbox.WELCOME_PRIORITY,
            )
        # An old ordinary command and a welcome queued a moment ago: nobody is behind.
        assert not outbox.welcomes_behind(engine)
        with transaction(factory) as session:
            welcome_id = outbox.enqueue(
                session,
                OutboxKind.SEND_WELCOME_MSG,
                {"welcome_code": "late"},
                "welcome:late",
                priority=outbox.WELCOME_PRIORITY,
                now=late,
                expires_at=late + timedelta(seconds=20),
            )
        assert outbox.welcomes_behind(engine)

        naps: list[float] = []
        monkeypatch.setattr(db, "time", SimpleNamespace(sleep=naps.append, monotonic=time.monotonic))
        db.step_aside(engine, 0.01, urgent_work_behind=outbox.welcomes_behind(engine))
        assert naps == [0.01]

        with transaction(factory) as session:  # the welcome lane takes it
            claimed = outbox.claim_due(session, min_priority=outbox.WELCOME_PRIORITY)
        assert welcome_id in [c.id for c in claimed]
        assert not outbox.welcomes_behind(engine)
        db.step_aside(engine, 0.01, urgent_work_behind=outbox.welcomes_behind(engine))
        assert naps == [0.01]
    finally:
        engine.dispose()
