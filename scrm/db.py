"""Storage: the declarative base and shared column types, engines, the session factory and the
unit of work. Nothing else lives here (DESIGN §3: storage stays boring).

Concurrency and commit grouping are the database's. PostgreSQL is the production engine and
groups concurrent commits itself; SQLite is the embedded default for one process (``scrm
serve``): WAL so readers never wait for the writer, ``synchronous=FULL`` so an acknowledged
callback survives a power cut, a busy timeout so writers queue instead of failing. A unit of
work (``transaction``) is one ordinary transaction on a pooled connection; on SQLite it takes the
write lock up front (``BEGIN IMMEDIATE``) so a read-then-write never fails on a lock upgrade,
while a plain read session (``read``) stays deferred and never takes the write lock.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from scrm.errors import NestedUnitOfWork
from scrm.timeutil import ensure_utc

# Set by ``transaction`` on its connection; the SQLite begin hook reads it.
WRITE_OPTION = "scrm_write_transaction"
SQLITE_BUSY_TIMEOUT_MS = 30_000

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER keys


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, whatever the backend keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; use scrm.timeutil.utcnow()")
        return ensure_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else ensure_utc(value)


def sqlite_text(value: datetime | None) -> str | None:
    """The text a UTCDateTime column holds on SQLite for an aware UTC datetime (SQLAlchemy's
    DATETIME storage format), for hot paths that hand rows straight to the driver."""
    return None if value is None else ensure_utc(value).isoformat(" ", "microseconds")[:26]


def from_sqlite_text(value: str | None) -> datetime | None:
    """``sqlite_text`` read back: aware UTC, as the column type would give it."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


class StrEnumType(TypeDecorator[enum.StrEnum]):
    """Stores a StrEnum by value in a plain VARCHAR (no database enum types to migrate)."""

    impl = String(32)
    cache_ok = True

    def __init__(self, enum_cls: type[enum.StrEnum], length: int = 32) -> None:
        super().__init__(length)
        self.enum_cls = enum_cls

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        return self.enum_cls(value).value

    def process_result_value(self, value: str | None, dialect: Any) -> enum.StrEnum | None:
        return None if value is None else self.enum_cls(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
        list[int]: JSON(),
    }


def insert_ignore(session: Session, model: Any, values: dict[str, Any], conflict: list[str]) -> int | None:
    """INSERT … ON CONFLICT (conflict) DO NOTHING RETURNING id: the new row's id, or None when a
    row with the same key exists (a retried callback, a write queued twice, a race).

    Runs on the session's connection with the values as parameters of a statement built once
    per table: SQLAlchemy's compiled cache then serves every call, where building the statement
    with the values inline made each callback coerce and cache-key every value (a fifth of the
    web worker's CPU per callback on PostgreSQL)."""
    stmt = _insert_ignore_statement(session.get_bind().dialect.name, model.__table__, tuple(conflict))
    result = session.connection().execute(stmt, values).scalar_one_or_none()
    return int(result) if result is not None else None


@functools.cache
def _insert_ignore_statement(dialect: str, table: Table, conflict: tuple[str, ...]) -> Any:
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(conflict)).returning(table.c.id)


def upsert(session: Session, model: Any, values: dict[str, Any], conflict: list[str]) -> None:
    """INSERT … ON CONFLICT DO UPDATE: last writer wins (e.g. the shared access token)."""
    module: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = module.insert(model.__table__).values(**values)
    updates = {k: stmt.excluded[k] for k in values if k not in conflict}
    session.execute(stmt.on_conflict_do_update(index_elements=conflict, set_=updates))


def is_sqlite(url_or_engine: str | Engine) -> bool:
    if isinstance(url_or_engine, Engine):
        return url_or_engine.dialect.name == "sqlite"
    return url_or_engine.startswith("sqlite")


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """An engine configured for scrm. ``pool_pre_ping`` replaces connections a restarted server
    broke; pools hand out the connection used last, whose caches are warm."""
    if not is_sqlite(url):
        return create_engine(
            url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True, pool_use_lifo=True
        )
    return _sqlite_engine(url, pool_size=pool_size, max_overflow=20)


def _sqlite_engine(url: str, **pool: Any) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_pre_ping=True,
        pool_use_lifo=True,
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The driver issues no BEGIN of its own: the begin hook below decides which kind.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers run beside the one writer
        # FULL syncs the WAL at every commit: WeCom never resends an acknowledged event, so an
        # ack must survive a power cut (WAL's usual NORMAL can lose the last commits).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Any) -> None:
        # A unit of work takes the write lock up front, so it never fails upgrading a read
        # snapshot to a write (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out); a read
        # session begins deferred and under WAL never blocks, nor is blocked by, the writer.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")

    return engine


_WRITER = "scrm_writer"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine``. On SQLite, units of work get an engine of their own with ONE
    pooled connection: SQLite has one writer at a time, and the threads of ``scrm serve`` then
    queue for it in SQLAlchemy's pool, each woken the moment the one before commits, instead of
    polling SQLite's busy handler (which sleeps up to 100 ms between tries)."""
    info: dict[str, Any] = {}
    if is_sqlite(engine):
        url = engine.url.render_as_string(hide_password=False)
        info[_WRITER] = _sqlite_engine(
            url, pool_size=1, max_overflow=0, pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000
        )
    return sessionmaker(bind=engine, expire_on_commit=False, info=info)


_in_unit_of_work: ContextVar[bool] = ContextVar("scrm_in_unit_of_work", default=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work at an edge (DESIGN §6.1): commit on success, roll back on any exception.

    Units of work do not nest: an inner one would be a second connection waiting on the outer
    one's write lock (on SQLite, for the whole busy timeout). Nesting fails at once instead.
    Services take the edge's session and only flush.
    """
    if _in_unit_of_work.get():
        raise NestedUnitOfWork(
            "a unit of work is already open in this context; pass its session down instead of opening another"
        )
    token = _in_unit_of_work.set(True)
    writer = factory.kw.get("info", {}).get(_WRITER)
    session = factory(bind=writer) if writer is not None else factory()
    try:
        session.connection(execution_options={WRITE_OPTION: True})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
        _in_unit_of_work.reset(token)
        if writer is not None:
            # Yield the interpreter right after handing the one writer connection back: a thread
            # woken to take it (a callback waiting to be stored) gets it, instead of this thread
            # taking it again for its next unit of work before the woken one ever runs. Measured
            # with scrm serve at 40 adds/s: the wait for the writer went from p95 82 ms to 18 ms.
            time.sleep(0)


@contextmanager
def read(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A read session: never takes SQLite's write lock, never commits. Closing it hands the
    connection back to the pool, which rolls it back; the rows it loaded stay readable."""
    with factory() as session:
        yield session
