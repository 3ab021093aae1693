"""The keyword hits' set-based apply (tagrules.apply_keyword_hits → friends.add_tags_in_bulk), on
both databases: for a batch of many friendships it skips what apply_rules skips — a tag held, a
tag removed by hand, a rule's earlier hit, pending and deleted tags, friendships no longer
open — and writes one mark_tag per friendship with its corp tags only, one timeline entry per
friendship changed and one hit per (rule, friendship, tag)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scrm.chat.keywords import KeywordHit
from scrm.friends import service as friends
from scrm.friends.models import FriendshipStatus
from scrm.outbox.models import OutboxCommand
from scrm.tagrules import service as rules
from scrm.tagrules.models import RuleTrigger, TagRuleHit
from scrm.tags.models import Tag, TagSource
from scrm.timeline.models import Activity, ActivityKind
from tests import factories as make


def _tags(session: Session) -> None:
    for tag_id in ("et_a", "et_b", "local-c", "pending-d", "et_gone"):
        session.add(
            Tag(tag_id=tag_id, name=tag_id, is_local=tag_id.startswith("local-"), is_deleted=tag_id == "et_gone")
        )
    session.flush()


def _friend(session: Session, ext: str, userid: str = "zhangsan"):
    return friends.record_add(session, make.add_event(ext, userid), make.detail(ext, userid))


def _rule(session: Session, tag_ids: list[str], keyword: str):
    # pending and deleted tags cannot be chosen for a rule; a rule may hold them once they change.
    rule = rules.create_rule(
        session,
        rules.RuleFields(name=keyword, trigger=RuleTrigger.KEYWORD, tag_ids=["et_a"], keywords=[keyword]),
        actor="admin",
    )
    rule.tag_ids = tag_ids
    session.flush()
    return rule


def _mark_tags(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "mark_tag").order_by(OutboxCommand.id))
    return [c.payload for c in rows]


def _tag_ids(session: Session, friendship) -> list[str]:
    session.refresh(friendship)
    return sorted(link.tag_id for link in friendship.tags)


def test_a_batch_of_hits_follows_the_per_friendship_rules(db_session: Session) -> None:
    _tags(db_session)
    one = _rule(db_session, ["et_a", "local-c", "pending-d", "et_gone"], "多少钱")
    two = _rule(db_session, ["et_a", "et_b"], "试用")
    fresh, holder, refuser, tagged_before, gone = (_friend(db_session, f"wm{i}") for i in range(5))
    # holder has et_a by hand; refuser took et_b off by hand; tagged_before got et_b from rule two
    # and then lost it (not by hand); gone deleted the rep.
    friends.change_tags(db_session, holder, ["et_a"], [], actor="zhangsan")
    friends.change_tags(db_session, refuser, ["et_b"], [], actor="zhangsan")
    friends.change_tags(db_session, refuser, [], ["et_b"], actor="zhangsan")
    assert rules.apply_keyword_hits(db_session, [KeywordHit(two.id, tagged_before.id, "m0", make.at(0))]) == 2
    friends.change_tags(db_session, tagged_before, [], ["et_b"], actor="zhangsan", source=TagSource.RULE)
    friends.record_removal(
        db_session, userid="zhangsan", external_userid="wm4", by="customer", occurred_at=make.at(1), inbox_id=None
    )
    sent = len(_mark_tags(db_session))
    hits_before = len(db_session.scalars(select(TagRuleHit)).all())

    hits = [
        KeywordHit(rule.id, f.id, msgid, make.at(10))
        for f in (fresh, holder, refuser, tagged_before, gone)
        for rule, msgid in ((two, f"m2-{f.id}"), (one, f"m1-{f.id}"), (two, f"m3-{f.id}"))
    ]
    added = rules.apply_keyword_hits(db_session, hits)

    assert _tag_ids(db_session, fresh) == ["et_a", "et_b", "local-c"]
    assert _tag_ids(db_session, holder) == ["et_a", "et_b", "local-c"]
    assert _tag_ids(db_session, refuser) == ["et_a", "local-c"]  # et_b was removed by hand
    assert _tag_ids(db_session, tagged_before) == ["et_a", "local-c"]  # rule two hit et_b once
    assert _tag_ids(db_session, gone) == []
    assert added == 3 + 2 + 2 + 1
    # One mark_tag per friendship, corp tags only, in the payload shape change_tags writes.
    assert _mark_tags(db_session)[sent:] == [
        {"userid": "zhangsan", "external_userid": "wm0", "add_tag": ["et_a", "et_b"]},
        {"userid": "zhangsan", "external_userid": "wm1", "add_tag": ["et_b"]},
        {"userid": "zhangsan", "external_userid": "wm2", "add_tag": ["et_a"]},
    ]
    # Hits: rule one on et_a and local-c, rule two on et_a / et_b, each (rule, friend, tag) once,
    # caused by the first matching rule's message.
    new = db_session.scalars(select(TagRuleHit).order_by(TagRuleHit.id)).all()[hits_before:]
    assert sorted((h.friendship_id, h.rule_id, h.tag_id) for h in new) == sorted(
        [
            (fresh.id, one.id, "et_a"),
            (fresh.id, two.id, "et_a"),
            (fresh.id, two.id, "et_b"),
            (fresh.id, one.id, "local-c"),
            (holder.id, two.id, "et_b"),
            (holder.id, one.id, "local-c"),
            (refuser.id, one.id, "et_a"),
            (refuser.id, two.id, "et_a"),
            (refuser.id, one.id, "local-c"),
            (tagged_before.id, one.id, "local-c"),
        ]
    )
    assert {h.cause for h in new if h.friendship_id == fresh.id} == {f"msg:m1-{fresh.id}"}
    edits = db_session.scalars(
        select(Activity).where(Activity.kind == ActivityKind.FRIEND_EDITED, Activity.external_userid == "wm0")
    ).all()
    assert [e.data for e in edits] == [
        {"add_tag": ["et_a", "local-c", "et_b"], "remove_tag": [], "by": f"rule:{one.id},{two.id}", "source": "rule"}
    ]
    # Again: nothing changes, nothing is queued.
    assert rules.apply_keyword_hits(db_session, hits) == 0
    assert len(_mark_tags(db_session)) == sent + 3


def test_local_tags_only_send_nothing_to_wecom_and_closed_friendships_are_left(db_session: Session) -> None:
    _tags(db_session)
    rule = _rule(db_session, ["local-c"], "多少钱")
    a, b = _friend(db_session, "wm1"), _friend(db_session, "wm2", "lisi")
    b.status = FriendshipStatus.REMOVED_BY_REP
    db_session.flush()
    hits = [KeywordHit(rule.id, a.id, "m1", make.at(1)), KeywordHit(rule.id, b.id, "m2", make.at(1))]
    assert rules.apply_keyword_hits(db_session, hits) == 1
    assert _tag_ids(db_session, a) == ["local-c"] and _tag_ids(db_session, b) == []
    assert _mark_tags(db_session) == []
    assert [link.source for link in a.tags] == [TagSource.RULE]
