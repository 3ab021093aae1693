"""Engine plumbing the callback path leans on: the idle-only connection check on PostgreSQL and
``hot_write``'s DBAPI-level writes (stored like the ORM's, atomic, refusing missing defaults)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from scrm import db
from scrm.db import hot_write, make_engine


@pytest.fixture
def pg_engine(database_url: str):
    if not database_url.startswith("postgresql"):
        pytest.skip("pooled-connection checks are PostgreSQL's concern (SQLite has no server)")
    engine = make_engine(database_url, pool_size=1)
    yield engine
    engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(database_url: str, pid: int) -> None:
    other = make_engine(database_url)
    with other.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    other.dispose()


def test_an_idle_connection_the_server_dropped_is_replaced_unseen(pg_engine, database_url, monkeypatch):
    first = _backend_pid(pg_engine)
    _kill(database_url, first)
    monkeypatch.setattr(db, "IDLE_PING_S", 0.0)  # the pooled connection now counts as idle
    with hot_write(pg_engine) as conn:  # the check replaces it before the caller sees it
        assert conn.returning("SELECT 1", []) == [(1,)]
    assert _backend_pid(pg_engine) != first


def test_a_connection_used_moments_ago_is_not_pinged(pg_engine, database_url, monkeypatch):
    first = _backend_pid(pg_engine)
    _kill(database_url, first)
    monkeypatch.setattr(db, "IDLE_PING_S", 3600.0)
    # Not checked, so the dead connection surfaces as an error — which the callback answers
    # with a 500 before acknowledging anything; SQLAlchemy then replaces the pool's connections.
    with pytest.raises(Exception), hot_write(pg_engine) as conn:
        conn.returning("SELECT 1", [])
    with hot_write(pg_engine) as conn:
        assert conn.returning("SELECT 1", []) == [(1,)]


def test_a_group_commit_on_a_dropped_connection_fails_and_the_next_one_reconnects(
    pg_engine, database_url, monkeypatch
):
    """The group's leader writes on whatever the pool hands it: a connection the server dropped
    fails that write (the callback answers 500 unacknowledged) and is thrown away."""

    def select_one(conn, items):
        return [conn.returning("SELECT 1", []) for _ in items]

    first = _backend_pid(pg_engine)
    _kill(database_url, first)
    monkeypatch.setattr(db, "IDLE_PING_S", 3600.0)
    with pytest.raises(Exception):
        db.run_hot_write(pg_engine, select_one, "a")
    assert db.run_hot_write(pg_engine, select_one, "b") == [(1,)]
    assert _backend_pid(pg_engine) != first


def test_the_idle_check_leaves_no_transaction_open(pg_engine, monkeypatch):
    _backend_pid(pg_engine)
    monkeypatch.setattr(db, "IDLE_PING_S", 0.0)
    # hot_write switches the connection to autocommit, which psycopg refuses inside a transaction.
    with hot_write(pg_engine) as conn:
        assert conn.returning("SELECT 1", []) == [(1,)]


@pytest.fixture
def engine(clean_db: str):
    engine = make_engine(clean_db)
    yield engine
    engine.dispose()


def _inbox_values(key: str) -> dict:
    from scrm.models import InboxStatus
    from scrm.timeutil import utcnow

    now = utcnow()
    return {
        "dedupe_key": key,
        "msg_type": "event",
        "event": "change_external_contact",
        "change_type": "add_external_contact",
        "ordering_key": "ext:wm1",
        "payload": "<xml/>",
        "created_time": 1700000000,
        "status": InboxStatus.PENDING.value,
        "attempts": 0,
        "received_at": now,
        "next_attempt_at": now,
    }


def test_hot_writes_read_back_through_the_orm_like_any_other_row(engine):
    """Values go to the driver through the columns' own bind processors: aware UTC datetimes,
    enums by value, JSON — the same stored form the ORM writes and reads."""
    from sqlalchemy.orm import Session

    from scrm.models import InboxEvent, InboxStatus, OutboxCommand, OutboxKind
    from scrm.services import outbox

    values = _inbox_values("k1")
    events = db.RowShape(engine.dialect, InboxEvent, values)
    with hot_write(engine) as conn:
        (inbox_id,) = db.insert_ignore_rows(conn, events, "dedupe_key", [events.values(values)])
        command = outbox.command_row(
            OutboxKind.SEND_WELCOME_MSG, {"text": {"content": "您好"}}, "welcome:c1", inbox_event_id=inbox_id
        )
        commands = db.RowShape(engine.dialect, OutboxCommand, command)
        db.insert_ignore_rows(conn, commands, "idempotency_key", [commands.values(command)])
    with hot_write(engine) as conn:  # the same event again: the conflict returns no row
        assert db.insert_ignore_rows(conn, events, "dedupe_key", [events.values(values)]) == [None]
    with Session(engine) as session:
        row = session.get(InboxEvent, inbox_id)
        assert row is not None and row.status is InboxStatus.PENDING
        assert row.received_at == values["received_at"] and row.received_at.tzinfo is not None
        sent = session.query(OutboxCommand).one()
        assert sent.payload == {"text": {"content": "您好"}} and sent.inbox_event_id == inbox_id


def test_a_hot_write_that_fails_leaves_nothing_behind(engine):
    from sqlalchemy import func, select

    from scrm.models import InboxEvent

    events = db.RowShape(engine.dialect, InboxEvent, _inbox_values("shape"))

    def insert(conn, key: str) -> None:
        db.insert_ignore_rows(conn, events, "dedupe_key", [events.values(_inbox_values(key))])

    with pytest.raises(RuntimeError), hot_write(engine) as conn:
        insert(conn, "k2")
        raise RuntimeError("the write after it failed")
    with hot_write(engine) as conn:
        insert(conn, "k3")
    with engine.connect() as reader:
        keys = reader.execute(select(InboxEvent.dedupe_key)).scalars().all()
        total = reader.execute(select(func.count()).select_from(InboxEvent)).scalar_one()
    # On PostgreSQL each statement commits by itself: a caller that needs two rows together
    # writes them in one statement, as inbox.accept does.
    expected = ["k2", "k3"] if engine.dialect.name == "postgresql" else ["k3"]
    assert sorted(keys) == expected and total == len(expected)


def test_sqlite_commits_are_synced_before_the_ack(engine, monkeypatch):
    """An acknowledged callback survives a power cut, not only a process crash. Units of work
    commit with WAL and synchronous=FULL; the callback's own connection commits with NORMAL
    under the writer lock and ``hot_write`` syncs the WAL file itself, after letting go of the
    lock (the other worker's callbacks go ahead meanwhile) and before its caller goes on."""
    import fcntl
    import os

    from sqlalchemy import func, select

    from scrm.models import InboxEvent

    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL commits durably with its default synchronous_commit")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL

    wal = f"{engine.url.database}-wal"
    seen: list[dict] = []
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        with engine.connect() as reader:  # committed already …
            stored = reader.execute(select(func.count()).select_from(InboxEvent)).scalar_one()
        lock = os.open(f"{engine.url.database}.writelock", os.O_RDWR)
        try:  # … and the writer lock is free for another process
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock_free = True
        except BlockingIOError:
            lock_free = False
        finally:
            os.close(lock)
        seen.append({"wal": os.fstat(fd).st_ino == os.stat(wal).st_ino, "stored": stored, "free": lock_free})
        real_fdatasync(fd)

    monkeypatch.setattr(db.os, "fdatasync", fdatasync)
    shape = db.RowShape(engine.dialect, InboxEvent, _inbox_values("shape"))
    with hot_write(engine) as conn:
        hot = conn._cursor.connection
        db.insert_ignore_rows(conn, shape, "dedupe_key", [shape.values(_inbox_values("k1"))])
        assert seen == []
    assert seen == [{"wal": True, "stored": 1, "free": True}]  # synced before hot_write returned
    assert hot.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL: the sync is ours
    assert hot.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)  # checkpoints: ours too
    with hot_write(engine) as conn:  # a retry that stores nothing is synced all the same
        db.insert_ignore_rows(conn, shape, "dedupe_key", [shape.values(_inbox_values("k1"))])
    assert len(seen) == 2


def test_a_failed_wal_sync_acknowledges_nothing_from_then_on(engine, monkeypatch):
    """fdatasync failing means the committed rows may never reach the disk, and a later sync
    may succeed without them: every callback of the group fails (unacknowledged, WeCom retries)
    and so does every later one, until the process is restarted."""
    import os

    from scrm.models import InboxEvent

    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's WAL sync is scrm's own; PostgreSQL syncs its WAL itself")
    shape = db.RowShape(engine.dialect, InboxEvent, _inbox_values("shape"))
    calls: list[list[str]] = []

    def write_many(conn, keys: list[str]) -> list[int | None]:
        calls.append(list(keys))
        return db.insert_ignore_rows(
            conn, shape, "dedupe_key", [shape.values(_inbox_values(k)) for k in keys]
        )

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(db.os, "fdatasync", failing)
    with pytest.raises(db.WalSyncFailed, match="check the disk and restart"):
        db.run_hot_write(engine, write_many, "a")
    assert calls == [["a"]]  # not written again on its own: it is stored, just not vouched for
    monkeypatch.setattr(db.os, "fdatasync", os.fdatasync)
    with pytest.raises(db.WalSyncFailed):
        db.run_hot_write(engine, write_many, "b")
    assert calls == [["a"]]


def test_callback_writes_checkpoint_the_wal_so_it_starts_over(engine, monkeypatch):
    """The hot connection never checkpoints inside its commit; every CHECKPOINT_EVERY_COMMITS
    commits a thread of its own copies the WAL back (outside the writer lock, then a catch-up
    under it), no callback waiting for it, and the next commit starts the WAL over instead of
    growing it."""
    import sqlite3
    import threading

    from scrm.models import InboxEvent

    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's WAL only")
    shape = db.RowShape(engine.dialect, InboxEvent, _inbox_values("shape"))

    def write_many(conn, keys: list[str]) -> list[int | None]:
        return db.insert_ignore_rows(
            conn, shape, "dedupe_key", [shape.values(_inbox_values(k)) for k in keys]
        )

    def frames_in_wal() -> int:
        probe = sqlite3.connect(str(engine.url.database))
        try:  # a passive checkpoint reports how many frames the WAL holds
            _busy, frames, _copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            probe.close()
        return int(frames)

    monkeypatch.setattr(db, "CHECKPOINT_EVERY_COMMITS", 10**9)
    for i in range(30):
        db.run_hot_write(engine, write_many, f"grow{i}")
    grown = frames_in_wal()  # also checkpoints: the next commit starts the WAL over
    monkeypatch.setattr(db, "CHECKPOINT_EVERY_COMMITS", 5)
    checkpoint_steps: list[int] = []  # the thread each checkpoint step ran on
    real_off_the_event_loop = db._off_the_event_loop

    def spy(blocking):
        checkpoint_steps.append(threading.get_ident())
        return real_off_the_event_loop(blocking)

    monkeypatch.setattr(db, "_off_the_event_loop", spy)
    checkpointing = db._HOT_WRITERS[engine]._checkpointing
    for i in range(30):
        db.run_hot_write(engine, write_many, f"bounded{i}")
        assert checkpointing.acquire(timeout=10)  # this commit's checkpoint, if any, is done
        checkpointing.release()
    bounded = frames_in_wal()
    assert len(checkpoint_steps) == 2 * 30 // 5  # two steps a checkpoint, one every 5 commits
    assert threading.get_ident() not in checkpoint_steps  # never on the callback's own thread
    assert grown >= 30  # every commit adds frames, and nothing copied them back
    assert 0 < bounded <= grown // 4  # only the commits since the last checkpoint


def test_callbacks_that_queue_during_a_commit_are_written_together(engine):
    """While one commit is under way, arriving writes queue; the next leader writes them all
    with one call (one multi-row statement, one commit — on SQLite one WAL sync). If that call
    fails, each write is tried on its own: one write's error loses only it."""
    import threading
    import time

    from sqlalchemy import select

    from scrm.models import InboxEvent

    first_holds = threading.Event()
    release_first = threading.Event()
    calls: list[tuple[int, list[str]]] = []
    outcomes: dict[str, object] = {}

    def write_many(conn, keys: list[str]) -> list[int | None]:
        calls.append((threading.get_ident(), list(keys)))
        if "first" in keys:
            first_holds.set()
            assert release_first.wait(10)
        if "broken" in keys:
            raise RuntimeError("this callback's own write failed")
        shape = db.RowShape(engine.dialect, InboxEvent, _inbox_values("shape"))
        return db.insert_ignore_rows(
            conn, shape, "dedupe_key", [shape.values(_inbox_values(k)) for k in keys]
        )

    def call(key: str) -> None:
        try:
            outcomes[key] = db.run_hot_write(engine, write_many, key)
        except RuntimeError as error:
            outcomes[key] = error

    threads = {key: threading.Thread(target=call, args=(key,)) for key in ("first", "a", "broken", "b")}
    threads["first"].start()
    assert first_holds.wait(10)
    for key in ("a", "broken", "b"):
        threads[key].start()
    group = db._GROUP_COMMITS[engine]
    deadline = time.monotonic() + 10
    while len(group._queue) < 3 and time.monotonic() < deadline:  # all three queued behind "first"
        time.sleep(0.01)
    release_first.set()
    for thread in threads.values():
        thread.join(10)

    leader, together = calls[1]
    assert sorted(together) == ["a", "b", "broken"]  # one call for the queued group …
    assert sorted(keys for _, keys in calls[2:]) == [["a"], ["b"], ["broken"]]
    assert {thread for thread, _ in calls[1:]} == {leader}  # … and its retries, by one leader
    assert isinstance(outcomes["broken"], RuntimeError)
    assert all(isinstance(outcomes[key], int) for key in ("first", "a", "b"))
    with engine.connect() as reader:
        keys = sorted(reader.execute(select(InboxEvent.dedupe_key)).scalars())
    assert keys == ["a", "b", "first"]


def test_insert_ignore_rows_returns_an_id_per_new_row_and_none_for_conflicts(engine):
    from sqlalchemy.orm import Session

    from scrm.models import InboxEvent, InboxStatus

    shape = db.RowShape(engine.dialect, InboxEvent, _inbox_values("shape"))
    with hot_write(engine) as conn:
        (stored,) = db.insert_ignore_rows(conn, shape, "dedupe_key", [shape.values(_inbox_values("held"))])
    new1 = _inbox_values("new1")
    rows = [shape.values(values) for values in (new1, _inbox_values("held"), _inbox_values("new2"), new1)]
    with hot_write(engine) as conn:
        ids = db.insert_ignore_rows(conn, shape, "dedupe_key", rows)
    assert ids[0] is not None and ids[2] is not None and ids[0] != ids[2] != stored
    assert ids[1] is None  # held already
    assert ids[3] is None  # the same key earlier in the same call
    with Session(engine) as session:  # converted like the ORM's own writes: read back equal
        row = session.get(InboxEvent, ids[0])
        assert row is not None and row.status is InboxStatus.PENDING
        assert row.received_at == new1["received_at"] and row.received_at.tzinfo is not None


def test_a_row_shape_names_what_a_row_lacks_or_a_table_does_not_have(engine):
    from scrm.models import InboxEvent

    shape = db.RowShape(engine.dialect, InboxEvent, _inbox_values("shape"))
    values = _inbox_values("k")
    del values["received_at"]
    with pytest.raises(ValueError, match="received_at"):
        shape.values(values)
    with pytest.raises(ValueError, match="lease_until.*does not write"):  # never dropped silently
        shape.values(_inbox_values("k") | {"lease_until": None})
    with pytest.raises(ValueError, match="no columns.*colour"):
        db.RowShape(engine.dialect, InboxEvent, ["dedupe_key", "colour"])


def _add_event(external_userid: str, welcome_code: str, state: str):
    from scrm.wecom.parse import parse_envelope

    plaintext = (
        "<xml><ToUserName>ww1</ToUserName><FromUserName>sys</FromUserName><CreateTime>1700000000</CreateTime>"
        "<MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType>"
        f"<UserID>zhangsan</UserID><ExternalUserID>{external_userid}</ExternalUserID><State>{state}</State>"
        f"<WelcomeCode>{welcome_code}</WelcomeCode></xml>"
    )
    return parse_envelope(plaintext), plaintext


def test_a_group_of_callbacks_is_stored_with_its_welcomes_once_each(engine):
    """``inbox.accept`` writes a whole group: new events with their welcome commands, nothing for
    an event already held, and only the first of two deliveries of one event in the group."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from scrm.db import transaction
    from scrm.models import InboxEvent, OutboxCommand
    from scrm.services import channels, inbox, welcome

    welcome.forget_templates()
    with transaction(db.make_session_factory(engine)) as session:
        channels.create_channel(
            session, name="展会", userids=["zhangsan"], welcome_text="您好", state="cexpo"
        )
        channels.create_channel(session, name="官网", userids=["zhangsan"], state="cweb")  # no welcome

    def arrival(external_userid: str, code: str, state: str, claim: bool = False) -> inbox.Arrival:
        return inbox.arrive(engine, *_add_event(external_userid, code, state), claim_welcome=claim)

    held = arrival("wm0", "code0", "cexpo", claim=True)
    with hot_write(engine) as conn:
        (first,) = inbox.accept(conn, [held])
    assert first.inbox_id is not None and first.welcome is not None

    group = [
        arrival("wm1", "code1", "cexpo", claim=True),
        held,  # a retry of an event stored earlier
        arrival("wm2", "code2", "cweb"),  # its channel has no welcome text
        arrival("wm1", "code1", "cexpo", claim=True),  # wm1 again
        arrival("wm3", "code3", "cexpo"),
    ]
    with hot_write(engine) as conn:
        results = inbox.accept(conn, group)

    new1, retry, no_welcome, again, new3 = results
    assert retry == inbox.Accepted(None, None) and again == inbox.Accepted(None, None)
    assert None not in (new1.inbox_id, no_welcome.inbox_id, new3.inbox_id)
    assert no_welcome.welcome is None
    assert new1.welcome is not None and new1.welcome.payload["welcome_code"] == "code1"
    assert new3.welcome is not None and new3.welcome.payload["welcome_code"] == "code3"
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(InboxEvent)) == 4
        commands = {
            c.idempotency_key: c
            for c in session.scalars(select(OutboxCommand)).all()
            if c.idempotency_key.startswith("welcome:")
        }
        assert sorted(commands) == ["welcome:code0", "welcome:code1", "welcome:code3"]
        assert commands["welcome:code1"].inbox_event_id == new1.inbox_id
        assert commands["welcome:code1"].id == new1.welcome.command_id
        assert commands["welcome:code1"].status.value == "sending"  # claimed for its sender
        assert commands["welcome:code3"].status.value == "pending"  # left for the welcome lane
        assert commands["welcome:code3"].inbox_event_id == new3.inbox_id
        assert commands["welcome:code1"].payload == {"welcome_code": "code1", "text": {"content": "您好"}}


def test_the_pool_hands_out_the_connection_used_last(engine):
    """LIFO: a process's writes keep landing on one warm connection (PostgreSQL: the backend
    whose prepared statements are hot), not on whichever idled longest."""
    held = [engine.raw_connection() for _ in range(3)]
    drivers = [pooled.driver_connection for pooled in held]
    for pooled in held:
        pooled.close()
    again = engine.raw_connection()
    try:
        assert again.driver_connection is drivers[-1]
    finally:
        again.close()


GREEN_GROUP = """
from gevent import monkey

monkey.patch_all()

import json, sys
import gevent
from scrm import db

engine = db.make_engine(f"sqlite:///{sys.argv[1]}")
calls = []

def write_many(conn, items):
    calls.append(len(items))
    return [conn.returning("SELECT ?", [item])[0][0] for item in items]

results = [gevent.spawn(db.run_hot_write, engine, write_many, i) for i in range(10)]
gevent.joinall(results, raise_error=True)

# A checkpoint's two steps run on gevent's native threads, not the hub's: the greenlets go on.
native_ident = monkey.get_original("threading", "get_ident")
hub_thread = native_ident()
off_the_hub = []
real = db._off_the_event_loop


def spy(blocking):
    def probe():
        off_the_hub.append(native_ident() != hub_thread)
        return blocking()

    return real(probe)


db._off_the_event_loop = spy
db.CHECKPOINT_EVERY_COMMITS = 1
db.run_hot_write(engine, write_many, 10)
checkpointing = db._HOT_WRITERS[engine]._checkpointing
checkpointing.acquire()  # the checkpoint greenlet started by that commit is done
checkpointing.release()
print(json.dumps({"calls": calls, "results": [g.value for g in results], "checkpoint": off_the_hub}))
"""


def test_under_gevent_callbacks_ready_together_are_written_together(tmp_path):
    """The Procfile's web worker runs callbacks as greenlets, which run only when the one
    running yields: a group's leader yields once before taking its batch, so ten callbacks
    ready at once are written with one call — without the yield, one call each. A WAL
    checkpoint runs on a native thread, so it holds up no greenlet but its own."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", GREEN_GROUP, str(tmp_path / "green.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(done.stdout)
    assert outcome["results"] == list(range(10))
    assert outcome["calls"] == [10, 1]
    assert outcome["checkpoint"] == [True, True]  # outside the writer lock, then the catch-up under it
