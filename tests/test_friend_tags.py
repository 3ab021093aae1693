"""Tagging friends at the service level: change_tags (corp vs local tags, one mark_tag per rep
relationship, repeats queue nothing), manual removals that rules respect, and edits in WeCom."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from scrm.errors import InvalidInput
from scrm.friends import service as friends
from scrm.outbox.models import OutboxCommand
from scrm.tags import queries as tag_queries
from scrm.tags.models import FriendshipTagRemoval, Tag, TagSource
from tests import factories as make


def _tags(session, *ids: str, deleted: tuple[str, ...] = ()) -> None:
    for tag_id in (*ids, *deleted):
        session.add(
            Tag(tag_id=tag_id, name=tag_id, is_deleted=tag_id in deleted, is_local=tag_id.startswith("local-"))
        )
    session.flush()


def _friend(session, ext: str = "wm1", userid: str = "zhangsan", tag_ids: list[str] | None = None):
    return friends.record_add(
        session, make.add_event(ext, userid), make.detail(ext, userid, tag_ids=tag_ids or [])
    )


def _mark_tags(session) -> list[dict]:
    return [c.payload for c in session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "mark_tag"))]


def test_corp_tags_go_to_wecom_in_one_mark_tag_and_local_tags_stay_local(db_session):
    _tags(db_session, "et_a", "et_b", "local-vip")
    f = _friend(db_session, tag_ids=["et_b"])
    added, removed = friends.change_tags(
        db_session, f, ["et_a", "local-vip"], ["et_b"], actor="zhangsan"
    )
    assert (added, removed) == (["et_a", "local-vip"], ["et_b"])
    assert sorted(link.tag_id for link in f.tags) == ["et_a", "local-vip"]
    assert _mark_tags(db_session) == [
        {"userid": "zhangsan", "external_userid": "wm1", "add_tag": ["et_a"], "remove_tag": ["et_b"]}
    ]
    # Only a local tag changed: nothing for WeCom.
    friends.change_tags(db_session, f, [], ["local-vip"], actor="zhangsan")
    assert len(_mark_tags(db_session)) == 1


def test_a_repeated_change_queues_nothing_and_a_retried_request_key_queues_once(db_session):
    _tags(db_session, "et_a", "et_b")
    f = _friend(db_session)
    assert friends.change_tags(db_session, f, ["et_a"], [], actor="zhangsan", request_key="k1") == (["et_a"], [])
    assert friends.change_tags(db_session, f, ["et_a"], [], actor="zhangsan", request_key="k1") == ([], [])
    assert len(_mark_tags(db_session)) == 1
    # The same key on a relationship whose state went back (a lost answer, retried): still one row.
    friends.change_tags(db_session, f, [], ["et_a"], actor="zhangsan")
    friends.change_tags(db_session, f, ["et_a"], [], actor="zhangsan", request_key="k1")
    assert len(_mark_tags(db_session)) == 2  # the removal, and the first add only


def test_one_mark_tag_per_rep_relationship(db_session):
    _tags(db_session, "et_a")
    one = _friend(db_session, "wm1", "zhangsan")
    two = _friend(db_session, "wm1", "lisi")
    for f in (one, two):
        friends.change_tags(db_session, f, ["et_a"], [], actor="admin")
    assert sorted((p["userid"], p["add_tag"][0]) for p in _mark_tags(db_session)) == [
        ("lisi", "et_a"),
        ("zhangsan", "et_a"),
    ]


def test_unknown_deleted_and_unconfirmed_tags_are_refused_by_name(db_session):
    _tags(db_session, "et_a", "pending-1", deleted=("et_gone",))
    f = _friend(db_session)
    with pytest.raises(InvalidInput) as caught:
        friends.change_tags(db_session, f, ["et_a", "et_nope", "et_gone", "pending-1"], [], actor="zhangsan")
    message = caught.value.message if hasattr(caught.value, "message") else str(caught.value)
    assert "et_nope" in message and "et_gone" in message and "pending-1" in message
    assert f.tags == [] and _mark_tags(db_session) == []
    with pytest.raises(InvalidInput):
        friends.change_tags(db_session, f, ["et_a"], ["et_a"], actor="zhangsan")


def test_a_manual_removal_is_recorded_and_a_manual_re_add_clears_it(db_session):
    _tags(db_session, "et_a", "local-vip")
    f = _friend(db_session, tag_ids=["et_a"])
    friends.change_tags(db_session, f, ["local-vip"], [], actor="zhangsan")
    friends.change_tags(db_session, f, [], ["et_a", "local-vip"], actor="zhangsan")
    assert tag_queries.removed_by_hand(db_session, [f.id], ["et_a", "local-vip", "et_x"]) == {
        (f.id, "et_a"),
        (f.id, "local-vip"),
    }
    removal = db_session.scalar(select(FriendshipTagRemoval).where(FriendshipTagRemoval.tag_id == "et_a"))
    assert removal.removed_by == "zhangsan"
    # A rule does not put it back…
    assert friends.change_tags(db_session, f, ["et_a"], [], actor="rule:1", source=TagSource.RULE) == ([], [])
    # …a person does, and then the removal is gone.
    friends.change_tags(db_session, f, ["et_a"], [], actor="zhangsan")
    assert tag_queries.removed_by_hand(db_session, [f.id], ["et_a"]) == set()


def test_set_tags_goes_through_change_tags(db_session):
    _tags(db_session, "et_a", "et_b")
    f = _friend(db_session, tag_ids=["et_a"])
    assert friends.set_tags(db_session, f, ["et_b"], actor="zhangsan") == (["et_b"], ["et_a"])
    assert tag_queries.removed_by_hand(db_session, [f.id], ["et_a"]) == {(f.id, "et_a")}


def test_an_edit_in_wecom_that_drops_a_tag_is_a_removal_but_the_first_read_is_not(db_session):
    _tags(db_session, "et_a", "et_b", "local-vip")
    f = _friend(db_session, tag_ids=["et_a", "et_b"])
    assert tag_queries.removed_by_hand(db_session, [f.id], ["et_a", "et_b"]) == set()
    friends.change_tags(db_session, f, ["local-vip"], [], actor="zhangsan")
    friends.record_edit(
        db_session,
        userid="zhangsan",
        external_userid="wm1",
        detail=make.detail("wm1", read=60, tag_ids=["et_a"]),
        occurred_at=make.at(60),
        inbox_id=None,
    )
    assert sorted(link.tag_id for link in f.tags) == ["et_a", "local-vip"]  # the local tag stays
    assert tag_queries.removed_by_hand(db_session, [f.id], ["et_a", "et_b"]) == {(f.id, "et_b")}
    removal = db_session.scalar(select(FriendshipTagRemoval).where(FriendshipTagRemoval.tag_id == "et_b"))
    assert removal.removed_by == "wecom:zhangsan"
    # The rep puts it back in WeCom: the removal is cleared.
    friends.record_edit(
        db_session,
        userid="zhangsan",
        external_userid="wm1",
        detail=make.detail("wm1", read=120, tag_ids=["et_a", "et_b"]),
        occurred_at=make.at(120),
        inbox_id=None,
    )
    assert tag_queries.removed_by_hand(db_session, [f.id], ["et_b"]) == set()


def test_removed_by_hand_answers_large_sets_in_chunks(db_session):
    _tags(db_session, "et_a")
    f = _friend(db_session, tag_ids=["et_a"])
    friends.change_tags(db_session, f, [], ["et_a"], actor="zhangsan")
    assert tag_queries.removed_by_hand(db_session, range(1, 2000), ["et_a"]) == {(f.id, "et_a")}
    assert tag_queries.removed_by_hand(db_session, [], ["et_a"]) == set()


def test_an_edit_read_before_our_mark_tag_is_sent_is_not_a_removal(db_session):
    _tags(db_session, "et_a", "et_b")
    f = _friend(db_session, tag_ids=["et_a"])
    friends.change_tags(db_session, f, ["et_b"], ["et_a"], actor="zhangsan")  # queued, not sent
    # The rep edits the remark in WeCom before the outbox runs: WeCom still lists et_a, not et_b.
    friends.record_edit(
        db_session,
        userid="zhangsan",
        external_userid="wm1",
        detail=make.detail("wm1", read=60, tag_ids=["et_a"]),
        occurred_at=make.at(60),
        inbox_id=None,
    )
    assert [link.tag_id for link in f.tags] == ["et_b"]
    assert tag_queries.removed_by_hand(db_session, [f.id], ["et_b"]) == set()
    assert tag_queries.removed_by_hand(db_session, [f.id], ["et_a"]) == {(f.id, "et_a")}  # ours, by hand


def test_the_demo_seed_bulk_tags_the_newest_friends_with_a_corp_and_a_local_tag(db_session):
    from scrm.friends import bulk

    assert bulk.seed_demo(db_session) is None  # nothing to tag yet
    _tags(db_session, "et_a", "local-vip", deleted=("et_gone",))
    made = [_friend(db_session, f"wm{i}") for i in range(3)]
    bulk_id = bulk.seed_demo(db_session, limit=2)
    assert bulk_id is not None and bulk.progress(db_session, bulk_id).total == 2  # corp tag: 2 mark_tags
    tagged = [sorted(link.tag_id for link in f.tags) for f in made]
    assert sorted(tagged) == [[], ["et_a", "local-vip"], ["et_a", "local-vip"]]
