"""Auto-tagging rules at the service level, on both databases: each trigger's conditions, one tag,
one hit and one mark_tag however often a rule fires, a manual removal beating every trigger, and
every lead path that changes a status or grade firing the lead_change rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scrm.chat.keywords import KeywordHit
from scrm.errors import InvalidInput
from scrm.followups import service as followups
from scrm.friends import service as friends
from scrm.leads import ownership
from scrm.leads import service as leads
from scrm.leads.fields import parse_lead
from scrm.leads.models import Lead, LeadGrade, LeadStatus, OwnershipReason
from scrm.outbox.models import OutboxCommand, OutboxStatus
from scrm.people import service as people
from scrm.tagrules import queries as rule_queries
from scrm.tagrules import service as rules
from scrm.tagrules.models import RuleTrigger, TagRuleHit
from scrm.tags.models import Tag, TagSource
from scrm.timeutil import SHANGHAI
from tests import factories as make


@pytest.fixture(autouse=True)
def _listening() -> None:
    rules.install()  # what Context.build does


def _tags(session: Session, *ids: str) -> None:
    for tag_id in ids:
        session.add(Tag(tag_id=tag_id, name=tag_id, is_local=tag_id.startswith("local-")))
    session.flush()


def _friend(session: Session, ext: str = "wm1", userid: str = "zhangsan", *, state: str = "", when: float = 0):
    return friends.record_add(
        session, make.add_event(ext, userid, state=state, when=when), make.detail(ext, userid)
    )


def _rule(session: Session, trigger: RuleTrigger, tag_ids: list[str], **values: Any):
    return rules.create_rule(
        session, rules.RuleFields(name=values.pop("name", str(trigger)), trigger=trigger, tag_ids=tag_ids, **values),
        actor="admin",
    )


def _mark_tags(session: Session) -> list[dict[str, Any]]:
    return [
        c.payload
        for c in session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "mark_tag").order_by(OutboxCommand.id))
    ]


def _tag_ids(friendship) -> list[str]:
    return sorted(link.tag_id for link in friendship.tags)


def _hits(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(TagRuleHit)) or 0


def _shanghai(hour: int, minute: int = 0, *, day: int = 2) -> datetime:
    """A moment in Asia/Shanghai, as UTC; 2026-11-02 is a Monday."""
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


# --- on_add ----------------------------------------------------------------------------------


def test_on_add_matches_the_channel_and_a_window_that_wraps_midnight(db_session: Session) -> None:
    _tags(db_session, "et_night", "et_any")
    ch = make.channel(db_session)
    other = make.channel(db_session)
    night = _rule(
        db_session, RuleTrigger.ON_ADD, ["et_night"], channel_ids=[ch.id], window_start="22:00", window_end="06:00",
        weekdays=[1],
    )
    _rule(db_session, RuleTrigger.ON_ADD, ["et_any"])
    f = _friend(db_session, state=ch.state)
    assert rules.in_window(night, _shanghai(23, 30))  # Monday 23:30
    assert rules.in_window(night, _shanghai(5, 59, day=3))  # Tuesday 05:59: Monday's window
    assert not rules.in_window(night, _shanghai(5, 59, day=2))  # Monday 05:59: Sunday's window
    assert not rules.in_window(night, _shanghai(6, 0, day=3))  # the end is exclusive
    assert not rules.in_window(night, _shanghai(12, 0))

    assert rules.on_friend_added(db_session, f, _shanghai(12, 0)) == ["et_any"]
    assert rules.on_friend_added(db_session, f, _shanghai(23, 0)) == ["et_night"]
    g = _friend(db_session, "wm2", state=other.state)
    assert rules.on_friend_added(db_session, g, _shanghai(23, 0)) == ["et_any"]  # not the channel
    assert _tag_ids(f) == ["et_any", "et_night"] and _tag_ids(g) == ["et_any"]
    assert all(link.source is TagSource.RULE for link in f.tags)
    assert rule_queries.tagged_counts(db_session) == {night.id: 1, night.id + 1: 2}


def test_a_rule_fired_twice_gives_one_tag_one_hit_one_mark_tag(db_session: Session) -> None:
    _tags(db_session, "et_a", "et_b")
    _rule(db_session, RuleTrigger.ON_ADD, ["et_a", "et_b"])
    f = _friend(db_session)
    assert rules.on_friend_added(db_session, f, make.at(0)) == ["et_a", "et_b"]
    assert rules.on_friend_added(db_session, f, make.at(0)) == []
    assert _tag_ids(f) == ["et_a", "et_b"] and _hits(db_session) == 2
    assert _mark_tags(db_session) == [{"userid": "zhangsan", "external_userid": "wm1", "add_tag": ["et_a", "et_b"]}]


def test_local_tags_change_locally_only_and_tags_held_already_are_left_alone(db_session: Session) -> None:
    _tags(db_session, "et_a", "local-vip")
    rule = _rule(db_session, RuleTrigger.ON_ADD, ["et_a", "local-vip"])
    f = _friend(db_session)
    friends.change_tags(db_session, f, ["et_a"], [], actor="zhangsan")  # a rep tagged it first
    assert rules.on_friend_added(db_session, f, make.at(0)) == ["local-vip"]
    assert len(_mark_tags(db_session)) == 1  # the rep's; the local tag is not sent
    assert rule_queries.tagged_counts(db_session) == {rule.id: 1}
    assert [h.tag_id for h in rule_queries.hits_of(db_session, rule.id)] == ["local-vip"]


def test_a_disabled_rule_and_a_closed_friendship_get_nothing(db_session: Session) -> None:
    _tags(db_session, "et_a")
    rule = _rule(db_session, RuleTrigger.ON_ADD, ["et_a"])
    f = _friend(db_session)
    rules.update_rule(db_session, rule, {"is_enabled": False})
    assert rules.on_friend_added(db_session, f, make.at(0)) == []
    rules.update_rule(db_session, rule, {"is_enabled": True})
    friends.record_removal(
        db_session, userid="zhangsan", external_userid="wm1", by="customer", occurred_at=make.at(10), inbox_id=None
    )
    assert rules.on_friend_added(db_session, f, make.at(0)) == []


# --- manual removal wins -----------------------------------------------------------------------


def test_manual_removal_beats_every_trigger_and_a_hand_re_add_works(db_session: Session) -> None:
    _tags(db_session, "et_hot")
    _rule(db_session, RuleTrigger.ON_ADD, ["et_hot"])
    kw = _rule(db_session, RuleTrigger.KEYWORD, ["et_hot"], keywords=["多少钱"])
    _rule(db_session, RuleTrigger.GROUP_JOIN, ["et_hot"])
    f = _friend(db_session)
    assert rules.on_friend_added(db_session, f, make.at(0)) == ["et_hot"]
    friends.change_tags(db_session, f, [], ["et_hot"], actor="zhangsan")
    sent = len(_mark_tags(db_session))
    # The rule fires again, by every trigger: the tag stays off and nothing goes to WeCom.
    assert rules.on_friend_added(db_session, f, make.at(0)) == []
    assert rules.apply_keyword_hits(db_session, [KeywordHit(kw.id, f.id, "m2", make.at(5))]) == 0
    assert rules.on_group_join(db_session, "wrOgAA", ["wm1"], make.at(6)) == {}
    assert _tag_ids(f) == [] and len(_mark_tags(db_session)) == sent
    # A hand re-add works, and is the rep's.
    assert friends.change_tags(db_session, f, ["et_hot"], [], actor="zhangsan") == (["et_hot"], [])
    assert [link.source for link in f.tags] == [TagSource.MANUAL]


def test_a_removal_in_the_wecom_client_beats_a_rule_too(db_session: Session) -> None:
    _tags(db_session, "et_hot")
    _rule(db_session, RuleTrigger.GROUP_JOIN, ["et_hot"], chat_ids=["wrOgAA"])
    f = _friend(db_session)
    assert rules.on_group_join(db_session, "wrOgAA", ["wm1"], make.at(1)) == {f.id: ["et_hot"]}
    for command in db_session.scalars(select(OutboxCommand)):  # the drain sent the rule's mark_tag
        command.status = OutboxStatus.SENT
    # The rep took it off in WeCom: edit_external_contact's detail lists no tags.
    friends.record_edit(
        db_session,
        userid="zhangsan",
        external_userid="wm1",
        detail=make.detail("wm1", read=20),
        occurred_at=make.at(20),
        inbox_id=None,
    )
    assert _tag_ids(f) == []
    assert rules.on_group_join(db_session, "wrOgAA", ["wm1"], make.at(30)) == {}
    assert _tag_ids(f) == []


# --- group_join and keyword --------------------------------------------------------------------


def test_group_join_tags_each_rep_relationship_of_the_member_and_only_for_its_groups(db_session: Session) -> None:
    _tags(db_session, "et_group")
    _rule(db_session, RuleTrigger.GROUP_JOIN, ["et_group"], chat_ids=["wrA"])
    a = _friend(db_session, "wm1", "zhangsan")
    b = _friend(db_session, "wm1", "lisi")
    c = _friend(db_session, "wm2", "zhangsan")
    assert rules.on_group_join(db_session, "wrB", ["wm1"], make.at(1)) == {}
    assert rules.on_group_join(db_session, "wrA", ["wm1", "zhangsan", "wmNobody"], make.at(1)) == {
        a.id: ["et_group"],
        b.id: ["et_group"],
    }
    assert _tag_ids(c) == []
    assert sorted((p["userid"], p["external_userid"]) for p in _mark_tags(db_session)) == [
        ("lisi", "wm1"),
        ("zhangsan", "wm1"),
    ]


def test_keyword_specs_and_hits(db_session: Session) -> None:
    _tags(db_session, "et_price", "et_trial")
    price = _rule(db_session, RuleTrigger.KEYWORD, ["et_price"], keywords=["多少钱", " 价格 "], match_mode="fuzzy")
    trial = _rule(db_session, RuleTrigger.KEYWORD, ["et_trial"], keywords=["试用"], match_mode="exact")
    off = _rule(db_session, RuleTrigger.KEYWORD, ["et_trial"], keywords=["demo"], is_enabled=False)
    specs = rule_queries.keyword_specs(db_session)
    assert [(s.rule_id, s.keywords, s.fuzzy) for s in specs] == [
        (price.id, ["多少钱", "价格"], True),
        (trial.id, ["试用"], False),
    ]
    f = _friend(db_session)
    hits = [
        KeywordHit(price.id, f.id, "m1", make.at(1)),
        KeywordHit(price.id, f.id, "m2", make.at(2)),
        KeywordHit(trial.id, f.id, "m2", make.at(2)),
        KeywordHit(off.id, f.id, "m3", make.at(3)),
    ]
    assert rules.apply_keyword_hits(db_session, hits) == 2
    assert rules.apply_keyword_hits(db_session, hits) == 0
    assert _tag_ids(f) == ["et_price", "et_trial"]
    assert len(_mark_tags(db_session)) == 1  # both rules' tags in one mark_tag
    hit = db_session.scalars(select(TagRuleHit).where(TagRuleHit.rule_id == price.id)).one()
    assert hit.cause == "msg:m1"


# --- lead_change: every path that changes a status or grade ------------------------------------


def _lead_friend(session: Session, **raw: Any) -> tuple[Lead, Any]:
    lead = leads.capture(session, parse_lead({"name": "李娜", **raw}), on_duplicate="flag", actor="t").lead
    f = _friend(session, "wmL")
    f.external_contact.lead_id = lead.id
    session.flush()
    return lead, f


def test_lead_change_set_status_and_convert(db_session: Session) -> None:
    _tags(db_session, "et_qualified", "et_won")
    _rule(db_session, RuleTrigger.LEAD_CHANGE, ["et_qualified"], lead_statuses=["qualified"])
    _rule(db_session, RuleTrigger.LEAD_CHANGE, ["et_won"], lead_statuses=["converted"])
    lead, f = _lead_friend(db_session, phone="13800138000")
    assert _tag_ids(f) == []
    leads.set_status(db_session, lead, "qualified", actor="zhangsan")
    assert _tag_ids(f) == ["et_qualified"]
    leads.convert(db_session, lead, actor="zhangsan")
    assert _tag_ids(f) == ["et_qualified", "et_won"]


def test_lead_change_grade_by_rescore_and_status_and_grade_together(db_session: Session) -> None:
    _tags(db_session, "et_graded", "et_b_contacted")
    _rule(db_session, RuleTrigger.LEAD_CHANGE, ["et_graded"], lead_grades=["A", "B", "C"])
    _rule(db_session, RuleTrigger.LEAD_CHANGE, ["et_b_contacted"], lead_grades=["A"], lead_statuses=["contacted"])
    lead, f = _lead_friend(db_session, phone="13800138001")
    lead.grade = None
    leads.rescore(db_session, lead)
    assert lead.grade is not None and _tag_ids(f) == ["et_graded"]  # the A-and-contacted rule waits
    lead.status = LeadStatus.CONTACTED
    lead.grade = LeadGrade.A
    rules.on_lead_changed(db_session, lead)
    assert _tag_ids(f) == ["et_b_contacted", "et_graded"]


def test_lead_change_by_owner_change_follow_up_and_becoming_a_friend(db_session: Session) -> None:
    _tags(db_session, "et_assigned", "et_contacted")
    _rule(db_session, RuleTrigger.LEAD_CHANGE, ["et_assigned"], lead_statuses=["assigned"])
    _rule(db_session, RuleTrigger.LEAD_CHANGE, ["et_contacted"], lead_statuses=["contacted"])
    lead, f = _lead_friend(db_session, phone="13800138002")
    assert lead.status is LeadStatus.NEW
    ownership.change_owner(db_session, lead, "zhangsan", OwnershipReason.REASSIGNED, actor="boss")
    assert _tag_ids(f) == ["et_assigned"]
    followups.log_follow_up(db_session, lead=lead, kind="call", content="called", author_userid="zhangsan")
    assert lead.status is LeadStatus.CONTACTED and _tag_ids(f) == ["et_assigned", "et_contacted"]
    # A new lead that turns out to be a friend (friend_found: new → contacted).
    other = leads.capture(db_session, parse_lead({"name": "王五", "phone": "13800138003"}), actor="t").lead
    g = _friend(db_session, "wmO")
    people.link_to_lead(db_session, g.external_contact, other, how="sidebar", userid="zhangsan")
    assert other.status is LeadStatus.CONTACTED and _tag_ids(g) == ["et_contacted"]


# --- rules themselves --------------------------------------------------------------------------


def test_invalid_rules_say_what_to_fix(db_session: Session) -> None:
    _tags(db_session, "et_a")
    with pytest.raises(InvalidInput) as caught:
        rules.create_rule(
            db_session,
            rules.RuleFields(name="", trigger="on_add", tag_ids=["et_missing"], window_start="25:00", weekdays=[8]),
            actor="admin",
        )
    assert set(caught.value.fields) == {"name", "tag_ids", "window_start", "window_end", "weekdays"}
    with pytest.raises(InvalidInput) as caught:
        rules.create_rule(db_session, rules.RuleFields(name="k", trigger="keyword", tag_ids=["et_a"]), actor="admin")
    assert set(caught.value.fields) == {"keywords"}
    with pytest.raises(InvalidInput) as caught:
        rules.create_rule(
            db_session, rules.RuleFields(name="l", trigger="lead_change", tag_ids=["et_a"], lead_grades=["D"]),
            actor="admin",
        )
    assert "lead_grades" in caught.value.fields
    with pytest.raises(InvalidInput):
        rules.create_rule(db_session, rules.RuleFields(name="t", trigger="sometimes", tag_ids=["et_a"]), actor="a")


def test_deleting_a_rule_keeps_the_tags_it_applied(db_session: Session) -> None:
    _tags(db_session, "et_a")
    rule = _rule(db_session, RuleTrigger.ON_ADD, ["et_a"])
    f = _friend(db_session)
    rules.on_friend_added(db_session, f, make.at(0))
    rules.delete_rule(db_session, rule)
    assert _hits(db_session) == 0 and _tag_ids(f) == ["et_a"]


def test_the_demo_rules_use_the_demo_tags_once(db_session: Session) -> None:
    from scrm.tagrules.demo import seed_demo_rules

    for name in ("A类", "B类", "C类"):
        db_session.add(Tag(tag_id=f"et_{name}", name=name))
    db_session.flush()
    made = seed_demo_rules(db_session)
    assert sorted(r.trigger.value for r in made) == ["group_join", "keyword", "lead_change", "on_add"]
    assert seed_demo_rules(db_session) == []
