"""The public pool (公海): claims (one winner among concurrent claimers, daily and holding caps
that hold under concurrency), releases with a reason, and the recycle tick that warns a day
before it puts a neglected lead back in the pool. Real threads, each with its own unit of work."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from jobs.pool import recycle_tick
from scrm.db import make_engine, make_session_factory, transaction
from scrm.directory.models import StaffRole
from scrm.errors import Conflict, Forbidden, InvalidInput
from scrm.leads import pool
from scrm.leads.models import Lead, LeadStatus, OwnershipChange, OwnershipReason, PoolRule
from scrm.leads.ownership import change_owner
from scrm.outbox.models import OutboxCommand
from tests.factories import T0


def new_lead(session, **values):
    values.setdefault("name", "客户")
    values.setdefault("source", "web")
    values.setdefault("created_at", T0)
    lead = Lead(**values)
    session.add(lead)
    session.flush()
    return lead


def history(session, lead_id):
    return [
        (c.from_userid, c.to_userid, c.reason)
        for c in session.scalars(
            select(OwnershipChange).where(OwnershipChange.lead_id == lead_id).order_by(OwnershipChange.id)
        )
    ]


def test_claim_takes_an_open_unowned_lead_once(db_session):
    lead = new_lead(db_session)
    claimed = pool.claim(db_session, lead.id, "rep", now=T0)
    assert claimed.owner_userid == "rep" and claimed.status is LeadStatus.ASSIGNED
    assert claimed.assigned_at == T0
    assert history(db_session, lead.id) == [(None, "rep", OwnershipReason.CLAIMED)]
    with pytest.raises(pool.AlreadyClaimed, match="already claimed by rep"):
        pool.claim(db_session, lead.id, "other", now=T0)
    closed = new_lead(db_session, status=LeadStatus.CONVERTED)
    merged = new_lead(db_session, merged_into_id=lead.id)
    for lead_id in (closed.id, merged.id):
        with pytest.raises(Conflict):
            pool.claim(db_session, lead_id, "rep", now=T0)


def test_caps_come_from_the_rule_for_the_source_else_the_default_else_twenty_and_two_hundred(db_session):
    db_session.add(PoolRule(name="default", source=None, daily_claim_cap=2, holding_cap=100))
    db_session.add(PoolRule(name="ads", source="ads", daily_claim_cap=3, holding_cap=4))
    db_session.flush()
    assert pool.caps_for(db_session, "ads") == pool.Caps(3, 4)
    assert pool.caps_for(db_session, "web") == pool.Caps(2, 100)
    # Daily cap of the default rule: the third web lead of the day is refused.
    web = [new_lead(db_session) for _ in range(3)]
    pool.claim(db_session, web[0].id, "rep", now=T0)
    pool.claim(db_session, web[1].id, "rep", now=T0)
    with pytest.raises(pool.ClaimCapReached, match="daily cap of 2"):
        pool.claim(db_session, web[2].id, "rep", now=T0)
    # A new Asia/Shanghai day resets it.
    pool.claim(db_session, web[2].id, "rep", now=T0 + timedelta(days=1))
    # Holding cap of the ads rule: rep holds 3 open leads; one more ads lead fills it.
    ads = [new_lead(db_session, source="ads") for _ in range(2)]
    pool.claim(db_session, ads[0].id, "rep", now=T0 + timedelta(days=1))
    with pytest.raises(pool.ClaimCapReached, match="holds 4 open leads"):
        pool.claim(db_session, ads[1].id, "rep", now=T0 + timedelta(days=1))
    # A closed lead no longer counts towards what the rep holds.
    web[0].status = LeadStatus.DISQUALIFIED
    pool.claim(db_session, ads[1].id, "rep", now=T0 + timedelta(days=1))


def test_without_pool_rules_a_rep_claims_twenty_a_day(db_session):
    assert pool.caps_for(db_session, "web") == pool.Caps(20, 200)
    leads = [new_lead(db_session) for _ in range(21)]
    for lead in leads[:20]:
        pool.claim(db_session, lead.id, "rep", now=T0)
    with pytest.raises(pool.ClaimCapReached):
        pool.claim(db_session, leads[20].id, "rep", now=T0)


def test_release_by_the_owner_or_a_manager_with_a_reason(db_session):
    lead = new_lead(db_session)
    pool.claim(db_session, lead.id, "rep", now=T0)
    with pytest.raises(InvalidInput) as caught:
        pool.release(db_session, lead.id, "rep", reason="  ", now=T0)
    assert set(caught.value.fields) == {"reason"}
    with pytest.raises(Forbidden):
        pool.release(db_session, lead.id, "other", reason="not mine", now=T0)
    released = pool.release(db_session, lead.id, "rep", reason="号码空号 wrong number", now=T0)
    assert released.owner_userid is None and released.status is LeadStatus.NEW
    with pytest.raises(Conflict, match="already in the pool"):
        pool.release(db_session, lead.id, "rep", reason="again", now=T0)
    pool.claim(db_session, lead.id, "rep2", now=T0)
    pool.release(
        db_session, lead.id, "boss", reason="重新分配 reassign", now=T0, actor_role=StaffRole.MANAGER
    )
    assert history(db_session, lead.id) == [
        (None, "rep", OwnershipReason.CLAIMED),
        ("rep", None, OwnershipReason.RELEASED),
        (None, "rep2", OwnershipReason.CLAIMED),
        ("rep2", None, OwnershipReason.RELEASED),
    ]
    notes = db_session.scalars(
        select(OwnershipChange.note).where(OwnershipChange.reason == OwnershipReason.RELEASED)
    ).all()
    assert notes == ["号码空号 wrong number", "重新分配 reassign"]


# --- recycling --------------------------------------------------------------------------------


@pytest.fixture
def ctx(clean_db):
    engine = make_engine(clean_db)
    yield SimpleNamespace(session_factory=make_session_factory(engine))
    engine.dispose()


def warnings(session):
    return list(session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "lead_recycle_warning")))


def test_the_recycle_tick_warns_the_day_before_then_recycles(ctx):
    with transaction(ctx.session_factory) as session:
        session.add(PoolRule(name="default", source=None, recycle_after_days=3))
        events = PoolRule(name="events", source="event")
        session.add(events)
        session.flush()
        # None (never recycle) set after the insert: on insert the column's default (7) wins.
        events.recycle_after_days = None
        neglected = new_lead(session, name="李雷")
        followed = new_lead(session)
        forever = new_lead(session, source="event")
        converted = new_lead(session)
        for lead in (neglected, followed, forever, converted):
            change_owner(session, lead, "rep", OwnershipReason.ASSIGNED, now=T0)
        converted.status = LeadStatus.CONVERTED
        ids = neglected.id, followed.id, forever.id

    assert recycle_tick(ctx, now=T0 + timedelta(days=1)) == (0, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=2, hours=1)) == (2, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=2, hours=2)) == (0, 0)  # warned once
    with transaction(ctx.session_factory) as session:
        sent = warnings(session)
        assert sorted(m.payload["touser"] for m in sent) == ["rep", "rep"]
        assert {m.ref for m in sent} == {f"lead:{ids[0]}", f"lead:{ids[1]}"}
        card = next(m.payload for m in sent if m.ref == f"lead:{ids[0]}")
        assert "李雷" in card["textcard"]["description"] and card["msgtype"] == "textcard"
        # The owner of one lead logs a follow-up after the warning.
        session.get_one(Lead, ids[1]).last_follow_up_at = T0 + timedelta(days=2, hours=3)

    # Past the 3 days but not yet a day after the warning: a warning always comes a day ahead.
    assert recycle_tick(ctx, now=T0 + timedelta(days=3, minutes=30)) == (0, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=3, hours=2)) == (0, 1)
    with transaction(ctx.session_factory) as session:
        neglected_now, followed_now, forever_now = (session.get_one(Lead, i) for i in ids)
        assert neglected_now.owner_userid is None and neglected_now.status is LeadStatus.NEW
        assert neglected_now.recycle_warned_at is None
        assert history(session, ids[0])[-1] == ("rep", None, OwnershipReason.RECYCLED)
        assert followed_now.owner_userid == "rep" and forever_now.owner_userid == "rep"
    # The followed-up lead is warned again two days after its follow-up, and recycled a day later.
    assert recycle_tick(ctx, now=T0 + timedelta(days=4, hours=4)) == (1, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=5, hours=5)) == (0, 1)
    assert recycle_tick(ctx, now=T0 + timedelta(days=30)) == (0, 0)  # "event" leads are never recycled
    with transaction(ctx.session_factory) as session:
        assert len(warnings(session)) == 3


def test_the_recycle_tick_works_in_batches(ctx):
    with transaction(ctx.session_factory) as session:
        session.add(PoolRule(name="default", source=None, recycle_after_days=2))
        for _ in range(7):
            change_owner(session, new_lead(session), "rep", OwnershipReason.ASSIGNED, now=T0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=1, hours=1), batch=3) == (7, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=2, hours=2), batch=3) == (0, 7)


# --- concurrency ------------------------------------------------------------------------------


def run_at_once(factory, jobs):
    """Run each job in its own thread and unit of work, all released together; returns what each
    returned or raised."""
    barrier = threading.Barrier(len(jobs))
    outcomes: list[object] = [None] * len(jobs)

    def run(i, job):
        barrier.wait()
        try:
            with transaction(factory) as session:
                outcomes[i] = job(session)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def test_twenty_reps_claiming_one_lead_at_once_one_wins(ctx):
    with transaction(ctx.session_factory) as session:
        lead_id = new_lead(session).id
    outcomes = run_at_once(
        ctx.session_factory,
        [lambda s, i=i: pool.claim(s, lead_id, f"rep{i}", now=T0).owner_userid for i in range(20)],
    )
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1
    losers = [o for o in outcomes if not isinstance(o, str)]
    assert all(isinstance(o, pool.AlreadyClaimed) for o in losers), losers
    assert {str(o) for o in losers} == {f"already claimed by {winners[0]}"}
    with transaction(ctx.session_factory) as session:
        assert session.get_one(Lead, lead_id).owner_userid == winners[0]
        assert history(session, lead_id) == [(None, winners[0], OwnershipReason.CLAIMED)]


def test_the_daily_claim_cap_holds_under_concurrency(ctx):
    with transaction(ctx.session_factory) as session:
        session.add(PoolRule(name="default", source=None, daily_claim_cap=3, holding_cap=None))
        lead_ids = [new_lead(session).id for _ in range(10)]
    outcomes = run_at_once(
        ctx.session_factory,
        [lambda s, lead_id=lead_id: pool.claim(s, lead_id, "rep", now=T0).id for lead_id in lead_ids],
    )
    assert Counter(type(o).__name__ for o in outcomes) == Counter({"int": 3, "ClaimCapReached": 7})
    with transaction(ctx.session_factory) as session:
        owned = session.scalar(select(func.count()).select_from(Lead).where(Lead.owner_userid == "rep"))
        assert owned == 3


def test_the_holding_cap_holds_under_concurrency(ctx):
    with transaction(ctx.session_factory) as session:
        session.add(PoolRule(name="default", source=None, daily_claim_cap=None, holding_cap=4))
        lead_ids = [new_lead(session).id for _ in range(10)]
        change_owner(session, new_lead(session), "rep", OwnershipReason.ASSIGNED, now=T0)
    outcomes = run_at_once(
        ctx.session_factory,
        [lambda s, lead_id=lead_id: pool.claim(s, lead_id, "rep", now=T0).id for lead_id in lead_ids],
    )
    assert Counter(type(o).__name__ for o in outcomes) == Counter({"int": 3, "ClaimCapReached": 7})
