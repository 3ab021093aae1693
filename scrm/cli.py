"""The ``scrm`` command: serve, scheduler, db, sandbox, events, reconcile, apikey, staff.

A composition root: it builds settings and a Context and calls into the layers below. Errors a
user can fix come out as one line naming what to change, with exit status 2.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import requests
from sqlalchemy import select

from config import Settings, SettingsError, instance_dir, load_settings
from scrm.doctor import doctor
from scrm.errors import ScrmError
from scrm.sandbox.cli import remove_serve_file, sandbox, write_serve_file
from scrm.sandbox.cli_tags import tags as sandbox_tags

log = logging.getLogger(__name__)


def _settings(**defaults: str) -> Settings:
    try:
        return load_settings(defaults=defaults)
    except SettingsError as exc:
        raise click.UsageError(f"configuration: {exc}") from None


def _context() -> Any:
    from scrm.app import configure_logging
    from scrm.context import Context

    settings = _settings()
    configure_logging(settings.log_level)
    return Context.build(settings)


@click.group()
def cli() -> None:
    """scrm — a self-hosted WeCom SCRM."""


cli.add_command(doctor)


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
    from scrm.context import Context
    from scrm.migrations import upgrade
    from scrm.web import security

    # Unless SCRM_PUBLIC_URL says otherwise, scrm (and its embedded sandbox) is where we listen.
    # The scheduler's ticks do the handlers' work in batches; the request threads only acknowledge
    # (SCRM_DISPATCH_THREADS=0 unless set): in one interpreter, every extra busy thread delays them.
    settings = _settings(SCRM_PUBLIC_URL=f"http://{host}:{port}", SCRM_DISPATCH_THREADS="0")
    if migrate:
        _ensure_sqlite_dir(settings)
        upgrade(settings.database_url)
    ctx = Context.build(settings)
    app = create_app(settings, ctx=ctx)
    security.warn_if_exposed(host, settings)
    lanes = None
    if scheduler:
        lanes = build_scheduler(
            ctx, welcome_senders=SERVE_WELCOME_SENDERS, outbox_senders=SERVE_OUTBOX_SENDERS
        )
        lanes.start()
    if demo and settings.use_sandbox and "scrm.sandbox" in app.extensions:
        threading.Thread(target=_seed_when_up, args=(ctx, host, port), daemon=True, name="demo-seed").start()
    click.echo(f"scrm on http://{host}:{port}/console/  (WeCom API: {settings.wecom_api_base})")
    # SIGTERM ends like Ctrl-C, so the finally below and atexit run: the sandbox state gets its
    # final write and the serve file (how `scrm sandbox` finds us) goes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    write_serve_file(instance_dir(), f"http://{host}:{port}")
    try:
        waitress.serve(app, host=host, port=port, threads=threads, ident="scrm")
    finally:
        if lanes is not None:
            # First, so no tick starts on thread pools the interpreter is shutting down.
            lanes.shutdown(wait=False)
        remove_serve_file(instance_dir())
        embedded = app.extensions.get("scrm.sandbox")
        if embedded is not None:
            embedded.state.flush()


# In one process the senders share the interpreter with the acknowledgements: a few suffice.
SERVE_WELCOME_SENDERS = 4
SERVE_OUTBOX_SENDERS = 2


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
    default="welcome,dispatch,outbox,reconcile,pool,imports,chat",
    show_default=True,
    help="Comma-separated ticks this replica runs; e.g. a fast lane with only 'welcome'.",
)
def scheduler(ticks: str) -> None:
    """Run the scheduler ticks (Procfile: scheduler). Safe to run several replicas."""
    from jobs.scheduler import build_scheduler
    from scrm.web import metrics

    _refuse_sqlite_for_separate_roles(_settings(), "scheduler")
    ctx = _context()
    ctx.gateway.on_call = metrics.observe_wecom_call  # counted with the web's (PROMETHEUS_MULTIPROC_DIR)
    chosen = tuple(t.strip() for t in ticks.split(",") if t.strip())
    try:
        sched = build_scheduler(ctx, blocking=True, ticks=chosen)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"scrm scheduler running: {', '.join(chosen)}")
    sched.start()


def _refuse_sqlite_for_separate_roles(settings: Settings, role: str) -> None:
    from scrm.app import separate_roles_error

    message = separate_roles_error(settings, role)
    if message:
        raise click.UsageError(message)


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
    from scrm.inbox import service as inbox
    from scrm.inbox.models import InboxEvent

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
@click.option("--userid", help="The staff member a rep or manager key acts as (it sees what they see).")
def apikey_create(name: str, role: str, userid: str | None) -> None:
    """Create a key and print it once (it is stored hashed)."""
    from scrm.db import transaction
    from scrm.directory import service as directory

    ctx = _context()
    with transaction(ctx.session_factory) as session:
        _, key = directory.create_api_key(session, name, role, userid)
    click.echo(key)


@apikey.command("list")
def apikey_list() -> None:
    """The keys: id, name, role, who they act as, prefix, revoked or last used."""
    from scrm.db import read
    from scrm.directory import queries

    ctx = _context()
    with read(ctx.session_factory) as session:
        for key in queries.api_keys(session):
            state = "revoked" if key.is_revoked else f"last used {key.last_used_at or 'never'}"
            click.echo(f"{key.id}\t{key.name}\t{key.role}\t{key.userid or '-'}\t{key.prefix}…\t{state}")


@apikey.command("revoke")
@click.argument("key_id", type=int)
def apikey_revoke(key_id: int) -> None:
    """Revoke a key by its id (see `scrm apikey list`); it stops working at once."""
    from scrm.db import transaction
    from scrm.directory import service as directory

    ctx = _context()
    with transaction(ctx.session_factory) as session:
        row = directory.revoke_api_key(session, key_id)
    click.echo(f"key {row.id} ({row.name}) revoked")


@cli.group()
def staff() -> None:
    """Staff roles in scrm (rep, manager, admin)."""


@staff.command("set-role")
@click.argument("userid")
@click.argument("role", type=click.Choice(["rep", "manager", "admin"]))
def staff_set_role(userid: str, role: str) -> None:
    from scrm.db import transaction
    from scrm.directory import service as directory

    ctx = _context()
    with transaction(ctx.session_factory) as session:
        directory.ensure_staff(session, userid)
        directory.set_role(session, userid, role)
    click.echo(f"{userid} is now {role}")


# --- leads --------------------------------------------------------------------------------------


@cli.group()
def leads() -> None:
    """Leads (线索)."""


@leads.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--source", default="import", show_default=True, help="The source of leads whose row names none."
)
@click.option("--owner", "owner", metavar="USERID", help="Give every created lead this rep (else the pool).")
@click.option(
    "--on-duplicate",
    type=click.Choice(["merge", "flag", "skip"]),
    default="flag",
    show_default=True,
    help="A row that matches a known lead: fill its blanks, flag it for review, or leave it out.",
)
@click.option("--dry-run", is_flag=True, help="Validate and dedupe, write nothing.")
@click.option(
    "--map", "mappings", multiple=True, metavar="FIELD=HEADER", help="Map a column, e.g. phone=联系电话."
)
@click.option(
    "--errors-csv", type=click.Path(dir_okay=False, writable=True), help="Write every row error here."
)
def leads_import(
    file: str,
    source: str,
    owner: str | None,
    on_duplicate: str,
    dry_run: bool,
    mappings: tuple[str, ...],
    errors_csv: str | None,
) -> None:
    """Import leads from a CSV (UTF-8 or GBK) or XLSX file: bad rows are reported and skipped; a
    failure part-way keeps none of the file's leads. Exit 0 when it ran, 1 when it failed."""
    from scrm.db import transaction
    from scrm.errors import InvalidInput
    from scrm.leads import importing

    overrides: dict[str, str] = {}
    for mapping in mappings:
        name, sep, header = mapping.partition("=")
        if not sep:
            raise click.UsageError(f"--map {mapping!r}: write FIELD=HEADER, e.g. phone=联系电话")
        overrides[name.strip()] = header.strip()
    ctx = _context()
    try:
        sheet = importing.read_sheet(file)
        column_map = importing.resolve_column_map(sheet.headers, overrides)
        if not dry_run:
            with transaction(ctx.session_factory) as session:
                import_id = importing.create_import(
                    session,
                    filename=str(file),
                    column_map=column_map,
                    source=source,
                    owner_userid=owner,
                    on_duplicate=on_duplicate,
                    created_by="cli",
                    total_rows=len(sheet.rows),
                ).id
    except InvalidInput as error:
        raise click.UsageError(error.message) from None
    click.echo(f"{sheet.filename}: {len(sheet.rows)} rows, {sheet.encoding}")
    click.echo("columns: " + ", ".join(f"{name}={header}" for name, header in column_map.items()))
    with click.progressbar(length=len(sheet.rows), label="importing" if not dry_run else "checking") as bar:
        done = 0

        def progress(report: importing.ImportReport) -> None:
            nonlocal done
            bar.update(report.processed_rows - done)
            done = report.processed_rows

        try:
            if dry_run:
                report = importing.dry_run(
                    ctx.session_factory,
                    sheet,
                    column_map=column_map,
                    source=source,
                    owner_userid=owner,
                    on_duplicate=on_duplicate,
                    progress=progress,
                )
            else:
                report = importing.run_import(ctx.session_factory, import_id, sheet=sheet, progress=progress)
        except importing.ImportFailed as error:
            click.echo(f"\nimport failed: {error.message}", err=True)
            sys.exit(1)
    verb = "would be " if dry_run else ""
    click.echo(
        f"{'dry run: ' if dry_run else f'import {import_id}: '}{verb}created {report.created}, merged "
        f"{report.merged}, flagged {report.flagged}, skipped {report.skipped}; {report.error_count} rows "
        "with errors"
    )
    for problem in report.errors[:50]:
        click.echo(f"  row {problem.row}, {problem.column}: {problem.reason}")
    if report.error_count > 50:
        click.echo(
            f"  … and {report.error_count - 50} more" + ("" if errors_csv else " (--errors-csv PATH for all)")
        )
    if errors_csv:
        import csv

        with open(errors_csv, "w", newline="", encoding="utf-8-sig") as out:
            writer = csv.writer(out)
            writer.writerow(["row", "column", "reason"])
            writer.writerows([e.row, e.column, e.reason] for e in report.errors)
        click.echo(f"errors written to {errors_csv}")


# --- chat ---------------------------------------------------------------------------------------


@cli.group()
def chat() -> None:
    """The chat archive (会话存档)."""


@chat.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def chat_import(file: Path) -> None:
    """Import decrypted archive messages, one JSON object a line (the Finance SDK's DecryptData
    output). Messages already stored (same msgid) are skipped; bad lines are reported by number."""
    from jobs import chat as chat_jobs

    ctx = _context()
    with click.progressbar(length=file.stat().st_size, label="importing") as bar:
        result = chat_jobs.import_file(ctx, file, progress=bar.update)
    report = result.report
    click.echo(
        f"{file.name}: {result.lines} lines, {report.new} new messages, {report.duplicates} already stored, "
        f"{len(result.bad)} bad lines; {len(report.hits)} keyword hits, {report.tagged} tags added"
    )
    if report.new == 0 and report.duplicates and not result.bad:
        click.echo("nothing new: every message in the file was stored before")
    for number, reason in result.bad[:50]:
        click.echo(f"  line {number}: {reason}")
    if len(result.bad) > 50:
        click.echo(f"  … and {len(result.bad) - 50} more")


@chat.command("pull")
def chat_pull() -> None:
    """Pull from the configured archive source (SCRM_CHAT_SOURCE) now."""
    from jobs import chat as chat_jobs

    ctx = _context()
    report = chat_jobs.pull(ctx, chat_jobs.configured_source(ctx))
    click.echo(
        f"{ctx.settings.chat_source}: {report.received} messages, {report.new} new, {report.tagged} tags"
    )


# --- sandbox ------------------------------------------------------------------------------------

cli.add_command(sandbox)
sandbox.add_command(sandbox_tags)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ScrmError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
