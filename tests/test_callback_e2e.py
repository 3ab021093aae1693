"""End to end: the sandbox driver posts signed, encrypted callbacks over HTTP for every change
type; scrm verifies, stores, acknowledges and dispatches; the tests assert the rows."""

from __future__ import annotations

import time

import requests
from sqlalchemy import select
from wechatpy.work.crypto import WeChatCrypto

from scrm.schema import (
    Activity,
    ActivityKind,
    Channel,
    ChannelStatus,
    Contact,
    Customer,
    CustomerGroup,
    CustomerGroupMember,
    ExternalContact,
    Friendship,
    FriendshipStatus,
    FriendshipTag,
    InboxEvent,
    InboxStatus,
    Lead,
    LeadStatus,
    OutboxCommand,
    OutboxStatus,
    Staff,
    Tag,
    TagGroup,
    TagSource,
)
from scrm.timeutil import frozen_clock, utcnow
from tests.helpers import count, create_channel


def friendship(scrm, external_userid, userid):
    with scrm.session() as session:
        return session.scalar(
            select(Friendship).where(
                Friendship.external_userid == external_userid, Friendship.userid == userid
            )
        )


def test_url_verification_returns_plain_echo(scrm):
    assert scrm.driver.verify_url() != ""
    args = scrm.driver.crypto.encrypt_echostr("1288432023552776189")
    response = requests.get(scrm.callback_url, params=args, timeout=5)
    assert response.status_code == 200
    assert response.text == "1288432023552776189"
    assert response.headers["Content-Type"].startswith("text/plain")


def test_channel_scan_records_friend_lead_customer_tags_and_welcome(scrm):
    channel = create_channel(scrm, "2026 展会", ["zhangsan"], tag_names=["展会"], welcome_text="您好，欢迎！")
    assert channel.status is ChannelStatus.ACTIVE and channel.config_id and channel.qr_code
    ext = scrm.driver.new_customer("王小明", unionid="union-wxm")
    delivery = scrm.driver.scan_channel(channel.state, ext, remark_mobiles=["138-0013-8000"])
    assert delivery.status == 200 and delivery.response_text == ""
    scrm.settle()

    f = friendship(scrm, ext, "zhangsan")
    assert f.status is FriendshipStatus.ACTIVE
    assert f.channel_id == channel.id and f.state == channel.state and f.add_way == 1
    assert f.remark_mobiles == ["138-0013-8000"]
    with scrm.session() as session:
        person = session.scalar(select(ExternalContact).where(ExternalContact.external_userid == ext))
        assert person.name == "王小明" and person.unionid == "union-wxm"
        lead = session.get(Lead, person.lead_id)
        assert lead.channel_id == channel.id and lead.phone_e164 == "+8613800138000"
        contact = session.get(Contact, person.contact_id)
        assert contact.customer_id == lead.customer_id
        assert session.get(Customer, contact.customer_id).name == "王小明"
        tag_id = session.scalar(select(Tag.tag_id).where(Tag.name == "展会"))
        links = session.scalars(select(FriendshipTag).where(FriendshipTag.friendship_id == f.id)).all()
        assert [(link.tag_id, link.source) for link in links] == [(tag_id, TagSource.CHANNEL)]
        kinds = set(session.scalars(select(Activity.kind).where(Activity.external_userid == ext)))
        assert {ActivityKind.FRIEND_ADDED, ActivityKind.LEAD_CREATED} <= kinds
        assert lead.status is LeadStatus.CONTACTED and lead.owner_userid == "zhangsan"
        added = session.scalars(
            select(Activity).where(
                Activity.external_userid == ext, Activity.kind == ActivityKind.FRIEND_ADDED
            )
        ).one()
        assert (added.lead_id, added.customer_id) == (lead.id, contact.customer_id)
        assert added.data["linked_by"] == "new" and added.summary.endswith("via 2026 展会")
    welcomes = [m for m in scrm.sandbox.state.welcome_messages if m.get("external_userid") == ext]
    assert len(welcomes) == 1 and welcomes[0]["text"] == "您好，欢迎！"
    marks = [m for m in scrm.sandbox.state.mark_tags if m.get("external_userid") == ext]
    assert len(marks) == 1 and marks[0]["add_tag"] == [tag_id]
    # The sandbox applied the channel tag too: WeCom's picture and ours agree.
    assert tag_id in scrm.sandbox.state.relation(ext, "zhangsan")["tag_ids"]


def test_same_person_added_by_three_reps_is_one_lead_three_friendships(scrm):
    scrm.sandbox.state.upsert_staff("zhaoliu", "赵六")
    ext = scrm.driver.new_customer("李娜")
    for userid in ("zhangsan", "lisi", "zhaoliu"):
        assert scrm.driver.add_customer(userid, ext).status == 200
    scrm.settle()
    assert count(scrm, Friendship, Friendship.external_userid == ext) == 3
    assert count(scrm, Lead) == 1
    assert count(scrm, Customer) == 1
    assert count(scrm, ExternalContact) == 1


def test_link_by_unionid_then_phone_then_state_token(scrm):
    from scrm.channels.service import lead_state
    from scrm.db import transaction

    channel = create_channel(scrm, "官网", ["lisi"])
    with transaction(scrm.ctx.session_factory) as session:
        by_union = Lead(name="表单线索", unionid="u-form", source="form")
        by_phone = Lead(name="导入线索", phone_e164="+8613900139000", source="import")
        by_token = Lead(name="活动线索", token="tok12345", source="event")
        session.add_all([by_union, by_phone, by_token])
        session.flush()
        ids = (by_union.id, by_phone.id, by_token.id)
        token_state = lead_state(channel, "tok12345")
    a = scrm.driver.new_customer("甲", unionid="u-form")
    b = scrm.driver.new_customer("乙")
    c = scrm.driver.new_customer("丙")
    scrm.driver.add_customer("zhangsan", a)
    scrm.driver.add_customer("zhangsan", b, remark_mobiles=["+86 139 0013 9000"])
    scrm.driver.add_customer("lisi", c, state=token_state)
    scrm.settle()
    with scrm.session() as session:
        linked = {p.external_userid: p.lead_id for p in session.scalars(select(ExternalContact))}
        assert (linked[a], linked[b], linked[c]) == ids
        assert friendship(scrm, c, "lisi").channel_id == channel.id
        assert count(scrm, Lead) == 3  # nobody new: all three matched


def test_half_add_edit_and_deletions(scrm):
    ext = scrm.driver.new_customer("陈晨")
    scrm.driver.add_customer("zhangsan", ext, half=True)
    scrm.settle()
    assert friendship(scrm, ext, "zhangsan").status is FriendshipStatus.HALF

    scrm.driver.edit("zhangsan", ext, remark="陈晨-采购", description="关注价格")
    scrm.settle()
    f = friendship(scrm, ext, "zhangsan")
    assert (f.remark, f.description) == ("陈晨-采购", "关注价格")

    scrm.driver.add_customer("lisi", ext)
    scrm.settle()
    scrm.driver.customer_deletes_rep("lisi", ext)
    scrm.driver.rep_deletes_customer("zhangsan", ext)
    scrm.settle()
    assert friendship(scrm, ext, "lisi").status is FriendshipStatus.REMOVED_BY_CUSTOMER
    assert friendship(scrm, ext, "zhangsan").status is FriendshipStatus.REMOVED_BY_REP
    # Churn alert to the rep the customer deleted, and only to them.
    alerts = [m for m in scrm.sandbox.state.app_messages if "Churn" in m["text"]["content"]]
    assert [a["touser"] for a in alerts] == [["lisi"]]
    with scrm.session() as session:
        kinds = list(session.scalars(select(Activity.kind).where(Activity.external_userid == ext)))
    assert ActivityKind.CUSTOMER_DELETED_REP in kinds and ActivityKind.REP_DELETED_CUSTOMER in kinds


def test_delete_by_transfer_is_not_churn_and_transfer_fail_is_recorded(scrm):
    ext = scrm.driver.new_customer("赵雷")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.settle()
    scrm.driver.rep_deletes_customer("zhangsan", ext, by_transfer=True)
    scrm.driver.transfer_fail("lisi", ext, "customer_refused")
    scrm.settle()
    f = friendship(scrm, ext, "zhangsan")
    assert f.status is FriendshipStatus.TRANSFERRED and f.removed_by == "transfer"
    assert f.removal_reason == "DELETE_BY_TRANSFER"
    assert scrm.sandbox.state.app_messages == []
    with scrm.session() as session:
        fail = session.scalar(select(Activity).where(Activity.kind == ActivityKind.TRANSFER_FAILED))
        assert fail.data == {"reason": "customer_refused"} and fail.external_userid == ext


def test_tag_events_keep_library_in_step(scrm):
    scrm.driver.create_tag("客户等级", "D类")
    scrm.settle()
    with scrm.session() as session:
        tag = session.scalar(select(Tag).where(Tag.name == "D类"))
        assert tag is not None and not tag.is_deleted and tag.group.name == "客户等级"
        tag_id = tag.tag_id
    scrm.driver.rename_tag(tag_id, "D类客户")
    scrm.settle()
    with scrm.session() as session:
        assert session.scalar(select(Tag.name).where(Tag.tag_id == tag_id)) == "D类客户"
    group = scrm.sandbox.state.group_by_name("客户等级")
    assert group is not None
    scrm.driver.tag_event("shuffle", group["group_id"], "tag_group")
    scrm.driver.delete_tag(tag_id)
    scrm.settle()
    with scrm.session() as session:
        assert session.scalar(select(Tag.is_deleted).where(Tag.tag_id == tag_id)) is True
        assert session.scalar(select(TagGroup).where(TagGroup.name == "客户等级")) is not None
    with scrm.session() as session:
        statuses = set(
            session.scalars(select(InboxEvent.status).where(InboxEvent.event == "change_external_tag"))
        )
    assert statuses == {InboxStatus.DONE}


def test_group_create_join_leave_dismiss(scrm):
    ext = scrm.driver.new_customer("孙丽")
    delivery = scrm.driver.create_group("zhangsan", "展会客户群", [])
    chat_id = delivery.extra["chat_id"]
    scrm.driver.join_group(chat_id, ext)
    scrm.settle()
    with scrm.session() as session:
        group = session.scalar(select(CustomerGroup).where(CustomerGroup.chat_id == chat_id))
        assert group.name == "展会客户群" and group.owner_userid == "zhangsan"
        member = session.scalar(select(CustomerGroupMember).where(CustomerGroupMember.member_id == ext))
        assert member is not None and member.left_at is None and member.join_scene == 3
        assert (
            session.scalar(select(Activity.kind).where(Activity.external_userid == ext))
            is ActivityKind.JOINED_GROUP
        )
    scrm.driver.leave_group(chat_id, ext, quit_scene=1)
    scrm.settle()
    with scrm.session() as session:
        member = session.scalar(select(CustomerGroupMember).where(CustomerGroupMember.member_id == ext))
        assert member.left_at is not None
    scrm.driver.dismiss_group(chat_id)
    scrm.settle()
    with scrm.session() as session:
        assert session.scalar(select(CustomerGroup.is_dismissed).where(CustomerGroup.chat_id == chat_id))


def test_staff_events_keep_directory_in_step(scrm):
    scrm.driver.staff_event("create_user", "qianqi", name="钱七")
    scrm.settle()
    with scrm.session() as session:
        staff = session.scalar(select(Staff).where(Staff.userid == "qianqi"))
        assert staff.name == "钱七" and staff.is_active
    scrm.driver.staff_event("delete_user", "qianqi")
    scrm.settle()
    with scrm.session() as session:
        assert session.scalar(select(Staff.is_active).where(Staff.userid == "qianqi")) is False


def test_wechatpy_as_independent_peer(scrm):
    """Encrypt with wechatpy's own WeChatCrypto.encrypt_message (not scrm's module) and post."""
    state = scrm.sandbox.state
    ext = scrm.driver.new_customer("周杰")
    state.add_relation(
        ext, "zhangsan", add_way=2, state="", oper_userid="zhangsan", remark_mobiles=[], is_half=False
    )
    plaintext = (
        f"<xml><ToUserName><![CDATA[{state.corp_id}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>"
        f"<UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[{ext}]]></ExternalUserID></xml>"
    )
    peer = WeChatCrypto(state.token, state.aes_key, state.corp_id)
    nonce, timestamp = "20261125", str(int(time.time()))
    envelope = peer.encrypt_message(plaintext, nonce, timestamp)
    from xml.etree import ElementTree

    signature = ElementTree.fromstring(envelope).findtext("MsgSignature")
    encrypt = ElementTree.fromstring(envelope).findtext("Encrypt")
    body = (
        f"<xml><ToUserName><![CDATA[{state.corp_id}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
    response = requests.post(
        scrm.callback_url,
        params={"msg_signature": signature, "timestamp": timestamp, "nonce": nonce},
        data=body.encode(),
        timeout=5,
    )
    assert response.status_code == 200
    scrm.settle()
    assert friendship(scrm, ext, "zhangsan").status is FriendshipStatus.ACTIVE


def test_unknown_event_is_stored_and_acked(scrm):
    # kf_msg_or_event (微信客服) is a real event scrm has no handler for.
    delivery = scrm.driver.post_raw(
        f"<xml><ToUserName><![CDATA[{scrm.sandbox.state.corp_id}]]></ToUserName><FromUserName>sys</FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType>event</MsgType><Event>kf_msg_or_event</Event>"
        "<Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token></xml>"
    )
    assert delivery.status == 200
    scrm.settle()
    with scrm.session() as session:
        row = session.scalar(select(InboxEvent).where(InboxEvent.event == "kf_msg_or_event"))
        assert row.status is InboxStatus.IGNORED


def _let_backoff_pass(scrm, inbox_id):
    from scrm.db import transaction

    with transaction(scrm.ctx.session_factory) as session:
        row = session.get(InboxEvent, inbox_id)
        row.next_attempt_at = row.received_at


def test_handler_failure_is_recorded_and_retried_not_bounced(scrm):
    from jobs import work

    ext = scrm.driver.new_customer("吴敏")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.settle()
    scrm.sandbox.state.force(-1, endpoint="externalcontact/get", times=3)  # beats the in-call retries
    assert scrm.driver.edit("zhangsan", ext, remark="吴敏-老客户").status == 200
    scrm.app.extensions["scrm.pool"].wait_idle()
    with scrm.session() as session:
        row = session.scalar(select(InboxEvent).where(InboxEvent.change_type == "edit_external_contact"))
        assert row.status is InboxStatus.FAILED and "busy" in row.last_error and row.attempts == 1
    _let_backoff_pass(scrm, row.id)
    work.process_event(scrm.ctx, row.id)
    with scrm.session() as session:
        assert session.get(InboxEvent, row.id).status is InboxStatus.DONE
    assert friendship(scrm, ext, "zhangsan").remark == "吴敏-老客户"


def test_events_of_one_customer_apply_in_arrival_order(scrm):
    """A delete that arrives while an edit is still failing waits for it instead of overtaking."""
    from jobs import work

    ext = scrm.driver.new_customer("郑好")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.settle()
    scrm.sandbox.state.force(-1, endpoint="externalcontact/get", times=3)
    scrm.driver.edit("zhangsan", ext, remark="郑好")
    scrm.app.extensions["scrm.pool"].wait_idle()
    scrm.driver.customer_deletes_rep("zhangsan", ext)
    scrm.app.extensions["scrm.pool"].wait_idle()
    with scrm.session() as session:
        rows = session.scalars(
            select(InboxEvent).where(InboxEvent.change_type != "add_external_contact").order_by(InboxEvent.id)
        ).all()
        assert [r.status for r in rows] == [InboxStatus.FAILED, InboxStatus.PENDING]
        edit_id, delete_id = rows[0].id, rows[1].id
    assert work.process_event(scrm.ctx, delete_id) is None  # blocked behind the failed edit
    _let_backoff_pass(scrm, edit_id)
    assert work.process_event(scrm.ctx, edit_id) is InboxStatus.DONE
    with scrm.session() as session:
        assert session.get(InboxEvent, delete_id).status is InboxStatus.DONE
    assert friendship(scrm, ext, "zhangsan").status is FriendshipStatus.REMOVED_BY_CUSTOMER


def test_an_add_is_visible_from_its_event_alone_and_linked_once_detail_is_read(scrm):
    """WeCom's detail read fails: the friend is listed at once (awaiting detail, not linked,
    welcomed all the same); a later successful read brings the name, remark and the lead."""
    from jobs import work
    from tests.helpers import create_channel

    channel = create_channel(scrm, "展会B", ["zhangsan"], welcome_text="欢迎")
    scrm.sandbox.state.force(-1, endpoint="externalcontact/get", times=3)
    ext = scrm.driver.new_customer("蒋文")
    assert scrm.driver.scan_channel(channel.state, ext, remark_mobiles=["13800138123"]).status == 200
    scrm.app.extensions["scrm.pool"].wait_idle()
    f = friendship(scrm, ext, "zhangsan")
    assert f is not None and f.status is FriendshipStatus.ACTIVE and f.channel_id == channel.id
    assert f.awaiting_detail_at is not None
    with scrm.session() as session:
        assert session.get(ExternalContact, f.external_contact_id).lead_id is None  # not linked on too little
        welcome = session.scalar(select(OutboxCommand).where(OutboxCommand.kind == "send_welcome_msg"))
        assert welcome.status is OutboxStatus.SENT  # the welcome never waits for detail
        event = session.scalar(select(InboxEvent).where(InboxEvent.change_type == "add_external_contact"))
        assert event.status is InboxStatus.DONE
    key = _admin_key(scrm)
    listed = requests.get(
        scrm.url + "/api/friends", headers={"Authorization": f"Bearer {key}"}, timeout=10
    ).json()
    assert [(i["external_userid"], i["awaiting_detail"], i["lead_id"]) for i in listed["items"]] == [
        (ext, True, None)
    ]

    assert work.refresh_awaiting_details(scrm.ctx) == 1
    f = friendship(scrm, ext, "zhangsan")
    assert f.awaiting_detail_at is None and f.remark_mobiles == ["13800138123"]
    with scrm.session() as session:
        person = session.get(ExternalContact, f.external_contact_id)
        assert person.name == "蒋文" and person.lead_id is not None
        assert session.get(Lead, person.lead_id).phone_e164 == "+8613800138123"


def _admin_key(scrm):
    from scrm.db import transaction
    from scrm.directory import service as directory

    with transaction(scrm.ctx.session_factory) as session:
        return directory.create_api_key(session, "test", "admin")[1]


def test_a_replayed_add_after_a_delete_leaves_the_friendship_removed(scrm):
    from jobs import work

    ext = scrm.driver.new_customer("韩梅")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.settle()
    # CreateTime has whole seconds; in the same second, the event stored later wins.
    scrm.driver.customer_deletes_rep("zhangsan", ext)
    scrm.settle()
    assert friendship(scrm, ext, "zhangsan").status is FriendshipStatus.REMOVED_BY_CUSTOMER
    with scrm.session() as session:
        add_id = session.scalar(select(InboxEvent.id).where(InboxEvent.change_type == "add_external_contact"))
    assert work.process_event(scrm.ctx, add_id, force=True) is InboxStatus.DONE  # scrm events replay
    f = friendship(scrm, ext, "zhangsan")
    assert f.status is FriendshipStatus.REMOVED_BY_CUSTOMER and f.removed_at is not None


def test_an_older_detail_does_not_overwrite_a_newer_remark(scrm):
    """Two edits handled out of order: the one whose detail was read first applies last."""
    from datetime import timedelta

    from scrm.db import transaction
    from scrm.friends import service as friends_service

    ext = scrm.driver.new_customer("秦川")
    scrm.driver.add_customer("zhangsan", ext)
    scrm.settle()
    stale = friends_service.Detail(
        scrm.ctx.gateway.get_external_contact(ext), utcnow() - timedelta(seconds=5)
    )
    scrm.driver.edit("zhangsan", ext, remark="秦川-新备注")
    scrm.settle()
    assert friendship(scrm, ext, "zhangsan").remark == "秦川-新备注"
    with transaction(scrm.ctx.session_factory) as session:  # the stale read's edit applies now
        friends_service.record_edit(
            session,
            userid="zhangsan",
            external_userid=ext,
            detail=stale,
            occurred_at=stale.read_at,
            inbox_id=None,
        )
    assert friendship(scrm, ext, "zhangsan").remark == "秦川-新备注"


def test_duplicate_delivery_is_one_event(scrm):
    scrm.driver.deliver = False
    ext = scrm.driver.new_customer("冯强")
    delivery = scrm.driver.add_customer("zhangsan", ext)
    statuses = [scrm.driver.redeliver(delivery) for _ in range(3)]
    assert statuses == [200, 200, 200]
    scrm.settle()
    assert count(scrm, InboxEvent) == 1
    assert count(scrm, Friendship) == 1


def test_two_customers_same_rep_same_second_are_two_events(scrm):
    scrm.driver.deliver = False
    a, b = scrm.driver.new_customer("甲"), scrm.driver.new_customer("乙")
    with frozen_clock(utcnow()):  # pin both events to one CreateTime
        first = scrm.driver.add_customer("zhangsan", a)
        second = scrm.driver.add_customer("zhangsan", b)
    # Same rep, same second, both from `sys`: FromUserName+CreateTime alone would collide.
    assert first.query["timestamp"] == second.query["timestamp"]
    assert (
        "<FromUserName><![CDATA[sys]]>" in first.plaintext
        and "<FromUserName><![CDATA[sys]]>" in second.plaintext
    )
    for d in (first, second):
        assert scrm.driver.redeliver(d) == 200
    scrm.settle()
    assert count(scrm, InboxEvent) == 2 and count(scrm, Friendship) == 2


def test_outbox_rows_record_welcome_once(scrm):
    channel = create_channel(scrm, "朋友圈", ["lisi"], welcome_text="Hi")
    ext = scrm.driver.new_customer("褚红")
    scrm.driver.scan_channel(channel.state, ext)
    scrm.settle()
    with scrm.session() as session:
        welcome = session.scalar(select(OutboxCommand).where(OutboxCommand.kind == "send_welcome_msg"))
        assert welcome.status is OutboxStatus.SENT and welcome.attempts == 1 and welcome.priority == 100
    assert count(scrm, Channel) == 1
