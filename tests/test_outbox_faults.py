"""Sandbox fault run: 20% of WeCom calls fail with -1 / 45009 / 42001 / timeouts, yet every outbox
command eventually succeeds exactly once (DESIGN §4 outbox; REFERENCE §4 retry policy).

Time is moved with ``frozen_clock`` instead of slept on: backoffs, welcome-code lifetimes and
token expiry in scrm and in the sandbox all read the same injected clock.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from jobs import work
from scrm.channels import service as channels
from scrm.db import transaction
from scrm.friends.service import REMARK
from scrm.outbox import kinds as kinds_registry
from scrm.outbox import service as outbox
from scrm.schema import InboxEvent, InboxStatus, OutboxCommand, OutboxStatus
from scrm.timeutil import frozen_clock, utcnow
from tests.conftest import running_scrm


@pytest.fixture
def faulty_scrm(clean_db, sandbox_server):
    # A short client timeout so the sandbox's "timeout" fault (apply, then answer late) is real.
    with running_scrm(clean_db, sandbox_server, WECOM_TIMEOUT_S="0.4", SCRM_OUTBOX_MAX_ATTEMPTS="12") as harness:
        yield harness


def open_work(scrm):
    with scrm.session() as session:
        inbox_ids = list(
            session.scalars(
                select(InboxEvent.id).where(
                    InboxEvent.status.in_((InboxStatus.PENDING, InboxStatus.FAILED, InboxStatus.PROCESSING))
                )
            )
        )
        pending = session.scalar(
            select(OutboxCommand.id)
            .where(OutboxCommand.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)))
            .limit(1)
        )
    return inbox_ids, pending


def test_every_command_succeeds_exactly_once_under_twenty_percent_faults(faulty_scrm):
    scrm = faulty_scrm
    state = scrm.sandbox.state
    with frozen_clock(utcnow()) as advance:
        state.set_faults(
            {
                "error_rate": 0.2,
                "errcodes": [-1, 45009, 42001, "timeout"],
                "timeout_sleep_s": 0.6,
                "seed": 20261125,
            }
        )
        with transaction(scrm.ctx.session_factory) as session:
            made = [
                channels.create_channel(
                    session,
                    name=f"渠道{i}",
                    userids=["zhangsan", "lisi"][i % 2 :][:1],
                    welcome_text=f"欢迎{i}",
                )
                for i in range(4)
            ]
            states = [c.state for c in made]
        rounds = 0
        while any(c for c in open_work(scrm)[1:]) and rounds < 200:
            work.drain_outbox(scrm.ctx)
            advance(timedelta(seconds=65))
            rounds += 1
        # Customers scan the four codes; adds need a fetch, a welcome, a channel tag; some churn.
        customers = [state.add_customer(f"客户{i}") for i in range(24)]
        for i, ext in enumerate(customers):
            way = state.find_contact_way(states[i % 4])
            assert way is not None, "the channel's contact way was created in the sandbox"
            scrm.driver.scan_channel(states[i % 4], ext)
        for ext in customers[:6]:
            userid = state.relations_of_customer(ext)[0]["userid"]
            scrm.driver.customer_deletes_rep(userid, ext)
        with transaction(scrm.ctx.session_factory) as session:
            for i, ext in enumerate(customers[6:16]):  # a write no flow produces yet takes the same path
                userid = state.relations_of_customer(ext)[0]["userid"]
                payload = {"userid": userid, "external_userid": ext, "remark": f"备注{i}"}
                outbox.enqueue(session, REMARK, payload, f"remark:test:{i}")
        scrm.app.extensions["scrm.pool"].wait_idle()

        for rounds in range(400):
            inbox_ids, pending = open_work(scrm)
            if not inbox_ids and pending is None:
                break
            for inbox_id in inbox_ids:
                work.process_event(scrm.ctx, inbox_id)
            work.drain_outbox(scrm.ctx)
            # Small steps first (welcome codes live 20 s), then big ones for 45009 backoffs.
            advance(timedelta(seconds=0.5 if rounds < 30 else 90))
        state.set_faults({"error_rate": 0.0, "forced": []})

    injected = {code: n for code, n in state.errcode_counts.items() if code != 0}
    assert sum(injected.values()) >= 10, f"the fault knob must actually have fired: {injected}"
    with scrm.session() as session:
        commands = session.scalars(select(OutboxCommand)).all()
        events = session.scalars(select(InboxEvent)).all()
    assert {e.status for e in events} == {InboxStatus.DONE}
    kinds = Counter(c.kind for c in commands)
    assert kinds["send_welcome_msg"] == 24 and kinds["message_send"] == 6
    assert kinds["add_contact_way"] == 4 and kinds["remark"] == 10
    # A write that is not safe to repeat (a second add_contact_way is a second QR code) ends
    # UNKNOWN when an attempt timed out: never sent twice, never claimed as not sent.
    unknown = [c for c in commands if c.status is OutboxStatus.UNKNOWN]
    assert all(c.has_unknown_attempt and not kinds_registry.get(c.kind).retry_safe for c in unknown), unknown
    assert Counter(c.status for c in commands if c not in unknown) == Counter(
        {OutboxStatus.SENT: len(commands) - len(unknown)}
    ), [(c.kind, c.status, c.last_error) for c in commands if c.status is not OutboxStatus.SENT]
    assert any(c.attempts > 1 for c in commands), "some commands needed retries"
    # At most once on WeCom's side: each key applied once, nothing applied without a key, and
    # every command we call sent was applied.
    applied = Counter(effect["idempotency_key"] for effect in state.effects)
    assert set(applied.values()) == {1}
    applied_keys = {key.split("@")[0] for key in applied}
    assert applied_keys <= {c.idempotency_key for c in commands}
    assert {c.idempotency_key for c in commands if c.status is OutboxStatus.SENT} <= applied_keys
    assert (
        len(state.welcome_messages) == 24 and len({m["welcome_code"] for m in state.welcome_messages}) == 24
    )
