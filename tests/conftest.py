"""Shared fixtures: one suite, two databases (DESIGN §7).

SQLite by default; PostgreSQL when SCRM_TEST_DATABASE_URL is set. The schema is built once per
session through the real Alembic revisions; every test starts from empty tables (units of work
commit on their own, so a per-test rollback cannot contain them). Servers listen on loopback only.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, func, or_, select, text
from werkzeug.serving import BaseWSGIServer, make_server

from config import Settings, load_settings
from scrm.schema import Base, InboxEvent, InboxStatus, OutboxCommand, OutboxStatus


def _serve(app: Any) -> tuple[BaseWSGIServer, str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # A short poll: shutdown() waits up to one interval, and every test stops two servers.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from scrm.migrations import upgrade

    url = os.environ.get("SCRM_TEST_DATABASE_URL")
    if url:
        url = load_settings({"SCRM_DATABASE_URL": url}).database_url
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'scrm-test.db'}"
    upgrade(url)
    return url


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    engine = create_engine(database_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    engine.dispose()
    yield database_url


def make_settings(database_url: str, **env: str) -> Settings:
    base = {"SCRM_DATABASE_URL": database_url, "SCRM_LOG_LEVEL": "INFO", "SCRM_DISPATCH_THREADS": "4"}
    base.update(env)
    return load_settings(base)


@dataclass
class SandboxServer:
    sandbox: Any
    url: str

    @property
    def state(self) -> Any:
        return self.sandbox.state

    @property
    def api_base(self) -> str:
        return self.url + "/cgi-bin/"


@pytest.fixture
def sandbox_server() -> Iterator[SandboxServer]:
    from scrm.sandbox import Sandbox

    sandbox = Sandbox.create(None, seed_demo=True)
    server, url = _serve(sandbox.app)
    yield SandboxServer(sandbox, url)
    server.shutdown()


@dataclass
class Scrm:
    app: Any
    url: str
    sandbox: SandboxServer
    driver: Any

    @property
    def ctx(self) -> Any:
        return self.app.extensions["scrm"].ctx

    @property
    def callback_url(self) -> str:
        return self.url + "/wecom/callback"

    def settle(self, rounds: int = 50) -> None:
        """Let after-ack work finish, then run what the scheduler ticks would, until quiet."""
        from jobs import work

        self.app.extensions["scrm.pool"].wait_idle()
        for _ in range(rounds):
            with self.ctx.session_factory() as session:
                open_ids = list(
                    session.scalars(
                        select(InboxEvent.id)
                        .where(InboxEvent.status.in_((InboxStatus.PENDING, InboxStatus.FAILED)))
                        .order_by(InboxEvent.id)
                    )
                )
            for inbox_id in open_ids:
                work.process_event(self.ctx, inbox_id)
            sent = work.drain_outbox(self.ctx)
            if not open_ids and not sent and self.pending_outbox() == 0:
                return

    def pending_outbox(self) -> int:
        """Outbox rows still to send: due now, or tried already (a reminder queued for later and
        never tried is not waited for)."""
        from scrm.timeutil import utcnow

        with self.ctx.session_factory() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(OutboxCommand)
                    .where(
                        OutboxCommand.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)),
                        or_(OutboxCommand.next_attempt_at <= utcnow(), OutboxCommand.attempts > 0),
                    )
                )
                or 0
            )

    def session(self) -> Any:
        return self.ctx.session_factory()


def build_scrm(database_url: str, sandbox_server: SandboxServer, **env: str) -> tuple[Scrm, BaseWSGIServer]:
    from scrm.app import create_app

    settings = make_settings(database_url, WECOM_API_BASE=sandbox_server.api_base, **env)
    app = create_app(settings, mount_sandbox=False)
    server, url = _serve(app)
    driver = sandbox_server.sandbox.driver(url + "/wecom/callback")
    return Scrm(app, url, sandbox_server, driver), server


@contextmanager
def running_scrm(database_url: str, sandbox_server: SandboxServer, **env: str) -> Iterator[Scrm]:
    """scrm served on loopback against the sandbox, with settings ``env`` on top of the suite's;
    its after-ack work finished and everything stopped when the block ends."""
    harness, server = build_scrm(database_url, sandbox_server, **env)
    try:
        yield harness
    finally:
        harness.app.extensions["scrm.pool"].wait_idle()
        server.shutdown()
        harness.app.extensions["scrm.pool"].shutdown()
        harness.ctx.engine.dispose()


@pytest.fixture
def scrm(clean_db: str, sandbox_server: SandboxServer) -> Iterator[Scrm]:
    with running_scrm(clean_db, sandbox_server) as harness:
        yield harness


@pytest.fixture
def db_session(clean_db: str) -> Iterator[Any]:
    """A session for service tests, rolled back when the test ends: the whole test runs in one
    outer transaction and the session's own commits become savepoints, so nothing it wrote is
    left behind (it starts from the empty tables ``clean_db`` gives)."""
    from sqlalchemy.orm import Session

    from scrm.db import make_engine

    engine = make_engine(clean_db)
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()
        engine.dispose()
