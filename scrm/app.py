"""Composition root for the web process: settings → Context → Flask app (+ sandbox, scheduler).

``create_app()`` is what gunicorn serves (``scrm.app:create_app()``). It wires the after-ack pool
(so a web worker starts an event's work the moment it has acknowledged it), mounts the WeCom
sandbox at ``/sandbox`` when the base URL points at it, and installs logging.
"""

from __future__ import annotations

import logging
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Flask, redirect, url_for
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from config import Settings, instance_dir, load_settings
from jobs import work
from scrm.context import Context
from scrm.web import (
    api,
    auth,
    callback,
    console,
    console_customers,
    console_friend_tags,
    console_groups,
    console_leads,
    console_tagrules,
    console_tags,
    errors,
    friends_api,
    groups_api,
    lead_form,
    leads_api,
    metrics,
    security,
    sidebar,
    tagrules_api,
    tags_api,
)
from scrm.web.runtime import WebRuntime
from scrm.wecom.crypto import CallbackCrypto

log = logging.getLogger(__name__)


class AfterAckPool:
    """Background work a web worker starts right after an ack; ``wait_idle`` lets tests settle.

    Welcome messages get their own executor: their code dies 20 s after the add (doc 92137), so
    they never queue behind handler work. With SCRM_DISPATCH_THREADS=0 a web worker only
    acknowledges, and the scheduler's welcome and dispatch ticks do the rest — the production
    shape, which keeps every web CPU cycle for the acks WeCom is waiting on.
    """

    def __init__(self, ctx: Context, threads: int) -> None:
        self._ctx = ctx
        self.enabled = threads > 0
        # Eight: each sender waits on WeCom and then on the database; more keep the calls flowing.
        self._welcome = ThreadPoolExecutor(max_workers=8, thread_name_prefix="welcome") if threads else None
        self._handlers = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="after-ack") if threads else None
        )
        self._pending: set[Future[Any]] = set()
        self._lock = threading.Lock()

    def __call__(self, inbox_id: int | None, welcome_id: int | None) -> None:
        if welcome_id is not None and self._welcome is not None:
            self._track(self._welcome.submit(work.send_welcome, self._ctx, welcome_id))
        if self._handlers is not None and inbox_id is not None:
            self._track(self._handlers.submit(work.after_ack, self._ctx, inbox_id))

    def _track(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def wait_idle(self, timeout: float = 120.0) -> None:
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return
            for future in pending:
                future.result(timeout=timeout)

    def shutdown(self) -> None:
        for executor in (self._welcome, self._handlers):
            if executor is not None:
                executor.shutdown(wait=True)


class _EventIdFilter(logging.Filter):
    """Stamps each record with the inbox event being processed (or '-'), for tracing one event."""

    def filter(self, record: logging.LogRecord) -> bool:
        event_id = work.current_event_id.get()
        record.event_id = event_id if event_id is not None else "-"
        return True


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s [%(event_id)s]: %(message)s"
        )
        for handler in root.handlers:
            handler.addFilter(_EventIdFilter())
    root.setLevel(level)
    # Tick-by-tick scheduler chatter and per-request access lines drown what matters at INFO.
    for noisy in ("apscheduler", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A tick still running when its next turn comes is skipped on purpose (max_instances=1).
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


def separate_roles_error(settings: Settings, role: str) -> str | None:
    """Why the Procfile's separate roles cannot run on this database, or None. SQLite serves one
    process (``scrm serve``: web and scheduler together); several processes writing one SQLite
    file would queue on its lock and need the machinery scrm does not keep (DESIGN §3)."""
    if not settings.is_sqlite:
        return None
    return (
        f"the {role} role runs as a process of its own, which needs PostgreSQL: set "
        "SCRM_DATABASE_URL=postgresql://user@host/scrm, or run `scrm serve` (web and scheduler in one "
        "process) on the embedded SQLite database"
    )


def web_process() -> Flask:
    """What the Procfile's web role serves under gunicorn: refuses the embedded SQLite default."""
    settings = load_settings()
    message = separate_roles_error(settings, "web")
    if message:
        print(f"scrm: {message}", file=sys.stderr)
        # gunicorn stops its arbiter on a worker exiting with 4 (its APP_LOAD_ERROR) rather than
        # booting workers again forever.
        sys.exit(4)
    return create_app(settings)


def create_app(
    settings: Settings | None = None,
    *,
    ctx: Context | None = None,
    mount_sandbox: bool | None = None,
    sandbox_state_file: Path | None = None,
) -> Flask:
    settings = settings or load_settings()
    configure_logging(settings.log_level)

    ctx = ctx or Context.build(settings)
    app = Flask(
        "scrm.web",
        template_folder=str(Path(__file__).parent / "web" / "templates"),
        static_folder=str(Path(__file__).parent / "web" / "static"),
        static_url_path="/static",
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # Callback bodies are capped in the view (413); this caps everything else.
        MAX_CONTENT_LENGTH=max(settings.callback_max_body_bytes, 2 * 1024 * 1024),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.session_interface = auth.CookieSessions()
    pool = AfterAckPool(ctx, settings.dispatch_threads)
    app.extensions["scrm"] = WebRuntime(
        ctx=ctx,
        crypto=CallbackCrypto(settings.wecom_token, settings.wecom_aes_key, settings.wecom_corp_id),
        after_ack=pool,
    )
    app.extensions["scrm.pool"] = pool
    ctx.gateway.on_call = metrics.observe_wecom_call
    errors.install(app)
    security.install(app, settings)
    app.register_blueprint(callback.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(leads_api.bp)
    app.register_blueprint(groups_api.bp)
    app.register_blueprint(tags_api.bp)
    app.register_blueprint(tagrules_api.bp)
    app.register_blueprint(friends_api.bp)
    app.register_blueprint(console_friend_tags.bp)
    app.register_blueprint(console_tags.bp)
    app.register_blueprint(console.bp)
    for pages in (console_leads, console_customers, console_tagrules, console_groups, sidebar):
        app.register_blueprint(pages.bp)
    app.register_blueprint(lead_form.bp)
    # The bare address (what `make run` serves and the README names) opens the console.
    app.add_url_rule("/", "root", lambda: redirect(url_for("console.index")))
    metrics.install(app)

    if mount_sandbox is None:
        mount_sandbox = settings.serves_embedded_sandbox
    if mount_sandbox:
        from scrm.sandbox import Sandbox

        sandbox = Sandbox.create(
            sandbox_state_file if sandbox_state_file is not None else instance_dir() / "sandbox.json",
            webhook_url=settings.public_url + "/wecom/callback",
        )
        app.extensions["scrm.sandbox"] = sandbox
        app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/sandbox": sandbox.app})  # type: ignore[method-assign]
    return app
