"""Customer group memberships over time, on both databases: joins from groupchat/get's join_time
and from add_member events, leaves with their QuitScene, rejoins counted as joins, lagging
listings and replayed events that must not rewrite what we know, MemChangeList as one string, and
local tags on groups (a corp tag is refused)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from scrm.errors import InvalidInput
from scrm.groups import queries, service
from scrm.groups.models import CustomerGroup, CustomerGroupJoin, CustomerGroupMember, GroupMemberType
from scrm.tags.models import Tag, TagGroup
from tests.factories import at

CHAT = "wrGroupChat0001"
EXT = "wmCustomer000001"


def listing(*members: tuple[str, int, float], owner: str = "zhangsan") -> dict[str, Any]:
    """groupchat/get's group_chat with (userid, type, join second) members."""
    return {
        "chat_id": CHAT,
        "name": "展会客户群",
        "owner": owner,
        "create_time": int(at(0).timestamp()),
        "member_list": [
            {"userid": u, "type": t, "join_time": int(at(s).timestamp()), "join_scene": 3}
            for u, t, s in members
        ],
        "member_version": "v",
    }


def joins(db, member_id: str = EXT) -> list[CustomerGroupJoin]:
    return list(
        db.scalars(
            select(CustomerGroupJoin)
            .where(CustomerGroupJoin.member_id == member_id)
            .order_by(CustomerGroupJoin.joined_at)
        )
    )


def member(db, member_id: str = EXT) -> CustomerGroupMember:
    return db.scalars(select(CustomerGroupMember).where(CustomerGroupMember.member_id == member_id)).one()


OWNER = ("zhangsan", 1, 0)


def test_a_listing_records_each_members_join_time_and_scene(db_session) -> None:
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 60)), seen_at=at(100))
    (row,) = joins(db_session)
    assert row.joined_at == at(60) and row.has_join_time and row.join_scene == 3
    assert row.member_type is GroupMemberType.EXTERNAL and row.left_at is None
    assert member(db_session).joined_at == at(60)
    assert joins(db_session, "zhangsan")[0].member_type is GroupMemberType.STAFF


def test_leave_then_rejoin_is_two_memberships_and_two_joins(db_session) -> None:
    group = service.upsert_group(db_session, listing(OWNER), seen_at=at(10))
    # The add_member event; the listing read for it already shows them (no lag).
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 60)), seen_at=at(61))
    assert service.record_membership_change(db_session, group, "add_member", [EXT], "3", at(60)) == [EXT]
    service.upsert_group(db_session, listing(OWNER), seen_at=at(301))
    service.record_membership_change(db_session, group, "del_member", EXT, "0", at(300))  # one Item: a string
    first = joins(db_session)
    assert [(r.joined_at, r.left_at, r.quit_scene, r.has_leave_event) for r in first] == [
        (at(60), at(300), 0, True)
    ]
    assert first[0].event_join_scene == 3 and first[0].join_scene == 3  # each scale in its own column
    # Back within minutes: a second membership, not the first one reopened.
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 420)), seen_at=at(421))
    service.record_membership_change(db_session, group, "add_member", [EXT], "0", at(420))
    rows = joins(db_session)
    assert [(r.joined_at, r.left_at) for r in rows] == [(at(60), at(300)), (at(420), None)]
    assert rows[1].event_join_scene == 0
    m = member(db_session)
    assert m.joined_at == at(420) and m.left_at is None and m.quit_scene is None
    counts = queries.counts(db_session, [group.id], at(500))[group.id]
    assert (counts.customers, counts.staff, counts.joins_7d, counts.joins_30d) == (1, 1, 2, 2)


def test_an_event_before_the_listing_catches_up_is_refined_by_it(db_session) -> None:
    group = service.upsert_group(db_session, listing(OWNER), seen_at=at(10))
    # The detail read for the event lags: it does not show the new member yet.
    service.upsert_group(db_session, listing(OWNER), seen_at=at(62))
    service.record_membership_change(db_session, group, "add_member", [EXT], "3", at(62))
    (row,) = joins(db_session)
    assert row.joined_at == at(62) and not row.has_join_time
    # The next listing has WeCom's join time two seconds earlier: the same membership.
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 60)), seen_at=at(200))
    (row,) = joins(db_session)
    assert row.joined_at == at(60) and row.has_join_time and row.join_scene == 3 and row.event_join_scene == 3


def test_a_lagging_listing_never_undoes_a_leave_event_but_a_sync_gap_heals(db_session) -> None:
    group = service.upsert_group(db_session, listing(OWNER, (EXT, 2, 60)), seen_at=at(100))
    # del_member arrives; the detail read for it still lists the customer (lag).
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 60)), seen_at=at(301))
    service.record_membership_change(db_session, group, "del_member", [EXT], "1", at(300))
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 60)), seen_at=at(400))  # still lagging
    (row,) = joins(db_session)
    assert row.left_at == at(300) and row.quit_scene == 1
    assert member(db_session).left_at == at(300)

    other = "wmCustomer000002"
    service.upsert_group(db_session, listing(OWNER, (other, 2, 500)), seen_at=at(510))
    # A listing that lags the other way leaves them out: closed at the sync, then reopened.
    service.upsert_group(db_session, listing(OWNER), seen_at=at(600))
    assert joins(db_session, other)[0].left_at == at(600)
    service.upsert_group(db_session, listing(OWNER, (other, 2, 500)), seen_at=at(700))
    (row,) = joins(db_session, other)
    assert row.left_at is None and member(db_session, other).left_at is None


def test_a_missed_leave_and_rejoin_seen_only_by_reconcile(db_session) -> None:
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 60)), seen_at=at(100))
    # No events came; the nightly listing shows a later join time: they left and came back.
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 5000)), seen_at=at(9000))
    rows = joins(db_session)
    assert [(r.joined_at, r.left_at) for r in rows] == [(at(60), at(5000)), (at(5000), None)]
    # The same listing again changes nothing.
    service.upsert_group(db_session, listing(OWNER, (EXT, 2, 5000)), seen_at=at(9100))
    assert len(joins(db_session)) == 2


def test_replayed_events_change_nothing(db_session) -> None:
    group = service.upsert_group(db_session, listing(OWNER), seen_at=at(10))
    service.record_membership_change(db_session, group, "add_member", [EXT], "3", at(60))
    service.record_membership_change(db_session, group, "del_member", [EXT], "0", at(300))
    service.record_membership_change(db_session, group, "add_member", [EXT], "0", at(900))
    before = [(r.joined_at, r.left_at, r.quit_scene) for r in joins(db_session)]
    assert before == [(at(60), at(300), 0), (at(900), None, None)]
    service.record_membership_change(db_session, group, "del_member", [EXT], "0", at(300))
    service.record_membership_change(db_session, group, "add_member", [EXT], "3", at(60))
    assert [(r.joined_at, r.left_at, r.quit_scene) for r in joins(db_session)] == before


def test_dismissed_group_keeps_its_time_and_daily_joins_count_customers(db_session) -> None:
    group = service.upsert_group(db_session, listing(OWNER, (EXT, 2, 60)), seen_at=at(100))
    service.mark_dismissed(db_session, CHAT, at(86400 * 3))
    assert group.is_dismissed and group.dismissed_at == at(86400 * 3)
    days = queries.daily_joins(db_session, group.id, at(86400 * 3), days=7)
    assert len(days) == 7 and sum(j for _d, j, _l in days) == 1
    assert queries.list_groups(db_session, queries.GroupFilter(visible=None)) == []
    assert queries.list_groups(db_session, queries.GroupFilter(visible=None, dismissed=True)) == [group]


def test_visibility_owner_or_staff_member(db_session) -> None:
    service.upsert_group(db_session, listing(OWNER, ("lisi", 1, 5), (EXT, 2, 60)), seen_at=at(100))
    group = db_session.scalars(select(CustomerGroup)).one()
    for visible, seen in [
        (frozenset({"zhangsan"}), True),
        (frozenset({"lisi"}), True),
        (frozenset({"wangwu"}), False),
        (None, True),
    ]:
        assert queries.may_see(db_session, group, visible) is seen
        assert (queries.list_groups(db_session, queries.GroupFilter(visible=visible)) == [group]) is seen


def _tag(db, tag_id: str, *, local: bool) -> None:
    group = TagGroup(group_id=("local-g" if local else "etGroup") + tag_id, name="群标签", is_local=local)
    db.add(group)
    db.flush()
    db.add(Tag(tag_id=tag_id, name="高意向群" if local else "展会", tag_group_id=group.id, is_local=local))
    db.flush()


def test_groups_take_local_tags_only(db_session) -> None:
    group = service.upsert_group(db_session, listing(OWNER), seen_at=at(100))
    _tag(db_session, "local-hot", local=True)
    _tag(db_session, "etCorpTag01", local=False)
    assert service.change_tags(db_session, group, add=["local-hot", "local-hot"], actor="wangwu") == [
        "local-hot"
    ]
    with pytest.raises(InvalidInput, match="local tags only"):
        service.change_tags(db_session, group, add=["etCorpTag01"], actor="wangwu")
    with pytest.raises(InvalidInput, match="no tag"):
        service.change_tags(db_session, group, add=["local-nope"], actor="wangwu")
    tagged = queries.list_groups(db_session, queries.GroupFilter(visible=None, tag_id="local-hot"))
    assert tagged == [group]
    assert service.change_tags(db_session, group, remove=["local-hot"], actor="wangwu") == []
    assert queries.list_groups(db_session, queries.GroupFilter(visible=None, tag_id="local-hot")) == []


def test_events_handled_after_the_listing_moved_on(db_session) -> None:
    """Join, leave and rejoin happened before we handled the first event: every listing we read
    already shows the rejoin. Each event still places its own membership."""
    now = listing(OWNER, (EXT, 2, 5000))
    group = service.upsert_group(db_session, now, seen_at=at(6000))
    service.record_membership_change(db_session, group, "add_member", [EXT], "0", at(60))
    service.upsert_group(db_session, now, seen_at=at(6001))
    service.record_membership_change(db_session, group, "del_member", [EXT], "0", at(300))
    service.upsert_group(db_session, now, seen_at=at(6002))
    service.record_membership_change(db_session, group, "add_member", [EXT], "3", at(5000))
    rows = joins(db_session)
    assert [(r.joined_at, r.left_at, r.quit_scene, r.event_join_scene) for r in rows] == [
        (at(60), at(300), 0, 0),
        (at(5000), None, None, 3),
    ]
    assert member(db_session).joined_at == at(5000) and member(db_session).left_at is None


def test_mem_change_list_with_one_item_parses_to_a_list() -> None:
    """REFERENCE §2.2's gotcha: xmltodict makes one <Item> a string; our parser keeps a list."""
    from scrm.wecom.parse import parse_envelope

    xml = (
        "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        "<CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wrX]]></ChatId>"
        "<ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[del_member]]></UpdateDetail>"
        "<QuitScene>1</QuitScene><MemChangeCnt>1</MemChangeCnt>"
        "<MemChangeList><Item>wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA</Item></MemChangeList></xml>"
    )
    assert parse_envelope(xml).items["MemChangeList"] == ["wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA"]
    two = xml.replace("</Item></MemChangeList>", "</Item><Item>lisi</Item></MemChangeList>")
    assert parse_envelope(two).items["MemChangeList"] == ["wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA", "lisi"]
    empty = parse_envelope(xml.replace("<Item>wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA</Item>", ""))
    assert empty.items.get("MemChangeList", []) == []


def test_members_known_from_the_event_alone_get_their_type(db_session) -> None:
    group = service.upsert_group(db_session, listing(OWNER), seen_at=at(10))
    customers = service.record_membership_change(db_session, group, "add_member", ["lisi", EXT], "0", at(60))
    assert customers == [EXT]  # the timeline and the group-join rules are for customers
    assert member(db_session, "lisi").member_type is GroupMemberType.STAFF
    assert member(db_session).member_type is GroupMemberType.EXTERNAL and member(db_session).joined_at == at(
        60
    )
