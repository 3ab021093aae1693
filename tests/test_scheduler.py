"""The production shape: web workers only acknowledge (SCRM_DISPATCH_THREADS=0) and the
scheduler's ticks send the welcome, run the handler and drain the outbox."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from jobs import work
from jobs.scheduler import build_scheduler
from scrm.outbox import service as outbox
from scrm.schema import Friendship, InboxEvent, InboxStatus, OutboxCommand, OutboxStatus
from scrm.timeutil import frozen_clock, utcnow
from tests.conftest import build_scrm
from tests.helpers import create_channel


@pytest.fixture
def ack_only_scrm(clean_db, sandbox_server):
    harness, server = build_scrm(clean_db, sandbox_server, SCRM_DISPATCH_THREADS="0")
    yield harness
    server.shutdown()
    harness.ctx.engine.dispose()


def test_web_only_acks_and_the_scheduler_ticks_do_the_rest(ack_only_scrm):
    scrm = ack_only_scrm
    channel = create_channel(scrm, "扫码", ["zhangsan"], tag_names=["展会"], welcome_text="欢迎")
    ext = scrm.driver.new_customer("钱多多")
    assert scrm.driver.scan_channel(channel.state, ext).status == 200
    with scrm.session() as session:
        assert session.scalars(select(InboxEvent.status)).one() is InboxStatus.PENDING
        welcome = session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "send_welcome_msg")).one()
        assert welcome.status is OutboxStatus.PENDING  # not claimed: no web sender in this shape
    with ThreadPoolExecutor(2) as pool:
        assert work.send_due_welcomes(scrm.ctx, pool, 2) == 1
        assert work.dispatch_inbox(scrm.ctx, pool) == 1
    with scrm.session() as session:
        assert (
            session.scalar(select(Friendship.channel_id).where(Friendship.external_userid == ext))
            == channel.id
        )
        statuses = dict(session.execute(select(OutboxCommand.kind, OutboxCommand.status)).all())
    assert statuses["send_welcome_msg"] is OutboxStatus.SENT
    assert statuses["mark_tag"] is OutboxStatus.SENT  # sent right after the handler
    assert [m["welcome_code"] for m in scrm.sandbox.state.welcome_messages] == [
        welcome.payload["welcome_code"]
    ]


def test_scheduler_builds_the_tick_table_and_refuses_unknown_ticks(ack_only_scrm):
    scheduler = build_scheduler(ack_only_scrm.ctx)
    assert {job.id for job in scheduler.get_jobs()} == {
        "send_due_welcomes",
        "dispatch_inbox",
        "refresh_awaiting_details",
        "drain_outbox_tick",
        "reconcile",
        "recycle_tick",
        "run_pending_imports",
        "run_pending_bulks",
        "pull_tick",  # the chat archive (the sandbox's, in tests)
    }
    fast_lane = build_scheduler(ack_only_scrm.ctx, ticks=("welcome",))
    assert [job.id for job in fast_lane.get_jobs()] == ["send_due_welcomes"]
    with pytest.raises(ValueError, match="unknown ticks"):
        build_scheduler(ack_only_scrm.ctx, ticks=("welcome", "nap"))


def test_welcome_messages_are_the_welcome_lanes_until_its_grace_runs_out(ack_only_scrm):
    """The handler lane neither sends a fresh welcome with the handler's writes nor in its outbox
    tick: a starved handler lane must not hold a 20-second code. Past the grace it does."""
    scrm = ack_only_scrm
    channel = create_channel(scrm, "宽限", ["zhangsan"], tag_names=["展会"], welcome_text="欢迎")
    ext = scrm.driver.new_customer("孙悟")
    assert scrm.driver.scan_channel(channel.state, ext).status == 200

    def statuses() -> dict[str, OutboxStatus]:
        with scrm.session() as session:
            return dict(session.execute(select(OutboxCommand.kind, OutboxCommand.status)).all())

    with ThreadPoolExecutor(2) as pool:
        assert work.dispatch_inbox(scrm.ctx, pool) == 1
        assert statuses()["mark_tag"] is OutboxStatus.SENT  # the handler's own write went out
        assert statuses()["send_welcome_msg"] is OutboxStatus.PENDING
        assert work.drain_outbox_tick(scrm.ctx, pool) == 0
        assert statuses()["send_welcome_msg"] is OutboxStatus.PENDING
        with frozen_clock(utcnow() + outbox.URGENT_LANE_GRACE + timedelta(milliseconds=10)):
            assert work.drain_outbox_tick(scrm.ctx, pool) == 1
    assert statuses()["send_welcome_msg"] is OutboxStatus.SENT


def test_a_welcome_whose_code_died_is_expired_not_sent(ack_only_scrm):
    scrm = ack_only_scrm
    channel = create_channel(scrm, "过期", ["zhangsan"], welcome_text="欢迎")
    exts = [scrm.driver.new_customer(f"迟到{i}") for i in range(2)]
    for ext in exts:
        assert scrm.driver.scan_channel(channel.state, ext).status == 200
    with scrm.session() as session:
        welcomes = session.scalars(
            select(OutboxCommand).where(OutboxCommand.kind == "send_welcome_msg")
        ).all()
    assert len(welcomes) == 2
    # 21 s later, past the 20 s the codes live: one row is found by the welcome tick's claim,
    # the other by a web worker's after-ack sender (send_welcome) — neither reaches WeCom.
    with frozen_clock(utcnow() + timedelta(seconds=21)), ThreadPoolExecutor(2) as pool:
        first, second = welcomes
        work.send_welcome(scrm.ctx, second.id)
        assert work.send_due_welcomes(scrm.ctx, pool, 2) == 0
    with scrm.session() as session:
        rows = session.scalars(select(OutboxCommand).where(OutboxCommand.id.in_([first.id, second.id]))).all()
    assert {row.status for row in rows} == {OutboxStatus.EXPIRED}
    assert {row.last_error for row in rows} == {outbox.EXPIRED_NOTE}
    assert scrm.sandbox.state.welcome_messages == []
