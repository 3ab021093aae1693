"""What the fault probes of issue 10 found, as real processes: the Procfile's scheduler roles
(``scrm scheduler --ticks …``) on PostgreSQL against a sandbox of its own process, judged by WeCom's
side of the wire — the sandbox's record of every call and every welcome it accepted.

- Two outbox replicas share 80 due writes under 1.5 s of WeCom latency: 80 calls, not 160.
- The welcome lane is killed (-9) with sends in flight and restarted: no welcome code is sent twice,
  every row SENT was received, none the sandbox received is called EXPIRED ("not sent").
- With PostgreSQL unreachable the welcome lane logs its first failure in full, then stays quiet
  (one line per interval with the count), instead of a traceback ten times a second.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from config import load_settings
from jobs import work
from scrm.context import Context
from scrm.db import transaction
from scrm.outbox import service as outbox
from scrm.schema import Channel, OutboxCommand, OutboxStatus
from tests.processes import (
    SandboxProcess,
    clean_env,
    free_port,
    postgres_only,
    running,
    sandbox_process,
    sqlite_leg_only,
    start_scheduler,
    wait_for,
)

DONE = (OutboxStatus.SENT, OutboxStatus.DEAD, OutboxStatus.EXPIRED, OutboxStatus.UNKNOWN)


def role_env(database_url: str, sandbox: SandboxProcess, tmp_path: Path) -> dict[str, str]:
    """What the Procfile's roles read: the database, WeCom's base URL (the sandbox process)."""
    return clean_env(
        SCRM_DATABASE_URL=database_url,
        WECOM_API_BASE=sandbox.api_base,
        SCRM_INSTANCE_DIR=str(tmp_path / "instance"),
        SCRM_LOG_LEVEL="INFO",
    )


@pytest.fixture
def ctx_for(clean_db: str) -> Iterator[Any]:
    """An in-test Context on the suite's database, talking to a given sandbox (to set up rows and
    read them back; the work under test runs in the role processes)."""
    made: list[Context] = []

    def build(sandbox: SandboxProcess, **env: str) -> Context:
        settings = load_settings({"SCRM_DATABASE_URL": clean_db, "WECOM_API_BASE": sandbox.api_base, **env})
        ctx = Context.build(settings)
        made.append(ctx)
        return ctx

    yield build
    for ctx in made:
        ctx.engine.dispose()


def outbox_rows(ctx: Context, kind: str) -> list[OutboxCommand]:
    with ctx.session_factory() as session:
        rows = list(
            session.scalars(
                select(OutboxCommand).where(OutboxCommand.kind == kind).order_by(OutboxCommand.id)
            )
        )
        session.expunge_all()
        return rows


def all_done(ctx: Context, kind: str, expected: int) -> bool:
    rows = outbox_rows(ctx, kind)
    return len(rows) == expected and all(r.status in DONE for r in rows)


# --- two outbox replicas ----------------------------------------------------------------------------

WRITES = 80


def test_two_outbox_replicas_send_each_due_write_once(clean_db, ctx_for, tmp_path):
    postgres_only(clean_db)
    from scrm.friends.service import REMARK

    with sandbox_process(tmp_path / "sandbox.log", threads=32) as sandbox:
        ext, userid = next((r["external_userid"], r["userid"]) for r in sandbox.world()["relations"].values())
        sandbox.set_faults(latency_ms=1500)
        ctx = ctx_for(sandbox)
        env = role_env(clean_db, sandbox, tmp_path)
        with (
            running(start_scheduler("outbox", env, tmp_path / "replica-a.log", name="replica a")) as a,
            running(start_scheduler("outbox", env, tmp_path / "replica-b.log", name="replica b")) as b,
        ):
            # Both replicas are ticking before the writes fall due, so they race for every one.
            with transaction(ctx.session_factory) as session:
                for i in range(WRITES):
                    payload = {"userid": userid, "external_userid": ext, "remark": f"备注{i}"}
                    outbox.enqueue(
                        session, REMARK, payload, f"remark:replicas:{i}", ref=f"friend:{ext}:{userid}"
                    )
            wait_for(
                lambda: all_done(ctx, "remark", WRITES), timeout=90, what="all 80 writes sent", interval=0.5
            )
            assert a.alive() and b.alive()
        counts = sandbox.call_counts()
        peak = sandbox.inflight()["peak"]

    assert counts.get("externalcontact/remark") == WRITES  # WeCom saw each write once: 80, not 160
    rows = outbox_rows(ctx, "remark")
    assert [r.status for r in rows] == [OutboxStatus.SENT] * WRITES
    assert all(r.attempts == 1 and r.claim_token is None for r in rows)
    # Both replicas were sending at once (each runs 8 senders), so the 80 were really shared.
    assert peak > 8, peak


# --- kill -9 of the welcome lane --------------------------------------------------------------------

ADDS = 64


def _channel(ctx: Context) -> str:
    from scrm.channels import service as channels

    with transaction(ctx.session_factory) as session:
        channel_id = channels.create_channel(
            session, name="进程渠道", userids=["zhangsan"], welcome_text="您好，欢迎！"
        ).id
    work.drain_outbox(ctx)  # the QR code (add_contact_way) is created in the sandbox
    with ctx.session_factory() as session:
        channel = session.get_one(Channel, channel_id)
        assert channel.config_id, "the channel's contact way was not created in the sandbox"
        return channel.state


def test_a_killed_welcome_lane_sends_each_welcome_once_and_labels_the_rest_truthfully(
    clean_db, ctx_for, tmp_path
):
    postgres_only(clean_db)
    from scrm.app import create_app

    with sandbox_process(tmp_path / "sandbox.log", threads=64) as sandbox:
        ctx = ctx_for(sandbox, SCRM_DISPATCH_THREADS="0")
        state = _channel(ctx)
        # The web role as the Procfile runs it (SCRM_DISPATCH_THREADS=0: it only acknowledges),
        # served in this process: each add is stored with its welcome command by the real callback.
        web = create_app(ctx.settings, ctx=ctx, mount_sandbox=False).test_client()
        deliveries = sandbox.prepare_scans(state, ADDS)
        sandbox.set_faults(latency_ms=2000)
        env = role_env(clean_db, sandbox, tmp_path)
        lane = start_scheduler("welcome", env, tmp_path / "welcome-1.log", name="welcome lane")
        try:
            for query, body in deliveries:
                assert web.post("/wecom/callback", query_string=query, data=body).status_code == 200
            wait_for(
                lambda: sandbox.inflight()["now"] >= 16,
                timeout=20,
                what="welcome sends in flight at the sandbox",
                proc=lane,
                interval=0.05,
            )
            lane.kill9()
        finally:
            lane.stop()
        with ctx.session_factory() as session:
            at_kill = dict(session.execute(select(OutboxCommand.id, OutboxCommand.status)).tuples().all())
        welcome_ids = {r.id for r in outbox_rows(ctx, "send_welcome_msg")}
        assert len(welcome_ids) == ADDS
        held_by_the_dead = {i for i in welcome_ids if at_kill[i] is OutboxStatus.SENDING}
        never_tried = {i for i in welcome_ids if at_kill[i] is OutboxStatus.PENDING}
        assert held_by_the_dead, "the kill left no send in flight"

        with running(
            start_scheduler("welcome", env, tmp_path / "welcome-2.log", name="welcome lane")
        ) as lane:
            # Bounded by the codes' life: 20 s after the adds every row must have its outcome.
            wait_for(
                lambda: all_done(ctx, "send_welcome_msg", ADDS),
                timeout=45,
                what="every welcome has its outcome",
                proc=lane,
                interval=0.5,
            )
        received = sandbox.welcome_messages()

    rows = {r.id: r for r in outbox_rows(ctx, "send_welcome_msg")}
    codes = [m["welcome_code"] for m in received]
    assert len(codes) == len(set(codes))  # no code was used twice (a replayed key gets its first answer)
    received_codes = set(codes)
    summary: dict[str, int] = {}
    for row in rows.values():
        code = row.payload["welcome_code"]
        summary[row.status.value] = summary.get(row.status.value, 0) + 1
        assert row.status in (OutboxStatus.SENT, OutboxStatus.EXPIRED, OutboxStatus.UNKNOWN), (
            row.id,
            row.status,
        )
        if row.status is OutboxStatus.SENT:
            assert code in received_codes, f"welcome {row.id} is SENT but WeCom never got it"
        elif row.status is OutboxStatus.EXPIRED:
            assert code not in received_codes, f"welcome {row.id} reached WeCom but is labelled not sent"
            assert row.last_error == outbox.EXPIRED_NOTE
        else:  # UNKNOWN: only when an attempt may have reached WeCom
            assert row.has_unknown_attempt, f"welcome {row.id} is UNKNOWN without an uncertain attempt"
            assert row.last_error == outbox.UNKNOWN_NOTE
    # The restarted lane had the codes' whole life ahead for those the dead one never touched.
    assert all(rows[i].status is OutboxStatus.SENT for i in never_tried), summary
    # Those the dead lane held are retaken once their lease lapses, while their code still lives.
    assert all(rows[i].has_unknown_attempt for i in held_by_the_dead)
    assert all(rows[i].status is not OutboxStatus.EXPIRED for i in held_by_the_dead), summary


# --- PostgreSQL unreachable ---------------------------------------------------------------------------


def test_the_welcome_lane_stays_quiet_while_postgresql_is_unreachable(tmp_path):
    sqlite_leg_only()  # its database is a port where nothing listens: the same on either leg
    nowhere = f"postgresql+psycopg://scrm@127.0.0.1:{free_port()}/scrm"
    env = clean_env(
        SCRM_DATABASE_URL=nowhere,
        WECOM_API_BASE="http://127.0.0.1:9/cgi-bin/",  # never reached: every tick fails at the database
        SCRM_INSTANCE_DIR=str(tmp_path / "instance"),
        SCRM_LOG_LEVEL="INFO",
    )
    with running(start_scheduler("welcome", env, tmp_path / "welcome.log", name="welcome lane")) as lane:
        wait_for(
            lambda: "Traceback" in lane.output(), timeout=15, what="the first failure is logged", proc=lane
        )
        first = lane.output()
        time.sleep(3.0)  # 0.1 s ticks: some 30 more runs fail meanwhile
        assert lane.alive(), "a failing tick must not end the lane"
        log = lane.output()
    records = [line for line in log.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    # One record, with the traceback of the first failure; not a record per failed run.
    assert len(records) == 1 and "tick send_due_welcomes failed" in records[0], records
    assert "Traceback" in first and "Connection refused" in first
    later = log[len(first) :].splitlines()
    assert len(later) <= 3, later  # at most the interval's one line with the count, not one per run
