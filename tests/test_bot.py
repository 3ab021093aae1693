"""Bot commands end to end: the sandbox driver sends a rep's signed, encrypted text message over
HTTP to the real callback; scrm runs the command in the callback's transaction and answers with
an encrypted passive reply, which the driver verifies and decrypts as WeCom would. Every answer
comes within WeCom's 5 s (measured around the HTTP post); a retry of the same MsgId gets the same
reply and the command's effect once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from jobs import work
from scrm.bot import service as bot_service
from scrm.db import transaction
from scrm.leads import service as lead_service
from scrm.leads.fields import parse_lead
from scrm.sandbox.cli import sandbox as sandbox_cli
from scrm.schema import (
    BotReply,
    BotReplyStatus,
    ChatAction,
    ChatDirection,
    ChatMessage,
    ExternalContact,
    FollowUp,
    Friendship,
    InboxEvent,
    InboxStatus,
    OutboxCommand,
    OutboxStatus,
)
from scrm.timeutil import frozen_clock, utcnow
from tests.helpers import count

WECOM_DEADLINE_S = 5.0  # WeCom re-sends when no answer came within 5 s (doc 90930)


def ask(scrm: Any, userid: str, text: str) -> tuple[Any, str]:
    began = time.perf_counter()
    delivery = scrm.driver.send_text(userid, text)
    elapsed = time.perf_counter() - began
    assert delivery.status == 200
    assert elapsed < WECOM_DEADLINE_S, f"answered in {elapsed:.2f} s"
    assert delivery.reply is not None, "no passive reply"
    return delivery, delivery.reply


def befriend(scrm: Any, userid: str, name: str, phone: str | None = None) -> tuple[str, int | None]:
    """A friend of ``userid``, added with ``phone`` as remark mobile: scrm makes them a lead and a
    customer ``userid`` owns (the lead's id returned)."""
    ext = scrm.driver.new_customer(name)
    assert scrm.driver.add_customer(userid, ext, remark_mobiles=[phone] if phone else None).status == 200
    scrm.settle()
    with scrm.session() as session:
        person = session.scalars(select(ExternalContact).where(ExternalContact.external_userid == ext)).one()
        return ext, person.lead_id


def chatted(scrm: Any, userid: str, ext: str, at: datetime) -> None:
    """An archived 1:1 message from ``userid`` to ``ext`` (what the chat archive stores)."""
    with transaction(scrm.ctx.session_factory) as session:
        friendship_id = session.scalar(
            select(Friendship.id).where(Friendship.external_userid == ext, Friendship.userid == userid)
        )
        session.add(
            ChatMessage(
                msgid=f"msg-{ext}-{at.timestamp()}",
                action=ChatAction.SEND,
                sender=userid,
                tolist=[ext],
                roomid="",
                sent_at=at,
                msgtype="text",
                content="您好",
                external_userid=ext,
                userid=userid,
                direction=ChatDirection.REP,
                friendship_id=friendship_id,
            )
        )


def follow_ups(scrm: Any, lead_id: int) -> list[FollowUp]:
    with scrm.session() as session:
        return list(
            session.scalars(select(FollowUp).where(FollowUp.lead_id == lead_id).order_by(FollowUp.id))
        )


def test_log_goes_on_the_friend_of_the_last_archived_chat_once_even_when_retried(scrm):
    first, first_lead = befriend(scrm, "zhangsan", "王小明", "13800138001")
    second, second_lead = befriend(scrm, "zhangsan", "李雷", "13800138002")
    assert first_lead and second_lead
    # The newest friend is 李雷, but the archive says zhangsan chatted with 王小明 last.
    chatted(scrm, "zhangsan", first, utcnow())

    delivery, reply = ask(scrm, "zhangsan", "记 客户要报价")
    assert "已记录跟进" in reply and "王小明" in reply and "最近聊天" in reply
    assert f"线索 Lead #{first_lead}" in reply and f"/console/leads/{first_lead}" in reply
    [logged] = follow_ups(scrm, first_lead)
    assert (logged.content, logged.kind.value, logged.author_userid) == ("客户要报价", "wecom", "zhangsan")
    assert logged.external_userid == first and follow_ups(scrm, second_lead) == []

    # WeCom's retry of the same MsgId: the same reply, and still one follow-up.
    began = time.perf_counter()
    assert scrm.driver.redeliver(delivery) == 200
    assert time.perf_counter() - began < WECOM_DEADLINE_S
    assert delivery.reply == reply
    assert len(follow_ups(scrm, first_lead)) == 1
    with scrm.session() as session:
        [row] = session.scalars(select(BotReply)).all()
        assert (row.command, row.status, row.userid) == ("log", BotReplyStatus.DONE, "zhangsan")
        event = session.get_one(InboxEvent, row.inbox_event_id)
        assert event.status is InboxStatus.DONE and event.msg_type == "text"
    scrm.settle()
    assert len(follow_ups(scrm, first_lead)) == 1  # the workers do not run it a second time


def test_log_without_an_archive_falls_back_to_the_friend_added_last(scrm):
    _, older_lead = befriend(scrm, "lisi", "韩梅梅", "13800138003")
    _, newer_lead = befriend(scrm, "lisi", "陈晨", "13800138004")
    _, reply = ask(scrm, "lisi", "记 约了周五拜访")
    assert "陈晨" in reply and "最近添加或跟进的好友" in reply and f"#{newer_lead}" in reply
    assert [f.content for f in follow_ups(scrm, newer_lead)] == ["约了周五拜访"]
    assert follow_ups(scrm, older_lead) == []


def test_log_names_the_friend_or_says_how_to_fix(scrm):
    _, reply = ask(scrm, "wangwu", "记 客户要报价")
    assert "侧边栏" in reply and "记 @客户名" in reply  # no friend at all yet
    bare, _ = befriend(scrm, "wangwu", "周一")
    with transaction(scrm.ctx.session_factory) as session:  # a person linked to nothing
        person = session.scalars(select(ExternalContact).where(ExternalContact.external_userid == bare)).one()
        person.lead_id = person.contact_id = None
    _, reply = ask(scrm, "wangwu", "记 @周一 想要样品")
    assert "还没有关联线索或客户" in reply  # a friend with no lead or customer
    _, lead_id = befriend(scrm, "wangwu", "孙悟空", "13800138005")
    _, reply = ask(scrm, "wangwu", "记 @孙悟空 要合同")
    assert "孙悟空" in reply and f"#{lead_id}" in reply and "你指定的好友" in reply
    assert [f.content for f in follow_ups(scrm, lead_id)] == ["要合同"]
    _, reply = ask(scrm, "wangwu", "记 @猪八戒 要合同")
    assert "没有“猪八戒”" in reply
    _, reply = ask(scrm, "wangwu", "记")
    assert "记 后面写跟进内容" in reply


def test_remind_sends_the_app_message_only_when_due(scrm):
    with frozen_clock(datetime.now(UTC)) as advance:
        _, reply = ask(scrm, "zhangsan", "提醒 30分钟后 给王总回电话")
        assert "好的" in reply and "给王总回电话" in reply and "Reminder set for" in reply
        due = (utcnow() + timedelta(minutes=30)).astimezone(tz=None)
        assert "+08:00" in reply and f"{due.astimezone(UTC).replace(tzinfo=None):%M}" in reply
        scrm.app.extensions["scrm.pool"].wait_idle()
        work.drain_outbox(scrm.ctx)
        assert not [m for m in scrm.sandbox.state.app_messages if "给王总回电话" in m["text"]["content"]]
        with scrm.session() as session:
            [command] = session.scalars(
                select(OutboxCommand).where(OutboxCommand.kind == "message_send")
            ).all()
            assert command.status is OutboxStatus.PENDING and command.next_attempt_at > utcnow()
        advance(timedelta(minutes=29))
        work.drain_outbox(scrm.ctx)
        assert not [m for m in scrm.sandbox.state.app_messages if "给王总回电话" in m["text"]["content"]]
        advance(timedelta(minutes=1, seconds=1))
        assert work.drain_outbox(scrm.ctx) == 1
    [sent] = [m for m in scrm.sandbox.state.app_messages if "给王总回电话" in m["text"]["content"]]
    assert sent["touser"] == ["zhangsan"] and sent["msgtype"] == "text"
    assert sent["text"]["content"] == "⏰ 提醒 Reminder: 给王总回电话"


def test_remind_confirms_a_named_day_in_chinese_and_iso(scrm):
    _, reply = ask(scrm, "zhangsan", "提醒 下周三 10点 交方案")
    assert "（周三）10:00" in reply and "T10:00:00+08:00" in reply and "交方案" in reply
    assert count(scrm, OutboxCommand, OutboxCommand.status == OutboxStatus.PENDING) == 1


@pytest.mark.parametrize("phrase", ["提醒 回电话", "提醒 明天25点 开会", "提醒 明天10点"])
def test_remind_with_a_bad_time_says_what_forms_work(scrm, phrase):
    with frozen_clock(datetime.now(UTC)):
        _, reply = ask(scrm, "zhangsan", phrase)
    assert "10点半" in reply and "2小时后" in reply  # the forms that work
    assert count(scrm, OutboxCommand, OutboxCommand.kind == "message_send") == 0


def test_a_time_already_past_is_refused(scrm):
    moment = datetime(2026, 12, 8, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai
    with frozen_clock(moment):
        bot_reply = bot_service.run
        with scrm.session() as session:
            text = bot_reply(
                session,
                "zhangsan",
                bot_service.commands.parse("提醒 10点 开会"),
                key="k",
                inbox_id=None,
                public_url="http://x",
            )
            session.rollback()
    assert "时间已过" in text and "10点半" in text


def test_lookup_by_phone_and_name_sees_only_what_the_rep_may_see(scrm):
    _, mine = befriend(scrm, "zhangsan", "王大锤", "13900139001")
    _, theirs = befriend(scrm, "lisi", "王大锤", "13900139002")
    links = scrm.ctx.settings.public_url + "/console/"
    _, reply = ask(scrm, "zhangsan", "查 139 0013 9001")  # a phone as typed, normalised
    assert f"线索 Lead #{mine} 王大锤" in reply and "+86139****9001" in reply and "13900139001" not in reply
    assert f"{links}leads/{mine}" in reply and "客户 Customer #" in reply and f"{links}customers/" in reply
    _, reply = ask(scrm, "zhangsan", "查 13900139002")  # lisi's friend: lead and customer are lisi's
    assert "没有找到" in reply and "9002" not in reply.replace("13900139002", "")
    _, reply = ask(scrm, "zhangsan", "查 大锤")
    assert "找到 2 条" in reply and f"{links}leads/{mine}\n" in reply
    assert f"{links}leads/{theirs}" not in reply and "9002" not in reply and "负责人 zhangsan" in reply
    _, reply = ask(scrm, "lisi", "查 王大锤")
    assert f"{links}leads/{theirs}" in reply and f"{links}leads/{mine}\n" not in reply and "9001" not in reply


def test_lookup_shows_at_most_five(scrm):
    with transaction(scrm.ctx.session_factory) as session:
        for i in range(7):
            data = parse_lead(
                {"name": f"赵{i}号", "owner_userid": "zhangsan", "source": "test"}, default_source="test"
            )
            lead_service.capture(session, data)
    _, reply = ask(scrm, "zhangsan", "查 赵")
    assert reply.count("/console/leads/") == 5 and "只显示前 5 条" in reply


@pytest.mark.parametrize("text", ["帮助", "help", "你好呀"])
def test_help_and_unknown_messages_get_the_help_text(scrm, text):
    _, reply = ask(scrm, "zhangsan", text)
    for example in ("记 客户要报价", "记 @王小明", "提醒 明天10点", "查 13800138000", "帮助"):
        assert example in reply
    assert ("没有看懂" in reply) is (text == "你好呀")


def test_a_failing_command_answers_an_apology_keeps_the_message_and_retries(scrm, monkeypatch):
    real_run = bot_service.run
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(bot_service, "run", flaky)
    _, reply = ask(scrm, "zhangsan", "帮助")
    assert reply == bot_service.APOLOGY
    with scrm.session() as session:
        event = session.scalars(select(InboxEvent).where(InboxEvent.msg_type == "text")).one()
        assert event.status is InboxStatus.FAILED and "RuntimeError: boom" in (event.last_error or "")
        row = session.scalars(select(BotReply)).one()
        assert row.status is BotReplyStatus.FAILED and "boom" in (row.error or "")
    # The inbox's retry runs the command again and sends its answer as an app message.
    with frozen_clock(utcnow() + timedelta(seconds=5)):
        scrm.settle()
    with scrm.session() as session:
        assert session.scalars(select(InboxEvent)).one().status is InboxStatus.DONE
        assert session.scalars(select(BotReply)).one().status is BotReplyStatus.DONE
    [sent] = [m for m in scrm.sandbox.state.app_messages if "刚才的消息已处理" in m["text"]["content"]]
    assert sent["touser"] == ["zhangsan"] and "查 13800138000" in sent["text"]["content"]


def test_other_events_keep_their_empty_200(scrm):
    delivery = scrm.driver.enter_agent("zhangsan")
    assert delivery.status == 200 and delivery.response_text == "" and delivery.reply is None


def test_a_long_reply_is_cut_at_a_character_boundary_within_2048_bytes(scrm):
    with transaction(scrm.ctx.session_factory) as session:
        for i in range(5):
            name = "长" * 120 + str(i)
            lead_service.capture(
                session,
                parse_lead({"name": name, "owner_userid": "zhangsan", "source": "t"}, default_source="t"),
            )
    _, reply = ask(scrm, "zhangsan", "查 长长长")
    assert len(reply.encode("utf-8")) <= 2048 and reply.startswith("找到 5 条")


def test_sandbox_cli_prints_the_decrypted_reply_and_how_long_it_took(scrm, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    scrm.sandbox.state.webhook_url = scrm.callback_url
    result = CliRunner().invoke(
        sandbox_cli, ["--url", scrm.sandbox.url, "bot", "--userid", "zhangsan", "帮助"], catch_exceptions=True
    )
    assert result.exit_code == 0, result.output
    assert "提醒 明天10点" in result.output and "answered in" in result.output and " ms)" in result.output
    assert "<xml" not in result.output
