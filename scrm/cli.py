"""The ``scrm`` command: serve, scheduler, db, sandbox, events, reconcile, apikey, staff.

A composition root: it builds settings and a Context and calls into the layers below. Errors a
user can fix come out as one line naming what to change, with exit status 2.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

import click
import requests
from sqlalchemy import select

from config import Settings, SettingsError, load_settings
from scrm.errors import ScrmError

log = logging.getLogger(__name__)


def _settings(**defaults: str) -> Settings:
    try:
        return load_settings(defaults=defaults)
    except SettingsError as exc:
        raise click.UsageError(f"configuration: {exc}") from None


def _context() -> Any:
    from scrm.app import configure_logging
    from scrm.services.context import Context

    settings = _settings()
    configure_logging(settings.log_level)
    return Context.build(settings)


@click.group()
def cli() -> None:
    """scrm — a self-hosted WeCom SCRM."""


# --- serve / scheduler --------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    show_default=True,
    help="Run the scheduler ticks in this process (the embedded default).",
)
@click.option("--migrate/--no-migrate", default=True, show_default=True, help="Upgrade the schema first.")
@click.option(
    "--demo/--no-demo",
    default=True,
    show_default=True,
    help="With the sandbox: seed demo friends when the database has none.",
)
@click.option("--threads", default=8, show_default=True, type=int)
def serve(host: str, port: int, scheduler: bool, migrate: bool, demo: bool, threads: int) -> None:
    """Serve web (and, by default, the scheduler) in one process with waitress."""
    import waitress

    from jobs.scheduler import build_scheduler
    from scrm.app import create_app
    from scrm.migrations import upgrade
    from scrm.services.context import Context

    # Unless SCRM_PUBLIC_URL says otherwise, scrm (and its embedded sandbox) is where we listen.
    settings = _settings(SCRM_PUBLIC_URL=f"http://{host}:{port}")
    if migrate:
        _ensure_sqlite_dir(settings)
        upgrade(settings.database_url)
    ctx = Context.build(settings)
    app = create_app(settings, ctx=ctx)
    if scheduler:
        build_scheduler(ctx).start()
    if demo and settings.use_sandbox and "scrm.sandbox" in app.extensions:
        threading.Thread(target=_seed_when_up, args=(ctx, host, port), daemon=True, name="demo-seed").start()
    click.echo(f"scrm on http://{host}:{port}/console/  (WeCom API: {settings.wecom_api_base})")
    waitress.serve(app, host=host, port=port, threads=threads, ident="scrm")


def _seed_when_up(ctx: Any, host: str, port: int) -> None:
    from scrm import demo

    for _ in range(100):
        try:
            requests.get(f"http://{host}:{port}/healthz", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.1)
    try:
        demo.seed(ctx)
    except Exception:  # noqa: BLE001 - the demo is a convenience; the service keeps running
        log.exception("demo seeding failed")


@cli.command()
@click.option(
    "--ticks",
    default="welcome,dispatch,outbox,reconcile",
    show_default=True,
    help="Comma-separated ticks this replica runs; e.g. a fast lane with only 'welcome'.",
)
def scheduler(ticks: str) -> None:
    """Run the scheduler ticks (Procfile: scheduler). Safe to run several replicas."""
    from jobs.scheduler import build_scheduler

    ctx = _context()
    chosen = tuple(t.strip() for t in ticks.split(",") if t.strip())
    try:
        sched = build_scheduler(ctx, blocking=True, ticks=chosen)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"scrm scheduler running: {', '.join(chosen)}")
    sched.start()


# --- db ---------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Schema migrations (Alembic)."""


def _ensure_sqlite_dir(settings: Settings) -> None:
    if settings.is_sqlite and ":///" in settings.database_url:
        from pathlib import Path

        path = settings.database_url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Upgrade the schema (Procfile: release)."""
    from scrm.migrations import upgrade

    settings = _settings()
    _ensure_sqlite_dir(settings)
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION (e.g. base)."""
    from scrm.migrations import downgrade

    downgrade(_settings().database_url, revision)
    click.echo(f"database at {revision}")


# --- events / reconcile -------------------------------------------------------------------------


@cli.group()
def events() -> None:
    """The inbox of received WeCom callbacks."""


@events.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.option(
    "--status",
    type=click.Choice(["failed", "dead", "ignored", "done"]),
    help="Replay every event with this status instead of listed ids.",
)
def events_replay(ids: tuple[int, ...], status: str | None) -> None:
    """Re-run chosen events now (by id, or all with --status)."""
    from jobs import work
    from scrm.db import transaction
    from scrm.models import InboxEvent
    from scrm.services import inbox

    if not ids and not status:
        raise click.UsageError("name event ids (see the console's events page) or --status failed|dead")
    ctx = _context()
    with transaction(ctx.session_factory) as session:
        chosen = list(ids)
        if status:
            chosen += list(session.scalars(select(InboxEvent.id).where(InboxEvent.status == status)))
        replayed = inbox.reset_for_replay(session, chosen)
    results = {i: work.process_event(ctx, i, force=True) for i in replayed}
    work.drain_outbox(ctx)
    for inbox_id, result in results.items():
        click.echo(f"event {inbox_id}: {result.value if result else 'waiting behind an earlier event'}")


@cli.command()
def reconcile() -> None:
    """Pull WeCom's lists now and heal anything missed (also runs nightly)."""
    from jobs import reconcile as job

    report = job.run(_context())
    click.echo(json.dumps(report.__dict__, ensure_ascii=False))


# --- keys and staff -----------------------------------------------------------------------------


@cli.group()
def apikey() -> None:
    """API keys for the JSON API."""


@apikey.command("create")
@click.option("--name", required=True, help="Who uses the key, e.g. crm-sync.")
@click.option("--role", default="admin", show_default=True, type=click.Choice(["rep", "manager", "admin"]))
def apikey_create(name: str, role: str) -> None:
    """Create a key and print it once (it is stored hashed)."""
    from scrm.db import transaction
    from scrm.services import apikeys

    ctx = _context()
    with transaction(ctx.session_factory) as session:
        _, key = apikeys.create(session, name, role)
    click.echo(key)


@cli.group()
def staff() -> None:
    """Staff roles in scrm (rep, manager, admin)."""


@staff.command("set-role")
@click.argument("userid")
@click.argument("role", type=click.Choice(["rep", "manager", "admin"]))
def staff_set_role(userid: str, role: str) -> None:
    from scrm.db import transaction
    from scrm.models import StaffRole
    from scrm.services import friends

    ctx = _context()
    with transaction(ctx.session_factory) as session:
        friends.ensure_staff(session, userid).role = StaffRole(role)
    click.echo(f"{userid} is now {role}")


# --- sandbox ------------------------------------------------------------------------------------


@cli.group()
def sandbox() -> None:
    """Drive the WeCom sandbox of a running scrm (customers scan, add, edit, delete, join groups)."""


def _sandbox_post(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    settings = _settings()
    if not settings.use_sandbox:
        raise click.UsageError(
            "WECOM_API_BASE points at the real WeCom; the sandbox commands need the sandbox"
        )
    url = settings.wecom_api_base.removesuffix("cgi-bin/") + "_admin/" + path
    try:
        response = requests.post(url, json=payload, timeout=30)
    except requests.RequestException:
        raise click.UsageError(f"no sandbox answers at {url}; start scrm first (make run)") from None
    data = response.json() if response.content else {}
    if response.status_code >= 400:
        raise click.UsageError(f"sandbox refused {path}: {data}")
    return dict(data)


def _driver_command(action: str, **payload: Any) -> None:
    result = _sandbox_post(f"driver/{action}", {k: v for k, v in payload.items() if v is not None})
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


@sandbox.command("new-customer")
@click.option("--name", required=True)
@click.option("--unionid")
def sandbox_new_customer(name: str, unionid: str | None) -> None:
    """Create a WeChat user in the sandbox; prints its external_userid."""
    _driver_command("new_customer", name=name, unionid=unionid)


@sandbox.command("scan")
@click.option("--channel", "state", required=True, help="The channel's state (console → channels).")
@click.option("--customer", "external_userid", required=True)
@click.option("--mobile", "mobiles", multiple=True, help="Remark mobile the rep records.")
def sandbox_scan(state: str, external_userid: str, mobiles: tuple[str, ...]) -> None:
    """A customer scans a channel QR code and adds its rep."""
    _driver_command(
        "scan_channel",
        state_or_config_id=state,
        external_userid=external_userid,
        remark_mobiles=list(mobiles) or None,
    )


@sandbox.command("add")
@click.option("--userid", required=True)
@click.option("--customer", "external_userid", required=True)
@click.option("--half", is_flag=True, help="One-way add to a no-verification rep.")
def sandbox_add(userid: str, external_userid: str, half: bool) -> None:
    _driver_command("add_customer", userid=userid, external_userid=external_userid, half=half)


@sandbox.command("edit")
@click.option("--userid", required=True)
@click.option("--customer", "external_userid", required=True)
@click.option("--remark")
@click.option("--description")
def sandbox_edit(userid: str, external_userid: str, remark: str | None, description: str | None) -> None:
    _driver_command(
        "edit", userid=userid, external_userid=external_userid, remark=remark, description=description
    )


@sandbox.command("delete")
@click.option("--userid", required=True)
@click.option("--customer", "external_userid", required=True)
@click.option(
    "--by", type=click.Choice(["customer", "rep", "transfer"]), default="customer", show_default=True
)
def sandbox_delete(userid: str, external_userid: str, by: str) -> None:
    """The customer deletes the rep, the rep deletes the customer, or a transfer removes the relation."""
    if by == "customer":
        _driver_command("customer_deletes_rep", userid=userid, external_userid=external_userid)
    else:
        _driver_command(
            "rep_deletes_customer",
            userid=userid,
            external_userid=external_userid,
            by_transfer=by == "transfer",
        )


@sandbox.command("join-group")
@click.option("--chat", "chat_id", required=True)
@click.option("--customer", "external_userid", required=True)
def sandbox_join_group(chat_id: str, external_userid: str) -> None:
    _driver_command("join_group", chat_id=chat_id, external_userid=external_userid)


@sandbox.command("faults")
@click.option("--error-rate", type=float, default=0.0, show_default=True)
@click.option("--errcode", "errcodes", multiple=True, help="-1, 45009, 42001 or timeout; repeatable.")
@click.option("--latency-ms", type=int, default=0, show_default=True)
def sandbox_faults(error_rate: float, errcodes: tuple[str, ...], latency_ms: int) -> None:
    """Make the sandbox fail a share of WeCom calls."""
    codes: list[int | str] = [c if c == "timeout" else int(c) for c in errcodes] or [-1]
    click.echo(
        json.dumps(
            _sandbox_post("faults", {"error_rate": error_rate, "errcodes": codes, "latency_ms": latency_ms}),
            ensure_ascii=False,
        )
    )


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ScrmError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
