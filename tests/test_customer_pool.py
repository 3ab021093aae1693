"""Customers in the public pool (公海), through the leads' pool code: claims (one winner among 20
concurrent claimers, the default rule's daily and holding caps counting customers apart from
leads, holding under concurrency), releases with a reason, the recycle tick that warns a day
before it puts a neglected customer back in the pool, and the console's claim going through the
same caps. Both databases; real threads, each with its own unit of work."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from jobs.pool import recycle_tick
from scrm.customers.models import Customer, CustomerKind
from scrm.db import transaction
from scrm.directory.models import StaffRole
from scrm.errors import Conflict, Forbidden, InvalidInput
from scrm.followups import service as followups
from scrm.leads import pool
from scrm.leads.models import OwnershipChange, OwnershipReason, PoolRule
from scrm.leads.ownership import change_owner
from scrm.outbox.models import OutboxCommand
from tests.factories import T0
from tests.test_console import login
from tests.test_console_customers import Site, _flashes, _post, site  # noqa: F401 - the site fixture
from tests.test_lead_pool import ctx, new_lead, run_at_once  # noqa: F401 - the ctx fixture


def new_customer(session, **values):
    values.setdefault("name", "华为技术有限公司")
    values.setdefault("kind", CustomerKind.COMPANY)
    values.setdefault("created_at", T0)
    customer = Customer(**values)
    session.add(customer)
    session.flush()
    return customer


def history(session, customer_id):
    return [
        (c.from_userid, c.to_userid, c.reason, c.lead_id)
        for c in session.scalars(
            select(OwnershipChange)
            .where(OwnershipChange.customer_id == customer_id)
            .order_by(OwnershipChange.id)
        )
    ]


def test_claim_takes_an_unowned_customer_once_and_release_needs_a_reason(db_session):
    customer = new_customer(db_session)
    claimed = pool.claim_customer(db_session, customer.id, "rep", now=T0)
    assert claimed.owner_userid == "rep" and claimed.assigned_at == T0
    with pytest.raises(pool.AlreadyClaimed, match="already claimed by rep"):
        pool.claim_customer(db_session, customer.id, "other", now=T0)
    merged = new_customer(db_session, merged_into_id=customer.id)
    with pytest.raises(Conflict, match="merged"):
        pool.claim_customer(db_session, merged.id, "rep", now=T0)
    with pytest.raises(InvalidInput) as caught:
        pool.release_customer(db_session, customer.id, "rep", reason=" ", now=T0)
    assert set(caught.value.fields) == {"reason"}
    with pytest.raises(Forbidden):
        pool.release_customer(db_session, customer.id, "other", reason="not mine", now=T0)
    released = pool.release_customer(db_session, customer.id, "rep", reason="不是目标 not a fit", now=T0)
    assert released.owner_userid is None and released.assigned_at is None
    with pytest.raises(Conflict, match="already in the pool"):
        pool.release_customer(db_session, customer.id, "rep", reason="again", now=T0)
    pool.claim_customer(db_session, customer.id, "rep2", now=T0)
    pool.release_customer(
        db_session, customer.id, "boss", reason="重新分配", now=T0, actor_role=StaffRole.MANAGER
    )
    assert history(db_session, customer.id) == [
        (None, "rep", OwnershipReason.CLAIMED, None),
        ("rep", None, OwnershipReason.RELEASED, None),
        (None, "rep2", OwnershipReason.CLAIMED, None),
        ("rep2", None, OwnershipReason.RELEASED, None),
    ]


def test_customer_caps_come_from_the_default_rule_and_count_customers_apart_from_leads(db_session):
    db_session.add(PoolRule(name="default", source=None, daily_claim_cap=2, holding_cap=3))
    db_session.add(PoolRule(name="ads", source="ads", daily_claim_cap=50, holding_cap=50))
    db_session.flush()
    # Two leads claimed today do not use up the day's customer claims.
    for lead in (new_lead(db_session), new_lead(db_session)):
        pool.claim(db_session, lead.id, "rep", now=T0)
    customers = [new_customer(db_session) for _ in range(4)]
    pool.claim_customer(db_session, customers[0].id, "rep", now=T0)
    pool.claim_customer(db_session, customers[1].id, "rep", now=T0)
    with pytest.raises(pool.ClaimCapReached, match="claimed 2 customers today, the daily cap of 2"):
        pool.claim_customer(db_session, customers[2].id, "rep", now=T0)
    # Nor do customer claims use up the leads' (the leads' cap of 2 is reached by leads alone).
    with pytest.raises(pool.ClaimCapReached, match="claimed 2 leads today"):
        pool.claim(db_session, new_lead(db_session).id, "rep", now=T0)
    assert pool.holding(db_session, "rep", pool.CUSTOMERS) == 2
    next_day = T0 + timedelta(days=1)
    pool.claim_customer(db_session, customers[2].id, "rep", now=next_day)
    with pytest.raises(pool.ClaimCapReached, match="holds 3 open customers, the cap of 3"):
        pool.claim_customer(db_session, customers[3].id, "rep", now=next_day)
    # A merged customer no longer counts towards what the rep holds.
    customers[0].merged_into_id = customers[1].id
    pool.claim_customer(db_session, customers[3].id, "rep", now=next_day)


# --- recycling --------------------------------------------------------------------------------


def warnings(session):
    return list(
        session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "customer_recycle_warning"))
    )


def test_the_recycle_tick_warns_the_day_before_then_recycles_customers(ctx):  # noqa: F811
    with transaction(ctx.session_factory) as session:
        session.add(PoolRule(name="default", source=None, recycle_after_days=3))
        neglected = new_customer(session, name="小米科技")
        followed = new_customer(session, name="字节跳动")
        merged = new_customer(session)
        for customer in (neglected, followed, merged):
            change_owner(session, customer, "rep", OwnershipReason.REASSIGNED, now=T0)
        merged.merged_into_id = followed.id
        # Long ago created, claimed today: neglect counts from the claim, not the creation.
        old = new_customer(session, created_at=T0 - timedelta(days=300))
        session.flush()
        ids = neglected.id, followed.id, old.id
    with transaction(ctx.session_factory) as session:
        pool.claim_customer(session, ids[2], "rep2", now=T0 + timedelta(days=2))

    assert recycle_tick(ctx, now=T0 + timedelta(days=1)) == (0, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=2, hours=1)) == (2, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=2, hours=2)) == (0, 0)  # warned once
    with transaction(ctx.session_factory) as session:
        sent = warnings(session)
        assert sorted(m.ref for m in sent) == sorted(f"customer:{i}" for i in ids[:2])
        card = next(m.payload for m in sent if m.ref == f"customer:{ids[0]}")
        assert card["touser"] == "rep" and "小米科技" in card["textcard"]["description"]
        assert card["textcard"]["url"] == f"/console/customers/{ids[0]}"
        # The owner of one customer logs a follow-up after the warning.
        followups.log_follow_up(
            session,
            customer=session.get_one(Customer, ids[1]),
            kind="call",
            author_userid="rep",
            now=T0 + timedelta(days=2, hours=3),
        )

    # Past the 3 days but not yet a day after the warning: a warning always comes a day ahead.
    assert recycle_tick(ctx, now=T0 + timedelta(days=3, minutes=30)) == (0, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=3, hours=2)) == (0, 1)
    with transaction(ctx.session_factory) as session:
        gone, kept, claimed = (session.get_one(Customer, i) for i in ids)
        assert gone.owner_userid is None and gone.recycle_warned_at is None and gone.assigned_at is None
        assert history(session, ids[0])[-1] == ("rep", None, OwnershipReason.RECYCLED, None)
        assert kept.owner_userid == "rep" and claimed.owner_userid == "rep2"
    # The followed-up customer is warned two days after its follow-up and recycled a day later;
    # the one claimed on day 2 is warned on day 4 and recycled on day 5.
    assert recycle_tick(ctx, now=T0 + timedelta(days=4, hours=4)) == (2, 0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=5, hours=5)) == (0, 2)
    with transaction(ctx.session_factory) as session:
        assert len(warnings(session)) == 4
        owners = session.scalars(select(Customer.owner_userid).where(Customer.id.in_(ids))).all()
        assert owners == [None, None, None]


def test_customers_are_not_recycled_without_a_default_rule(ctx):  # noqa: F811
    with transaction(ctx.session_factory) as session:
        # A rule for a lead source does not apply to customers.
        session.add(PoolRule(name="ads", source="ads", recycle_after_days=2))
        customer = new_customer(session)
        change_owner(session, customer, "rep", OwnershipReason.REASSIGNED, now=T0)
    assert recycle_tick(ctx, now=T0 + timedelta(days=30)) == (0, 0)


# --- concurrency ------------------------------------------------------------------------------


def test_twenty_reps_claiming_one_customer_at_once_one_wins(ctx):  # noqa: F811
    with transaction(ctx.session_factory) as session:
        customer_id = new_customer(session).id
    outcomes = run_at_once(
        ctx.session_factory,
        [
            lambda s, i=i: pool.claim_customer(s, customer_id, f"rep{i}", now=T0).owner_userid
            for i in range(20)
        ],
    )
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1
    losers = [o for o in outcomes if not isinstance(o, str)]
    assert all(isinstance(o, pool.AlreadyClaimed) for o in losers), losers
    with transaction(ctx.session_factory) as session:
        assert session.get_one(Customer, customer_id).owner_userid == winners[0]
        assert history(session, customer_id) == [(None, winners[0], OwnershipReason.CLAIMED, None)]


def test_the_customer_claim_caps_hold_under_concurrency(ctx):  # noqa: F811
    with transaction(ctx.session_factory) as session:
        session.add(PoolRule(name="default", source=None, daily_claim_cap=3, holding_cap=None))
        customer_ids = [new_customer(session).id for _ in range(10)]
    outcomes = run_at_once(
        ctx.session_factory,
        [lambda s, c=c: pool.claim_customer(s, c, "rep", now=T0).id for c in customer_ids],
    )
    assert Counter(type(o).__name__ for o in outcomes) == Counter({"int": 3, "ClaimCapReached": 7})
    with transaction(ctx.session_factory) as session:
        held = session.scalar(
            select(func.count()).select_from(Customer).where(Customer.owner_userid == "rep")
        )
        assert held == 3


# --- the console ------------------------------------------------------------------------------


def test_the_console_claim_goes_through_the_pool_caps(site: Site) -> None:  # noqa: F811
    i = site.ids
    with transaction(site.factory) as db:
        db.add(PoolRule(name="default", source=None, daily_claim_cap=0))
    login(site.client, "alice")
    _post(site, f"/console/customers/{i['p']}/claim")
    assert any("Cannot claim" in m and "daily cap of 0" in m for m in _flashes(site))
    with site.factory() as db:
        assert db.get_one(Customer, i["p"]).owner_userid is None
        db.execute(PoolRule.__table__.update().values(daily_claim_cap=None))
        db.commit()
    _post(site, f"/console/customers/{i['p']}/claim")
    with site.factory() as db:
        assert db.get_one(Customer, i["p"]).owner_userid == "alice"
        assert history(db, i["p"]) == [(None, "alice", OwnershipReason.CLAIMED, None)]
