"""Database plumbing: the declarative base, the shared column types, engines and units of work.

One ``UTCDateTime`` type stores every ``*_at`` column as aware UTC on both SQLite and PostgreSQL;
constraint names come from a naming convention so Alembic revisions are stable. Engines come
configured for how scrm writes: on SQLite, one writer at a time across processes (``WriterLock``,
with background writers stepping aside while others queue); on PostgreSQL, pooled connections
checked only after sitting idle. ``transaction`` is the edge's unit of work; ``hot_write`` is the
callback's leaner one, with ``run_hot_write``'s group commit on top and, on SQLite, a connection
of its own whose WAL it syncs and checkpoints outside the writer lock (``_SqliteHotWriter``).
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from datetime import datetime
from itertools import chain
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import JSON, DateTime, Engine, MetaData, String, bindparam, create_engine, event, exc, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from scrm.timeutil import ensure_utc

log = logging.getLogger(__name__)

WRITE_OPTION = "scrm_write_transaction"
STEP_ASIDE_WINDOW_S = 1.0
STEP_ASIDE_MAX_S = 0.05
# A pooled PostgreSQL connection idle longer than this is pinged before use (see _ping_when_idle).
IDLE_PING_S = 5.0
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, WriterLock] = weakref.WeakKeyDictionary()
_GROUP_COMMITS: weakref.WeakKeyDictionary[Engine, _GroupCommit] = weakref.WeakKeyDictionary()
_HOT_WRITERS: weakref.WeakKeyDictionary[Engine, _SqliteHotWriter] = weakref.WeakKeyDictionary()
T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 — an item one callback writes
# A leader writes at most this many callbacks at once (SQLite allows 32,766 values a statement).
GROUP_LIMIT = 64
# A process's callback writes checkpoint SQLite's WAL after this many commits (_SqliteHotWriter):
# some 20 WAL pages a commit, so about SQLite's own 1,000-page default between checkpoints.
CHECKPOINT_EVERY_COMMITS = 32


class WriterLock:
    """SQLite's one writer, queued fairly: threads of this process on an RLock, processes (web
    workers, the scheduler) on ``flock`` of a lock file beside the database.

    Without it, writers of different processes queue on SQLite's busy handler, which sleeps up
    to 100 ms between polls and turns a short queue into a long latency tail; a blocked flock
    wakes the moment the holder lets go. Re-entrant within a thread. Under gevent the RLock is
    gevent's and a blocked flock holds up the worker's other greenlets until the holder lets go
    (a commit's length); waiting in a native thread instead measured slower.
    """

    def __init__(self, database: str | None) -> None:
        self._rlock = threading.RLock()
        self._depth = 0
        self._path = f"{database}.writelock" if database and database != ":memory:" else None
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int | None:
        if self._path is None:
            return None
        if self._fd is None or self._pid != os.getpid():  # a forked worker needs its own open file
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> WriterLock:
        self._rlock.acquire()
        self._depth += 1
        if self._depth == 1:
            try:
                fd = self._file()
                if fd is not None:
                    self._flock(fd)
            except BaseException:
                self._depth -= 1
                self._rlock.release()
                raise
        return self

    @staticmethod
    def _flock(fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Note when a writer last had to queue, for the background writers that step aside
            # (``waited_on_within``). CLOCK_MONOTONIC is one clock for every process on the host.
            os.pwrite(fd, struct.pack("d", time.monotonic()), 0)
            fcntl.flock(fd, fcntl.LOCK_EX)

    def waited_on_within(self, seconds: float) -> bool:
        """Whether any writer of any process had to queue for the lock in the last ``seconds``."""
        fd = self._file()
        if fd is None:
            return False
        raw = os.pread(fd, 8, 0)
        return len(raw) == 8 and time.monotonic() - struct.unpack("d", raw)[0] < seconds

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._rlock.release()


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


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
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


def dialect_insert(dialect_name: str, model: Any) -> Any:
    """The dialect's own INSERT construct (the one with ``on_conflict_*``) for a model's table."""
    module: Any = postgresql if dialect_name == "postgresql" else sqlite
    return module.insert(model.__table__)


_INSERT_IGNORE: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def insert_ignore_statement(dialect_name: str, model: Any, conflict: list[str]) -> Any:
    """INSERT … ON CONFLICT (conflict) DO NOTHING RETURNING id, built once per table, for
    ``insert_ignore``'s units of work (the callback's own write uses ``insert_ignore_rows``).

    The values travel as parameters: building the statement with ``.values(**values)`` on every
    call cost more than the database round-trip.
    """
    key = (dialect_name, model.__tablename__, tuple(conflict))
    stmt = _INSERT_IGNORE.get(key)
    if stmt is None:
        stmt = dialect_insert(dialect_name, model).on_conflict_do_nothing(index_elements=conflict)
        stmt = _INSERT_IGNORE.setdefault(key, stmt.returning(model.__table__.c.id))
    return stmt


class RowShape:
    """How rows of one table travel into a multi-row hot insert: the fields in the order the
    statement binds them (the table's column order), each value already converted by its
    column's own bind processor — the stored form the ORM would write.

    Callers convert their row in the request's own thread (``values``); the leader of a group
    commit then only concatenates converted rows under the write lock, which every other
    writer is waiting for.
    """

    def __init__(self, dialect: Any, model: Any, fields: Iterable[str]) -> None:
        table = model.__table__
        wanted = set(fields)
        if unknown := wanted - set(table.c.keys()):
            raise ValueError(f"{table.name} has no columns {sorted(unknown)}")
        self.dialect = dialect
        self.model = model
        self.fields = tuple(column.name for column in table.columns if column.name in wanted)
        self._processors = [
            (index, processor, isinstance(table.c[name].type, UTCDateTime))
            for index, name in enumerate(self.fields)
            if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]

    def values(self, row: dict[str, Any], converted: dict[int, tuple[Any, Any]] | None = None) -> list[Any]:
        """``row``'s values in ``fields`` order, converted for the driver.

        ``converted``: a dict the caller shares between the rows of one write, so a timestamp
        that stamps several columns (one ``now``) is converted once; keyed by the datetime
        object's id, which the entry keeps alive.
        """
        if missing := [name for name in self.fields if name not in row]:
            raise ValueError(
                f"a {self.model.__tablename__} row needs {missing} (hot writes fill no defaults)"
            )
        if len(row) != len(self.fields):  # a value this shape would silently drop
            extra = sorted(set(row) - set(self.fields))
            raise ValueError(f"a {self.model.__tablename__} row has {extra}, which this shape does not write")
        out = [row[name] for name in self.fields]
        for index, processor, is_timestamp in self._processors:
            value = out[index]
            if is_timestamp and converted is not None and value is not None:
                hit = converted.get(id(value))
                if hit is None:
                    hit = converted[id(value)] = (value, processor(value))
                out[index] = hit[1]
            else:
                out[index] = processor(value)
        return out


def insert_ignore_rows(
    conn: HotConnection, shape: RowShape, conflict: str, rows: list[list[Any]]
) -> list[int | None]:
    """Insert ``rows`` (from ``shape.values``) with one multi-row INSERT … ON CONFLICT
    (conflict) DO NOTHING RETURNING; one id per row, None where the row conflicted — with a
    stored row, or with an earlier row of the same call.

    RETURNING gives no promise of order, so ids are matched back through the conflict column.
    """
    if not rows:
        return []
    sql = _insert_ignore_rows_sql(shape, conflict, len(rows))
    stored = {key: row_id for row_id, key in conn.returning(sql, list(chain.from_iterable(rows)))}
    position = shape.fields.index(conflict)
    return [stored.pop(row[position], None) for row in rows]


_INSERT_IGNORE_ROWS: dict[tuple[str, str, tuple[str, ...], str, int], str] = {}


def _insert_ignore_rows_sql(shape: RowShape, conflict: str, count: int) -> str:
    key = (shape.dialect.name, shape.model.__tablename__, shape.fields, conflict, count)
    sql = _INSERT_IGNORE_ROWS.get(key)
    if sql is None:
        statement, names = insert_ignore_rows_statement(shape, conflict, count)
        sql = _INSERT_IGNORE_ROWS.setdefault(key, positional_sql(shape.dialect, statement, names))
    return sql


def insert_ignore_rows_statement(shape: RowShape, conflict: str, count: int) -> tuple[Any, list[str]]:
    """INSERT … VALUES (…) × ``count`` ON CONFLICT (conflict) DO NOTHING RETURNING id, conflict,
    and its bind names, row by row (``field_i``) — to compile with ``positional_sql``, or to
    use inside a larger statement."""
    table = shape.model.__table__
    names = [[f"{name}_{i}" for name in shape.fields] for i in range(count)]
    statement = (
        dialect_insert(shape.dialect.name, shape.model)
        .values(
            [
                {
                    name: bindparam(bound, type_=table.c[name].type)
                    for name, bound in zip(shape.fields, row, strict=True)
                }
                for row in names
            ]
        )
        .on_conflict_do_nothing(index_elements=[conflict])
        .returning(table.c.id, table.c[conflict])
    )
    return statement, list(chain.from_iterable(names))


_POSITIONAL_DIALECTS: dict[type, Any] = {}


def positional_sql(dialect: Any, statement: Any, expected: list[str]) -> str:
    """``statement`` compiled with positional parameters (SQLite's ``?``, PostgreSQL's ``$n``),
    checked to bind exactly ``expected``, in that order — the order callers lay values out in."""
    compiled = statement.compile(dialect=_positional(dialect))
    if list(compiled.positiontup or ()) != expected or compiled.escaped_bind_names:
        raise ValueError(f"statement binds {compiled.positiontup}, not the expected {expected}")
    return str(compiled.string)


def _positional(dialect: Any) -> Any:
    """The dialect compiling hot statements: SQLite's own (``?``); for psycopg one rendering
    PostgreSQL's native ``$n``, which ``hot_write``'s raw cursor sends as written — psycopg's
    usual cursor re-parses a statement's placeholders on every call once it has more than 50
    parameters, as a group's multi-row insert does."""
    if dialect.positional:
        return dialect
    cls = type(dialect)
    return _POSITIONAL_DIALECTS.get(cls) or _POSITIONAL_DIALECTS.setdefault(
        cls, cls(paramstyle="numeric_dollar")
    )


def insert_ignore(session: Session, model: Any, values: dict[str, Any], conflict: list[str]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for rows concurrency races on; returns the new id or None."""
    stmt = insert_ignore_statement(session.get_bind().dialect.name, model, conflict)
    # Straight to the connection: a Core insert of explicit values needs none of the ORM's
    # statement handling (nor an autoflush — the values never name a pending row's id).
    return session.connection().execute(stmt, values).scalar_one_or_none()


def insert_returning_id(session: Session, model: Any, values: dict[str, Any]) -> int:
    """A plain Core INSERT … RETURNING id on the session's connection (hot paths that skip the ORM)."""
    table = model.__table__
    return int(session.connection().execute(insert(table).returning(table.c.id), values).scalar_one())


def upsert(session: Session, model: Any, values: dict[str, Any], conflict: list[str]) -> None:
    """INSERT … ON CONFLICT DO UPDATE: last writer wins (e.g. the shared access token)."""
    stmt = dialect_insert(session.get_bind().dialect.name, model).values(**values)
    updates = {k: stmt.excluded[k] for k in values if k not in conflict}
    session.execute(stmt.on_conflict_do_update(index_elements=conflict, set_=updates))


_CACHES = "scrm_caches"


def session_cache(session: Session, name: str) -> dict[Any, Any]:
    """A lookup cache that lives as long as ``session`` (one unit of work, often a batch of
    events): rows a batch reads again and again, such as the rep or the channel of many adds."""
    caches: dict[str, dict[Any, Any]] = session.info.setdefault(_CACHES, {})
    return caches.setdefault(name, {})


def drop_session_caches(session: Session) -> None:
    """Forget every session cache — after a savepoint rollback, a cached row may be gone."""
    session.info.pop(_CACHES, None)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    # Pools hand out the connection used last (LIFO): a process's writes — above all the group
    # commits, one at a time — keep landing on one warm connection. On PostgreSQL that is the
    # backend whose prepared statements and caches are hot (psycopg prepares a statement after
    # five uses on a connection; a FIFO pool spreads them over all ten): in the web tier
    # server CPU per callback fell from 0.26 to 0.17 ms. On SQLite it is the connection whose
    # page cache is still valid when no other process wrote since.
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_use_lifo=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers run beside the single writer; busy_timeout makes writers queue
            # instead of failing with "database is locked" when several threads ack at once.
            # synchronous=FULL syncs the WAL at every commit: a callback acknowledged to WeCom
            # must survive a power cut too, as it does on PostgreSQL. WAL's usual NORMAL would
            # acknowledge faster but can lose the last commits before a checkpoint, and WeCom
            # never sends an acknowledged event again. (The callback's own connection commits
            # with NORMAL and syncs the WAL itself, outside the writer lock: _SqliteHotWriter.)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Units of work (``transaction``) take the write lock up front with BEGIN IMMEDIATE,
            # so two writers never fail on a read-then-write upgrade (SQLite's SQLITE_BUSY trap);
            # plain read sessions stay deferred and never block writers under WAL.
            if conn.get_execution_options().get(WRITE_OPTION):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        _WRITE_LOCKS[engine] = WriterLock(engine.url.database)
        _GROUP_COMMITS[engine] = _GroupCommit()

        @event.listens_for(engine, "connect")
        def _sqlite_no_autobegin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=20, pool_use_lifo=True)
    _ping_when_idle(engine)
    _GROUP_COMMITS[engine] = _GroupCommit()
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    A restarted or failed-over server breaks connections that sat in the pool; ``pool_pre_ping``
    would catch that with a round-trip on *every* checkout — on the callback path, one more
    round-trip than the write itself. A connection checked in moments ago is almost surely
    alive, so only one idle for ``IDLE_PING_S`` is pinged; raising ``DisconnectionError`` makes
    the pool replace it (SQLAlchemy's documented checkout recipe). Should the server die mid-burst, the
    statement fails, SQLAlchemy invalidates the pool, and the callback answers 500 before
    anything was acknowledged, so WeCom delivers it again.
    """

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info["scrm_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("scrm_idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return  # brand new, or used a moment ago
        try:
            # The dialect's own ping (what pool_pre_ping runs): it leaves no transaction open.
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection failed its idle check: {error}") from error


def step_aside(engine: Engine, held_s: float, *, urgent_work_behind: bool = False) -> None:
    """For background writers (the handler lane) between transactions: if others are held up
    by us, pause for as long as we just held on, so they get about half of what we used.

    Held up means, on SQLite, that a writer had to queue for the writer lock in the last second
    (callbacks and welcome sends are being written beside us): nice values order CPU, not the
    lock, and without this a lane applying a backlog holds the lock most of the time and every
    callback waits behind it. On either database, the caller may know of more urgent work that
    is falling behind (``urgent_work_behind``: welcomes waiting for their lane). With nobody
    held up the lane runs at full speed.
    """
    lock = _writer_lock(engine)
    if urgent_work_behind or (lock is not None and lock.waited_on_within(STEP_ASIDE_WINDOW_S)):
        time.sleep(min(held_s, STEP_ASIDE_MAX_S))  # a rare long transaction is no reason to idle


def _writer_lock(bind: object) -> WriterLock | None:
    """The SQLite writer lock of an engine; None for PostgreSQL (or anything that is no engine)."""
    return _WRITE_LOCKS.get(bind) if isinstance(bind, Engine) else None


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


class HotConnection:
    """One group of callbacks' write, run on the DBAPI cursor itself (see ``hot_write``).

    Statements are SQLAlchemy Core constructs compiled once to positional SQL
    (``positional_sql``), and values arrive converted by the columns' own bind processors
    (``RowShape``): each call only hands both to the driver. That skips SQLAlchemy's
    per-execution work (cache key, execution context, result wrapping), which cost more than
    the database on this path.
    """

    def __init__(self, engine: Engine, cursor: Any) -> None:
        self.engine = engine
        self._cursor = cursor

    def returning(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Run positional ``sql`` (``positional_sql``) with driver-ready ``params`` and return
        every row it returned (a multi-row INSERT … RETURNING)."""
        self._cursor.execute(sql, params)
        return [tuple(row) for row in self._cursor.fetchall()]


@contextmanager
def hot_write(engine: Engine) -> Iterator[HotConnection]:
    """The callback's own write, the one path run for every WeCom event.

    PostgreSQL: a pooled connection that autocommits — each statement is its own transaction,
    so a caller that needs two rows written together writes them in one statement
    (``inbox.accept`` uses a CTE): one round-trip instead of BEGIN, INSERTs and COMMIT. A
    connection the server dropped is thrown away with the pool's idle connections (they likely
    died with it); the callback answers 500 before acknowledging anything and WeCom delivers it
    again. SQLite: one ``BEGIN IMMEDIATE`` transaction under the writer lock on the process's
    own hot connection, committed on exit and synced before the caller goes on
    (``_SqliteHotWriter``), rolled back on an exception.
    """
    if engine.dialect.name != "postgresql":
        with _sqlite_hot_writer(engine).write(engine) as conn:
            yield conn
        return
    pooled = engine.raw_connection()
    driver: Any = pooled.driver_connection
    cursor = None
    try:
        driver.autocommit = True
        # A raw cursor, which sends ``$n`` statements as written (``_positional``).
        cursor = engine.dialect.loaded_dbapi.RawCursor(driver)
        yield HotConnection(engine, cursor)
    except BaseException as error:
        dbapi_error = engine.dialect.loaded_dbapi.Error
        if isinstance(error, dbapi_error) and engine.dialect.is_disconnect(error, driver, cursor):
            pooled.invalidate(error)
            engine.pool.dispose()
        raise
    finally:
        if pooled.is_valid:
            _restore_transactions(pooled, driver)
        pooled.close()


class WalSyncFailed(RuntimeError):
    """fdatasync of SQLite's WAL failed: what was committed may not be on disk. Nothing of the
    group is acknowledged, and this process acknowledges nothing more until restarted."""


class _SqliteHotWriter:
    """The callback's SQLite write, per engine and process: a connection of its own, a WAL
    synced outside the writer lock, and checkpoints run outside it too.

    With ``synchronous=FULL`` every commit syncs the WAL while it holds the writer lock, so
    the other web worker's callbacks wait out each fsync; and SQLite's automatic checkpoint
    (a copy of every changed page and two more syncs) ran inside whichever callback's commit
    crossed 1,000 pages, under the lock as well. Here the hot connection commits with
    ``synchronous=NORMAL`` — the WAL is written, not synced — and ``write`` calls fdatasync on
    the WAL file after letting go of the lock and before returning, so before any callback of
    the group is acknowledged: the guarantee FULL gives an acknowledged callback, at the same
    point, while the next group already holds the lock. Every commit is synced, even one that
    stored nothing (a retry we hold): the sync also covers the earlier commit it duplicated,
    which may still be in flight to the disk. Other connections can read the rows before
    they are synced; whatever acts on them outside (a handler, a welcome send) commits first
    with FULL, which syncs the whole WAL, ours included.

    Every ``CHECKPOINT_EVERY_COMMITS`` commits a checkpoint starts on a thread of its own, so
    no callback waits for it: a passive checkpoint outside the lock does the copying and
    syncing, then a second one under the lock catches up the few frames written meanwhile, so
    the checkpoint
    completes and the next writer starts the WAL over — a WAL that only grew would make every
    sync write the file's new size too. The hot connection checkpoints never by itself
    (``wal_autocheckpoint=0``); every other connection keeps FULL and SQLite's defaults.

    Under gevent (the Procfile's web worker) the sync, like the SQLite calls and a wait for the
    writer lock, blocks the worker's other greenlets for its duration; handing it to a native
    thread so they could go on parsing measured slower (two thread switches a group). A
    checkpoint, long and rare, does run on a native thread (``_off_the_event_loop``).
    """

    def __init__(self, database: str) -> None:
        self._database = database
        self._pid = 0
        self._driver: Any = None
        self._wal: int | None = None
        self._retired: list[int] = []  # WAL descriptors of dropped connections, closed in close()
        self._checkpointer: Any = None
        self._checkpointing = threading.Lock()
        self._commits = 0
        self._failed: WalSyncFailed | None = None

    def _connection(self, engine: Engine) -> Any:
        if self._pid != os.getpid():  # a forked process opens its own (SQLite forbids sharing)
            self._pid, self._driver, self._wal, self._checkpointer = os.getpid(), None, None, None
            self._retired = []
        if self._driver is None:
            driver = _own_connection(engine)
            driver.execute("PRAGMA synchronous=NORMAL")  # synced by ``write``, after the lock
            driver.execute("PRAGMA wal_autocheckpoint=0")  # checkpointed by ``checkpoint``
            self._driver = driver
        return self._driver

    @contextmanager
    def write(self, engine: Engine) -> Iterator[HotConnection]:
        if self._failed is not None:
            raise self._failed
        with _writer_lock(engine) or nullcontext():
            driver = self._connection(engine)
            cursor = driver.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield HotConnection(engine, cursor)
                cursor.execute("COMMIT")
            except BaseException as error:
                self._abandon(driver, error)
                raise
            self._commits += 1
            wal = self._wal_descriptor()
        self._sync(wal)
        self._checkpoint_when_due(engine)

    def _abandon(self, driver: Any, error: BaseException) -> None:
        try:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
        except Exception as rollback_error:  # a connection that cannot roll back is not reused
            log.warning("dropping the hot SQLite connection: %s (after %s)", rollback_error, error)
            with suppress(Exception):
                driver.close()
            self._driver = None
            # A new connection may find a new WAL (ours could have been the last one open).
            # The old descriptor may still be syncing in a thread that left the lock: it is
            # closed with the writer, not now.
            if self._wal is not None:
                self._retired.append(self._wal)
                self._wal = None

    def _wal_descriptor(self) -> int:
        """The WAL's descriptor, opened under the writer lock after a commit: the WAL exists
        once a transaction ran, and it is never removed while a connection (ours) is open, so
        the descriptor stays the file we commit to."""
        if self._wal is None:
            try:
                self._wal = os.open(f"{self._database}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as error:
                raise self._durability_lost(error) from error
        return self._wal

    def _sync(self, wal: int) -> None:
        try:
            os.fdatasync(wal)
        except OSError as error:
            raise self._durability_lost(error) from error

    def _durability_lost(self, error: OSError) -> WalSyncFailed:
        # The kernel may have dropped the pages it failed to write: a later sync could succeed
        # without them. Like PostgreSQL, stop vouching for anything until a restart.
        self._failed = WalSyncFailed(
            f"syncing {self._database}-wal failed ({error}); check the disk and restart scrm"
        )
        log.critical("%s", self._failed)
        return self._failed

    def _checkpoint_when_due(self, engine: Engine) -> None:
        """Every ``CHECKPOINT_EVERY_COMMITS`` commits, start a checkpoint on a thread of its own
        (under gevent a greenlet, whose SQLite calls go to a native thread): no callback waits
        for it. One at a time per process; a commit that finds one under way leaves it be."""
        if self._commits < CHECKPOINT_EVERY_COMMITS or not self._checkpointing.acquire(blocking=False):
            return
        self._commits = 0
        try:
            threading.Thread(
                target=self._checkpoint, args=(engine,), name="scrm-wal-checkpoint", daemon=True
            ).start()
        except BaseException:
            self._checkpointing.release()
            raise

    def _checkpoint(self, engine: Engine) -> None:
        """Copy the WAL back into the database (see the class docstring)."""
        try:
            if self._checkpointer is None or self._pid != os.getpid():
                self._checkpointer = _own_connection(engine)  # FULL: checkpoints sync as they should
            checkpointer = self._checkpointer

            def passive_checkpoint() -> None:
                checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

            _off_the_event_loop(passive_checkpoint)
            with _writer_lock(engine) or nullcontext():
                _off_the_event_loop(passive_checkpoint)
        except Exception as error:  # tried again after the next commits; nothing is lost
            log.warning("WAL checkpoint failed: %s", error)
        finally:
            self._checkpointing.release()

    def close(self) -> None:
        """Close what this process opened (a forked child leaves its parent's alone)."""
        if self._pid == os.getpid():
            for closing in (self._driver, self._checkpointer):
                if closing is not None:
                    with suppress(Exception):  # closing a broken connection may fail; it is dropped
                        closing.close()
            if self._wal is not None:
                self._retired.append(self._wal)
            for descriptor in self._retired:
                os.close(descriptor)
        self._driver, self._checkpointer, self._wal, self._retired = None, None, None, []


def _off_the_event_loop(blocking: Callable[[], T]) -> T:
    """Run ``blocking`` so that, in a gevent worker, its other greenlets go on meanwhile: in
    gevent's pool of native threads, the calling greenlet waiting for it (it may hold the
    writer lock; SQLite's own locking covers the thread). Anywhere else, right here.

    For the rare long calls only (a checkpoint copies hundreds of pages and syncs twice): for a
    group's short commit and sync the hand-off to a thread cost more than it saved.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        return cast(T, gevent.get_hub().threadpool.apply(blocking))
    return blocking()


def _own_connection(engine: Engine) -> Any:
    """A DBAPI connection set up by the engine's connect hooks (WAL, FULL, busy timeout, foreign
    keys) but no longer the pool's: its settings may differ from what pooled ones promise."""
    pooled = engine.raw_connection()
    driver = pooled.driver_connection
    pooled.detach()
    return driver


def _sqlite_hot_writer(engine: Engine) -> _SqliteHotWriter:
    writer = _HOT_WRITERS.get(engine)
    if writer is None:
        database = engine.url.database
        if not database or database == ":memory:":
            raise ValueError("callbacks need a SQLite database file (its WAL is synced before each ack)")
        writer = _HOT_WRITERS.setdefault(engine, _SqliteHotWriter(database))

        @event.listens_for(engine, "engine_disposed")
        def _close(_engine: Engine) -> None:
            writer.close()

    return writer


WriteMany = Callable[[HotConnection, list[I]], list[T]]


def run_hot_write(engine: Engine, write_many: WriteMany[I, T], item: I) -> T:
    """Write one callback's ``item`` durably with ``write_many`` and return its result.

    ``write_many(conn, items)`` writes several items at once — with one statement per table —
    and returns one result per item, in order. The threads of a process that arrive while a
    write (and its commit) is under way queue up; the next of them writes all their items
    with one ``write_many`` call and one commit: on SQLite one WAL sync under the write lock,
    on PostgreSQL one round trip (``write_many`` must write with a single statement there,
    which the autocommitting connection commits whole). Items come prepared: whatever can be
    computed before the write — rows, converted values — is, in the caller's own thread.

    If the group's write fails, nothing of it was stored, and each item is written again on
    its own: one item's error loses only that item, and none was acknowledged yet.
    """
    group = _GROUP_COMMITS.get(engine)
    if group is None:
        with hot_write(engine) as conn:
            return write_many(conn, [item])[0]
    return group.run(engine, write_many, item)


class _HotJob(Generic[I, T]):
    def __init__(self, write_many: WriteMany[I, T], item: I) -> None:
        self.write_many = write_many
        self.item = item
        self.finished = False
        self.result: T | None = None
        self.error: BaseException | None = None
        # Released once: when the job is finished, or when the lead is handed to it. A bare
        # lock, not an Event: one allocation and one futex wait per callback.
        self._asleep = threading.Lock()
        self._asleep.acquire()

    def sleep(self) -> None:
        self._asleep.acquire()

    def wake(self) -> None:
        self._asleep.release()

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class _GroupCommit:
    """Group commit for ``run_hot_write`` (one per engine, so per process).

    Without it every callback holds SQLite's writer lock through its own WAL sync, or makes its
    own PostgreSQL round trip and commit; with it one commit and one statement per table cover
    every callback that queued meanwhile. The first thread (greenlet, under the Procfile's
    gevent worker) to find no commit under way leads: it takes the queue and commits it; then
    it wakes the jobs it committed, and hands the lead to the first job that queued meanwhile —
    each waiting thread is woken exactly once. It keeps no reference to its engine: it is the
    value of a weak mapping keyed by that engine, which it would keep alive.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_HotJob[Any, Any]] = []
        self._leading = False

    def run(self, engine: Engine, write_many: WriteMany[I, T], item: I) -> T:
        job: _HotJob[I, T] = _HotJob(write_many, item)
        with self._lock:
            self._queue.append(job)
            leads, self._leading = not self._leading, True
        if not leads:
            job.sleep()
            if job.finished:
                return job.outcome()
        # Leading: this job heads the queue (a leader hands the lead to the head). Yield once
        # first, so callbacks already under way in this worker join the group: under gevent (the
        # Procfile's web worker) they are greenlets that run only when this one lets them, and
        # without the yield every group would hold one callback; under threads it is one GIL
        # handoff (measured: no cost).
        time.sleep(0)
        with self._lock:
            batch, self._queue = self._queue[:GROUP_LIMIT], self._queue[GROUP_LIMIT:]
        try:
            self._commit(engine, batch)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leading = False
            for finished in batch:
                finished.wake()
            if successor is not None:
                successor.wake()
        return job.outcome()

    def _commit(self, engine: Engine, batch: list[_HotJob[Any, Any]]) -> None:
        try:
            with hot_write(engine) as conn:
                for write_many, jobs in _by_writer(batch).items():
                    results = write_many(conn, [job.item for job in jobs])
                    for job, result in zip(jobs, results, strict=True):
                        job.result = result
        except WalSyncFailed as error:  # committed, but not durable: answer none of it
            for job in batch:
                job.error, job.result = error, None
        except Exception as error:
            if len(batch) == 1:
                batch[0].error, batch[0].result = error, None
            else:  # nothing of the group was stored: each callback again, on its own
                for job in batch:
                    job.error, job.result = None, None
                    _write_alone(engine, job)
        except BaseException as error:
            for job in batch:
                job.error, job.result = error, None
        finally:
            for job in batch:
                job.finished = True


def _by_writer(batch: list[_HotJob[Any, Any]]) -> dict[Any, list[_HotJob[Any, Any]]]:
    groups: dict[Any, list[_HotJob[Any, Any]]] = {}
    for job in batch:
        groups.setdefault(job.write_many, []).append(job)
    return groups


def _write_alone(engine: Engine, job: _HotJob[Any, Any]) -> None:
    """One callback of a group whose write failed, in a transaction of its own: its own error
    loses only it. Writes are idempotent (ON CONFLICT DO NOTHING), so a group that did commit
    although the commit reported an error (a connection lost at COMMIT) comes back as
    duplicates, not as rows stored twice."""
    try:
        with hot_write(engine) as conn:
            (job.result,) = job.write_many(conn, [job.item])
    except Exception as error:
        job.error = error


def _restore_transactions(pooled: Any, driver: Any) -> None:
    """Back to psycopg's default before the pool hands the connection to a unit of work."""
    try:
        driver.autocommit = False
    except Exception as error:  # a connection in a state we cannot vouch for is not reused
        pooled.invalidate(error)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work at an edge: commit on success, roll back on any exception."""
    with _writer_lock(factory.kw.get("bind")) or nullcontext():
        session = factory()
        try:
            session.connection(execution_options={WRITE_OPTION: True})
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
