"""The one add path and event-time ordering, at the service level (each test rolls back)."""

from __future__ import annotations

from sqlalchemy import select

from scrm.friends import service as friends
from scrm.friends.models import FriendshipStatus
from scrm.leads.models import Lead
from scrm.outbox.models import OutboxCommand
from scrm.people.models import ExternalContact
from scrm.tags.models import TagSource
from tests import factories as make


def _remove(session, ext, *, when, inbox_id=None, by="customer"):
    return friends.record_removal(
        session, userid="zhangsan", external_userid=ext, by=by, occurred_at=make.at(when), inbox_id=inbox_id
    )


def test_an_add_replayed_after_a_delete_does_not_bring_the_friend_back(db_session):
    friends.record_add(db_session, make.add_event("wm1", when=0), make.detail("wm1"))
    _remove(db_session, "wm1", when=60)
    replayed = friends.record_add(db_session, make.add_event("wm1", when=0), make.detail("wm1", read=120))
    assert replayed.status is FriendshipStatus.REMOVED_BY_CUSTOMER and replayed.status_at == make.at(60)


def test_a_delete_that_arrives_before_its_add_keeps_the_late_add_closed(db_session):
    _remove(db_session, "wm2", when=60, by="rep")
    late = friends.record_add(db_session, make.add_event("wm2", when=0), make.detail("wm2"))
    assert late.status is FriendshipStatus.REMOVED_BY_REP


def test_a_re_add_after_a_delete_reopens_the_friendship(db_session):
    friends.record_add(db_session, make.add_event("wm3", when=0), make.detail("wm3"))
    _remove(db_session, "wm3", when=60)
    again = friends.record_add(db_session, make.add_event("wm3", when=120), make.detail("wm3", read=120))
    assert again.status is FriendshipStatus.ACTIVE and again.removed_at is None


def test_of_two_events_in_one_second_the_later_stored_wins(db_session):
    friends.record_add(db_session, make.add_event("wm4", when=0, inbox_id=10), make.detail("wm4"))
    _remove(db_session, "wm4", when=0, inbox_id=11, by="rep")
    replay = friends.record_add(db_session, make.add_event("wm4", when=0, inbox_id=10), None)
    assert replay.status is FriendshipStatus.REMOVED_BY_REP


def test_an_older_read_does_not_overwrite_a_newer_remark(db_session):
    f = friends.record_add(db_session, make.add_event("wm5"), make.detail("wm5", read=0, remark="旧"))
    friends.apply_detail(db_session, f, make.detail("wm5", read=30, remark="新"))
    friends.apply_detail(db_session, f, make.detail("wm5", read=10, remark="过时"))
    assert f.remark == "新"


def test_without_detail_the_friend_is_recorded_unlinked_and_linked_by_the_detail(db_session):
    make.staff(db_session)
    channel = make.channel(db_session, auto_tag_ids=["t_expo"])
    f = friends.record_add(db_session, make.add_event("wm6", state=channel.state), None)
    person = db_session.get(ExternalContact, f.external_contact_id)
    assert f.status is FriendshipStatus.ACTIVE and f.channel_id == channel.id
    assert f.awaiting_detail_at is not None and person.lead_id is None
    assert [(t.tag_id, t.source) for t in f.tags] == [("t_expo", TagSource.CHANNEL)]  # from the event alone
    link = friends.apply_detail(db_session, f, make.detail("wm6", name="何平", mobiles=["138 0013 8000"]))
    assert link.how == "new" and f.awaiting_detail_at is None
    lead = db_session.get(Lead, person.lead_id)
    assert lead.phone_e164 == "+8613800138000" and lead.channel_id == channel.id and person.name == "何平"


def test_a_detail_read_later_matches_the_lead_we_already_had(db_session):
    known = Lead(name="老客户", phone_e164="+8613900139000", owner_userid="lisi")
    db_session.add(known)
    db_session.flush()
    f = friends.record_add(db_session, make.add_event("wm7"), None)
    link = friends.apply_detail(db_session, f, make.detail("wm7", mobiles=["+86 139 0013 9000"]))
    assert link.how == "phone" and link.lead_id == known.id
    assert db_session.scalar(select(Lead.id).where(Lead.id != known.id)) is None  # no duplicate lead


def test_one_person_added_by_two_reps_is_one_lead(db_session):
    for userid in ("zhangsan", "lisi"):
        friends.record_add(
            db_session, make.add_event("wm8", userid), make.detail("wm8", userid, unionid="union-8")
        )
    assert len(db_session.scalars(select(Lead)).all()) == 1


def test_a_disabled_channel_attributes_but_adds_no_tags(db_session):
    channel = make.channel(db_session, auto_tag_ids=["t_web"], is_disabled=True)
    f = friends.record_add(db_session, make.add_event("wm9", state=channel.state), make.detail("wm9"))
    assert f.channel_id == channel.id and f.tags == []
    assert db_session.scalar(select(OutboxCommand.id).where(OutboxCommand.kind == "mark_tag")) is None


def test_wecom_tags_replace_ours_and_channel_tags_are_added_to_them(db_session):
    channel = make.channel(db_session, auto_tag_ids=["t_expo"])
    f = friends.record_add(
        db_session, make.add_event("wm10", state=channel.state), make.detail("wm10", tag_ids=["t_vip"])
    )
    assert sorted((t.tag_id, t.source) for t in f.tags) == [
        ("t_expo", TagSource.CHANNEL),
        ("t_vip", TagSource.WECOM),
    ]
    marks = db_session.scalars(select(OutboxCommand).where(OutboxCommand.kind == "mark_tag")).all()
    assert [m.payload["add_tag"] for m in marks] == [["t_expo"]]
