"""Storage stays boring: a unit of work is one transaction, units do not nest, reads never wait
for a writer on SQLite, duplicates are ignored by the database, and a pooled connection the
server dropped is replaced before use."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from scrm.db import insert_ignore, make_engine, make_session_factory, read, transaction
from scrm.errors import NestedUnitOfWork
from scrm.schema import Staff
from scrm.timeutil import utcnow


@pytest.fixture
def factory(clean_db):
    engine = make_engine(clean_db)
    yield make_session_factory(engine)
    engine.dispose()


def _staff(userid: str) -> dict:
    now = utcnow()
    return {
        "userid": userid,
        "name": userid,
        "role": "rep",
        "is_active": True,
        "department_ids": [],
        "created_at": now,
        "updated_at": now,
    }


def test_a_nested_unit_of_work_fails_at_once(factory):
    """Refused before it opens a connection: were it opened, it would wait on the outer one's
    write lock and end in a busy timeout, not in NestedUnitOfWork."""
    with transaction(factory) as session:
        session.add(Staff(userid="outer", name="outer"))
        with pytest.raises(NestedUnitOfWork, match="pass its session down"):
            with transaction(factory):
                pass
    with read(factory) as session:
        assert session.scalar(select(Staff.userid)) == "outer"  # the outer unit still committed


def test_a_unit_of_work_commits_all_or_nothing(factory):
    with pytest.raises(RuntimeError), transaction(factory) as session:
        session.add(Staff(userid="ghost", name="ghost"))
        session.flush()
        raise RuntimeError("boom")
    with read(factory) as session:
        assert session.scalar(select(func.count()).select_from(Staff)) == 0


def test_a_read_proceeds_while_a_write_transaction_is_open(factory):
    """On SQLite the writer holds the write lock from BEGIN IMMEDIATE; a read session begins
    deferred and reads the last committed state at once (WAL), on PostgreSQL likewise."""
    with transaction(factory) as session:
        session.add(Staff(userid="committed", name="c"))
    writer_open, release = threading.Event(), threading.Event()

    def writer() -> None:
        with transaction(factory) as session:
            session.add(Staff(userid="in-flight", name="f"))
            session.flush()
            writer_open.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writer_open.wait(10)
        # The writer holds its transaction open until we release it below: a read that waited
        # for the write lock would block here until the busy timeout and fail.
        with read(factory) as session:
            seen = set(session.scalars(select(Staff.userid)))
        assert thread.is_alive()  # the write transaction was still open during the read
        assert seen == {"committed"}
    finally:
        release.set()
        thread.join(10)
    with read(factory) as session:
        assert set(session.scalars(select(Staff.userid))) == {"committed", "in-flight"}


def test_insert_ignore_stores_a_key_once(factory):
    with transaction(factory) as session:
        first = insert_ignore(session, Staff, _staff("zhangsan"), ["userid"])
        again = insert_ignore(session, Staff, _staff("zhangsan"), ["userid"])
    assert isinstance(first, int) and again is None


def test_a_connection_the_server_dropped_is_replaced_before_use(factory, clean_db):
    if not clean_db.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    engine = factory.kw["bind"]
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = make_engine(clean_db)
    with killer.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()
    killer.dispose()
    with transaction(factory) as session:  # pool_pre_ping finds the dead one and reconnects
        session.add(Staff(userid="after-restart", name="a"))
    with read(factory) as session:
        assert session.scalar(select(Staff.userid)) == "after-restart"
