"""Assignment rules: priority order, filters, round robin, per-rep capacities (day and 30 days),
inactive or resigned reps skipped, the pool as fallback, one app message per assignment (asking
the rep to add a lead with a phone who is no friend yet), and the rules' validation."""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from scrm.db import make_engine, make_session_factory, transaction
from scrm.directory.models import Staff
from scrm.errors import InvalidInput, NotFound
from scrm.leads import assignment
from scrm.leads.assignment import MemberSpec, assign_new_lead, create_rule, delete_rule, rules, update_rule
from scrm.leads.models import AssignmentRule, Lead, LeadStatus, OwnershipChange, OwnershipReason
from scrm.leads.ownership import day_start
from scrm.outbox.models import OutboxCommand
from scrm.people.models import ExternalContact
from tests import factories
from tests.factories import T0


def new_lead(session, **values):
    values.setdefault("name", "客户")
    values.setdefault("source", "web")
    values.setdefault("created_at", T0)
    lead = Lead(**values)
    session.add(lead)
    session.flush()
    return lead


def messages(session):
    return list(session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "lead_assigned")))


def test_round_robin_in_position_order_skips_reps_at_capacity(db_session):
    for userid in ("a", "b", "c"):
        factories.staff(db_session, userid)
    create_rule(
        db_session,
        name="all",
        members=[MemberSpec("a"), MemberSpec("b", daily_capacity=1), MemberSpec("c")],
    )
    owners = [assign_new_lead(db_session, new_lead(db_session), now=T0) for _ in range(7)]
    assert owners == ["a", "b", "c", "a", "c", "a", "c"]
    # The next Asia/Shanghai day b is free again and the turn continues after the last served.
    tomorrow = day_start(T0) + timedelta(days=1, hours=1)
    assert [assign_new_lead(db_session, new_lead(db_session), now=tomorrow) for _ in range(3)] == [
        "a",
        "b",
        "c",
    ]


def test_rules_by_priority_filters_disabled_rules_and_the_pool(db_session):
    for userid in ("east", "ads", "anyone", "vip"):
        factories.staff(db_session, userid)
    ch = factories.channel(db_session)
    create_rule(db_session, name="anything", priority=50, members=[MemberSpec("anyone", daily_capacity=1)])
    create_rule(
        db_session,
        name="east",
        priority=10,
        members=[MemberSpec("east")],
        filters={"region": ["上海", "江苏"]},
    )
    create_rule(
        db_session,
        name="ads",
        priority=20,
        members=[MemberSpec("ads")],
        filters={"source": ["ads"], "channel_id": [ch.id]},
    )
    create_rule(db_session, name="off", priority=1, members=[MemberSpec("vip")], is_enabled=False)

    assert assign_new_lead(db_session, new_lead(db_session, region="上海", source="ads"), now=T0) == "east"
    assert assign_new_lead(db_session, new_lead(db_session, source="ads", channel_id=ch.id), now=T0) == "ads"
    # Every non-empty filter must hold: ads without the channel falls through to "anything".
    assert assign_new_lead(db_session, new_lead(db_session, source="ads"), now=T0) == "anyone"
    # "anything" is full for today: no rule has a free rep, so the lead stays in the pool.
    pooled = new_lead(db_session, source="form")
    assert assign_new_lead(db_session, pooled, now=T0) is None
    assert pooled.owner_userid is None and pooled.status is LeadStatus.NEW
    assert len(messages(db_session)) == 3
    notes = [c.note for c in db_session.scalars(select(OwnershipChange).order_by(OwnershipChange.id))]
    assert notes == ["east", "ads", "anything"]


def test_inactive_and_resigned_reps_are_skipped(db_session):
    factories.staff(db_session, "gone", is_active=False)
    factories.staff(db_session, "left")
    factories.staff(db_session, "here")
    create_rule(db_session, name="team", members=[MemberSpec("gone"), MemberSpec("left"), MemberSpec("here")])
    db_session.execute(delete(Staff).where(Staff.userid == "left"))  # resigned: no longer in the directory
    owners = {assign_new_lead(db_session, new_lead(db_session), now=T0) for _ in range(5)}
    assert owners == {"here"}


def test_the_card_links_to_the_lead_and_asks_to_add_a_phone_that_is_no_friend(db_session):
    factories.staff(db_session, "rep")
    create_rule(db_session, name="team", members=[MemberSpec("rep")])
    with_phone = new_lead(db_session, name="王五", company="星河科技", phone_e164="+8613800000001")
    friend = new_lead(db_session, name="赵六", phone_e164="+8613800000002")
    db_session.add(ExternalContact(external_userid="wm_friend", lead_id=friend.id))
    by_unionid = new_lead(db_session, phone_e164="+8613800000003", unionid="u-3")
    db_session.add(ExternalContact(external_userid="wm_other", unionid="u-3"))
    no_phone = new_lead(db_session, email="x@example.com")
    for lead in (with_phone, friend, by_unionid, no_phone):
        assign_new_lead(db_session, lead, now=T0)
    cards = {int(m.ref.split(":")[1]): m.payload for m in messages(db_session)}
    assert len(cards) == 4
    card = cards[with_phone.id]
    assert card["touser"] == "rep" and card["msgtype"] == "textcard"
    assert card["textcard"]["url"] == f"/console/leads/{with_phone.id}"
    assert "王五 · 星河科技" in card["textcard"]["description"]
    assert "+8613800000001" in card["textcard"]["description"]
    assert "add them as a WeCom friend" in card["textcard"]["description"]
    for lead in (friend, by_unionid, no_phone):
        assert "friend" not in cards[lead.id]["textcard"]["description"]
    assert len(card["textcard"]["title"].encode()) <= 128
    # The outbox sends it with scrm's public URL in front (doc 90236: absolute url).
    gateway = type("Gateway", (), {"public_url": "https://scrm.example.com"})()
    body = assignment.LEAD_ASSIGNED.render(gateway, card)  # type: ignore[misc]
    assert body["textcard"]["url"] == f"https://scrm.example.com/console/leads/{with_phone.id}"


def test_owned_closed_and_merged_leads_are_not_routed(db_session):
    factories.staff(db_session, "rep")
    create_rule(db_session, name="team", members=[MemberSpec("rep")])
    assert assign_new_lead(db_session, new_lead(db_session, owner_userid="other"), now=T0) == "other"
    assert assign_new_lead(db_session, new_lead(db_session, status=LeadStatus.DISQUALIFIED), now=T0) is None
    survivor = new_lead(db_session)
    assert assign_new_lead(db_session, new_lead(db_session, merged_into_id=survivor.id), now=T0) is None
    assert messages(db_session) == []


# --- 5 reps, 500 leads ------------------------------------------------------------------------

REPS = {
    # userid: (daily, monthly)
    "r1": (10, None),
    "r2": (5, 12),
    "r3": (15, None),
    "r4": (None, 20),
    "r5": (20, 70),
}


def test_five_reps_five_hundred_leads_respect_capacities_and_filters(db_session):
    for userid in REPS:
        factories.staff(db_session, userid)
    factories.staff(db_session, "r6", is_active=False)
    members = {u: MemberSpec(u, *caps) for u, caps in REPS.items()}
    create_rule(db_session, name="vip", priority=1, members=[MemberSpec("r4")], is_enabled=False)
    create_rule(
        db_session,
        name="web-east",
        priority=10,
        members=[members["r1"], members["r2"]],
        filters={"source": ["web"], "region": ["上海", "江苏"]},
    )
    create_rule(
        db_session,
        name="ads-education",
        priority=20,
        members=[members["r3"], MemberSpec("r6"), members["r4"]],
        filters={"source": ["ads"], "industry": ["教育"]},
    )
    create_rule(db_session, name="rest", priority=30, members=[members["r5"], members["r1"]])
    rule_by_name = {r.name: r for r in rules(db_session)}

    rng = random.Random(11)
    leads: list[tuple[Lead, object]] = []
    for i in range(500):
        # Five Asia/Shanghai days, 100 leads each, every 5 minutes from 09:00 local.
        when = day_start(T0) + timedelta(days=i // 100, hours=9, minutes=5 * (i % 100))
        lead = new_lead(
            db_session,
            source=rng.choice(["web", "ads", "form"]),
            region=rng.choice(["上海", "江苏", "北京", "广东"]),
            industry=rng.choice(["教育", "制造", "零售"]),
            phone_e164=f"+86139{i:08d}" if i % 3 else None,
            created_at=when,
        )
        assign_new_lead(db_session, lead, now=when)
        leads.append((lead, when))

    changes = list(db_session.scalars(select(OwnershipChange).order_by(OwnershipChange.id)))
    assert all(c.reason is OwnershipReason.ASSIGNED for c in changes)
    by_lead = {c.lead_id: c for c in changes}
    assert 0 < len(changes) < 500  # capacities bind: some leads are left in the pool
    got: dict[str, list] = defaultdict(list)  # userid -> times received (in order)

    def full(userid, when):
        daily, monthly = REPS[userid]
        before = [t for t in got[userid] if t < when]
        today = [t for t in before if t >= day_start(when)]
        month = [t for t in before if t >= when - timedelta(days=30)]
        return (daily is not None and len(today) >= daily) or (monthly is not None and len(month) >= monthly)

    for lead, when in leads:
        matching = [
            r
            for r in sorted(rule_by_name.values(), key=lambda r: r.priority)
            if r.is_enabled and assignment.matches(r, lead)
        ]
        change = by_lead.get(lead.id)
        if change is None:
            # The pool only when every matching rule's active reps were all at capacity.
            assert lead.owner_userid is None
            for rule in matching:
                assert all(full(m.userid, when) for m in rule.members if m.userid != "r6")
            continue
        rule = rule_by_name[change.note]
        assert rule in matching, (lead.source, lead.region, lead.industry, rule.name)
        # No higher-priority matching rule had a free rep.
        for earlier in matching[: matching.index(rule)]:
            assert all(full(m.userid, when) for m in earlier.members if m.userid != "r6")
        assert change.to_userid in {m.userid for m in rule.members}
        assert change.to_userid != "r6"
        assert not full(change.to_userid, when)
        assert lead.owner_userid == change.to_userid and lead.status is LeadStatus.ASSIGNED
        got[change.to_userid].append(when)

    for userid, (daily, monthly) in REPS.items():
        per_day = Counter(day_start(t) for t in got[userid])
        assert daily is None or max(per_day.values(), default=0) <= daily
        assert monthly is None or len(got[userid]) <= monthly
    assert len(got["r2"]) == 12 and len(got["r4"]) == 20  # the monthly caps were reached
    # One app message per assignment, to the rep who got the lead.
    sent = messages(db_session)
    assert len(sent) == len(changes)
    assert Counter(m.payload["touser"] for m in sent) == Counter(c.to_userid for c in changes)
    assert {m.ref for m in sent} == {f"lead:{c.lead_id}" for c in changes}


# --- the rules --------------------------------------------------------------------------------


def test_rule_validation_names_each_bad_field(db_session):
    factories.staff(db_session, "rep")
    with pytest.raises(InvalidInput) as caught:
        create_rule(
            db_session,
            name=" ",
            priority=-1,
            filters={"region": "上海", "colour": ["red"], "channel_id": [999]},
            members=[MemberSpec("rep"), MemberSpec("rep"), MemberSpec("nobody", daily_capacity=-2)],
        )
    fields = caught.value.fields
    assert set(fields) == {
        "name",
        "priority",
        "filters",
        "filters.region",
        "filters.channel_id",
        "members[1].userid",
        "members[2].userid",
        "members[2].daily_capacity",
    }
    with pytest.raises(InvalidInput) as caught:
        create_rule(db_session, name="empty", members=[])
    assert set(caught.value.fields) == {"members"}
    assert db_session.scalar(select(AssignmentRule.id)) is None


def test_rule_crud(db_session):
    for userid in ("a", "b", "c"):
        factories.staff(db_session, userid)
    first = create_rule(db_session, name="one", priority=5, members=[MemberSpec("a"), MemberSpec("b")])
    second = create_rule(
        db_session, name="two", priority=1, members=[MemberSpec("c")], filters={"source": ["web"]}
    )
    assert [r.name for r in rules(db_session)] == ["two", "one"]
    with pytest.raises(InvalidInput) as caught:
        update_rule(db_session, first.id, name="two")
    assert set(caught.value.fields) == {"name"}
    update_rule(
        db_session,
        first.id,
        priority=0,
        members=[MemberSpec("b", daily_capacity=3), MemberSpec("a")],
        filters={"region": ["北京", "北京"]},
    )
    listed = rules(db_session)
    assert [r.name for r in listed] == ["one", "two"]
    assert [(m.userid, m.position, m.daily_capacity) for m in listed[0].members] == [
        ("b", 0, 3),
        ("a", 1, None),
    ]
    assert listed[0].filters == {"region": ["北京"]}
    update_rule(db_session, second.id, is_enabled=False)
    delete_rule(db_session, second.id)
    assert [r.name for r in rules(db_session)] == ["one"]
    with pytest.raises(NotFound):
        delete_rule(db_session, second.id)


# --- concurrency ------------------------------------------------------------------------------


def test_concurrent_captures_do_not_overfill_a_rep(clean_db):
    """Ten captures at once, each its own unit of work; the rule's only rep takes three a day.
    Also a second rule sharing the rep: capacity is the rep's across rules."""
    engine = make_engine(clean_db)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        factories.staff(session, "rep")
        create_rule(session, name="web", priority=1, members=[MemberSpec("rep", daily_capacity=3)])
        create_rule(
            session,
            name="ads",
            priority=2,
            members=[MemberSpec("rep", daily_capacity=3)],
            filters={"source": ["ads"]},
        )
    barrier = threading.Barrier(10)
    owners: list[object] = [None] * 10

    def capture(i):
        barrier.wait()
        try:
            with transaction(factory) as session:
                lead = new_lead(session, source="ads" if i % 2 else "web")
                owners[i] = assign_new_lead(session, lead, now=T0)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            owners[i] = exc

    threads = [threading.Thread(target=capture, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    engine.dispose()
    assert Counter(owners) == Counter({"rep": 3, None: 7})
