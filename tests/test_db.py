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
        assert conn.first(text("SELECT 1"), {}) == (1,)
    assert _backend_pid(pg_engine) != first


def test_a_connection_used_moments_ago_is_not_pinged(pg_engine, database_url, monkeypatch):
    first = _backend_pid(pg_engine)
    _kill(database_url, first)
    monkeypatch.setattr(db, "IDLE_PING_S", 3600.0)
    # Not checked, so the dead connection surfaces as an error — which the callback answers
    # with a 500 before acknowledging anything; SQLAlchemy then replaces the pool's connections.
    with pytest.raises(Exception), hot_write(pg_engine) as conn:
        conn.first(text("SELECT 1"), {})
    with hot_write(pg_engine) as conn:
        assert conn.first(text("SELECT 1"), {}) == (1,)


def test_the_idle_check_leaves_no_transaction_open(pg_engine, monkeypatch):
    _backend_pid(pg_engine)
    monkeypatch.setattr(db, "IDLE_PING_S", 0.0)
    # hot_write switches the connection to autocommit, which psycopg refuses inside a transaction.
    with hot_write(pg_engine) as conn:
        assert conn.first(text("SELECT 1"), {}) == (1,)


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
    statement = db.insert_ignore_statement(engine.dialect.name, InboxEvent, ["dedupe_key"])
    with hot_write(engine) as conn:
        (inbox_id,) = conn.first(statement, values) or (None,)
        command = outbox.command_row(OutboxKind.SEND_WELCOME_MSG, {"text": {"content": "您好"}}, "welcome:c1")
        conn.first(
            db.insert_ignore_statement(engine.dialect.name, OutboxCommand, ["idempotency_key"]),
            command | {"inbox_event_id": inbox_id},
        )
    with hot_write(engine) as conn:  # the same event again: the conflict returns no row
        assert conn.first(statement, values) is None
    with Session(engine) as session:
        row = session.get(InboxEvent, inbox_id)
        assert row is not None and row.status is InboxStatus.PENDING
        assert row.received_at == values["received_at"] and row.received_at.tzinfo is not None
        sent = session.query(OutboxCommand).one()
        assert sent.payload == {"text": {"content": "您好"}} and sent.inbox_event_id == inbox_id


def test_a_hot_write_that_fails_leaves_nothing_behind(engine):
    from sqlalchemy import func, select

    from scrm.models import InboxEvent

    statement = db.insert_ignore_statement(engine.dialect.name, InboxEvent, ["dedupe_key"])
    with pytest.raises(RuntimeError), hot_write(engine) as conn:
        conn.first(statement, _inbox_values("k2"))
        raise RuntimeError("the write after it failed")
    with hot_write(engine) as conn:
        conn.first(statement, _inbox_values("k3"))
    with engine.connect() as reader:
        keys = reader.execute(select(InboxEvent.dedupe_key)).scalars().all()
        total = reader.execute(select(func.count()).select_from(InboxEvent)).scalar_one()
    # On PostgreSQL each statement commits by itself: a caller that needs two rows together
    # writes them in one statement, as inbox.accept does.
    expected = ["k2", "k3"] if engine.dialect.name == "postgresql" else ["k3"]
    assert sorted(keys) == expected and total == len(expected)


def test_a_hot_write_without_a_value_the_orm_would_default_is_refused(engine):
    from scrm.models import InboxEvent

    values = _inbox_values("k4")
    del values["received_at"]
    statement = db.insert_ignore_statement(engine.dialect.name, InboxEvent, ["dedupe_key"])
    with pytest.raises(ValueError, match="received_at"), hot_write(engine) as conn:
        conn.first(statement, values)


def test_sqlite_commits_are_synced_before_the_ack(engine):
    """WAL with synchronous=FULL: an acknowledged callback survives a power cut, not only a
    process crash (NORMAL, WAL's usual pairing, may lose the last commits)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL commits durably with its default synchronous_commit")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2  # FULL


def test_sqlite_commits_callbacks_that_queued_meanwhile_as_one_group(engine):
    """While one commit is under way, arriving writes queue; the next leader commits them all in
    one transaction (one WAL sync), each in its own savepoint: one write's error loses only it."""
    import threading
    import time

    from sqlalchemy import select

    from scrm.models import InboxEvent

    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL writes each callback as one autocommitted statement")
    statement = db.insert_ignore_statement("sqlite", InboxEvent, ["dedupe_key"])
    first_holds = threading.Event()
    release_first = threading.Event()
    ran_on: dict[str, int] = {}
    outcomes: dict[str, object] = {}

    def write(key: str):
        def run(conn):
            ran_on[key] = threading.get_ident()
            if key == "first":
                first_holds.set()
                assert release_first.wait(10)
            row = conn.first(statement, _inbox_values(key))
            if key == "broken":
                raise RuntimeError("this callback's own write failed")
            return row

        return run

    def call(key: str) -> None:
        try:
            outcomes[key] = db.run_hot_write(engine, write(key))
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

    assert len({ran_on["a"], ran_on["broken"], ran_on["b"]}) == 1  # one leader ran the group
    assert isinstance(outcomes["broken"], RuntimeError)
    assert all(isinstance(outcomes[key], tuple) for key in ("first", "a", "b"))
    with engine.connect() as reader:
        keys = sorted(reader.execute(select(InboxEvent.dedupe_key)).scalars())
    assert keys == ["a", "b", "first"]
