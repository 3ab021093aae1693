"""Engine plumbing the callback path leans on: the idle-only connection check on PostgreSQL and
``hot_write``'s one-statement writes."""

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
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert _backend_pid(pg_engine) != first


def test_a_connection_used_moments_ago_is_not_pinged(pg_engine, database_url, monkeypatch):
    first = _backend_pid(pg_engine)
    _kill(database_url, first)
    monkeypatch.setattr(db, "IDLE_PING_S", 3600.0)
    # Not checked, so the dead connection surfaces as an error — which the callback answers
    # with a 500 before acknowledging anything; SQLAlchemy then replaces the pool's connections.
    with pytest.raises(Exception), hot_write(pg_engine) as conn:
        conn.execute(text("SELECT 1"))
    with hot_write(pg_engine) as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


def test_the_idle_check_leaves_no_transaction_open(pg_engine, monkeypatch):
    _backend_pid(pg_engine)
    monkeypatch.setattr(db, "IDLE_PING_S", 0.0)
    # hot_write switches the connection to autocommit, which psycopg refuses inside a transaction.
    with hot_write(pg_engine) as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
